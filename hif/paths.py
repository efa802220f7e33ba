"""Repository paths: '/'-separated, relative, with no empty, '.' or '..' components.

Validation lives here, once, because every edge (CLI arguments, trees read from a store, HTTP bodies)
must refuse the same unsafe paths.
"""

from __future__ import annotations

from hif.errors import InvalidPath

RESERVED = ".hif"
CHECKS_CONFIG = "hif.toml"  # where a repository declares its checks (hif.checks)


def check_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise InvalidPath(f"invalid path component: {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath(f"path is not valid UTF-8: {name!r}") from None
    return name


def check_path(path: str) -> str:
    if not path or path.startswith("/") or path.endswith("/"):
        raise InvalidPath(f"invalid path: {path!r}")
    parts = path.split("/")
    for part in parts:
        check_name(part)
    if parts[0] == RESERVED:
        raise InvalidPath(f"path is reserved for hif's own files: {path!r}")
    return path


def parent_dirs(path: str) -> list[str]:
    """'a/b/c' -> ['a', 'a/b']."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]

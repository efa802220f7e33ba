"""Forge and repository URLs: the one parser of ``http(s)://host[/prefix]/owner/name`` (and of
a forge's mirror URLs) that the client, the CLI and federation share."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from hif.errors import InvalidInput
from hif.repo import check_repo_name


def normalize_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash: the key credentials are kept under.

    User info, queries and fragments are refused: a secret in a URL would end up in config files.
    """
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"not a forge URL: {url!r} (use http(s)://host[:port])")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise InvalidInput("a forge URL must not carry user info, a query or a fragment")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise InvalidInput(f"not a forge URL: {url!r} (bad port)") from None
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, "", ""))


def parse_repo_url(url: str) -> tuple[str, str]:
    """``<base>/<owner>/<name>`` -> (base URL, ``owner/name``)."""
    base = normalize_url(url)
    parts = urlsplit(base)
    segs = [s for s in parts.path.split("/") if s]
    if len(segs) < 2:
        raise InvalidInput(f"a repository URL looks like http(s)://host/owner/name, not {url!r}")
    name = check_repo_name("/".join(segs[-2:]))
    prefix = "/".join(segs[:-2])
    root = urlunsplit((parts.scheme, parts.netloc, f"/{prefix}" if prefix else "", "", ""))
    return root, name


def parse_clone_url(url: str) -> tuple[str, str, str | None]:
    """Like :func:`parse_repo_url`, but ``<base>/mirrors/<host>/<owner>/<name>`` names a forge's
    read-only mirror of a remote repository: -> (base URL, ``owner/name``, mirrored host or None)."""
    base = normalize_url(url)
    parts = urlsplit(base)
    segs = [s for s in parts.path.split("/") if s]
    if len(segs) >= 4 and segs[-4] == "mirrors":
        host = segs[-3].lower()
        if not host or "/" in host or host in (".", ".."):
            raise InvalidInput(f"not a mirror URL: {url!r}")
        name = check_repo_name("/".join(segs[-2:]))
        prefix = "/".join(segs[:-4])
        root = urlunsplit((parts.scheme, parts.netloc, f"/{prefix}" if prefix else "", "", ""))
        return root, name, host
    root, name = parse_repo_url(url)
    return root, name, None


def repo_api(name: str, mirror: str | None = None) -> str:
    """The API path of a repository (or of a forge's mirror of one), relative to ``/api/v1/``."""
    return f"mirrors/{mirror}/{name}" if mirror else f"repos/{name}"


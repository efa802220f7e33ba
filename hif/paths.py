"""Repository paths: '/'-separated, relative, with no empty, '.' or '..' components.

Validation lives here, once, because every edge (CLI arguments, working files, trees read from a
store, HTTP bodies, landing, federation, git import, checkout) must refuse the same unsafe paths.

A path is refused when a working copy could not write it safely on *some* file system a clone may
use (the rules of git's ``verify_path``, CVE-2014-9390 and its 2019/2024 follow-ups, taken wider):

- a component that is, or that Windows or macOS would fold onto, ``.git`` or ``.hif``: compared
  case-insensitively after dropping the code points HFS+ ignores (U+200C-U+200F, U+202A-U+202E,
  U+206A-U+206F, U+FEFF), trailing dots and spaces (NTFS drops them), and anything from a ``:`` on
  (an NTFS alternate data stream of the name, ``.git::$INDEX_ALLOCATION``); and the NTFS 8.3 short
  names ``GIT~<n>`` / ``HIF~<n>``;
- a component with NTFS stream-type syntax (``:$``, as in ``file::$DATA``, another name for the file);
- a backslash (a Windows separator: ``a\\.git`` is ``a/.git`` there) or a control character;
- a component over ``MAX_NAME`` bytes or a path over ``MAX_PATH`` bytes (UTF-8): no clone could
  check it out;
- a symbolic link named like git's own dotfiles (``.gitmodules``, ``.gitattributes``, ``.gitignore``,
  ``.mailmap``, in any of the spellings above): git reads them through the link (git 2.17.1/2.24.1).

Two names of one directory that are equal after case folding and Unicode normalisation collide on a
case-insensitive or normalising file system; ``fold`` gives the key they share (landing refuses them).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from hif.errors import InvalidPath

RESERVED = ".hif"
CHECKS_CONFIG = "hif.toml"  # where a repository declares its checks (hif.checks)
MAX_NAME = 255  # bytes of one component (UTF-8): what ext4, APFS and NTFS take
MAX_PATH = 4096  # bytes of a whole path (UTF-8): Linux's PATH_MAX

_RESERVED_NAMES = frozenset((".git", ".hif"))
_SHORT_NAME = re.compile(r"(git|hif)~[0-9]+")  # NTFS 8.3 names of .git / .hif
# code points HFS+ drops when it compares names (git's next_hfs_char)
_HFS_IGNORED = dict.fromkeys([0x200C, 0x200D, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x206A, 0x2070),
                              0xFEFF])
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
# git's dotfiles that must not be symbolic links, with the short-name prefixes NTFS may give them
_GIT_DOTFILES = {".gitmodules": ("gitmod~", "gi7eba~"), ".gitattributes": ("gitatt~", "gi7d29~"),
                 ".gitignore": ("gitign~", "gi250a~"), ".mailmap": ("mailma~",)}


def _seen_as(name: str) -> str:
    """The name as a case-insensitive, HFS+ or NTFS file system sees it, for comparing with ours."""
    if not name.isascii():
        name = name.translate(_HFS_IGNORED)
    name = name.partition(":")[0].rstrip(". ")
    return name.casefold()


def check_name(name: str) -> str:
    """One path component, or InvalidPath saying why a working copy must never write it."""
    if not name or name in (".", "..") or "/" in name:
        raise InvalidPath(f"invalid path component: {name!r}")
    ascii = name.isascii()
    if (not name.isprintable() or "\\" in name) if ascii else _CONTROL.search(name):
        raise InvalidPath(f"path component has a backslash or a control character: {name!r}")
    if ascii:
        size = len(name)
    else:
        try:
            size = len(name.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidPath(f"path is not valid UTF-8: {name!r}") from None
    if size > MAX_NAME:
        raise InvalidPath(f"path component is longer than {MAX_NAME} bytes ({size}): {name[:40]!r}...")
    if not ascii or name[0] in ".gGhH":  # every other ASCII name is none of the reserved spellings
        seen = _seen_as(name)
        if seen in _RESERVED_NAMES or ("~" in seen and _SHORT_NAME.fullmatch(seen)):
            raise InvalidPath(f"path component {name!r} is reserved (it is, or a file system reads it "
                              "as, .git or .hif)")
    if ":$" in name:
        raise InvalidPath(f"path component {name!r} names an NTFS data stream")
    return name


def check_path(path: str) -> str:
    """A whole repository path: every component checked, and the length bounded."""
    if not path or path.startswith("/") or path.endswith("/"):
        raise InvalidPath(f"invalid path: {path!r}")
    for part in path.split("/"):
        check_name(part)
    if len(path) * 4 > MAX_PATH and len(path.encode("utf-8")) > MAX_PATH:
        raise InvalidPath(f"path is longer than {MAX_PATH} bytes: {path[:60]!r}...")
    return path


def check_link_name(path: str) -> str:
    """A symbolic link may not stand where git reads one of its own dotfiles (it would read the
    link's target: git's 2018 ``.gitmodules`` advisory)."""
    seen = _seen_as(path.rpartition("/")[2])
    for dotfile, shorts in _GIT_DOTFILES.items():
        if seen == dotfile or seen.startswith(shorts):
            raise InvalidPath(f"{path!r} may not be a symbolic link (git reads {dotfile} through it)")
    return path


def check_entry_path(path: str, kind: str) -> str:
    """A path about to name a file entry of ``kind`` ('f', 'x', 'l'): the path and, for a link, its name."""
    check_path(path)
    if kind == "l":
        check_link_name(path)
    return path


def fold(name: str) -> str:
    """The key under which two names collide on a case-insensitive or Unicode-normalising file system
    (canonical caseless matching: NFD, case fold, NFD)."""
    if name.isascii():
        return name.lower()
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def collision(a: str, b: str) -> InvalidPath:
    """The error for two paths a checkout would take for one."""
    return InvalidPath(f"{a!a} and {b!a} would be one file on a case-insensitive or Unicode-normalising "
                       "file system (equal after case folding and NFC/NFD normalisation): rename one")


def check_no_collisions(paths: Iterable[str]) -> None:
    """Paths that would sit side by side in one directory under names ``fold`` takes for one are
    refused (InvalidPath naming both): for a set of paths written together, before they land."""
    seen: dict[tuple[str, str], str] = {}
    for path in paths:
        parent = ""
        for name in path.split("/"):
            other = seen.setdefault((parent, fold(name)), name)
            if other != name:
                raise collision(f"{parent}/{other}".lstrip("/"), f"{parent}/{name}".lstrip("/"))
            parent = f"{parent}/{name}" if parent else name


def parent_dirs(path: str) -> list[str]:
    """'a/b/c' -> ['a', 'a/b']."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]

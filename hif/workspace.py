"""A working copy: files on disk over a repository in a store, with an open session recording them.

Layout: ``<root>/.hif/config.json`` (store URL and repository), ``state.json`` (position, open
session) and ``index`` (the stat cache). Several working copies can share one store (``hif workspace
add``); each has its own position and session, so several agents on one machine land concurrently.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat as stat_mod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hif.errors import DirtyWorkingCopy, InvalidPath, NotARepository
from hif.index import RACY_NS, Index
from hif.objects import DIR, EXEC, FILE, LINK, Entry, blob_bytes, digest
from hif.paths import RESERVED, check_path, parent_dirs

META = RESERVED


@dataclass
class WorkState:
    position: int = 0
    session: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "session": self.session}


def find_root(start: Path) -> Path:
    cur = start.absolute()
    for candidate in (cur, *cur.parents):
        if (candidate / META / "config.json").is_file():
            return candidate
    raise NotARepository(f"not a hif working copy (or any parent): {start}")


class WorkTree:
    """File-system side of a working copy: scanning with the stat cache, and safe checkout writes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta = root / META
        self.index_path = self.meta / "index"
        self._index: Index | None = None

    # -- config and state --------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return json.loads((self.meta / "config.json").read_text())

    def write_config(self, config: dict[str, Any]) -> None:
        self._write_json("config.json", config)

    def state(self) -> WorkState:
        try:
            raw = json.loads((self.meta / "state.json").read_text())
        except FileNotFoundError:
            return WorkState()
        return WorkState(raw.get("position", 0), raw.get("session"))

    def write_state(self, state: WorkState) -> None:
        self._write_json("state.json", state.to_json())

    def _write_json(self, name: str, value: dict[str, Any]) -> None:
        tmp = self.meta / f"{name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(value, indent=1) + "\n")
        os.replace(tmp, self.meta / name)

    @property
    def index(self) -> Index:
        if self._index is None:
            self._index = Index.load(self.index_path)
        return self._index

    def save_index(self) -> None:
        if self._index is not None and self._index.dirty:
            self._index.save(self.index_path)

    # -- paths -------------------------------------------------------------------------------

    def to_repo_path(self, arg: str, cwd: Path | None = None) -> str:
        """A user's path argument (relative to ``cwd``) as a repository path, refusing escapes."""
        if "\x00" in arg:
            raise InvalidPath(f"invalid path: {arg!r}")
        base = (cwd or Path.cwd()).absolute()
        full = Path(os.path.normpath(base / arg))
        try:
            rel = full.relative_to(self.root)
        except ValueError:
            raise InvalidPath(f"path is outside the working copy: {arg}") from None
        text = rel.as_posix()
        if text in ("", "."):
            return ""
        check_path(text)
        for d in parent_dirs(text):
            if (self.root / d).is_symlink():
                raise InvalidPath(f"path goes through a symbolic link: {arg}")
        return text

    # -- scanning ----------------------------------------------------------------------------

    def _walk(self, directory: Path, rel: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return
        for entry in entries:
            if not rel and entry.name == META:
                continue
            path = f"{rel}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), path + "/")
            else:
                yield path, entry

    def scan(self) -> dict[str, tuple[Entry, bytes | None]]:
        """Every working file as (entry, content-if-read); unreadable or special files are skipped."""
        idx = self.index
        out: dict[str, tuple[Entry, bytes | None]] = {}
        for path, dentry in self._walk(self.root, ""):
            try:
                st = dentry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not (stat_mod.S_ISREG(st.st_mode) or stat_mod.S_ISLNK(st.st_mode)):
                continue
            try:
                check_path(path)
            except InvalidPath:
                continue
            cached = idx.cached(path, st)
            if cached is not None:
                out[path] = (cached, None)
                continue
            entry, content = self.read_file(path, st)
            if entry is None:
                continue
            idx.remember(path, st, entry)
            out[path] = (entry, content)
        return out

    def read_file(self, path: str, st: os.stat_result | None = None) -> tuple[Entry | None, bytes]:
        full = self.root / path
        st = st or os.lstat(full)
        if stat_mod.S_ISLNK(st.st_mode):
            content = os.fsencode(os.readlink(full))
            kind = LINK
        else:
            try:
                content = full.read_bytes()
            except (FileNotFoundError, PermissionError, IsADirectoryError):
                return None, b""
            kind = EXEC if st.st_mode & stat_mod.S_IXUSR else FILE
        return Entry(kind, digest(blob_bytes(content))), content

    def changes_against(
        self, base: dict[str, Entry], scanned: dict[str, tuple[Entry, bytes | None]]
    ) -> dict[str, Entry | None]:
        out: dict[str, Entry | None] = {}
        for path, (entry, _) in scanned.items():
            if base.get(path) != entry:
                out[path] = entry
        for path in base:
            if path not in scanned:
                out[path] = None
        return out

    def changes_vs_index(self) -> dict[str, Entry | None]:
        """``changes_against(index.base_entries(), scan())`` in one pass, without building either.

        The hot path of ``hif status`` on a large unchanged tree: per file one ``lstat`` (from
        ``scandir``), one dict look-up and one tuple comparison; only files the stat cache does not
        vouch for are checked, read and hashed.
        """
        idx = self.index
        entries = idx.entries
        racy = idx.written_ns - RACY_NS
        out: dict[str, Entry | None] = {}
        seen: set[str] = set()
        is_reg, is_lnk = stat_mod.S_ISREG, stat_mod.S_ISLNK
        stack: list[tuple[str, str]] = [(str(self.root), "")]
        while stack:
            directory, rel = stack.pop()
            try:
                it = os.scandir(directory)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            with it:
                for dentry in it:
                    name = dentry.name
                    if not rel and name == META:
                        continue
                    path = rel + name
                    if dentry.is_dir(follow_symlinks=False):
                        stack.append((dentry.path, path + "/"))
                        continue
                    try:
                        st = dentry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    mode = st.st_mode
                    e = entries.get(path)
                    if (
                        e is not None
                        and e.work is not None
                        and e.stat == (st.st_size, st.st_mtime_ns, st.st_ino, mode)
                        and st.st_mtime_ns < racy
                    ):  # what Index.cached checks, inline
                        seen.add(path)
                        if e.work is not e.base and e.work != e.base:
                            out[path] = e.work
                        continue
                    if not (is_reg(mode) or is_lnk(mode)):
                        continue
                    try:
                        check_path(path)
                    except InvalidPath:
                        continue
                    entry, _ = self.read_file(path, st)
                    if entry is None:
                        continue
                    idx.remember(path, st, entry)
                    seen.add(path)
                    e = entries[path]
                    if entry != e.base:
                        out[path] = entry
        for path, e in entries.items():
            if e.base is not None and path not in seen:
                out[path] = None
        return out

    # -- writing -----------------------------------------------------------------------------

    def _safe_parent(self, path: str) -> Path:
        """Create the parent directories of ``path``, refusing to write through a symlink."""
        return Path(self._make_parents(path))

    def _make_parents(self, path: str) -> str:
        root = str(self.root)
        for d in parent_dirs(path):
            p = f"{root}/{d}"
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                os.mkdir(p)
                continue
            if stat_mod.S_ISLNK(st.st_mode):
                raise InvalidPath(f"refusing to write through symbolic link {d}")
            if not stat_mod.S_ISDIR(st.st_mode):
                os.unlink(p)
                self.index.forget_work(d)
                os.mkdir(p)
        return f"{root}/{path}"

    def write_file(self, path: str, entry: Entry, content: bytes) -> None:
        full = self._make_parents(path)
        try:
            old = os.lstat(full)
        except FileNotFoundError:
            if entry.kind != LINK:  # a new file: nothing to protect, so no temporary file and rename
                self.index.remember(path, self._create(full, entry, content), entry)
                return
        else:  # a file is replaced atomically below; a directory or (for a link) anything must go first
            if stat_mod.S_ISDIR(old.st_mode):
                _rmtree(Path(full))
            elif entry.kind == LINK:
                os.unlink(full)
        if entry.kind == LINK:
            os.symlink(os.fsdecode(content), full)
            st = os.lstat(full)
        else:
            head, name = os.path.split(full)
            tmp = f"{head}/.{name}.hif-tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view):]
                os.fchmod(fd, 0o755 if entry.kind == EXEC else 0o644)
                st = os.fstat(fd)  # what lstat gives after the rename: same inode, size, mode, mtime
            finally:
                os.close(fd)
            os.replace(tmp, full)
        self.index.remember(path, st, entry)

    @staticmethod
    def _create(full: str, entry: Entry, content: bytes) -> os.stat_result:
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755 if entry.kind == EXEC else 0o644)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            st = os.fstat(fd)
            want = 0o755 if entry.kind == EXEC else 0o644
            if stat_mod.S_IMODE(st.st_mode) != want:  # the umask took bits away
                os.fchmod(fd, want)
                st = os.fstat(fd)
        finally:
            os.close(fd)
        return st

    def remove_file(self, path: str) -> None:
        full = self.root / path
        with contextlib.suppress(FileNotFoundError):
            if full.is_dir() and not full.is_symlink():
                _rmtree(full)
            else:
                full.unlink()
        self.index.forget_work(path)
        for d in reversed(parent_dirs(path)):
            try:
                (self.root / d).rmdir()
            except OSError:
                break


def _rmtree(p: Path) -> None:
    for child in p.iterdir():
        if child.is_dir() and not child.is_symlink():
            _rmtree(child)
        else:
            child.unlink()
    p.rmdir()


def ensure_clean(changes: dict[str, Entry | None], what: str) -> None:
    if changes:
        sample = ", ".join(sorted(changes)[:5])
        raise DirtyWorkingCopy(f"{what}: the working copy has changes outside a session ({sample})")


__all__ = ["DIR", "WorkState", "WorkTree", "ensure_clean", "find_root"]

"""A working copy: files on disk over a repository in a store, with an open session recording them.

Layout: ``<root>/.hif/config.json`` (store URL and repository), ``state.json`` (position, open
session), ``index`` (the stat cache) and, only while the files are being moved from one tree to
another, ``move.json`` (the move's journal, see :meth:`WorkTree.begin_move`). Several working copies can share one store (``hif workspace
add``); each has its own position and session, so several agents on one machine land concurrently.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat as stat_mod
from collections import deque
from pathlib import Path

from hif.errors import DirtyWorkingCopy, InvalidPath, NotARepository, WorkingCopyBusy
from hif.paths import RESERVED, check_path, parent_dirs
from hif.worktree.index import CLEAN, RACY_NS, Index, fast_candidates, verify_dirs_parallel

TYPE_CHECKING = False  # without importing typing, dataclasses or hif.objects (cbor2, zstandard):
if TYPE_CHECKING:  # `hif status` on a clean tree needs none of them
    from collections.abc import Iterator
    from typing import Any

    from hif.objects import Entry

META = RESERVED
JOURNAL = "move.json"  # in .hif/ from before a move's first file write until its state is saved
FILE, EXEC, LINK, DIR = "f", "x", "l", "d"  # hif.objects' entry kinds (a test checks they agree)


class WorkState:
    """``state.json``: the working copy's position and open session."""

    __slots__ = ("position", "session")

    def __init__(self, position: int = 0, session: str | None = None) -> None:
        self.position = position
        self.session = session

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WorkState):
            return NotImplemented
        return (self.position, self.session) == (other.position, other.session)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"WorkState(position={self.position!r}, session={self.session!r})"

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "session": self.session}


class Move:
    """The journal of a move (``.hif/move.json``), held with an exclusive ``flock`` by the process
    moving or finishing it: the kernel frees the lock when that process dies, however it dies, so
    another hif process tells a live move (lock held) from an interrupted one (lock free)."""

    __slots__ = ("doc", "fd", "path")

    def __init__(self, path: str, fd: int, doc: dict[str, Any]) -> None:
        self.path = path
        self.fd = fd
        self.doc = doc

    def done(self) -> None:
        """The move is complete (files, stat cache and state): remove the journal, then unlock."""
        if self.fd >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.release()

    def release(self) -> None:
        """Unlock and keep the journal: the move did not finish, the next hif command finishes it."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def default_author() -> str:
    """Who the events of this process are by: ``$HIF_AUTHOR``, else the user's login name."""
    author = os.environ.get("HIF_AUTHOR")
    if author:
        return author
    import getpass  # only without $HIF_AUTHOR (start-up time)

    return getpass.getuser()


def find_root(start: Path) -> Path:
    cur = start.absolute()
    for candidate in (cur, *cur.parents):
        if (candidate / META / "config.json").is_file():
            return candidate
    raise NotARepository(f"not a hif working copy (or any parent): {start}")


def refuse_working_path(path: str) -> None:
    """A working file hif may not record (a reserved or unrepresentable name) stops the command with
    an error naming it: skipping it would leave it out of a landing without a word."""
    try:
        check_path(path)
    except InvalidPath as e:
        raise InvalidPath(f"working file {path!r} cannot be recorded: {e} (rename or remove it)") from None


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

    # -- moves -------------------------------------------------------------------------------

    def move_pending(self) -> bool:
        """Whether a move's journal is there (one ``stat``: what every command pays)."""
        return os.path.lexists(f"{self.meta}/{JOURNAL}")

    def begin_move(self, doc: dict[str, Any]) -> Move:
        """Write the journal of a move before its first file changes: whole (a temporary file renamed
        into place), on disk (``fsync`` of the file and of ``.hif``), and locked by this process for
        as long as it moves the files."""
        import fcntl

        path = f"{self.meta}/{JOURNAL}"
        other = self.claim_move()  # another process's move: raises WorkingCopyBusy if it is running
        if other is not None:  # ... or interrupted since this process opened the working copy
            other.release()
            raise WorkingCopyBusy("an interrupted move of this working copy is pending; run the command "
                                  "again (any hif command finishes that move first)")
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a new file no one else has opened: granted at once
            view = memoryview((json.dumps(doc, sort_keys=True) + "\n").encode())
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            os.replace(tmp, path)
            dfd = os.open(self.meta, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)  # the rename itself on disk before any file of the move changes
            finally:
                os.close(dfd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return Move(path, fd, doc)

    def claim_move(self) -> Move | None:
        """The journal of an interrupted move, locked for this process to finish; None if there is
        none. Raises :class:`WorkingCopyBusy` if its move is still running in another process."""
        import fcntl

        path = f"{self.meta}/{JOURNAL}"
        while True:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except FileNotFoundError:
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise WorkingCopyBusy("another hif command is moving this working copy; "
                                      "run this one again when it has finished") from None
            try:
                current = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if not current:  # finished (and removed) while this process waited: look again
                os.close(fd)
                continue
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            try:
                doc = json.loads(b"".join(chunks))
            except ValueError:  # never written torn (renamed into place whole); if so, a report
                doc = None
            return Move(path, fd, doc if isinstance(doc, dict) else {})

    def settle(self, path: str, source: Entry | None, target: Entry | None) -> tuple[str, bytes | None]:
        """Where an interrupted move left ``path``, as (verdict, content of a regular file kept):
        ``"target"`` (done), ``"source"`` (still at the source entry, or missing: to be written) or
        ``"kept"`` (anything else, which only a user makes: never overwritten). Removes the temporary file a killed write
        left, and an empty directory in the way of a target file. Only a move's paths are looked at,
        so this hashes O(files the move changes)."""
        root = str(self.root)
        for d in parent_dirs(path):
            try:
                st = os.lstat(f"{root}/{d}")
            except FileNotFoundError:
                return ("target" if target is None else "source"), None
            if not stat_mod.S_ISDIR(st.st_mode):  # a file (a kept one) or a symlink in the way
                return ("target" if target is None else "kept"), None
        head, _, name = path.rpartition("/")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{root}/{head}/.{name}.hif-tmp" if head else f"{root}/.{name}.hif-tmp")
        full = f"{root}/{path}"
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            return ("target" if target is None else "source"), None
        if stat_mod.S_ISDIR(st.st_mode):
            if target is None:  # the directory of other files (the target's or the user's)
                return "target", None
            try:
                os.rmdir(full)  # emptied by the move: make way for the file
            except OSError:
                return "kept", None
            return "source", None
        if not (stat_mod.S_ISREG(st.st_mode) or stat_mod.S_ISLNK(st.st_mode)):
            return "kept", None
        entry, content = self.read_file(path, st)
        if entry is None:
            return "kept", None
        self.index.remember(path, st, entry)
        if entry == target:
            return "target", None
        if entry == source:
            return "source", None
        return "kept", content if stat_mod.S_ISREG(st.st_mode) else None

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

    def scan(self, keep: int = 1 << 62) -> dict[str, tuple[Entry, bytes | None]]:
        """Every working file as (entry, content-if-read); unreadable or special files are skipped.
        Contents are kept up to ``keep`` bytes in all, beyond that None (read again when needed), so
        scanning a large new tree holds its entries, not its contents."""
        idx = self.index
        out: dict[str, tuple[Entry, bytes | None]] = {}
        for path, dentry in self._walk(self.root, ""):
            try:
                st = dentry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not (stat_mod.S_ISREG(st.st_mode) or stat_mod.S_ISLNK(st.st_mode)):
                continue
            refuse_working_path(path)
            cached = idx.cached(path, st)
            if cached is not None:
                out[path] = (cached, None)
                continue
            entry, content = self.read_file(path, st)
            if entry is None:
                continue
            idx.remember(path, st, entry)
            keep -= len(content)
            out[path] = (entry, content if keep >= 0 else None)
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
        from hif.objects import Entry, blob_bytes, digest  # here: only a changed file needs them

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

        The hot path of ``hif status`` on a large unchanged tree. Directories the cache holds
        unchanged since it was loaded are checked whole against its packed rows (``verify_dirs``,
        split over processes on a large tree), without building a cache entry per path. The rest
        (new, changed, racy or unopenable directories, and everything when the cache was rebuilt)
        go file by file; only files the stat cache does not vouch for are read and hashed.
        """
        idx = self.index
        snap = idx.snapshot
        root = str(self.root)
        ok: set[int] = set()
        if snap is not None:
            cand = fast_candidates(idx)
            bad, learned = verify_dirs_parallel(root, snap, cand, idx.written_ns - RACY_NS)
            ok = set(cand).difference(bad)
            idx.learn_dirs(learned)
        out: dict[str, Entry | None] = {}
        seen: set[str] = set()
        failed: set[str] = set()  # directories that could not be opened: gone, or not a directory now
        known = snap.dir_id if snap is not None else {}
        # parents before children (a prefix sorts first), so a directory below one that is gone is
        # never read: it could only be reached through what replaced it, a symlink say
        todo = deque(sorted(d for d, i in known.items() if i not in ok))
        if "" not in known:
            todo.appendleft("")
        while todo:
            d = todo.popleft()
            if _below(d, failed):
                failed.add(d)
                continue
            if not self._scan_dir(d, known, out, seen, todo):
                continue
            failed.add(d)
            if not d:
                continue
            parent = d.rpartition("/")[0]
            if known.get(parent, -1) in ok:  # its listing changed: the name may be a file now
                ok.discard(known[parent])
                todo.appendleft(parent)
            with contextlib.suppress(OSError):
                self._check_file(d, os.lstat(f"{root}/{d}"), out, seen)
        if failed and snap is not None:  # everything below a directory that is gone is gone too
            ok = {i for i in ok if not _below(snap.dirs[i], failed)}
        if snap is not None:
            for i in ok:
                if not snap.flags[i] & CLEAN:
                    for path, e in snap.dir_entries(i):
                        if e.work != e.base:
                            out[path] = e.work
        for path, e in idx.iter_entries(ok):
            if e.base is not None and path not in seen:
                out[path] = None
        return out

    def _scan_dir(self, d: str, known: dict[str, int], out: dict[str, Entry | None], seen: set[str],
                  todo: deque[str]) -> bool:
        """Check directory ``d`` file by file, queueing new subdirectories; True if it cannot be
        opened as a directory (gone)."""
        root = str(self.root)
        try:
            fd = os.open(f"{root}/{d}" if d else root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            return True
        try:
            names = os.listdir(fd)
            prefix = d + "/" if d else ""
            for name in names:
                if not d and name == META:
                    continue
                path = prefix + name
                try:
                    st = os.lstat(name, dir_fd=fd)
                except FileNotFoundError:
                    continue
                if stat_mod.S_ISDIR(st.st_mode):
                    if path not in known:  # a cached directory is checked on its own
                        todo.append(path)
                    continue
                if path not in seen:  # seen: a directory that became this file, already checked
                    self._check_file(path, st, out, seen)
        finally:
            os.close(fd)
        return False

    def _check_file(self, path: str, st: os.stat_result, out: dict[str, Entry | None], seen: set[str]) -> None:
        """One file against its cached entry: trusted if the stat matches outside the racy window,
        else read and hashed (and remembered)."""
        idx = self.index
        e = idx.get(path)
        mode = st.st_mode
        if (
            e is not None
            and e.work is not None
            and e.stat == (st.st_size, st.st_mtime_ns, st.st_ino, mode)
            and st.st_mtime_ns < idx.written_ns - RACY_NS
        ):  # what Index.cached checks, inline
            seen.add(path)
            if e.work != e.base:
                out[path] = e.work
            return
        if not (stat_mod.S_ISREG(mode) or stat_mod.S_ISLNK(mode)):
            return
        refuse_working_path(path)
        entry, _ = self.read_file(path, st)
        if entry is None:
            return
        idx.remember(path, st, entry)
        seen.add(path)
        if entry != (e.base if e is not None else None):
            out[path] = entry

    # -- writing -----------------------------------------------------------------------------

    def _safe_parent(self, path: str) -> Path:
        """Create the parent directories of ``path``, refusing to write through a symlink."""
        return Path(self._make_parents(path))

    def _make_parents(self, path: str) -> str:
        check_path(path)  # whatever a stored tree says, a working copy never writes an unsafe path
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
        self.prune_dirs(path)

    def prune_dirs(self, path: str) -> None:
        """Remove the parent directories of ``path`` that are empty, deepest first."""
        for d in reversed(parent_dirs(path)):
            try:
                (self.root / d).rmdir()
            except OSError:
                break


def _below(d: str, dirs: set[str]) -> bool:
    """Whether ``d`` or one of its ancestors (the root ``""`` included) is in ``dirs``."""
    while True:
        if d in dirs:
            return True
        if not d:
            return False
        d = d.rpartition("/")[0]


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


__all__ = ["DIR", "Move", "WorkState", "WorkTree", "ensure_clean", "find_root"]

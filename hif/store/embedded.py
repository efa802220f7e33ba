"""The embedded store: a directory on local disk, safe for many processes at once.

Layout under the root: ``data/<key>`` holds values, ``tmp/`` holds writes in progress, ``locks/`` holds
one lock file per key written with a condition. Every write goes to ``tmp/`` first and becomes visible
in one atomic step, so a crash never leaves a torn value:
- put-if-absent: ``link(tmp, data/key)``, which fails atomically if the key exists;
- plain put and compare-and-swap: under an exclusive ``flock`` on the key's lock file (released by the
  kernel if the process dies), compare the current etag, then ``rename(tmp, data/key)``.
Etags are SHA-256 of the content, so an etag never repeats for different bytes (no ABA).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from hif.errors import NotFound, PreconditionFailed, StoreError
from hif.store.base import ObjectInfo, ObjectStore, check_key

_READ = 64 << 10  # the first read of a value: most objects fit
_READ_MORE = 1 << 20

MARKER = "hif-store.json"


_SYNCFS: list[Callable[[int], int] | None] = []  # loaded on first use: ctypes costs start-up time


def _syncfs(fd: int) -> bool:
    """``syncfs(fd)`` where libc has it (Linux); False if it is missing or failed."""
    if not _SYNCFS:
        import ctypes

        try:
            fn = ctypes.CDLL(None, use_errno=True).syncfs
            fn.argtypes = [ctypes.c_int]
        except (OSError, AttributeError):
            fn = None
        _SYNCFS.append(fn)
    fn = _SYNCFS[0]
    return fn is not None and fn(fd) == 0


def _order(entry: os.DirEntry[str]) -> str:
    """Sort a directory's entries as their keys sort: a directory 'a' holds keys 'a/...'."""
    return entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class EmbeddedStore(ObjectStore):
    """On-disk store. ``fsync=True`` makes every acknowledged write survive power loss."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = False, fsync: bool = True) -> None:
        self.root = Path(root).absolute()
        self.url = self.root.as_uri()
        self.fsync = fsync
        self._deferred = False  # inside deferred_sync(): per-write fsync skipped, create_all syncs
        self._data = self.root / "data"
        self._tmp = self.root / "tmp"
        self._locks = self.root / "locks"
        self._made_dirs: set[str] = set()
        # plain strings on the hot paths: pathlib costs more than the system calls themselves
        self._data_s, self._tmp_s, self._locks_s = str(self._data), str(self._tmp), str(self._locks)
        self._pid = os.getpid()
        if not (self.root / MARKER).exists():
            if not create:
                raise StoreError(f"no hif store at {self.root}")
            for d in (self._data, self._tmp, self._locks):
                d.mkdir(parents=True, exist_ok=True)
            marker = json.dumps({"format": "hif-embedded", "version": 1}).encode()
            tmp = self._tmp_path()
            Path(tmp).write_bytes(marker)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self.root / MARKER)
            os.unlink(tmp)

    # -- helpers -----------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return f"{self._data_s}/{check_key(key)}"

    def _tmp_path(self) -> str:
        return f"{self._tmp_s}/{self._pid}-{os.urandom(8).hex()}"

    def _write_tmp(self, data: bytes) -> str:
        tmp = self._tmp_path()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self.fsync and not self._deferred:
                os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def _ensure_parent(self, path: str) -> None:
        parent = os.path.dirname(path)
        if parent not in self._made_dirs:
            if not os.path.isdir(parent):  # a stat is far cheaper than a failing mkdir
                os.makedirs(parent, exist_ok=True)
            self._made_dirs.add(parent)

    def _sync_dir(self, path: str) -> None:
        if not self.fsync or self._deferred:
            return
        fd = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        name = hashlib.sha256(key.encode()).hexdigest()
        fd = os.open(f"{self._locks_s}/{name}", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _read(self, key: str) -> bytes:
        """The file's bytes through plain system calls: half the cost of ``open().read()`` (no
        buffered file object, no fstat to size the buffer), which a clone pays once per object."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no such key: {key}") from None
        except OSError as e:
            raise StoreError(f"cannot read {key}: {e.strerror}") from e
        try:
            data = os.read(fd, _READ)
            if len(data) == _READ:  # a large value: read on to the end
                chunks = [data]
                while more := os.read(fd, _READ_MORE):
                    chunks.append(more)
                data = b"".join(chunks)
            return data
        except IsADirectoryError:
            raise NotFound(f"no such key: {key}") from None
        except OSError as e:
            raise StoreError(f"cannot read {key}: {e.strerror}") from e
        finally:
            os.close(fd)

    def _syncfs(self) -> None:
        """Flush every dirty file and directory entry of the store's file system: one call for a whole
        batch instead of two fsyncs per write (``syncfs(2)`` on Linux, ``sync(2)`` elsewhere)."""
        fd = os.open(self._data_s, os.O_RDONLY)
        try:
            if not _syncfs(fd):
                os.sync()
        finally:
            os.close(fd)

    # -- interface ---------------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        return self._read(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """One after another: reading a file never waits on anything a second read could overlap."""
        return [await self.get_or_none(k) for k in keys]

    async def has_many(self, keys: Sequence[str]) -> list[bool]:
        """One ``stat`` per key: nothing read or hashed (``head`` reads the value for its etag)."""
        return [os.path.isfile(self._path(k)) for k in keys]

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        data = self._read(key)
        return data, _etag(data)

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            data = self._read(key)
        except NotFound:
            return None
        return ObjectInfo(key, _etag(data), len(data))

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        path = self._path(key)
        if if_none_match and not self._deferred and os.path.lexists(path):
            # fails now without writing (and syncing) a copy; link() below still decides any race.
            # A bulk writer (deferred sync) writes mostly new keys: the extra look-up would not pay
            raise PreconditionFailed(f"key exists: {key}")
        self._ensure_parent(path)
        tmp = self._write_tmp(data)
        try:
            if if_none_match:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise PreconditionFailed(f"key exists: {key}") from None
                except FileNotFoundError:
                    # the parent directory was removed by a concurrent delete; recreate once
                    self._made_dirs.discard(os.path.dirname(path))
                    self._ensure_parent(path)
                    try:
                        os.link(tmp, path)
                    except FileExistsError:
                        raise PreconditionFailed(f"key exists: {key}") from None
            else:
                with self._locked(key):
                    if if_match is not None:
                        try:
                            current = _etag(self._read(key))
                        except NotFound:
                            raise PreconditionFailed(f"key absent: {key}") from None
                        if current != if_match:
                            raise PreconditionFailed(f"key changed: {key}")
                    os.replace(tmp, path)
                    tmp = None
            self._sync_dir(path)
        except OSError as e:
            raise StoreError(f"cannot write {key}: {e.strerror}") from e
        finally:
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return _etag(data)

    def add_to_cache(self, key: str, data: bytes) -> None:
        """Create ``key`` unless it exists, writing in place: one open and one write instead of a
        temporary file and a link. Only for a cache whose reader verifies every value and fetches a
        torn one again (a clone's ``.hif/cache``): here a crash may leave a partial value behind."""
        path = self._path(key)
        self._ensure_parent(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return
        except OSError as e:
            raise StoreError(f"cannot write {key}: {e.strerror}") from e
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def deferred_sync(self) -> Iterator[None]:
        was = self._deferred
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = was

    async def create_all(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Put-if-absent in order at the cost of two file-system syncs for the whole batch: every
        value is written to ``tmp/``, one sync makes them (and every deferred write before them)
        durable, then each is linked into place in order, and a second sync makes the links durable.
        A crash or power loss never leaves a torn value: a key is linked only after its bytes are on
        disk. (The journal keeps the links of one directory in order, so a loss drops a suffix.)"""
        if not self.fsync:
            for key, data in items:
                await self.put(key, data, if_none_match=True)
            return
        staged: list[tuple[str, str, str]] = []
        was = self._deferred
        self._deferred = True
        try:
            for key, data in items:
                path = self._path(key)
                if os.path.lexists(path):
                    raise PreconditionFailed(f"key exists: {key}")
                self._ensure_parent(path)
                staged.append((key, path, self._write_tmp(data)))
            self._syncfs()
            for i, (key, path, tmp) in enumerate(staged):
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise PreconditionFailed(f"key exists: {key}") from None
                finally:
                    os.unlink(tmp)
                    staged[i] = (key, path, "")
            self._syncfs()
        except OSError as e:
            raise StoreError(f"cannot write {e.filename or 'a batch'}: {e.strerror}") from e
        finally:
            self._deferred = was
            for _key, _path, tmp in staged:
                if tmp:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        with self._locked(key):
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                return
            except OSError as e:
                raise StoreError(f"cannot delete {key}: {e.strerror}") from e

    def _walk(self, directory: Path, rel: str) -> Iterator[str]:
        try:
            entries = sorted(os.scandir(directory), key=_order)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            key = f"{rel}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), key + "/")
            else:
                yield key

    async def list_page(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> list[str]:
        if "/" in prefix:
            dir_part, name_part = prefix.rsplit("/", 1)
            base, rel = self._data / dir_part, dir_part + "/"
        else:
            name_part, base, rel = prefix, self._data, ""
        try:
            entries = sorted(
                (e for e in os.scandir(base) if e.name.startswith(name_part)), key=_order
            )
        except (FileNotFoundError, NotADirectoryError):
            return []
        out: list[str] = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                keys = self._walk(Path(entry.path), rel + entry.name + "/")
            else:
                keys = iter([rel + entry.name])
            for key in keys:
                if start_after is not None and key <= start_after:
                    continue
                out.append(key)
                if len(out) >= limit:
                    return out
        return out

    async def list_children(self, prefix: str) -> list[str]:
        if prefix and not prefix.endswith("/"):
            raise ValueError("list_children needs a prefix ending in '/'")
        directory = self._data / prefix.rstrip("/") if prefix else self._data
        try:
            return sorted(e.name for e in os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as e:
            if e.errno == errno.EACCES:
                raise StoreError(f"cannot list {prefix}: permission denied") from e
            raise

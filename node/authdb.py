"""The auth database: one SQLite file shared by stateless replicas through the object store.

The file's bytes live at the store key :data:`KEY` (zstd-compressed), versioned by the store's
ETag. Each replica keeps a local, read-only copy under ``cache_dir`` and checks the store at most
every ``max_age`` seconds; writes are optimistic: apply the change to the latest version and upload
with ``if_match`` (compare-and-swap), re-reading and re-applying on a lost race. So replicas need no
coordinator and no shared disk, and every write is serialised by the store's conditional put.

Local copies are named after their version (a hash of the ETag) and written atomically, so a cache
directory may even be shared by several processes (a server and ``micelio admin`` on one host).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sqlite_utils
import zstandard

from hif.errors import CorruptObject, PreconditionFailed, StoreError, TooLarge
from hif.objects import expand_bounded
from hif.store.base import ObjectStore

T = TypeVar("T")

KEY = "_node/auth.sqlite"
MAX_ATTEMPTS = 50
# The expanded database's size: it is stored data any replica (or whoever can write the bucket)
# writes, so reading it is bounded, while streaming; a write that would pass it is refused.
MAX_IMAGE = 256 << 20
_SQLITE_MAGIC = b"SQLite format 3\x00"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# A temp file older than this (seconds) was left by a crashed process and may be removed.
_TMP_MAX_AGE = 600.0


def create_schema(db: sqlite_utils.Database) -> None:
    """Create the tables and indexes if missing (idempotent, so every write can call it)."""
    db["users"].create(
        {"name": str, "password_hash": str, "admin": int, "created": float, "disabled": int},
        pk="name",
        not_null={"name", "password_hash"},
        defaults={"admin": 0, "disabled": 0},
        if_not_exists=True,
    )
    db["orgs"].create({"name": str, "created": float}, pk="name", if_not_exists=True)
    db["org_members"].create(
        {"org": str, "user": str, "role": str}, pk=("org", "user"), not_null={"role"}, if_not_exists=True
    )
    db["repos"].create(
        {"name": str, "private": int, "description": str, "owner": str, "created": float},
        pk="name",
        not_null={"owner"},
        defaults={"private": 0, "description": ""},
        if_not_exists=True,
    )
    db["repo_members"].create(
        {"repo": str, "user": str, "role": str}, pk=("repo", "user"), not_null={"role"}, if_not_exists=True
    )
    db["tokens"].create(
        {
            "id": str,
            "user": str,
            "hash": str,
            "name": str,
            "scope": str,
            "repo": str,
            "session": str,
            "created": float,
            "expires": float,
            "revoked": float,
            "login": int,  # 1: made by a log-in (POST /api/v1/login), capped per user
        },
        pk="id",
        not_null={"user", "hash", "scope"},
        defaults={"name": "", "login": 0},
        if_not_exists=True,
    )
    if "login" not in db["tokens"].columns_dict:  # a database from before the column
        db["tokens"].add_column("login", int, not_null_default=0)
    db["web_sessions"].create(  # browser sessions (the web UI's cookies name one by its secret)
        {"id": str, "user": str, "hash": str, "created": float, "expires": float, "revoked": float},
        pk="id",
        not_null={"user", "hash", "expires"},
        if_not_exists=True,
    )
    db["keys"].create(  # Ed25519 public keys (hex) that sign check attestations (hif check)
        {"user": str, "public_key": str, "created": float}, pk=("user", "public_key"), if_not_exists=True
    )
    db["tokens"].create_index(["hash"], unique=True, if_not_exists=True)
    db["tokens"].create_index(["user"], if_not_exists=True)
    db["web_sessions"].create_index(["hash"], unique=True, if_not_exists=True)
    db["web_sessions"].create_index(["user"], if_not_exists=True)
    db["org_members"].create_index(["user"], if_not_exists=True)
    db["repo_members"].create_index(["user"], if_not_exists=True)
    db["repos"].create_index(["owner"], if_not_exists=True)


def _encode(image: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(image)


def _too_large(writing: bool = False) -> StoreError:
    if writing:
        return StoreError(f"the change would make the auth database larger than the {MAX_IMAGE >> 20} MiB "
                          "limit (node/authdb.py MAX_IMAGE); nothing was written")
    return StoreError(f"the auth database at {KEY} is larger than the {MAX_IMAGE >> 20} MiB limit "
                      "(node/authdb.py MAX_IMAGE); restore a good version of it in the store")


def _decode(data: bytes) -> bytes:
    """Accept zstd or a raw SQLite image (an operator may upload one by hand), at most
    :data:`MAX_IMAGE` bytes expanded (refused while expanding: a bomb costs a few MiB)."""
    if data.startswith(_ZSTD_MAGIC):
        try:
            data = expand_bounded(data, MAX_IMAGE)
        except TooLarge:
            raise _too_large() from None
        except CorruptObject as e:
            raise CorruptObject(f"the auth database at {KEY} does not decompress: {e}") from None
    elif len(data) > MAX_IMAGE:
        raise _too_large()
    if not data.startswith(_SQLITE_MAGIC):
        raise CorruptObject(f"the auth database at {KEY} is not an SQLite file")
    return data


def _empty_image() -> bytes:
    conn = sqlite3.connect(":memory:")
    try:
        create_schema(sqlite_utils.Database(conn, execute_plugins=False))
        return conn.serialize()
    finally:
        conn.close()


class AuthDB:
    """A replica's view of the shared auth database; see the module docstring for the protocol.

    A :class:`sqlite_utils.Database` returned by :meth:`read` is read-only and stays valid until the
    next version is loaded, so use it synchronously (do not hold it across an ``await``); changes go
    through :meth:`write`.
    """

    def __init__(
        self,
        store: ObjectStore,
        cache_dir: Path,
        *,
        max_age: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.cache_dir = Path(cache_dir)
        self.max_age = max_age
        self.clock = clock
        self._db: sqlite_utils.Database | None = None
        self._path: Path | None = None
        self._etag: str | None = None  # None: the key did not exist at the last check
        self._checked: float | None = None
        self._checks = 0  # checks started so far, to coalesce concurrent refreshes
        self._lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()

    @property
    def etag(self) -> str | None:
        """Version of the local copy (None before the first write anywhere)."""
        return self._etag

    # -- reading --------------------------------------------------------------------------------

    async def read(self) -> sqlite_utils.Database:
        """A read-only database no older than ``max_age`` seconds (checks the store if needed)."""
        if self._db is None or self._stale():
            async with self._lock:
                if self._db is None or self._stale():  # another task may have just checked
                    await self._check()
        assert self._db is not None
        return self._db

    async def refresh(self) -> None:
        """Check the store now, e.g. on a token miss: the token may come from another replica.

        Concurrent callers share one check when it started after they asked (a burst of misses
        costs one ``head``, not one each).
        """
        seen = self._checks
        async with self._lock:
            if self._checks == seen:
                await self._check()

    def _stale(self) -> bool:
        return self._checked is None or self.clock() - self._checked >= self.max_age

    async def _check(self) -> None:
        """Compare the store's version with ours and load it when it changed."""
        self._checks += 1
        started = self.clock()
        info = await self.store.head(KEY)
        if info is None:
            if self._db is None or self._etag is not None:
                self._install(_empty_image(), None)
        elif (info.etag != self._etag or self._db is None) and not self._open_cached(info.etag):
            data, etag = await self.store.get_with_etag(KEY)
            if etag != self._etag or self._db is None:
                self._install(_decode(data), etag)
        self._checked = started

    # -- writing --------------------------------------------------------------------------------

    async def write(self, change: Callable[[sqlite_utils.Database], T]) -> T:
        """Apply ``change`` to the latest version in one transaction and publish it (CAS, retried).

        ``change`` may run several times (once per lost race) and must depend only on the database.
        An exception from it propagates and nothing is uploaded.
        """
        async with self._write_lock:
            for attempt in range(MAX_ATTEMPTS):
                if attempt == 0:
                    await self.read()
                else:
                    await self.refresh()
                base, etag = self._image(), self._etag
                image, result = self._apply(base, change)
                if len(image) > MAX_IMAGE:  # no replica could read it back
                    raise _too_large(writing=True)
                try:
                    if etag is None:
                        new_etag = await self.store.put(KEY, _encode(image), if_none_match=True)
                    else:
                        new_etag = await self.store.put(KEY, _encode(image), if_match=etag)
                except PreconditionFailed:
                    # someone else wrote first: re-read and re-apply after a short jittered pause
                    await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2 ** min(attempt, 6))))
                    continue
                async with self._lock:
                    self._install(image, new_etag)
                    self._checked = self.clock()
                return result
        raise StoreError(f"could not update the auth database: {MAX_ATTEMPTS} attempts lost to concurrent writers")

    @staticmethod
    def _apply(base: bytes, change: Callable[[sqlite_utils.Database], T]) -> tuple[bytes, T]:
        """Run ``change`` on an in-memory copy of ``base``; return the new image and its result."""
        conn = sqlite3.connect(":memory:")
        try:
            conn.deserialize(base)
            db = sqlite_utils.Database(conn, execute_plugins=False)
            create_schema(db)
            with db.atomic():
                result = change(db)
            return conn.serialize(), result
        finally:
            conn.close()

    def _image(self) -> bytes:
        # from the open connection, not the file: another process sharing the cache may prune it
        assert self._db is not None
        return self._db.conn.serialize()

    # -- local copies ---------------------------------------------------------------------------

    def _file_for(self, etag: str | None) -> Path:
        name = "empty" if etag is None else hashlib.sha256(etag.encode()).hexdigest()[:32]
        return self.cache_dir / f"auth-{name}.sqlite"

    def _open_cached(self, etag: str) -> bool:
        """Use a copy of version ``etag`` another run (or process) left in the cache, if any."""
        path = self._file_for(etag)
        try:
            db = self._open(path)
        except (OSError, sqlite3.Error):
            return False
        try:
            db.execute("select count(*) from tokens").fetchone()  # damaged or foreign: not ours
        except sqlite3.Error:
            db.close()
            return False
        self._swap(db, path, etag)
        return True

    def _install(self, image: bytes, etag: str | None) -> None:
        """Write ``image`` as the local copy of version ``etag`` (atomically) and open it."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self._file_for(etag)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".auth-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(image)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._swap(self._open(path), path, etag)
        self._prune()

    @staticmethod
    def _open(path: Path) -> sqlite_utils.Database:
        # immutable=1: the file never changes (a new version gets a new file), so no locking
        uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return sqlite_utils.Database(conn, execute_plugins=False)

    def _swap(self, db: sqlite_utils.Database, path: Path, etag: str | None) -> None:
        old = self._db
        self._db, self._path, self._etag = db, path, etag
        if old is not None:
            old.close()

    def _prune(self) -> None:
        """Keep one version in the cache: drop the others and orphaned temp files.

        Safe with a cache shared by processes: an open copy survives its unlink (POSIX), and a
        process that finds its version gone downloads it again. Temp files are left a while, as
        another process may still be writing one.
        """
        now = time.time()
        for p in self.cache_dir.glob("*auth-*"):
            if p == self._path:
                continue
            with contextlib.suppress(OSError):
                if not p.name.endswith(".tmp") or now - p.stat().st_mtime > _TMP_MAX_AGE:
                    p.unlink()

    def close(self) -> None:
        """Close the local copy (the store is the caller's to close)."""
        if self._db is not None:
            self._db.close()
            self._db = None
            self._checked = None

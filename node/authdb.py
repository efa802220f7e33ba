"""The auth database: SQLite on every replica, shared between stateless replicas through a log of
changes in the object store.

- **The log.** ``_node/auth/log/<position>`` (CBOR, one object per write): the rows a write changed,
  each as (table, primary key, the new row or None when deleted). A replica runs a change on its
  local copy at the latest position n and publishes the rows it changed with put-if-absent at
  n + 1, so the store serialises writers without a coordinator; a lost race brings the copy up to
  date and runs the change again, so a change's own checks (role ranks, caps) always see every
  earlier write. Concurrent writes on one replica share one entry (one put for all of them).
- **The checkpoint.** ``_node/auth.sqlite`` (zstd; a raw SQLite image is accepted too) holds the
  database at the position its ``auth_meta`` row names. A store from before the log holds its whole
  database there, which reads as position 0: an old store is migrated by simply being read. Every
  so often (see :func:`checkpoint_interval`) the replica that wrote an entry rewrites it with
  compare-and-swap, so a new replica downloads one image and replays a bounded tail.
- **The local index.** Each replica's own SQLite file in ``cache_dir``, built from the checkpoint
  and the entries after it, and brought up to date at most every ``max_age`` seconds (one listing
  of the log after its position) or at once on :meth:`AuthDB.refresh`. It is rebuildable, so it is
  never synced; a file whose process died is removed by the next replica that starts there.

So a write costs one small put (plus a listing and a read of what other replicas wrote since),
and a read nothing but a local query, whatever the number of users and tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import random
import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
import zstandard

from hif.errors import CorruptObject, HifError, NotFound, PreconditionFailed, StoreError, TooLarge
from hif.objects import decode, encode, expand_bounded
from hif.store.base import ObjectStore

T = TypeVar("T")

KEY = "_node/auth.sqlite"  # the checkpoint (before the log: the whole database)
LOG = "_node/auth/log/"  # one entry per write, LOG + 12-digit position
MAX_ATTEMPTS = 50
# The expanded database's size: it is stored data any replica (or whoever can write the bucket)
# writes, so reading it is bounded, while streaming; a write that would pass it is refused.
MAX_IMAGE = 256 << 20
MAX_ENTRY = 16 << 20  # one log entry as stored: a larger write is refused, a larger entry unread
MAX_BATCH = 256  # concurrent writes of one replica published in one entry
# For this long (seconds) after another replica's entry or a lost race, a replica that just wrote
# waits a round trip or two before its next entry, so that replicas catching up get positions too.
CONTENTION_MEMORY = 10.0
# Rewritten by a replica that lost a race: a replica that keeps winning, and so never reads
# another's entry, learns from its version changing that others are waiting.
CONTENDED = "_node/auth/contended"
CATCH_UP_WINDOW = 256  # log entries read at once while catching up
CHECKPOINT_MIN = 1000  # entries between two checkpoints at least ...
CHECKPOINT_BYTES_PER_ENTRY = 256  # ... and at least the checkpoint's size over this (amortised)
_SQLITE_MAGIC = b"SQLite format 3\x00"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# The tables the log carries (every table of the schema; the meta row is each copy's own).
TABLES = ("users", "orgs", "org_members", "repos", "repo_members", "tokens", "web_sessions", "keys")


def create_schema(db: sqlite_utils.Database) -> None:
    """Create the tables and indexes if missing (idempotent: run on every copy a replica opens)."""
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
    # forgetting dead tokens and sessions on each log-in: by index, not by a scan of them all
    db["tokens"].create_index(["expires"], if_not_exists=True)
    db["tokens"].create_index(["revoked"], if_not_exists=True)
    db["web_sessions"].create_index(["hash"], unique=True, if_not_exists=True)
    db["web_sessions"].create_index(["user"], if_not_exists=True)
    db["web_sessions"].create_index(["expires"], if_not_exists=True)
    db["web_sessions"].create_index(["revoked"], if_not_exists=True)
    db["org_members"].create_index(["user"], if_not_exists=True)
    db["repo_members"].create_index(["user"], if_not_exists=True)
    db["repos"].create_index(["owner"], if_not_exists=True)
    # the log position a copy holds, the digest of that entry, and whether its replica closed it
    db.execute("create table if not exists auth_meta (id integer primary key check (id = 1),"
               " position integer not null, digest text, clean integer not null default 0)")
    db.execute("insert or ignore into auth_meta (id, position) values (1, 0)")


def log_key(position: int) -> str:
    return f"{LOG}{position:012d}"


def checkpoint_interval(checkpoint_size: int) -> int:
    """Entries between checkpoints: so many that rewriting the image costs each write about
    :data:`CHECKPOINT_BYTES_PER_ENTRY` bytes of upload, whatever the database's size."""
    return max(CHECKPOINT_MIN, checkpoint_size // CHECKPOINT_BYTES_PER_ENTRY)


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


def _bad_entry(position: int, why: str) -> StoreError:
    """A log entry no replica can apply: the node cannot answer for accounts (503) until an
    operator restores it; nothing of it is applied."""
    return StoreError(f"the auth log entry {log_key(position)} {why}; restore it from a backup of the store")


class _Captured:
    """Which rows a change touched: temporary triggers note each row's primary key as it is
    inserted, updated or deleted (inside the change's savepoint, so a failed change notes nothing)."""

    def __init__(self, db: sqlite_utils.Database, pks: dict[str, list[str]]) -> None:
        self.db = db
        self.pks = pks
        conn = db.conn
        conn.execute("create temp table if not exists auth_changed (tbl text not null, pk text not null)")
        for table, cols in pks.items():
            new = "json_array(" + ", ".join(f'NEW."{c}"' for c in cols) + ")"
            old = "json_array(" + ", ".join(f'OLD."{c}"' for c in cols) + ")"
            note = "insert into auth_changed (tbl, pk) values ('{t}', {k});"
            conn.execute(f'create temp trigger if not exists "auth_ins_{table}" after insert on main."{table}" '
                         f"begin {note.format(t=table, k=new)} end")
            conn.execute(f'create temp trigger if not exists "auth_upd_{table}" after update on main."{table}" '
                         f"begin {note.format(t=table, k=old)} {note.format(t=table, k=new)} end")
            conn.execute(f'create temp trigger if not exists "auth_del_{table}" after delete on main."{table}" '
                         f"begin {note.format(t=table, k=old)} end")

    def rows(self) -> list[list[Any]]:
        """(table, primary key, the row now or None) for every row noted, in a fixed order."""
        out: list[list[Any]] = []
        conn = self.db.conn
        noted = conn.execute("select distinct tbl, pk from temp.auth_changed order by tbl, pk").fetchall()
        for table, pk_json in noted:
            pk = json.loads(pk_json)
            cols = self.pks[table]
            where = " and ".join(f'"{c}" = ?' for c in cols)
            cur = conn.execute(f'select * from main."{table}" where {where}', pk)
            found = cur.fetchone()
            row = None if found is None else dict(zip([d[0] for d in cur.description], found, strict=True))
            out.append([table, pk, row])
        return out


class AuthDB:
    """A replica's view of the shared auth database; see the module docstring for the protocol.

    A :class:`sqlite_utils.Database` returned by :meth:`read` is this replica's local copy: use it
    synchronously and only to read (do not hold it across an ``await``: entries are applied to it
    between awaits); changes go through :meth:`write`.
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
        self._lock_fd: int | None = None
        self._position = 0  # the last log entry applied to the local copy
        self._digest: str | None = None  # and that entry's digest
        self._pks: dict[str, list[str]] = {}
        self._columns: dict[str, set[str]] = {}
        self._captured: _Captured | None = None
        self._checkpoint: tuple[str | None, int, int] = (None, 0, 0)  # etag, position, size
        self._checkpointing: asyncio.Task[None] | None = None
        self._checked: float | None = None
        self._checks = 0  # checks started so far, to coalesce concurrent refreshes
        self._lock = asyncio.Lock()
        self._queue: list[tuple[Callable[[sqlite_utils.Database], Any], asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._others_wrote = -1e9  # when we last saw another replica write or wait (monotonic)
        self._contended_etag: str | None = None  # the version of CONTENDED we saw last
        self._last_put = 0.0  # how long our last published entry's put took

    @property
    def position(self) -> int:
        """The last log entry in the local copy (0: none since the checkpoint, or no write yet)."""
        return self._position

    # -- reading --------------------------------------------------------------------------------

    async def read(self) -> sqlite_utils.Database:
        """The local copy, no older than ``max_age`` seconds (lists the log if needed)."""
        if self._db is None or self._stale():
            async with self._lock:
                if self._db is None or self._stale():  # another task may have just checked
                    await self._check()
        assert self._db is not None
        return self._db

    async def refresh(self, window: int = 1) -> None:
        """Catch up now, e.g. on a token miss: the token may come from another replica.

        Concurrent callers share one check when it started after they asked (a burst of misses
        costs one listing, not one each).
        """
        seen = self._checks
        async with self._lock:
            if self._checks == seen:
                await self._check(window)

    def _stale(self) -> bool:
        return self._checked is None or self.clock() - self._checked >= self.max_age

    async def _check(self, window: int = 1) -> None:
        self._checks += 1
        started = self.clock()
        if self._db is None:
            await self._load()
        await self._catch_up(window)
        self._checked = started

    async def _load(self) -> None:
        """Open the local copy: a clean one a closed replica left in the cache when it still
        matches the store's log, or else one built from the checkpoint (empty when there is none)."""
        if self._adopt():
            data = await self.store.get_or_none(log_key(self._position)) if self._position else None
            if data is not None and _digest(data) == self._digest:
                info = await self.store.head(KEY)
                self._checkpoint = (None if info is None else info.etag, self._position,
                                    0 if info is None else info.size)
                return
            self._close_local(remove=True)  # another store's, or behind a rewritten log
        try:
            data, etag = await self.store.get_with_etag(KEY)
        except NotFound:
            data, etag = None, None
        image = _empty_image() if data is None else _decode(data)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.cache_dir / f"auth-{os.getpid()}-{secrets.token_hex(6)}.sqlite"
        with open(path, "wb") as f:
            f.write(image)
        self._open_local(path)
        self._checkpoint = (etag, self._position, 0 if data is None else len(data))

    def _adopt(self) -> bool:
        """Take over the most advanced copy no live replica holds and that its replica closed
        cleanly; remove every other orphan (a copy left by a crash may be torn)."""
        if not self.cache_dir.is_dir():
            return False
        best: tuple[int, Path] | None = None
        for p in self.cache_dir.glob("*auth-*"):
            with contextlib.suppress(OSError, sqlite3.Error):
                if not _unlocked(p):
                    continue  # a live replica's copy
                if p.name.endswith(".sqlite"):
                    conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
                    try:
                        position, clean = conn.execute("select position, clean from auth_meta where id = 1").fetchone()
                    finally:
                        conn.close()
                    if clean == 1 and (best is None or position > best[0]):
                        if best is not None:
                            best[1].unlink()
                        best = (int(position), p)
                        continue
                p.unlink()
        if best is None:
            return False
        try:
            self._open_local(best[1])
        except (OSError, sqlite3.Error):
            return False
        return True

    def _open_local(self, path: Path) -> None:
        """Open ``path`` as this replica's own copy (locked while open, marked not clean)."""
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours: never taken while we live
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            # a rebuildable copy: no syncs, the rollback journal (for savepoints) in memory
            conn.execute("pragma journal_mode = memory")
            conn.execute("pragma synchronous = off")
            db = sqlite_utils.Database(conn, execute_plugins=False)
            create_schema(db)
            conn.execute("update auth_meta set clean = 0 where id = 1")
            position, digest = conn.execute("select position, digest from auth_meta where id = 1").fetchone()
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self._close_local(remove=True)
        self._db, self._path, self._lock_fd = db, path, fd
        self._position, self._digest = int(position), digest
        self._pks = {t: db[t].pks for t in TABLES}
        self._columns = {t: set(db[t].columns_dict) for t in TABLES}
        self._captured = _Captured(db, self._pks)

    async def _catch_up(self, window: int = 1) -> None:
        """Apply every entry after the local position, in order: the next ``window`` positions
        read at once (one read when nothing is new), the window growing while they all exist."""
        while True:
            first = self._position + 1
            keys = [log_key(p) for p in range(first, first + window)]
            found = await self.store.get_many(keys)
            for position, data in enumerate(found, start=first):
                if data is None:
                    return
                if position <= self._position:
                    continue  # applied meanwhile (our own write, published while we read)
                if position != self._position + 1:
                    break
                self._apply_entry(position, data)
                self._others_wrote = time.monotonic()
            window = min(window * 4, CATCH_UP_WINDOW)

    def _apply_entry(self, position: int, data: bytes) -> None:
        """Apply one log entry to the local copy (validated: it is stored data) and note its position."""
        if len(data) > MAX_ENTRY:
            raise _bad_entry(position, f"is larger than {MAX_ENTRY} bytes")
        try:
            value = decode(data, max_items=len(data))
            changes = value["changes"]
            assert isinstance(changes, list)
        except Exception:  # cbor2 raises several types
            raise _bad_entry(position, "is not an auth log entry") from None
        db = self._db
        assert db is not None
        deletes: list[tuple[str, str, list[Any]]] = []
        inserts: list[tuple[str, str, list[Any]]] = []
        for c in changes:
            if not (isinstance(c, list) and len(c) == 3 and c[0] in self._pks):
                raise _bad_entry(position, "names an unknown table")
            table, pk, row = c
            cols = self._pks[table]
            if not (isinstance(pk, list) and len(pk) == len(cols)) or not (row is None or isinstance(row, dict)):
                raise _bad_entry(position, f"has a malformed {table} row")
            where = " and ".join(f'"{k}" = ?' for k in cols)
            deletes.append((table, f'delete from main."{table}" where {where}', pk))
            if row is not None:
                if not set(row) <= self._columns[table] or [row.get(k) for k in cols] != pk:
                    raise _bad_entry(position, f"has a malformed {table} row")
                names = list(row)
                sql = (f'insert into main."{table}" (' + ", ".join(f'"{n}"' for n in names) + ") values ("
                       + ", ".join("?" * len(names)) + ")")
                inserts.append((table, sql, [row[n] for n in names]))
        try:
            with db.atomic():
                for _, sql, params in deletes + inserts:
                    db.conn.execute(sql, params)
                db.conn.execute("update auth_meta set position = ?, digest = ? where id = 1", (position, _digest(data)))
        except sqlite3.Error as e:
            raise _bad_entry(position, f"cannot be applied ({e})") from None
        finally:
            db.conn.execute("delete from temp.auth_changed")  # replaying is no change of ours
        self._position, self._digest = position, _digest(data)

    # -- writing --------------------------------------------------------------------------------

    async def write(self, change: Callable[[sqlite_utils.Database], T]) -> T:
        """Apply ``change`` to the latest version in one transaction and publish it (retried on a
        lost race). ``change`` may run several times and must depend only on the database; an
        exception from it propagates and publishes nothing. Writes that arrive while another is
        being published share the next entry."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((change, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[:MAX_BATCH]
            del self._queue[:MAX_BATCH]
            try:
                await self._publish(batch)
            except Exception as e:  # settle every caller of the batch with it
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
            if self._queue and time.monotonic() - self._others_wrote < CONTENTION_MEMORY:
                # other replicas are writing too: let them take a position before our next one
                # (a replica that just wrote is a round trip ahead of those catching up with it)
                await asyncio.sleep(self._last_put * random.uniform(1.5, 3.0))

    async def _publish(self, batch: list[tuple[Callable[[sqlite_utils.Database], Any], asyncio.Future[Any]]]) -> None:
        for attempt in range(MAX_ATTEMPTS):
            if attempt == 0:
                await self.read()
            else:
                # what won the race (and what may follow it); and tell the winner we are waiting
                await asyncio.gather(self.refresh(window=2), self._mark_contended())
            batch = [(c, f) for c, f in batch if not f.done()]  # a caller gone: its change too
            outcomes, rows = self._run(batch)
            if not rows:  # nothing changed (or every change failed): nothing to publish
                _settle(outcomes)
                return
            entry = encode({"changes": rows})
            if len(entry) > MAX_ENTRY:
                if len(batch) > 1:  # one large change: publish it alone, the others apart
                    for one in batch:
                        await self._publish([one])
                    return
                raise StoreError(f"the change is larger than an auth log entry may be ({MAX_ENTRY} bytes); "
                                 "nothing was written")
            position = self._position + 1
            started = time.monotonic()
            try:
                _, contended = await asyncio.gather(
                    self.store.put(log_key(position), entry, if_none_match=True), self.store.head(CONTENDED)
                )
                if contended is not None and contended.etag != self._contended_etag:
                    if self._contended_etag is not None:  # (the first sight is old news)
                        self._others_wrote = time.monotonic()
                    self._contended_etag = contended.etag
            except PreconditionFailed:
                self._others_wrote = time.monotonic()
                # another replica wrote first: catch up and run the changes again, after a short
                # pause; not a growing one, which would leave a replica that lost a few races
                # behind the others for good
                await asyncio.sleep(random.uniform(0, 0.002))
                continue
            self._last_put = time.monotonic() - started
            if self._position == position - 1:  # (a read may have caught up with it meanwhile)
                self._apply_entry(position, entry)
            _settle(outcomes)
            self._maybe_checkpoint(position)
            return
        raise StoreError(f"could not update the auth database: {MAX_ATTEMPTS} attempts lost to concurrent writers")

    def _run(self, batch: list[tuple[Callable[[sqlite_utils.Database], Any], asyncio.Future[Any]]]
             ) -> tuple[list[tuple[asyncio.Future[Any], bool, Any]], list[list[Any]]]:
        """Run each change in its own savepoint on the local copy, note the rows they changed, and
        roll everything back (the copy changes only by applying entries)."""
        db, captured = self._db, self._captured
        assert db is not None and captured is not None
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        db.conn.execute("begin")
        try:
            db.conn.execute("delete from temp.auth_changed")
            for change, fut in batch:
                try:
                    with db.atomic():
                        result = change(db)
                        if self._size() > MAX_IMAGE:  # no replica could read it back
                            raise _too_large(writing=True)
                    outcomes.append((fut, True, result))
                except Exception as e:
                    outcomes.append((fut, False, e))
            rows = captured.rows()
        finally:
            db.conn.execute("rollback")
        return outcomes, rows

    async def _mark_contended(self) -> None:
        with contextlib.suppress(HifError):
            await self.store.put(CONTENDED, secrets.token_bytes(8))

    def _size(self) -> int:
        assert self._db is not None
        conn = self._db.conn
        return int(conn.execute("pragma page_count").fetchone()[0]) * int(conn.execute("pragma page_size").fetchone()[0])

    # -- checkpoints ----------------------------------------------------------------------------

    def _maybe_checkpoint(self, position: int) -> None:
        """After our write at ``position``: rewrite the checkpoint once enough entries followed it."""
        _, since, size = self._checkpoint
        if position - since < checkpoint_interval(size):
            return
        if self._checkpointing is not None and not self._checkpointing.done():
            return
        self._checkpointing = asyncio.create_task(self._write_checkpoint())

    async def _write_checkpoint(self) -> None:
        """The local copy (its position inside) as the new checkpoint, by compare-and-swap with the
        one we know: losing means another replica wrote one, which serves as well."""
        assert self._db is not None
        image, position = self._db.conn.serialize(), self._position
        etag = self._checkpoint[0]
        data = await asyncio.to_thread(_encode, image)
        try:
            if etag is None:
                etag = await self.store.put(KEY, data, if_none_match=True)
            else:
                etag = await self.store.put(KEY, data, if_match=etag)
            self._checkpoint = (etag, position, len(data))
        except PreconditionFailed:
            info = await self.store.head(KEY)
            self._checkpoint = (None if info is None else info.etag, position, 0 if info is None else info.size)
        except HifError:
            pass  # best effort: the log holds everything, the next write tries again

    # -- local files ----------------------------------------------------------------------------

    def _close_local(self, remove: bool = False) -> None:
        """Close the local copy; unless ``remove``, mark it clean and leave it for the next replica
        started on this cache (it is adopted if it still matches the store's log)."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                if not remove:
                    self._db.conn.execute("update auth_meta set clean = 1 where id = 1")
            self._db.close()
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._path is not None and remove:
            with contextlib.suppress(OSError):
                self._path.unlink()
        self._path = None

    def close(self) -> None:
        """Close the local copy, kept in the cache for the next run (the store is the caller's)."""
        for task in (self._writer, self._checkpointing):
            if task is not None and not task.done():
                task.cancel()
        self._close_local()
        self._checked = None


def _digest(entry: bytes) -> str:
    return hashlib.sha256(entry).hexdigest()[:32]


def _unlocked(path: Path) -> bool:
    """No live replica holds ``path`` (each holds an exclusive lock on its copy while open)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _settle(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in outcomes:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

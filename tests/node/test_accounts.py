"""The auth layer over real stores: AuthDB replication, accounts, tokens, roles and the login limiter.

Replicas are separate AuthDB instances (separate caches) over one store, as separate node
processes would be; the multi-process case runs real processes. Replication cases run against the
embedded store and S3 (moto over HTTP); the rest use the embedded store only.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import nacl.pwhash.argon2id as argon2id
import pytest
import sqlite_utils
import zstandard

from hif.errors import InvalidInput, NotFound, PreconditionFailed, StoreError
from hif.objects import encode
from hif.store import EmbeddedStore, ObjectStore
from node.accounts import FORGET_DEAD_TOKENS_AFTER, Accounts, hash_token
from node.authdb import KEY, LOG, AuthDB, _decode, log_key
from node.errors import Exists, PermissionDenied, RateLimited
from node.principal import ANONYMOUS, INHERIT, ROLES, SCOPES, Inherit, Principal, allowed, cap_token
from node.ratelimit import LoginLimiter

T = TypeVar("T")
MakeStore = Callable[[], ObjectStore]
FAST = {"opslimit": argon2id.OPSLIMIT_MIN, "memlimit": argon2id.MEMLIMIT_MIN}


class Clock:
    """A settable clock, for expiry and cache age."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run_on(store_factory: MakeStore, body: Callable[[ObjectStore], Awaitable[T]]) -> T:
    async def main() -> T:
        store = store_factory()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


@pytest.fixture
def embedded(tmp_path: Path) -> MakeStore:
    return lambda: EmbeddedStore(tmp_path / f"store-{uuid.uuid4().hex}", create=True)


def accounts_on(store: ObjectStore, cache: Path, **kw: Any) -> Accounts:
    clock = kw.pop("clock", None)
    db = AuthDB(store, cache, **kw)
    return Accounts(db, **FAST) if clock is None else Accounts(db, clock=clock, **FAST)


async def stored_image(store: ObjectStore) -> bytes:
    """Every byte the store holds of the auth database: the checkpoint (expanded) and the log."""
    parts = []
    data = await store.get_or_none(KEY)
    if data is not None:
        parts.append(_decode(data))
    async for k in store.iter_keys(LOG):
        parts.append(await store.get(k))
    return b"".join(parts)


async def auth_keys(store: ObjectStore) -> list[str]:
    return [k async for k in store.iter_keys("_node/")]


class Counting(ObjectStore):
    """Counts the calls and the bytes written through it (to show what a write costs)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}
        self.put_bytes = 0
        self.read: list[str] = []  # keys read

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def get(self, key: str) -> bytes:
        self._count("get")
        self.read.append(key)
        return await self.inner.get(key)

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        self._count("get")
        return await self.inner.get_with_etag(key)

    async def head(self, key: str) -> Any:
        self._count("head")
        return await self.inner.head(key)

    async def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        self._count("put")
        self.put_bytes += len(data)
        return await self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match)

    async def delete(self, key: str) -> None:
        self._count("delete")
        await self.inner.delete(key)

    async def list_page(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> list[str]:
        self._count("list")
        return await self.inner.list_page(prefix, start_after=start_after, limit=limit)

    async def list_children(self, prefix: str) -> list[str]:
        return await self.inner.list_children(prefix)


# -- AuthDB --------------------------------------------------------------------------------------


def test_read_creates_schema_locally_without_writing(embedded: MakeStore, tmp_path: Path) -> None:
    async def body(store: ObjectStore) -> None:
        db = AuthDB(store, tmp_path / "fresh" / "nested" / "cache")
        rdb = await db.read()
        assert set(rdb.table_names()) >= {"users", "orgs", "org_members", "repos", "repo_members", "tokens"}
        assert await auth_keys(store) == []
        assert (tmp_path / "fresh" / "nested" / "cache").is_dir()
        assert db.position == 0
        # the hash column is unique and indexed, members have composite keys
        assert rdb["tokens"].pks == ["id"]
        assert rdb["org_members"].pks == ["org", "user"]
        assert rdb["repo_members"].pks == ["repo", "user"]
        assert any(ix.unique and ix.columns == ["hash"] for ix in rdb["tokens"].indexes)

    run_on(embedded, body)


def test_write_publishes_one_log_entry_and_a_failed_change_publishes_nothing(
    embedded: MakeStore, tmp_path: Path
) -> None:
    async def body(store: ObjectStore) -> None:
        db = AuthDB(store, tmp_path / "c")
        n = await db.write(lambda d: d["orgs"].insert({"name": "x", "created": 1.0}).count)
        assert n == 1
        assert await auth_keys(store) == [log_key(1)] and db.position == 1

        def bad(d: sqlite_utils.Database) -> None:
            d["orgs"].insert({"name": "y", "created": 1.0})
            raise InvalidInput("nope")

        with pytest.raises(InvalidInput):
            await db.write(bad)
        assert await auth_keys(store) == [log_key(1)]
        assert [r["name"] for r in (await db.read())["orgs"].rows] == ["x"]
        # what the store holds is what another replica reads
        other = AuthDB(store, tmp_path / "d")
        assert [r["name"] for r in (await other.read())["orgs"].rows] == ["x"]

    run_on(embedded, body)


def test_lost_races_are_bounded(embedded: MakeStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(store: ObjectStore) -> None:
        db = AuthDB(store, tmp_path / "c")
        calls = 0

        async def always_lose(key: str, *a: Any, **kw: Any) -> str:
            nonlocal calls
            calls += key.startswith(LOG)  # (not the note to the winner that we wait)
            raise PreconditionFailed("lost")

        monkeypatch.setattr(store, "put", always_lose)
        monkeypatch.setattr("node.authdb.random.uniform", lambda a, b: 0.0)
        with pytest.raises(StoreError, match="50 attempts"):
            await db.write(lambda d: d["orgs"].insert({"name": "x", "created": 1.0}))
        assert calls == 50

    run_on(embedded, body)


def test_a_closed_copy_is_reused_from_the_cache_and_a_torn_or_foreign_one_is_not(
    embedded: MakeStore, tmp_path: Path
) -> None:
    """Each open replica holds its own locked copy; a copy closed cleanly is taken over by the next
    replica on that cache (no download) when it still matches the store's log; a copy left by a
    crash, or one of another store, is rebuilt from the store."""

    async def body(store: ObjectStore) -> None:
        cache = tmp_path / "shared-cache"
        a = AuthDB(store, cache)
        for i in range(5):
            await a.write(lambda d, i=i: d["orgs"].insert({"name": f"o{i}", "created": 1.0}))
        live = AuthDB(store, cache)  # a second live replica on the same cache: its own copy
        assert (await live.read())["orgs"].count == 5
        assert len([p for p in cache.iterdir() if p.name.endswith(".sqlite")]) == 2
        a.close()
        live.close()

        counting = Counting(store)
        b = AuthDB(counting, cache)
        assert (await b.read())["orgs"].count == 5
        assert len([p for p in cache.iterdir() if p.name.endswith(".sqlite")]) == 1  # one taken, one gone
        # the last entry (to check the copy) and the next (nothing new): no checkpoint, no rebuild
        assert counting.read == [log_key(5), log_key(6)]
        b.close()

        # torn: a copy not marked clean (its process died) is removed and rebuilt
        (copy,) = [p for p in cache.iterdir() if p.name.endswith(".sqlite")]
        with sqlite3.connect(copy) as conn:
            conn.execute("update auth_meta set clean = 0")
            conn.execute("delete from orgs")
        conn.close()
        c = AuthDB(store, cache)
        assert (await c.read())["orgs"].count == 5
        c.close()

        # foreign: a clean copy of another store's log is not trusted
        other = embedded()
        o = AuthDB(other, cache)
        assert (await o.read())["orgs"].count == 0
        await o.write(lambda d: d["orgs"].insert({"name": "elsewhere", "created": 1.0}))
        o.close()
        d = AuthDB(store, cache)
        assert sorted(r["name"] for r in (await d.read())["orgs"].rows) == [f"o{i}" for i in range(5)]
        d.close()
        await other.close()

    run_on(embedded, body)


def test_read_is_at_most_max_age_stale(embedded: MakeStore, tmp_path: Path) -> None:
    async def body(store: ObjectStore) -> None:
        clock = Clock(0.0)
        a = AuthDB(store, tmp_path / "a")
        b = AuthDB(store, tmp_path / "b", max_age=5.0, clock=clock)
        assert (await b.read())["orgs"].count == 0
        await a.write(lambda d: d["orgs"].insert({"name": "x", "created": 1.0}))
        clock.now = 4.9
        assert (await b.read())["orgs"].count == 0  # still within max_age: no store round trip
        clock.now = 5.0
        assert (await b.read())["orgs"].count == 1

    run_on(embedded, body)


def test_two_replicas_token_works_at_once_and_concurrent_writes_all_kept(
    make_store: MakeStore, tmp_path: Path
) -> None:
    async def body(store: ObjectStore) -> None:
        a = accounts_on(store, tmp_path / f"a-{uuid.uuid4().hex}")
        b = accounts_on(store, tmp_path / f"b-{uuid.uuid4().hex}", max_age=3600.0)
        await b.db.read()  # b has a copy, fresh for an hour
        await a.create_user("alice", "pw-alice")
        _, secret = await a.create_token("alice", scope="write")
        p = await b.authenticate(secret)  # a miss refreshes once
        assert p is not None and p.user == "alice" and p.scope == "write"

        # concurrent writers on both replicas: every change is kept
        async def add(acc: Accounts, tag: str, i: int) -> str:
            token_id, _ = await acc.create_token("alice", scope="read", name=f"{tag}{i}")
            return token_id

        ids = await asyncio.gather(*[add(acc, tag, i) for i in range(12) for acc, tag in ((a, "a"), (b, "b"))])
        await a.db.refresh()
        await b.db.refresh()
        for acc in (a, b):
            names = {t["name"] for t in await acc.list_tokens("alice")}
            assert names >= {f"a{i}" for i in range(12)} | {f"b{i}" for i in range(12)}
            assert {t["id"] for t in await acc.list_tokens("alice")} >= set(ids)
        assert a.db.position == b.db.position

    run_on(make_store, body)


# -- the auth log: cost per write, batching, checkpoints, old stores, hostile entries -------------


def test_a_write_costs_the_same_with_few_and_with_many_tokens(embedded: MakeStore, tmp_path: Path) -> None:
    """Creating a token publishes the rows it changed, not the database: the bytes written and the
    store calls of one token creation do not grow with the tokens already held (issue 20)."""

    async def body(store: ObjectStore) -> None:
        counting = Counting(store)
        # fresh for an hour: no freshness check falls inside one measurement and not the other
        acc = accounts_on(counting, tmp_path / "c", max_age=3600.0)
        await acc.create_user("alice", "pw-alice")

        async def one_token() -> tuple[int, int]:
            calls, written = sum(counting.calls.values()), counting.put_bytes
            await acc.create_token("alice", scope="read", name="probe")
            return sum(counting.calls.values()) - calls, counting.put_bytes - written

        few = await one_token()
        await acc.db.write(lambda db: db["tokens"].insert_all(
            {"id": f"t{i}", "user": "alice", "hash": f"{i:064x}", "scope": "read", "created": 1.0}
            for i in range(3000)))
        many = await one_token()
        assert (await acc.db.read())["tokens"].count > 3000
        assert many[0] <= few[0] and many[1] <= few[1] + 64, (few, many)
        assert few[1] < 1024  # a token's rows, not a database image

    run_on(embedded, body)


def test_concurrent_writes_of_a_replica_share_log_entries(embedded: MakeStore, tmp_path: Path) -> None:
    """Writes arriving while one is published go out together in the next entry; a failing one
    among them fails alone."""

    async def body(store: ObjectStore) -> None:
        a = accounts_on(store, tmp_path / "a")
        await a.create_user("alice", "pw-alice")

        async def make(i: int) -> str:
            if i == 7:
                return (await a.create_token("nobody", scope="read"))[0]  # no such user: refused
            return (await a.create_token("alice", scope="read", name=f"n{i}"))[0]

        results = await asyncio.gather(*(make(i) for i in range(40)), return_exceptions=True)
        assert isinstance(results[7], NotFound)
        assert all(isinstance(r, str) for i, r in enumerate(results) if i != 7)
        entries = len([k async for k in store.iter_keys(LOG)])
        assert 1 <= entries < 40 // 2, entries  # (the user, then a few shared entries)
        b = accounts_on(store, tmp_path / "b")
        names = {t["name"] for t in await b.list_tokens("alice")}
        assert names == {f"n{i}" for i in range(40) if i != 7}

    run_on(embedded, body)


def test_a_checkpoint_is_written_and_a_new_replica_replays_only_what_follows_it(
    embedded: MakeStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("node.authdb.CHECKPOINT_MIN", 5)

    async def body(store: ObjectStore) -> None:
        a = accounts_on(store, tmp_path / "a")
        await a.create_user("alice", "pw-alice")
        for i in range(12):
            await a.create_token("alice", scope="read", name=f"n{i}")
        for _ in range(50):  # written in the background after the 5th entry
            if await store.head(KEY) is not None:
                break
            await asyncio.sleep(0.01)
        with sqlite_utils.Database(memory=True) as mem:
            mem.conn.deserialize(_decode(await store.get(KEY)))
            held = mem.execute("select position from auth_meta").fetchone()[0]
            assert held >= 5 and mem["tokens"].count == held - 1
        counting = Counting(store)
        b = accounts_on(counting, tmp_path / "b")
        assert len(await b.list_tokens("alice")) == 12
        assert b.db.position == 13
        # the checkpoint, then only the entries after it
        assert [k for k in counting.read if k.startswith(LOG)][: 13 - held] == [log_key(p) for p in range(held + 1, 14)]
        assert not {log_key(p) for p in range(1, held + 1)} & set(counting.read)

    run_on(embedded, body)


def _old_image() -> bytes:
    """An auth database as a node before the log stored it: no auth_meta, no login column."""
    conn = sqlite3.connect(":memory:")
    conn.executescript(
        "create table users (name text primary key, password_hash text not null, admin integer default 0,"
        " created float, disabled integer default 0);"
        "create table tokens (id text primary key, user text not null, hash text not null, name text default '',"
        " scope text not null, repo text, session text, created float, expires float, revoked float);"
        "create unique index idx_tokens_hash on tokens (hash);"
    )
    conn.execute("insert into users values ('old', 'x', 0, 1.0, 0)")
    conn.execute("insert into tokens values ('t-old', 'old', ?, 'kept', 'write', null, null, 1.0, null, null)",
                 (hash_token("mcl_" + "o" * 32),))
    conn.commit()
    image = conn.serialize()
    conn.close()
    return image


@pytest.mark.parametrize("packing", ["zstd", "raw"])
def test_an_old_stores_database_is_read_as_the_checkpoint_and_left_in_place(
    embedded: MakeStore, tmp_path: Path, packing: str
) -> None:
    """A store written before the log holds the whole database at KEY: a replica reads it (its
    tokens work), writes go to the log on top of it, and KEY is not rewritten by a write."""

    async def body(store: ObjectStore) -> None:
        image = _old_image()
        data = zstandard.ZstdCompressor().compress(image) if packing == "zstd" else image
        await store.put(KEY, data)
        a = accounts_on(store, tmp_path / "a")
        p = await a.authenticate("mcl_" + "o" * 32)
        assert p is not None and p.user == "old" and p.scope == "write"
        await a.create_token("old", scope="read", name="new")
        assert await store.get(KEY) == data
        b = accounts_on(store, tmp_path / "b")
        assert {t["name"] for t in await b.list_tokens("old")} == {"kept", "new"}

    run_on(embedded, body)


@pytest.mark.parametrize(
    "entry",
    [
        b"not cbor at all \xff",
        "not-a-map",
        {"changes": "no"},
        {"changes": [["sqlite_master", ["x"], None]]},
        {"changes": [["users", ["eve"], {"name": "eve", 'password_hash" text); drop table users; --': "x"}]]},
        {"changes": [["users", ["eve"], {"name": "mallory", "password_hash": "x"}]]},
        {"changes": [["users", ["eve", "extra"], None]]},
        {"changes": [["users", ["eve"], ["name", "eve"]]]},
        "oversized",
    ],
    ids=["not-cbor", "not-a-map", "changes-not-a-list", "unknown-table", "column-injection",
         "key-not-the-row", "key-arity", "row-not-a-map", "oversized"],
)
def test_a_hostile_log_entry_is_refused_whole_with_a_clear_error(
    embedded: MakeStore, tmp_path: Path, entry: Any
) -> None:
    """Whoever can write the bucket can write a log entry: one no replica should apply is refused
    (503, naming the entry), before any of it is applied, and the copy keeps what it held."""
    from node.authdb import MAX_ENTRY

    async def body(store: ObjectStore) -> None:
        a = accounts_on(store, tmp_path / "a")
        await a.create_user("alice", "pw-alice")
        if entry == "oversized":
            data = encode({"changes": [["orgs", ["o"], {"name": "o", "created": 1.0}]], "pad": bytes(MAX_ENTRY)})
        else:
            data = entry if isinstance(entry, bytes) else encode(entry)
        await store.put(log_key(2), data)
        b = AuthDB(store, tmp_path / "b")
        with pytest.raises(StoreError, match=r"auth log entry _node/auth/log/000000000002"):
            await b.read()
        with pytest.raises(StoreError, match="auth log entry"):
            await a.db.refresh()
        with sqlite3.connect(next((tmp_path / "a").glob("auth-*.sqlite"))) as conn:
            assert conn.execute("select name from users").fetchall() == [("alice",)]
        conn.close()
        assert a.db.position == 1

    run_on(embedded, body)


_WORKER = textwrap.dedent(
    """
    import asyncio, os, sys
    from pathlib import Path
    import nacl.pwhash.argon2id as argon2id
    from hif.store import open_store
    from node.accounts import Accounts
    from node.authdb import AuthDB

    async def main(url, cache, tag, n):
        store = open_store(url)
        try:
            acc = Accounts(AuthDB(store, Path(cache)), opslimit=argon2id.OPSLIMIT_MIN,
                           memlimit=argon2id.MEMLIMIT_MIN)
            for i in range(n):
                await acc.create_token("alice", scope="read", name=f"{tag}-{i}")
                await acc.create_org(f"{tag}-org-{i}", "alice")
        finally:
            await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
    """
)


def store_env(url: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Environment for a process that opens ``url`` (S3: the moto server the fixture started)."""
    env = dict(os.environ)
    if url.startswith("s3://"):
        env.update(AWS_ENDPOINT_URL=request.getfixturevalue("s3_server"), AWS_ACCESS_KEY_ID="test",
                   AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
    return env


@pytest.mark.slow
def test_two_processes_write_concurrently_nothing_lost(
    make_store: MakeStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    n = 10
    store = make_store()  # kept open across the processes' run; each process opens its own

    async def setup() -> None:
        try:
            await accounts_on(store, tmp_path / "setup").create_user("alice", "pw")
        finally:
            await store.close()  # connections belong to this event loop; the check opens new ones

    asyncio.run(setup())
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = store_env(store.url, request)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), store.url, str(tmp_path / f"cache-{tag}"), tag, str(n)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for tag in ("p", "q")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err

    async def check() -> None:
        try:
            acc = accounts_on(store, tmp_path / "check")
            names = {t["name"] for t in await acc.list_tokens("alice")}
            assert names == {f"{t}-{i}" for t in "pq" for i in range(n)}
            db = await acc.db.read()
            assert {r["name"] for r in db["orgs"].rows} == {f"{t}-org-{i}" for t in "pq" for i in range(n)}
        finally:
            await store.close()

    asyncio.run(check())


# -- users and passwords ---------------------------------------------------------------------------


def test_users_and_passwords(embedded: MakeStore, tmp_path: Path) -> None:
    async def body(store: ObjectStore) -> None:
        acc = accounts_on(store, tmp_path / "c")
        generated = await acc.create_user("alice")
        assert len(generated) >= 20
        assert await acc.create_user("bob", "correct horse", admin=True) == "correct horse"
        assert await acc.check_password("alice", generated)
        assert await acc.check_password("bob", "correct horse")
        assert not await acc.check_password("bob", "wrong")
        assert not await acc.check_password("nobody", "correct horse")
        # an argon2id hash is stored, never the password
        image = await stored_image(store)
        assert b"correct horse" not in image and generated.encode() not in image
        row = (await acc.db.read())["users"].get("bob")
        assert row["password_hash"].startswith("$argon2id$")
        assert await acc.get_user("bob") == {"name": "bob", "admin": True, "created": row["created"],
                                             "disabled": False}
        assert "password_hash" not in (await acc.get_user("alice") or {})
        assert [u["name"] for u in await acc.list_users()] == ["alice", "bob"]
        assert await acc.get_user("nobody") is None

        await acc.set_password("alice", "new one")
        assert await acc.check_password("alice", "new one")
        assert not await acc.check_password("alice", generated)
        with pytest.raises(NotFound):
            await acc.set_password("nobody", "x")
        with pytest.raises(InvalidInput):
            await acc.set_password("alice", "")

        with pytest.raises(Exists):
            await acc.create_user("alice")
        with pytest.raises(Exists):
            await acc.create_user("ALICE")  # one namespace, case-insensitively

        await acc.set_disabled("alice")
        assert not await acc.check_password("alice", "new one")

    run_on(embedded, body)


def test_default_password_cost_is_interactive(embedded: MakeStore, tmp_path: Path) -> None:
    async def body(store: ObjectStore) -> None:
        acc = Accounts(AuthDB(store, tmp_path / "c"))
        await acc.create_user("alice", "pw")
        row = (await acc.db.read())["users"].get("alice")
        assert f"m={argon2id.MEMLIMIT_INTERACTIVE // 1024},t={argon2id.OPSLIMIT_INTERACTIVE}" in row["password_hash"]
        assert await acc.check_password("alice", "pw")

    run_on(embedded, body)


@pytest.mark.parametrize(
    "name",
    ["", "-alice", ".alice", "a b", "a/b", "ü", "x" * 40, "alice\n", "a:b"],
)
def test_bad_names_are_refused(embedded: MakeStore, tmp_path: Path, name: str) -> None:
    async def body(store: ObjectStore) -> None:
        acc = accounts_on(store, tmp_path / "c")
        await acc.create_user("owner", "pw")
        with pytest.raises(InvalidInput):
            await acc.create_user(name, "pw")
        with pytest.raises(InvalidInput):
            await acc.create_org(name, "owner")

    run_on(embedded, body)


def test_good_names(embedded: MakeStore, tmp_path: Path) -> None:
    async def body(store: ObjectStore) -> None:
        acc = accounts_on(store, tmp_path / "c")
        for name in ["a", "_x", "9lives", "a.b-c_d", "x" * 39]:
            await acc.create_user(name, "pw")
        assert len(await acc.list_users()) == 5

    run_on(embedded, body)


def test_users_and_orgs_share_one_namespace(embedded: MakeStore, tmp_path: Path) -> None:
    async def body(store: ObjectStore) -> None:
        acc = accounts_on(store, tmp_path / "c")
        await acc.create_user("alice", "pw")
        await acc.create_org("acme", "alice")
        with pytest.raises(Exists):
            await acc.create_org("alice", "alice")
        with pytest.raises(Exists):
            await acc.create_user("acme", "pw")
        with pytest.raises(Exists):
            await acc.create_org("Acme", "alice")
        with pytest.raises(NotFound):
            await acc.create_org("other", "nobody")
        org = await acc.get_org("acme")
        assert org is not None and org["members"] == {"alice": "owner"}
        assert await acc.get_org("alice") is None

    run_on(embedded, body)


# -- tokens ----------------------------------------------------------------------------------------


def test_tokens_store_only_a_hash_and_authenticate(embedded: MakeStore, tmp_path: Path) -> None:
    async def body(store: ObjectStore) -> None:
        clock = Clock()
        acc = accounts_on(store, tmp_path / "c", clock=clock)
        await acc.create_user("alice", "pw")
        await acc.create_user("root", "pw", admin=True)
        token_id, secret = await acc.create_token("alice", scope="write", name="laptop")
        assert secret.startswith("mcl_") and len(secret) == 36
        image = await stored_image(store)
        assert secret.encode() not in image and secret[4:].encode() not in image
        assert hash_token(secret).encode() in image
        p = await acc.authenticate(secret)
        assert p == Principal("alice", admin=False, scope="write", token_id=token_id, expires=None)
        root = await acc.authenticate((await acc.create_token("root", scope="admin"))[1])
        assert root is not None and root.admin and root.scope == "admin"

        tokens = await acc.list_tokens("alice")
        assert tokens == [{"id": token_id, "name": "laptop", "scope": "write", "repo": None, "session": None,
                           "created": clock.now, "expires": None, "revoked": None}]
        assert await acc.list_tokens("nobody") == []

        for bad in ["", "mcl_", secret[:-1], secret + "x", "xyz_" + secret[4:], secret[:-1] + "A"]:
            if bad != secret:
                assert await acc.authenticate(bad) is None

        with pytest.raises(InvalidInput):
            await acc.create_token("alice", scope="repo:write")
        with pytest.raises(InvalidInput):
            await acc.create_token("alice", scope="root")
        with pytest.raises(NotFound):
            await acc.create_token("nobody", scope="read")
        with pytest.raises(InvalidInput):
            await acc.create_token("alice", scope="write", session="s1")  # an agent token needs its repo
        with pytest.raises(InvalidInput):
            await acc.create_token("alice", scope="read", repo="not-a-repo")
        with pytest.raises(InvalidInput):
            await acc.create_token("alice", scope="read", expires_in=0)

    run_on(embedded, body)


def test_token_expiry_revocation_binding_and_disabled_users(embedded: MakeStore, tmp_path: Path) -> None:
    async def body(store: ObjectStore) -> None:
        clock = Clock()
        acc = accounts_on(store, tmp_path / "c", clock=clock)
        for name in ("alice", "bob"):
            await acc.create_user(name, "pw")
        await acc.create_user("root", "pw", admin=True)
        start = clock.now
        _, short = await acc.create_token("alice", scope="read", expires_in=60)
        clock.now = start + 59.9
        p = await acc.authenticate(short)
        assert p is not None and p.expires == start + 60
        clock.now = start + 60
        assert await acc.authenticate(short) is None

        bound_id, bound = await acc.create_token("alice", scope="write", repo="acme/api", session="S1")
        p = await acc.authenticate(bound)
        assert p is not None and (p.repo, p.session, p.scope) == ("acme/api", "S1", "write")

        # revoking: someone else's token looks unknown; the owner and admins may; the operator may
        alice = await acc.authenticate(bound)
        bob = Principal("bob", scope="write")
        with pytest.raises(NotFound):
            await acc.revoke_token(bound_id, by=bob)
        assert await acc.authenticate(bound) is not None
        await acc.revoke_token(bound_id, by=alice)
        assert await acc.authenticate(bound) is None
        await acc.revoke_token(bound_id, by=alice)  # idempotent
        (revoked,) = [t for t in await acc.list_tokens("alice") if t["id"] == bound_id]
        assert revoked["revoked"] == clock.now

        other_id, other = await acc.create_token("bob", scope="read")
        await acc.revoke_token(other_id, by=Principal("root", admin=True, scope="admin"))
        assert await acc.authenticate(other) is None
        third_id, third = await acc.create_token("bob", scope="read")
        await acc.revoke_token(third_id)
        assert await acc.authenticate(third) is None
        with pytest.raises(NotFound):
            await acc.revoke_token("no-such-token")

        _, bobs = await acc.create_token("bob", scope="read")
        assert await acc.authenticate(bobs) is not None
        # dead tokens are listed for a while, then forgotten (the shared file must not grow forever)
        assert {t["id"] for t in await acc.list_tokens("bob")} >= {other_id, third_id}
        clock.now += FORGET_DEAD_TOKENS_AFTER + 1
        await acc.create_token("alice", scope="read")
        assert other_id not in {t["id"] for t in await acc.list_tokens("bob")}
        assert len(await acc.list_tokens("alice")) == 1
        assert await acc.authenticate(bobs) is not None
        await acc.set_disabled("bob")
        assert await acc.authenticate(bobs) is None
        await acc.set_disabled("bob", False)
        assert await acc.authenticate(bobs) is not None

    run_on(embedded, body)


# -- roles and permissions -------------------------------------------------------------------------

ROLE_MATRIX: list[tuple[str | None, str, str | None]] = [
    # (user, repo, role_on)
    (None, "alice/pub", "reader"),
    (None, "alice/secret", None),
    (None, "acme/api", None),
    (None, "acme/site", "reader"),
    (None, "nobody/none", None),
    ("alice", "alice/pub", "owner"),
    ("alice", "alice/secret", "owner"),
    ("alice", "acme/api", "owner"),  # org owner
    ("root", "alice/secret", "owner"),  # site admin
    ("root", "acme/api", "owner"),
    ("root", "nobody/none", None),  # unregistered: nothing to own
    ("maint", "acme/api", "maintainer"),
    ("maint", "acme/site", "maintainer"),
    ("maint", "alice/secret", None),
    ("carol", "acme/api", "writer"),  # repository member
    ("carol", "acme/site", "reader"),  # public
    ("dave", "acme/api", "writer"),  # org reader, repository writer: the higher wins
    ("dave", "acme/site", "reader"),
    ("erin", "acme/api", "maintainer"),  # org maintainer, repository reader: the higher wins
    ("eve", "alice/secret", None),
    ("eve", "alice/pub", "reader"),
    ("ghost", "alice/pub", "reader"),  # unknown user: like anonymous
    ("ghost", "alice/secret", None),
]


async def _world(acc: Accounts) -> None:
    for name in ("alice", "maint", "carol", "dave", "erin", "eve"):
        await acc.create_user(name, "pw")
    await acc.create_user("root", "pw", admin=True)
    await acc.create_org("acme", "alice")
    await acc.set_org_member("acme", "maint", "maintainer")
    await acc.set_org_member("acme", "dave", "reader")
    await acc.set_org_member("acme", "erin", "maintainer")
    await acc.register_repo("alice/pub", private=False, owner_user="alice")
    await acc.register_repo("alice/secret", private=True, owner_user="alice", description="shh")
    await acc.register_repo("acme/api", private=True, owner_user="alice")
    await acc.register_repo("acme/site", private=False, owner_user=None)
    await acc.set_repo_member("acme/api", "carol", "writer")
    await acc.set_repo_member("acme/api", "dave", "writer")
    await acc.set_repo_member("acme/api", "erin", "reader")


def test_role_on_matrix(embedded: MakeStore, tmp_path: Path) -> None:
    async def body(store: ObjectStore) -> None:
        acc = accounts_on(store, tmp_path / "c")
        await _world(acc)
        got = [(u, r, await acc.role_on(u, r)) for u, r, _ in ROLE_MATRIX]
        assert got == ROLE_MATRIX

        # membership changes take effect; a disabled user is anonymous
        await acc.remove_repo_member("acme/api", "carol")
        assert await acc.role_on("carol", "acme/api") is None
        await acc.set_org_member("acme", "carol", "writer")
        assert await acc.role_on("carol", "acme/api") == "writer"
        await acc.remove_org_member("acme", "carol")
        assert await acc.role_on("carol", "acme/api") is None
        await acc.set_disabled("alice")
        assert await acc.role_on("alice", "alice/secret") is None
        assert await acc.role_on("alice", "alice/pub") == "reader"
        with pytest.raises(NotFound):
            await acc.remove_repo_member("acme/api", "carol")
        with pytest.raises(InvalidInput):
            await acc.set_repo_member("acme/api", "carol", "god")
        with pytest.raises(NotFound):
            await acc.set_repo_member("acme/nope", "carol", "reader")

    run_on(embedded, body)


def test_org_keeps_an_owner(embedded: MakeStore, tmp_path: Path) -> None:
    async def body(store: ObjectStore) -> None:
        acc = accounts_on(store, tmp_path / "c")
        await acc.create_user("alice", "pw")
        await acc.create_user("bob", "pw")
        await acc.create_org("acme", "alice")
        with pytest.raises(InvalidInput):
            await acc.remove_org_member("acme", "alice")
        with pytest.raises(InvalidInput):
            await acc.set_org_member("acme", "alice", "maintainer")
        await acc.set_org_member("acme", "bob", "owner")
        await acc.set_org_member("acme", "alice", "reader")
        assert await acc.org_role("acme", "alice") == "reader"
        with pytest.raises(NotFound):
            await acc.set_org_member("nope", "bob", "reader")
        with pytest.raises(NotFound):
            await acc.set_org_member("acme", "nobody", "reader")

    run_on(embedded, body)


def test_no_one_grants_more_than_they_hold(embedded: MakeStore, tmp_path: Path) -> None:
    """The rule lives in Accounts, checked inside the write: every edge (API, UI, CLI) shares it."""

    async def body(store: ObjectStore) -> None:
        acc = accounts_on(store, tmp_path / "c")
        await _world(acc)  # acme: alice owner, maint and erin maintainers; acme/api: carol writer
        maint = Principal("maint", scope="admin")
        for call in (
            acc.set_org_member("acme", "maint", "owner", by=maint),
            acc.set_org_member("acme", "carol", "owner", by=maint),
            acc.set_org_member("acme", "alice", "writer", by=maint),
            acc.remove_org_member("acme", "alice", by=maint),
            acc.set_repo_member("acme/api", "maint", "owner", by=maint),
            acc.set_repo_member("acme/api", "alice", "reader", by=maint),
        ):
            with pytest.raises(PermissionDenied):
                await call
        assert await acc.org_role("acme", "maint") == "maintainer"
        assert await acc.repo_members("acme/api") == {"alice": "owner", "carol": "writer", "dave": "writer",
                                                      "erin": "reader"}
        await acc.set_org_member("acme", "erin", "writer", by=maint)  # an equal may be changed
        await acc.set_repo_member("acme/api", "carol", "maintainer", by=maint)
        await acc.set_repo_member("acme/api", "eve", "owner", by=Principal("alice", scope="admin"))
        await acc.set_repo_member("acme/api", "eve", "reader", by=Principal("root", admin=True, scope="admin"))
        with pytest.raises(InvalidInput):  # the namespace user owns alice/pub implicitly
            await acc.set_repo_member("alice/pub", "alice", "reader")
        # a repository's explicit owner may go: acme's owners still own it
        await acc.remove_repo_member("acme/api", "alice", by=Principal("alice", scope="admin"))
        assert await acc.role_on("alice", "acme/api") == "owner"

    run_on(embedded, body)


def test_cap_token() -> None:
    now = 1000.0
    maker = Principal("u", scope="write", repo="u/r", expires=now + 100)
    assert cap_token(maker, None, None, INHERIT, now) == ("write", "u/r", now + 100)
    assert cap_token(maker, "read", "u/r", 50.0, now) == ("read", "u/r", now + 50)
    assert cap_token(maker, None, None, Inherit(most=10.0), now) == ("write", "u/r", now + 10)
    assert cap_token(Principal("u", scope="admin"), None, None, Inherit(most=10.0), now)[2] == now + 10
    assert cap_token(Principal("u", scope="admin"), None, None, INHERIT, now)[2] is None
    for scope, repo, expires_in in (("admin", None, INHERIT), (None, "u/x", INHERIT), (None, None, 101.0),
                                    (None, None, None)):
        with pytest.raises(PermissionDenied):
            cap_token(maker, scope, repo, expires_in, now)
    with pytest.raises(PermissionDenied):
        cap_token(Principal("u", scope="write", repo="u/r", session="s"), "read", None, INHERIT, now)
    with pytest.raises(PermissionDenied):
        cap_token(ANONYMOUS, "read", None, INHERIT, now)


def _allowed_cases() -> list[tuple[Principal, str | None, str, str, bool]]:
    """Every role × scope × need, for an unbound token, plus the special principals."""
    cases: list[tuple[Principal, str | None, str, str, bool]] = []
    for role in (None, *ROLES):
        for scope in SCOPES:
            for need_role in ROLES:
                for need_scope in SCOPES:
                    rank_ok = role is not None and ROLES.index(role) >= ROLES.index(need_role)
                    expect = rank_ok and SCOPES.index(scope) >= SCOPES.index(need_scope)
                    cases.append((Principal("u", scope=scope), role, need_role, need_scope, expect))
    read, write, admin = ("reader", "read"), ("writer", "write"), ("maintainer", "admin")
    cases += [
        (ANONYMOUS, "reader", *read, True),
        (ANONYMOUS, "reader", *write, False),
        (ANONYMOUS, None, *read, False),
        (ANONYMOUS, "owner", *write, False),  # no token, no writing
        (Principal("u", scope="write", repo="a/x"), "owner", *write, True),
        (Principal("u", scope="write", repo="a/y"), "owner", *write, False),  # bound elsewhere
        (Principal("u", scope="write", repo="a/y"), "reader", *read, False),
        (Principal("u", scope="write", repo="a/x", session="S"), "writer", *write, True),
        (Principal("u", scope="write", repo="a/x", session="S"), "writer", *admin, False),
        (Principal("root", admin=True, scope="read"), "owner", *write, False),  # scope still limits
        (Principal("root", admin=True, scope="admin"), "owner", *admin, True),
    ]
    return cases


@pytest.mark.parametrize(("p", "role", "need_role", "need_scope", "expect"), _allowed_cases())
def test_allowed_matrix(p: Principal, role: str | None, need_role: str, need_scope: str, expect: bool) -> None:
    assert allowed(p, role, need_role, need_scope, "a/x") is expect


def test_allowed_refuses_unknown_names() -> None:
    with pytest.raises(InvalidInput):
        allowed(Principal("u", scope="read"), "reader", "viewer", "read", "a/x")
    with pytest.raises(InvalidInput):
        allowed(Principal("u", scope="read"), "reader", "reader", "repo:read", "a/x")


def test_visible_repos_and_pagination(embedded: MakeStore, tmp_path: Path) -> None:
    async def body(store: ObjectStore) -> None:
        acc = accounts_on(store, tmp_path / "c")
        await _world(acc)

        async def names(p: Principal, **kw: Any) -> list[str]:
            return [r["name"] for r in await acc.visible_repos(p, **kw)]

        everything = ["acme/api", "acme/site", "alice/pub", "alice/secret"]
        assert await names(ANONYMOUS) == ["acme/site", "alice/pub"]
        assert await names(Principal("eve", scope="read")) == ["acme/site", "alice/pub"]
        assert await names(Principal("carol", scope="read")) == ["acme/api", "acme/site", "alice/pub"]
        assert await names(Principal("maint", scope="read")) == ["acme/api", "acme/site", "alice/pub"]
        assert await names(Principal("alice", scope="read")) == everything
        assert await names(Principal("root", admin=True, scope="read")) == everything
        assert await names(Principal("alice", scope="read", repo="alice/secret")) == ["alice/secret"]
        assert await names(Principal("eve", scope="read", repo="alice/secret")) == []
        # every visible repository is readable per role_on, and pages tile the list
        for user in ("alice", "carol", "eve", None):
            for r in await acc.visible_repos(Principal(user, scope="read") if user else ANONYMOUS):
                assert await acc.role_on(user, r["name"]) is not None
        assert await names(Principal("alice", scope="read"), limit=3) == everything[:3]
        assert await names(Principal("alice", scope="read"), limit=3, after="alice/pub") == everything[3:]
        assert await names(Principal("alice", scope="read"), after="alice/secret") == []
        with pytest.raises(InvalidInput):
            await acc.visible_repos(ANONYMOUS, limit=0)
        meta = await acc.get_repo("alice/secret")
        assert meta is not None
        assert meta == {"name": "alice/secret", "private": True, "description": "shh", "owner": "alice",
                        "created": meta["created"]}
        assert await acc.get_repo("alice/none") is None

    run_on(embedded, body)


def test_register_and_create_repos(embedded: MakeStore, tmp_path: Path) -> None:
    async def body(store: ObjectStore) -> None:
        acc = accounts_on(store, tmp_path / "c")
        await _world(acc)
        with pytest.raises(Exists):
            await acc.register_repo("alice/pub", private=False, owner_user="alice")
        with pytest.raises(Exists):
            await acc.register_repo("alice/PUB", private=False, owner_user="alice")
        with pytest.raises(NotFound):  # a later user named "ghost" must not inherit it
            await acc.register_repo("ghost/x", private=False, owner_user="alice")
        with pytest.raises(NotFound):
            await acc.register_repo("alice/x", private=False, owner_user="ghost")
        for bad in ("no-slash", "alice/x\n", "alice/x/y", "alice/.x", "alice/", "/x"):
            with pytest.raises(InvalidInput):
                await acc.register_repo(bad, private=False, owner_user="alice")
        meta = await acc.register_repo("acme/new", private=True, owner_user="eve")
        assert meta["owner"] == "acme" and meta["private"] is True
        assert await acc.role_on("eve", "acme/new") == "owner"  # the creator owns what they make
        assert await acc.repo_members("acme/new") == {"eve": "owner"}

        w = lambda user, **kw: Principal(user, scope="write", **kw)  # noqa: E731
        cases = [
            (w("alice"), "alice/x", True),
            (w("alice"), "acme/x", True),  # org owner
            (w("maint"), "acme/x", True),  # org maintainer
            (w("dave"), "acme/x", False),  # org reader
            (w("eve"), "acme/x", False),
            (w("eve"), "alice/x", False),
            (w("root", admin=True), "anyone/x", True),
            (Principal("alice", scope="read"), "alice/x", False),  # a read token creates nothing
            (w("alice", repo="alice/pub"), "alice/x", False),  # neither does a bound one
            (ANONYMOUS, "alice/x", False),
        ]
        for p, name, expect in cases:
            assert await acc.can_create_repo(p, name) is expect, (p, name)
        with pytest.raises(InvalidInput):
            await acc.can_create_repo(w("alice"), "alice/../x")

    run_on(embedded, body)


# -- the login limiter -----------------------------------------------------------------------------


def test_login_limiter() -> None:
    """Back-off per (user, address); per address across users; the user's count across addresses
    only slows addresses that failed for that user, never a clean one (no lock-out of the owner)."""
    clock = Clock(0.0)
    lim = LoginLimiter(pair_free=3, addr_free=6, user_free=10, base=1.0, cap=60.0, forget=1000.0, clock=clock)
    for _ in range(3):
        lim.check("alice", "1.2.3.4")
        lim.failure("alice", "1.2.3.4")
    with pytest.raises(RateLimited) as e:
        lim.check("alice", "1.2.3.4")  # the pair waits 1 s after its 3rd failure
    assert e.value.retry_after == 1 and e.value.http_status == 429
    lim.check("alice", "9.9.9.9")  # the user from another address: not slowed
    lim.check("bob", "1.2.3.4")  # the address for another user: below its own limit
    waits = []
    for _ in range(8):  # each further failure doubles the wait, up to the cap
        clock.now += 100.0
        lim.check("alice", "1.2.3.4")
        lim.failure("alice", "1.2.3.4")
        with pytest.raises(RateLimited) as e:
            lim.check("alice", "1.2.3.4")
        waits.append(e.value.retry_after)
    assert waits == [2, 4, 8, 16, 32, 60, 60, 60]
    for _ in range(3):
        lim.failure("alice", "5.5.5.5")
    with pytest.raises(RateLimited):
        lim.check("alice", "5.5.5.5")
    lim.success("alice", "5.5.5.5")  # a success clears the pair (say, after the user waited)
    lim.check("alice", "5.5.5.5")

    # one address guessing many users: its own back-off, for every user, the right one too
    for i in range(6):
        lim.check(f"user{i}", "6.6.6.6")
        lim.failure(f"user{i}", "6.6.6.6")
    with pytest.raises(RateLimited):
        lim.check("alice", "6.6.6.6")
    lim.check("alice", "7.7.7.7")
    lim.success("user0", "6.6.6.6")  # a success does not clear an address's count
    with pytest.raises(RateLimited):
        lim.check("user9", "6.6.6.6")

    # many addresses guessing one user: each failed address slows down; a clean one never does
    for i in range(12):
        lim.check("carol", f"10.0.0.{i}")
        lim.failure("carol", f"10.0.0.{i}")
    with pytest.raises(RateLimited):
        lim.check("carol", "10.0.0.1")
    lim.check("carol", "192.0.2.1")  # the owner's own address
    clock.now += 5.0
    lim.check("carol", "10.0.0.1")  # back-off, not a lock

    # IPv6 addresses count per /64; counts are forgotten after `forget`
    for i in range(6):
        lim.failure(f"v{i}", f"2001:db8:1:2::{i + 1}")
    with pytest.raises(RateLimited):
        lim.check("dave", "2001:db8:1:2:ffff::9")
    lim.check("dave", "2001:db8:1:3::1")
    clock.now += 1000.0
    lim.check("dave", "2001:db8:1:2::9")


def test_login_limiter_memory_is_bounded() -> None:
    clock = Clock(0.0)
    lim = LoginLimiter(pair_free=5, forget=10.0, clock=clock, max_keys=100)
    for i in range(10_000):
        lim.failure(f"user{i}", f"10.0.{i // 256}.{i % 256}")
        clock.now += 0.01
    assert len(lim._failures) <= 100
    for _ in range(50):
        lim.failure("mallory", "6.6.6.6")
    assert all(isinstance(v[0], int) for v in lim._failures.values())  # a count, not a list per failure
    clock.now += 1000
    for _ in range(20):
        lim.failure("x", "y")  # sweeping drops expired keys as new failures come
    assert len(lim._failures) < 100


def test_login_limiter_memory_is_bounded_whatever_the_user_name() -> None:
    """A login names any string as its user: failures with huge names (from many addresses, so
    none is throttled) must not keep the names, only keys of bounded size."""
    import tracemalloc

    clock = Clock(0.0)
    lim = LoginLimiter(pair_free=5, addr_free=5, user_free=5, clock=clock, max_keys=1000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200):
            name = f"{i:04d}" + "n" * (256 * 1024)  # each a distinct 256 KiB name
            lim.check(name, f"10.1.{i // 256}.{i % 256}")
            lim.failure(name, f"10.1.{i // 256}.{i % 256}")
            del name
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 1 << 20, kept  # 200 x 256 KiB = 50 MiB if the names were kept
    lim.check("n" * 10, "10.9.9.9")  # unrelated users and addresses are not slowed


def test_log_ins_keep_a_bounded_number_of_browser_sessions_per_user(
    embedded: MakeStore, tmp_path: Path
) -> None:
    """Each log-in adds a browser session to the auth database (which every replica downloads and
    every write uploads): a user who logs in again and again ends their oldest sessions beyond
    the cap, the newest keep working, and other users' sessions are not touched."""
    from node.accounts import MAX_WEB_SESSIONS

    async def body(store: ObjectStore) -> None:
        acc = accounts_on(store, tmp_path / "c")
        await acc.create_user("ann", password="pw-ann-123456")
        await acc.create_user("bob", password="pw-bob-123456")
        bob, _ = await acc.start_web_session("bob", 3600.0)
        secrets_ = [(await acc.start_web_session("ann", 3600.0))[0] for _ in range(MAX_WEB_SESSIONS + 30)]
        rows = (await acc.db.read()).execute(
            "select count(*) from web_sessions where user = 'ann'").fetchone()[0]
        assert rows == MAX_WEB_SESSIONS
        assert all([await acc.web_session(s) is None for s in secrets_[:30]])
        assert all([await acc.web_session(s) is not None for s in secrets_[30:]])
        assert (await acc.web_session(bob)) is not None

    run_on(embedded, body)


def test_log_ins_keep_a_bounded_number_of_login_tokens_per_user(embedded: MakeStore, tmp_path: Path) -> None:
    """Each API log-in adds a token to the auth database (which every replica downloads and every
    write uploads): a user's oldest log-in tokens beyond the cap end in the same write, the newest
    keep working, and tokens made explicitly (even one named "login") and other users' log-in
    tokens are not touched."""
    from node.accounts import MAX_LOGIN_TOKENS

    async def body(store: ObjectStore) -> None:
        acc = accounts_on(store, tmp_path / "c")
        await acc.create_user("ann", password="pw-ann-123456")
        await acc.create_user("bob", password="pw-bob-123456")
        _, bob = await acc.create_token("bob", scope="write", name="login", expires_in=3600.0, login=True)
        kept = [(await acc.create_token("ann", scope="read", name=name, expires_in=None))[1]
                for name in ("login", "ci", "")]
        made = [(await acc.create_token("ann", scope="write", name="login", expires_in=3600.0, login=True))[1]
                for _ in range(MAX_LOGIN_TOKENS + 30)]
        kept.append((await acc.create_token("ann", scope="read", name="later", expires_in=None))[1])
        made.append((await acc.create_token("ann", scope="write", name="login", expires_in=3600.0, login=True))[1])
        rows = (await acc.db.read()).execute(
            "select count(*) from tokens where user = 'ann' and login = 1").fetchone()[0]
        assert rows == MAX_LOGIN_TOKENS
        assert len(await acc.list_tokens("ann")) == MAX_LOGIN_TOKENS + len(kept)
        assert all([await acc.authenticate(s) is None for s in made[:31]])
        assert all([await acc.authenticate(s) is not None for s in made[31:]])
        assert all([await acc.authenticate(s) is not None for s in kept])
        assert (await acc.authenticate(bob)) is not None

    run_on(embedded, body)


def _zstd_stream(head: bytes, zeros: int) -> bytes:
    """A zstd frame of ``head`` then ``zeros`` zero bytes, compressed piece by piece (its header
    declares no size), so building a bomb never holds its expansion."""
    out = zstandard.ZstdCompressor(level=1).compressobj()
    parts = [out.compress(head)]
    piece = bytes(16 << 20)
    while zeros > 0:
        parts.append(out.compress(piece[:zeros]))
        zeros -= len(piece)
    parts.append(out.flush())
    return b"".join(parts)


@pytest.mark.parametrize("bomb", ["declared", "streamed-sqlite-head", "twice-the-limit"])
def test_a_decompression_bomb_for_an_auth_database_is_refused_while_expanding(
    embedded: MakeStore, tmp_path: Path, bomb: str
) -> None:
    """The auth database is stored data any replica (or whoever can write the bucket) writes: a
    zstd bomb at its key is refused with a StoreError naming the limit once it passes MAX_IMAGE,
    expanded while counting (a few MiB held, not the whole expansion), and the node keeps it."""
    import tracemalloc

    from node.authdb import MAX_IMAGE

    data = {
        "declared": lambda: zstandard.ZstdCompressor(level=1).compress(bytes(MAX_IMAGE + 1)),
        "streamed-sqlite-head": lambda: _zstd_stream(b"SQLite format 3\x00", MAX_IMAGE),
        "twice-the-limit": lambda: _zstd_stream(b"SQLite format 3\x00", 2 * MAX_IMAGE),
    }[bomb]()

    async def body(store: ObjectStore) -> None:
        await store.put(KEY, data)
        acc = accounts_on(store, tmp_path / "c")
        tracemalloc.start()
        try:
            with pytest.raises(StoreError, match=f"larger than the {MAX_IMAGE >> 20} MiB limit"):
                await acc.db.read()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 32 << 20
        assert await store.get(KEY) == data  # refused, not replaced

    run_on(embedded, body)


def test_an_auth_database_over_the_limit_is_refused_raw_or_written(
    embedded: MakeStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same limit holds for a raw SQLite image at the key, and for a write that would pass it
    (no replica could read that back): refused with a StoreError, the stored version kept."""
    import node.authdb

    async def body(store: ObjectStore) -> None:
        acc = accounts_on(store, tmp_path / "c")
        await acc.create_user("ann", password="pw-ann-123456")
        before = await auth_keys(store)
        image = (await acc.db.read()).conn.serialize()
        monkeypatch.setattr(node.authdb, "MAX_IMAGE", len(image) + 100)
        with pytest.raises(StoreError, match="would make the auth database larger"):
            await acc.db.write(lambda db: db["orgs"].insert_all({"name": f"org{i}"} for i in range(1000)))
        assert await auth_keys(store) == before
        await store.put(KEY, image + bytes(200))
        with pytest.raises(StoreError, match="larger than the"):
            await accounts_on(store, tmp_path / "d").db.read()

    run_on(embedded, body)

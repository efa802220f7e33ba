"""One contract for every ObjectStore: the embedded store and S3 must be interchangeable.

Landing correctness rests on these semantics (put-if-absent, compare-and-swap, byte-ordered listing),
so each case runs against both stores; a few extra cases cover what only one of them can get wrong
(many processes on one directory; S3 errors, retries and prefixes).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from s3server import free_port, start_s3_server, stop_s3_server

from hif.errors import InvalidInput, NotFound, PreconditionFailed, StoreError
from hif.store import EmbeddedStore, ObjectStore, open_store

T = TypeVar("T")
MakeStore = Callable[[], ObjectStore]

KEYS = ["a/x", "a-b", "a/b/c", "a/b/d", "a/bc", "ab", "b", "c/d/e", "ü"]


def run(make_store: MakeStore, body: Callable[[ObjectStore], Awaitable[T]]) -> T:
    """Run ``body`` on a fresh store inside a new event loop and close the store afterwards."""

    async def main() -> T:
        store = make_store()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


async def cas_increment(store: ObjectStore, key: str, attempts: int = 500) -> int:
    """Add one to a counter with compare-and-swap, retrying lost races (bounded)."""
    for _ in range(attempts):
        data, etag = await store.get_with_etag(key)
        try:
            await store.put(key, str(int(data) + 1).encode(), if_match=etag)
            return int(data) + 1
        except PreconditionFailed:
            await asyncio.sleep(random.uniform(0, 0.005))
    raise AssertionError(f"no CAS on {key} succeeded in {attempts} attempts")


# -- contract: both stores ---------------------------------------------------------------------


def test_put_get_roundtrip(make_store: MakeStore) -> None:
    async def body(store: ObjectStore) -> None:
        etag = await store.put("k", b"hello")
        assert await store.get("k") == b"hello"
        assert await store.get_with_etag("k") == (b"hello", etag)
        await store.put("k", b"world")
        assert await store.get("k") == b"world"
        assert await store.get_or_none("k") == b"world"
        await store.put("empty", b"")
        assert await store.get("empty") == b""
        big = os.urandom(1 << 20)
        await store.put("dir/big", big)
        assert await store.get("dir/big") == big

    run(make_store, body)


def test_missing_key(make_store: MakeStore) -> None:
    async def body(store: ObjectStore) -> None:
        with pytest.raises(NotFound):
            await store.get("nope")
        with pytest.raises(NotFound):
            await store.get_with_etag("no/such/key")
        assert await store.get_or_none("nope") is None
        assert await store.head("nope") is None

    run(make_store, body)


def test_get_many(make_store: MakeStore) -> None:
    """Several values in order, None where a key is missing (a prefix is not a key); values of
    exactly the size of a first read and larger come back whole."""

    async def body(store: ObjectStore) -> None:
        sizes = {"m/a": 0, "m/b": 5, "m/c": 64 << 10, "m/d": (64 << 10) + 1, "m/e": 3 << 20}
        values = {k: os.urandom(n) for k, n in sizes.items()}
        for k, v in values.items():
            await store.put(k, v)
        keys = ["m/e", "m/missing", "m/a", "m", "m/d", "m/b", "m/c", "m/b"]
        assert await store.get_many(keys) == [values.get(k) for k in keys]
        assert await store.get_many([]) == []

    run(make_store, body)


def test_has_many(make_store: MakeStore) -> None:
    """Whether each key exists, in order and with repeats: a prefix of keys, a key's own prefix
    and a longer name are not keys; an empty value is one."""

    async def body(store: ObjectStore) -> None:
        await store.put("h/a", b"")
        await store.put("h/b/c", b"x" * 100)
        keys = ["h/a", "h/b", "h/b/c", "h/b/c/d", "h/missing", "h", "h/a", "h/ab"]
        assert await store.has_many(keys) == [True, False, True, False, False, False, True, False]
        assert await store.has_many([]) == []

    run(make_store, body)


def test_head(make_store: MakeStore) -> None:
    async def body(store: ObjectStore) -> None:
        etag = await store.put("d/k", b"12345")
        info = await store.head("d/k")
        assert info is not None
        assert (info.key, info.etag, info.size) == ("d/k", etag, 5)
        await store.put("d/e", b"")
        info = await store.head("d/e")
        assert info is not None and info.size == 0
        assert await store.head("d") is None  # a prefix is not a key

    run(make_store, body)


def test_put_if_absent(make_store: MakeStore) -> None:
    async def body(store: ObjectStore) -> None:
        etag = await store.put("claim", b"first", if_none_match=True)
        with pytest.raises(PreconditionFailed):
            await store.put("claim", b"second", if_none_match=True)
        assert await store.get_with_etag("claim") == (b"first", etag)

    run(make_store, body)


def test_create_all_in_order_and_deferred_writes(make_store: MakeStore) -> None:
    """The bulk path of ``hif import git``: deferred writes, then ordered put-if-absent batches."""

    async def body(store: ObjectStore) -> None:
        with store.deferred_sync():
            await store.put("objects/a", b"blob", if_none_match=True)
            await store.create_all([("log/1", b"one"), ("log/2", b"two"), ("state/x", b"s")])
            with pytest.raises(PreconditionFailed):
                await store.create_all([("log/3", b"three"), ("log/2", b"again")])
        assert await store.get("log/2") == b"two"
        assert [await store.get(k) for k in ("objects/a", "log/1", "state/x")] == [b"blob", b"one", b"s"]
        await store.create_all([])
        with pytest.raises(PreconditionFailed):  # put-if-absent semantics after the block too
            await store.put("log/1", b"x", if_none_match=True)

    run(make_store, body)


def test_compare_and_swap(make_store: MakeStore) -> None:
    async def body(store: ObjectStore) -> None:
        old = await store.put("ref", b"v1")
        new = await store.put("ref", b"v2", if_match=old)
        assert new != old
        assert await store.get_with_etag("ref") == (b"v2", new)
        with pytest.raises(PreconditionFailed):
            await store.put("ref", b"v3", if_match=old)  # stale
        assert await store.get("ref") == b"v2"
        newer = await store.put("ref", b"v3", if_match=new)
        assert await store.get_with_etag("ref") == (b"v3", newer)

    run(make_store, body)


def test_compare_and_swap_on_missing_key(make_store: MakeStore) -> None:
    async def body(store: ObjectStore) -> None:
        etag = await store.put("other", b"x")
        with pytest.raises(PreconditionFailed):
            await store.put("missing", b"y", if_match=etag)
        assert await store.head("missing") is None
        await store.delete("other")
        with pytest.raises(PreconditionFailed):
            await store.put("other", b"z", if_match=etag)  # deleted since read
        assert await store.head("other") is None

    run(make_store, body)


def test_delete(make_store: MakeStore) -> None:
    async def body(store: ObjectStore) -> None:
        await store.put("a/b", b"x")
        await store.delete("a/b")
        assert await store.head("a/b") is None
        with pytest.raises(NotFound):
            await store.get("a/b")
        await store.delete("a/b")  # already gone: not an error
        await store.delete("never/was")
        await store.put("a/b", b"again", if_none_match=True)  # absent again, so claimable
        assert await store.get("a/b") == b"again"

    run(make_store, body)


def test_list_page_order_and_pagination(make_store: MakeStore) -> None:
    async def body(store: ObjectStore) -> None:
        for key in random.sample(KEYS, len(KEYS)):
            await store.put(key, key.encode())
        every = sorted(KEYS)
        assert every[:4] == ["a-b", "a/b/c", "a/b/d", "a/bc"]  # '-' < '/' < letters, byte order
        assert await store.list_page("") == every
        assert await store.list_page("a") == ["a-b", "a/b/c", "a/b/d", "a/bc", "a/x", "ab"]
        assert await store.list_page("a/") == ["a/b/c", "a/b/d", "a/bc", "a/x"]
        assert await store.list_page("a/b") == ["a/b/c", "a/b/d", "a/bc"]
        assert await store.list_page("a/b/") == ["a/b/c", "a/b/d"]
        assert await store.list_page("c/d/e") == ["c/d/e"]
        assert await store.list_page("zz") == []
        assert await store.list_page("", limit=3) == every[:3]
        assert await store.list_page("", start_after="a/b/c", limit=2) == ["a/b/d", "a/bc"]
        assert await store.list_page("", start_after="a/b/") == every[1:]  # not itself a key
        assert await store.list_page("a/", start_after="a/bc") == ["a/x"]
        assert await store.list_page("a/", start_after="a/x") == []
        assert await store.list_page("", start_after="ü") == []
        for page in (1, 2, 3, 100):
            got: list[str] = []
            after: str | None = None
            while True:
                keys = await store.list_page("", start_after=after, limit=page)
                assert len(keys) <= page
                got += keys
                if len(keys) < page:
                    break
                after = keys[-1]
            assert got == every

    run(make_store, body)


def test_list_children(make_store: MakeStore) -> None:
    async def body(store: ObjectStore) -> None:
        for key in KEYS:
            await store.put(key, b"")
        assert await store.list_children("") == ["a", "a-b", "ab", "b", "c", "ü"]
        assert await store.list_children("a/") == ["b", "bc", "x"]
        assert await store.list_children("a/b/") == ["c", "d"]
        assert await store.list_children("c/") == ["d"]
        assert await store.list_children("nothing/") == []

    run(make_store, body)


def test_iter_keys(make_store: MakeStore) -> None:
    async def body(store: ObjectStore) -> None:
        for key in KEYS:
            await store.put(key, b"")
        assert [k async for k in store.iter_keys("", page=2)] == sorted(KEYS)
        assert [k async for k in store.iter_keys("a/", page=1)] == [
            "a/b/c",
            "a/b/d",
            "a/bc",
            "a/x",
        ]
        assert [k async for k in store.iter_keys("none/")] == []

    run(make_store, body)


@pytest.mark.parametrize("key", ["../x", "/x", "a//b", "", "a/", "a/./b", "a/../b", "x\x00y"])
def test_invalid_keys(make_store: MakeStore, key: str) -> None:
    async def body(store: ObjectStore) -> None:
        with pytest.raises(InvalidInput):
            await store.get(key)
        with pytest.raises(InvalidInput):
            await store.get_with_etag(key)
        with pytest.raises(InvalidInput):
            await store.head(key)
        with pytest.raises(InvalidInput):
            await store.put(key, b"x")
        with pytest.raises(InvalidInput):
            await store.put(key, b"x", if_none_match=True)
        with pytest.raises(InvalidInput):
            await store.delete(key)

    run(make_store, body)


def test_concurrent_put_if_absent_has_one_winner(make_store: MakeStore) -> None:
    async def body(store: ObjectStore) -> None:
        async def claim(i: int) -> int | None:
            try:
                await store.put("lock", str(i).encode(), if_none_match=True)
                return i
            except PreconditionFailed:
                return None

        results = await asyncio.gather(*(claim(i) for i in range(20)))
        winners = [i for i in results if i is not None]
        assert len(winners) == 1
        assert await store.get("lock") == str(winners[0]).encode()

    run(make_store, body)


def test_concurrent_cas_increments(make_store: MakeStore) -> None:
    async def body(store: ObjectStore) -> None:
        await store.put("counter", b"0")
        seen = await asyncio.gather(*(cas_increment(store, "counter") for _ in range(20)))
        assert sorted(seen) == list(range(1, 21))  # every increment saw a distinct value
        assert await store.get("counter") == b"20"

    run(make_store, body)


# -- the threaded store (a node's embedded store) -------------------------------------------------


def test_threaded_store_runs_calls_concurrently_and_survives_cancellation(tmp_path: Path) -> None:
    """Many calls at once each get their own answer (errors included) and run in parallel threads;
    a call cancelled while queued or running leaves the store usable and the loop clean."""
    from hif.store.threaded import ThreadedStore

    async def main() -> None:
        inner = EmbeddedStore(tmp_path / "s", create=True)
        store = ThreadedStore(inner, workers=4)
        try:
            await asyncio.gather(*(store.put(f"k/{i:03d}", str(i).encode()) for i in range(200)))
            got = await asyncio.gather(*(store.get(f"k/{i:03d}") for i in range(200)))
            assert got == [str(i).encode() for i in range(200)]
            outcomes = await asyncio.gather(*(store.put("once", b"x", if_none_match=True) for _ in range(20)),
                                            return_exceptions=True)
            assert sum(o is not None and not isinstance(o, BaseException) for o in outcomes) == 1
            assert all(isinstance(o, PreconditionFailed) for o in outcomes if isinstance(o, BaseException))
            assert len(store._threads) <= 4  # bounded, however many calls wait
            tasks = [asyncio.ensure_future(store.put(f"c/{i}", b"y")) for i in range(50)]
            await asyncio.sleep(0)
            for t in tasks[::2]:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with pytest.raises(NotFound):
                await store.get("missing")
            assert await store.get("k/007") == b"7"
        finally:
            await store.close()
        assert store._threads == []

    asyncio.run(main())


# -- embedded store: many processes on one directory -------------------------------------------

WORKER = textwrap.dedent(
    """
    import asyncio, os, random, sys, time
    from pathlib import Path
    from hif.errors import PreconditionFailed
    from hif.store.embedded import EmbeddedStore

    root, mode, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    go = Path(root) / "go"
    deadline = time.monotonic() + 30
    while not go.exists():  # start together so the processes really race
        if time.monotonic() > deadline:
            sys.exit("never got the start signal")
        time.sleep(0.005)

    async def main():
        store = EmbeddedStore(root)
        won = []
        if mode == "cas":
            for _ in range(n):
                for _ in range(2000):
                    data, etag = await store.get_with_etag("counter")
                    try:
                        await store.put("counter", str(int(data) + 1).encode(), if_match=etag)
                        break
                    except PreconditionFailed:
                        time.sleep(random.uniform(0, 0.002))
                else:
                    sys.exit("CAS retries exhausted")
        else:
            for i in range(n):
                try:
                    await store.put(f"claims/{i}", str(os.getpid()).encode(), if_none_match=True)
                    won.append(i)
                except PreconditionFailed:
                    pass
        out.write_text("\\n".join(map(str, won)))

    asyncio.run(main())
    """
)


def run_workers(root: Path, mode: str, n: int, procs: int = 8) -> list[list[int]]:
    outs = [root.parent / f"{root.name}-{mode}-{i}.out" for i in range(procs)]
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(root), mode, str(n), str(out)])
        for out in outs
    ]
    time.sleep(0.3)  # let the interpreters start so the race begins together
    (root / "go").touch()
    for w in workers:
        assert w.wait(timeout=60) == 0
    return [[int(x) for x in out.read_text().split()] for out in outs]


def test_embedded_multiprocess_cas(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = EmbeddedStore(root, create=True)
    asyncio.run(store.put("counter", b"0"))
    run_workers(root, "cas", 25)
    assert asyncio.run(store.get("counter")) == b"200"


def test_embedded_multiprocess_put_if_absent(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = EmbeddedStore(root, create=True)
    wins = run_workers(root, "claim", 20)
    flat = [k for won in wins for k in won]
    assert len(flat) == len(set(flat))  # no key won twice
    assert sorted(flat) == list(range(20))  # and every key was won
    assert asyncio.run(store.list_page("claims/")) == sorted(f"claims/{k}" for k in range(20))


# -- S3 only -----------------------------------------------------------------------------------


def s3(endpoint: str, url: str | None = None, **kw: Any) -> Any:
    from hif.store.s3 import S3Store

    opts: dict[str, Any] = {
        "create": True,
        "endpoint_url": endpoint,
        "access_key": "test",
        "secret_key": "test",
        "region": "us-east-1",
    }
    opts.update(kw)
    return S3Store.from_url(url or f"s3://hif-test-{uuid.uuid4().hex}/pfx", **opts)


def test_s3_etag_is_passed_through_quoted(s3_server: str) -> None:
    async def body(store: Any) -> None:
        etag = await store.put("k", b"x")
        assert etag.startswith('"') and etag.endswith('"')
        assert (await store.head("k")).etag == etag
        assert await store.put("k", b"y", if_match=etag)

    run(lambda: s3(s3_server), body)


def test_s3_prefix_isolates_keys(s3_server: str) -> None:
    bucket = f"hif-test-{uuid.uuid4().hex}"

    async def main() -> None:
        async with (
            s3(s3_server, f"s3://{bucket}/one") as one,
            s3(s3_server, f"s3://{bucket}/two/deep/") as two,
            s3(s3_server, f"s3://{bucket}") as root,
        ):
            assert one.url == f"s3://{bucket}/one" and root.url == f"s3://{bucket}"
            await one.put("a/k", b"1")
            await two.put("a/k", b"2")
            await root.put("k", b"r")
            assert await one.list_page("") == ["a/k"]
            assert await two.list_page("") == ["a/k"]
            assert await one.list_children("") == ["a"]
            assert await root.list_page("") == ["k", "one/a/k", "two/deep/a/k"]
            assert await root.list_children("") == ["k", "one", "two"]
            assert await root.get("two/deep/a/k") == b"2"
            assert await one.head("k") is None

    asyncio.run(main())


def test_s3_store_survives_event_loop_change(s3_server: str) -> None:
    store = s3(s3_server)  # constructed outside any loop, as the CLI does
    asyncio.run(store.put("k", b"1"))
    assert asyncio.run(store.get("k")) == b"1"  # a second loop: the client is rebuilt
    asyncio.run(store.close())


def test_s3_counts_requests(s3_server: str) -> None:
    async def body(store: Any) -> None:
        await store.put("k", b"x")  # + create bucket on first use
        first = store.requests
        await store.get("k")
        await store.head("k")
        await store.list_page("")
        assert store.requests == first + 3

    run(lambda: s3(s3_server), body)


def test_s3_missing_bucket(s3_server: str) -> None:
    async def body(store: Any) -> None:
        with pytest.raises(StoreError, match="does not exist"):
            await store.head("k")

    run(lambda: s3(s3_server, create=False), body)


def test_s3_open_store_reads_environment(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    url = f"s3://hif-test-{uuid.uuid4().hex}/p"

    async def body(store: Any) -> None:
        assert store.url == url and store.endpoint_url == s3_server
        await store.put("k", b"v", if_none_match=True)
        assert await store.get("k") == b"v"

    run(lambda: open_store(url, create=True), body)


def test_s3_connection_refused() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"

    async def body(store: Any) -> None:
        started = time.monotonic()
        with pytest.raises(StoreError) as info:
            await store.get("k")
        assert time.monotonic() - started < 10
        assert endpoint in str(info.value) and "\n" not in str(info.value)

    run(lambda: s3(endpoint), body)


def test_s3_wrong_credentials() -> None:
    # moto accepts any credentials unless IAM auth is on; with it on, unknown keys are refused
    proc, endpoint = start_s3_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:

        async def body(store: Any) -> None:
            with pytest.raises(StoreError, match="InvalidAccessKeyId|403") as info:
                await store.get("k")
            assert "AWS_ACCESS_KEY_ID" in str(info.value)

        run(lambda: s3(endpoint, access_key="AKIAWRONGWRONGWRONG1", secret_key="x"), body)
        run(
            lambda: s3(endpoint, create=False, access_key="AKIAWRONGWRONGWRONG1", secret_key="x"),
            body,
        )
    finally:
        stop_s3_server(proc)


# -- S3 retry policy, with faults injected in front of the real client ----------------------


def client_error(code: str, status: int, op: str = "PutObject") -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        op,
    )


async def with_faults(store: Any, op: str, faults: list[Any]) -> None:
    """Make the next calls of client operation ``op`` fail with ``faults``: an exception is raised,
    None calls through, "after" makes the real call and then loses the response, "theirs" lets
    another writer's unconditional put in first and then drops the connection."""
    from botocore.exceptions import ConnectionClosedError

    client = await store._get_client()
    real = getattr(client, op)
    queue = list(faults)

    async def faulty(**kwargs: Any) -> Any:
        if not queue:
            return await real(**kwargs)
        fault = queue.pop(0)
        if fault is None:
            return await real(**kwargs)
        if fault == "after":
            await real(**kwargs)
            raise ConnectionClosedError(endpoint_url=store.endpoint_url)
        if fault == "theirs":
            await real(Bucket=kwargs["Bucket"], Key=kwargs["Key"], Body=b"theirs")
            raise ConnectionClosedError(endpoint_url=store.endpoint_url)
        raise fault

    setattr(client, op, faulty)


def test_s3_retries_transient_errors(s3_server: str) -> None:
    async def body(store: Any) -> None:
        await with_faults(
            store, "put_object", [client_error("SlowDown", 503), client_error("InternalError", 500)]
        )
        before = store.requests
        await store.put("k", b"x")
        assert store.requests == before + 3
        assert await store.get("k") == b"x"

    run(lambda: s3(s3_server), body)


def test_s3_gives_up_after_bounded_retries(s3_server: str) -> None:
    from hif.store.s3 import ATTEMPTS

    async def body(store: Any) -> None:
        await with_faults(store, "get_object", [client_error("SlowDown", 503, "GetObject")] * 50)
        before = store.requests
        with pytest.raises(StoreError, match="SlowDown"):
            await store.get("k")
        assert store.requests == before + ATTEMPTS

    run(lambda: s3(s3_server), body)


@pytest.mark.parametrize(
    ("code", "status"), [("PreconditionFailed", 412), ("ConditionalRequestConflict", 409)]
)
def test_s3_lost_races_are_not_retried(s3_server: str, code: str, status: int) -> None:
    async def body(store: Any) -> None:
        await with_faults(store, "put_object", [client_error(code, status)])
        before = store.requests
        with pytest.raises(PreconditionFailed):
            await store.put("k", b"x", if_none_match=True)
        assert store.requests == before + 1
        assert await store.head("k") is None

    run(lambda: s3(s3_server), body)


def test_s3_lost_response_to_own_write_is_success(s3_server: str) -> None:
    async def body(store: Any) -> None:
        # the first attempt lands but its response is lost; the retry then sees its own write
        await with_faults(store, "put_object", ["after"])
        etag = await store.put("k", b"mine", if_none_match=True)
        assert await store.get_with_etag("k") == (b"mine", etag)
        await with_faults(store, "put_object", ["after"])
        etag2 = await store.put("k", b"next", if_match=etag)
        assert await store.get_with_etag("k") == (b"next", etag2)
        # but a retry that finds someone else's write still reports the lost race
        await with_faults(store, "put_object", ["theirs"])
        with pytest.raises(PreconditionFailed):
            await store.put("k", b"ours", if_match=etag2)
        assert await store.get("k") == b"theirs"

    run(lambda: s3(s3_server), body)

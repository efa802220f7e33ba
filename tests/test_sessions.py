"""hif.session: starting, appending to and closing a session each take one round trip under an event
loop (their store calls go together), and what a crash between those calls leaves is harmless."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hif.errors import SessionClosed
from hif.objects import FILE, encode
from hif.repo import Repo
from hif.session import make_event
from hif.store.embedded import EmbeddedStore
from hif.testing.faults import Faults, FaultyStore

HIF = str(Path(sys.executable).with_name("hif"))
LATENCY = 0.05  # seconds per store call: a chain of two calls takes twice as long as two together


def slow_repo(tmp_path: Path) -> tuple[Repo, FaultyStore]:
    store = FaultyStore(EmbeddedStore(tmp_path / "s", create=True, fsync=False),
                        Faults(latency=lambda _rng: LATENCY))
    return Repo(store, "t/r"), store


async def timed(call):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = await call
    return result, loop.time() - t0


def test_start_append_close_take_one_round_trip_each(tmp_path: Path) -> None:
    async def main() -> None:
        repo, store = slow_repo(tmp_path)
        await repo.ensure(description="t")
        s, took = await timed(repo.sessions.start("one round trip", "ana", "human", 0))
        assert took < 1.8 * LATENCY, took
        assert await repo.sessions.list_open() == [s.id]
        assert (await repo.sessions.load(s.id)).goal == "one round trip"

        oid = await repo.objects.put_blob(b"hello\n")
        event = make_event("write", "ana", "human", repo.clock(), path="a.txt", kind=FILE, blob=oid)
        stamped, took = await timed(repo.sessions.append(s.id, event, s.next_seq))
        assert took < 1.8 * LATENCY, took
        assert stamped["seq"] == 1
        # without a known sequence number the last one is looked up alongside the state
        stamped2, _ = await timed(repo.sessions.append(s.id, event))
        assert stamped2["seq"] == 2

        snap = await repo.sessions.write_snapshot(await repo.sessions.load(s.id), {})
        _, took = await timed(repo.sessions.close(s.id, {"state": "abandoned", "snapshot": snap}))
        assert took < 1.8 * LATENCY, took
        assert (await repo.sessions.state(s.id))["state"] == "abandoned"
        assert await repo.sessions.list_open() == []
        # first writer wins: a second close neither fails nor changes the outcome
        await repo.sessions.close(s.id, {"state": "landed", "position": 1, "snapshot": snap})
        assert (await repo.sessions.state(s.id))["state"] == "abandoned"
        assert store.calls["put"] > 0

    asyncio.run(main())


def test_an_event_sent_to_a_closed_session_is_refused_and_taken_back(tmp_path: Path) -> None:
    async def main() -> None:
        repo, _ = slow_repo(tmp_path)
        await repo.ensure(description="t")
        s = await repo.sessions.start("closed soon", "ana", "human", 0)
        snap = await repo.sessions.write_snapshot(s, {})
        await repo.sessions.close(s.id, {"state": "abandoned", "snapshot": snap})
        event = make_event("say", "ana", "human", repo.clock(), text="too late")
        for next_seq in (s.next_seq, None):
            with pytest.raises(SessionClosed):
                await repo.sessions.append(s.id, event, next_seq)
        events = await repo.sessions.events(s.id)
        assert [e["type"] for e in events] == ["start"]

    asyncio.run(main())


def test_a_marker_without_its_first_event_is_skipped(tmp_path: Path) -> None:
    """A crash between the two writes of ``start`` can leave the open marker alone: listing open
    sessions goes on without it."""
    work = tmp_path / "w"
    run = subprocess.run([HIF, "init", str(work)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([HIF, "session", "start", "kept"], cwd=work, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    ghost = "a" * 16
    store_root = next(p for p in (work / ".hif").rglob("open") if p.is_dir())
    (store_root / ghost).write_bytes(encode({"goal": "ghost", "author": "x", "time": 0.0}))
    run = subprocess.run([HIF, "session", "list", "--json"], cwd=work, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    listed = [s["goal"] for s in json.loads(run.stdout)["sessions"]]
    assert listed == ["kept"]


def test_an_open_sessions_marker_and_start_event_are_read_without_its_other_events(tmp_path: Path) -> None:
    """The listing reads (``open_marker``, ``start_event``) are the plumbing's: the API and the UI no
    longer build ``open/<id>`` or ``sessions/<id>/events/<seq>`` keys by hand. One read each, whatever
    the session's length, and None once the session is closed or was never there."""

    async def main() -> None:
        store = FaultyStore(EmbeddedStore(tmp_path / "s", create=True, fsync=False), Faults())
        repo = Repo(store, "t/r")
        await repo.create()
        s = await repo.sessions.start("the goal", "ana", "agent", 0)
        for seq in range(1, 6):
            await repo.sessions.append(s.id, make_event("say", "ana", "agent", 1.0, text=f"{seq}"), seq)
        before = store.count
        marker = await repo.sessions.open_marker(s.id)
        start = await repo.sessions.start_event(s.id)
        assert store.count - before == 2
        assert marker is not None and marker["goal"] == "the goal" and marker["author"] == "ana"
        assert start is not None and start["type"] == "start" and start["role"] == "agent"
        assert await repo.sessions.open_marker("a" * 16) is None
        assert await repo.sessions.start_event("a" * 16) is None
        s = await repo.sessions.load(s.id)
        await repo.sessions.abandon(s, make_event("abandon", "ana", "agent", 2.0, reason="done"), "done")
        assert await repo.sessions.open_marker(s.id) is None  # closed: no marker
        assert (await repo.sessions.start_event(s.id) or {}).get("goal") == "the goal"  # events stay

    asyncio.run(main())


def test_a_refused_creation_is_taken_back_by_the_plumbing(tmp_path: Path) -> None:
    """``Repo.uncreate`` removes exactly what ``create`` wrote (the node calls it when registering the
    name is refused after the store part succeeded): the repository no longer exists and can be
    created again."""

    async def main() -> None:
        repo = Repo(EmbeddedStore(tmp_path / "s", create=True, fsync=False), "t/r")
        await repo.create(description="first")
        assert await repo.exists() and repo.meta_key.endswith("meta")
        await repo.uncreate()
        assert not await repo.exists()
        await repo.create(description="again")
        assert (await repo.meta())["description"] == "again"

    asyncio.run(main())

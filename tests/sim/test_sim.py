"""The deterministic simulation (hif/testing/sim.py): agents landing over one store with injected faults.

Each seed runs agents with transient errors, lost replies and crash points over one embedded store,
then checks the invariants (gap-free log, each session landed at most once, acknowledged landings in
the log, tree(N) == tree(N-1) + changes(N), no lost edit, no false conflict). A failure names its
seed in the test id and the message; reproduce with ``run_simulation(seed, **SMALL)``.
``make sim SEEDS=500`` runs seeds 0..499.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from hif.errors import NotFound, PreconditionFailed, StoreError
from hif.store.embedded import EmbeddedStore
from hif.testing.faults import Faults, FaultyStore, SimulatedCrash, s3_latency
from hif.testing.sim import VirtualTimeLoop, run_simulation, run_virtual

SMALL = dict(agents=6, sessions_per_agent=3, error_rate=0.05, lost_reply_rate=0.05, crash_rate=0.3)


def test_simulation_seed(sim_seed: int) -> None:
    report = run_simulation(sim_seed, **SMALL)
    assert report.positions, report.summary()
    # every session either landed (at positions 2..) or conflicted
    assert len(report.positions) + len(report.conflicts) == 6 * 3, report.summary()


GROUPED = dict(agents=16, sessions_per_agent=2, shared_files=64, hot_rate=0.0, group=8)


@pytest.mark.parametrize("seed", range(4))
def test_group_landing_keeps_the_invariants(seed: int) -> None:
    report = run_simulation(seed, **GROUPED, crash_rate=0.3)
    landed = sum(map(len, report.positions.values()))
    assert landed + len(report.conflicts) == 16 * 2, report.summary()


def test_group_landing_puts_several_sessions_in_a_record() -> None:
    report = run_simulation(0, **GROUPED, error_rate=0, lost_reply_rate=0, crash_rate=0)
    landed = sum(map(len, report.positions.values()))
    assert any(len(v) > 1 for v in report.positions.values()), report.summary()
    assert len(report.positions) < landed, report.summary()
    solo = run_simulation(0, **{**GROUPED, "group": 1}, error_rate=0, lost_reply_rate=0, crash_rate=0)
    assert all(len(v) == 1 for v in solo.positions.values())


def test_same_seed_same_report() -> None:
    first = run_simulation(7, **SMALL)
    second = run_simulation(7, **SMALL)
    assert first == second
    assert first.ids.keys() != second.ids.keys()  # session ids differ; the outcome does not


def test_faults_are_exercised() -> None:
    report = run_simulation(3, agents=8, sessions_per_agent=4, crash_rate=0.5)
    assert report.injected_errors and report.lost_replies and report.crashes, report.summary()
    assert report.conflicts and report.already, report.summary()
    assert len(report.positions) + len(report.conflicts) == 8 * 4


def test_no_faults_no_retries() -> None:
    report = run_simulation(
        1, agents=4, sessions_per_agent=2, error_rate=0, lost_reply_rate=0, crash_rate=0
    )
    assert report.retries == report.crashes == report.injected_errors == report.lost_replies == 0
    assert not report.already


# -- the fault wrapper on its own ------------------------------------------------------------


def _store(tmp_path) -> EmbeddedStore:
    return EmbeddedStore(tmp_path / "store", create=True, fsync=False)


def test_faulty_store_keeps_semantics(tmp_path) -> None:
    async def main() -> None:
        st = FaultyStore(_store(tmp_path), Faults(latency=s3_latency), rng=1)
        await st.put("a/b", b"1", if_none_match=True)
        with pytest.raises(PreconditionFailed):
            await st.put("a/b", b"2", if_none_match=True)
        with pytest.raises(NotFound):
            await st.get("a/c")
        data, etag = await st.get_with_etag("a/b")
        await st.put("a/b", b"3", if_match=etag)
        with pytest.raises(PreconditionFailed):
            await st.put("a/b", b"4", if_match=etag)
        assert await st.get_or_none("a/b") == b"3"
        assert [k async for k in st.iter_keys("a/")] == ["a/b"]
        assert await st.list_children("a/") == ["b"]
        await st.delete("a/b")
        assert await st.head("a/b") is None
        assert st.calls["put"] == 4 and st.calls["get"] == 2
        assert asyncio.get_running_loop().time() > 0.5  # eleven ~60 ms round trips, virtual

    run_virtual(main())


def test_errors_apply_nothing_and_lost_replies_apply(tmp_path) -> None:
    async def main() -> None:
        inner = _store(tmp_path)
        failing = FaultyStore(inner, Faults(error_rate=1.0), rng=0)
        with pytest.raises(StoreError):
            await failing.put("k", b"x")
        assert await inner.head("k") is None
        lossy = FaultyStore(inner, Faults(lost_reply_rate=1.0), rng=0)
        with pytest.raises(StoreError) as e:
            await lossy.put("k", b"x", if_none_match=True)
        assert not isinstance(e.value, PreconditionFailed)
        assert await inner.get("k") == b"x"
        assert await lossy.get("k") == b"x"  # reads have no reply to lose
        with pytest.raises(StoreError):
            await lossy.delete("k")
        assert await inner.head("k") is None
        assert lossy.lost_replies["put"] == 1 and lossy.lost_replies["delete"] == 1

    run_virtual(main())


def test_crash_point_is_sticky_and_not_an_exception(tmp_path) -> None:
    async def main() -> None:
        st = FaultyStore(_store(tmp_path), Faults(crash_after=3), rng=0)
        await st.put("k", b"1")
        await st.get("k")
        for _ in range(2):
            try:
                await st.put("k", b"2")
            except Exception:  # noqa: BLE001 - application code must not be able to swallow it
                pytest.fail("SimulatedCrash was caught as an Exception")
            except SimulatedCrash:
                pass
        assert st.crashed
        assert await st.inner.get("k") == b"1"  # the crashed call never reached the store

    run_virtual(main())


def test_seeded_faults_repeat(tmp_path) -> None:
    async def pattern(seed: int) -> list[str]:
        st = FaultyStore(_store(tmp_path), Faults(error_rate=0.3, lost_reply_rate=0.3), rng=seed)
        out = []
        for i in range(40):
            try:
                await st.put(f"k{seed}/{i}", b"x")
                out.append("ok")
            except StoreError as e:
                out.append(str(e))
        return out

    assert run_virtual(pattern(5)) == run_virtual(pattern(5))


def test_s3_latency_shape() -> None:
    rng = random.Random(0)
    samples = sorted(s3_latency(rng) for _ in range(20000))
    assert 0.05 < samples[len(samples) // 2] < 0.07
    assert 0.2 < samples[int(len(samples) * 0.995)] < 0.8
    assert samples[-1] <= 0.8


def test_virtual_time_loop_does_not_wait() -> None:
    loop = VirtualTimeLoop()
    try:
        loop.run_until_complete(asyncio.sleep(3600))
        assert loop.time() >= 3600
    finally:
        loop.close()


def test_crash_at_every_store_call_of_a_landing(tmp_path) -> None:
    """Crash a landing at each of its store calls in turn; a restarted retry must land it exactly once."""
    from hif.landing import land
    from hif.mainline import log_key
    from hif.objects import FILE
    from hif.repo import Repo
    from hif.session import make_event

    async def prepare(root) -> tuple[EmbeddedStore, str]:
        store = EmbeddedStore(root, create=True, fsync=False)
        repo = Repo(store, "sim/crash", clock=lambda: 1.0)
        await repo.create()
        first = await repo.sessions.start("first", "a", "agent", 0)
        oid = await repo.objects.put_blob(b"one\ntwo\nthree\n")
        await repo.sessions.append(
            first.id, make_event("write", "a", "agent", 1.0, path="f.txt", kind=FILE, blob=oid)
        )
        second = await repo.sessions.start("second", "b", "agent", 0)
        oid = await repo.objects.put_blob(b"other\n")
        await repo.sessions.append(
            second.id, make_event("write", "b", "agent", 1.0, path="g.txt", kind=FILE, blob=oid)
        )
        await land(
            repo, await repo.sessions.load(first.id)
        )  # so the second lands over a newer head
        return store, second.id

    async def crash_at(k: int | None) -> int:
        store, sid = await prepare(tmp_path / f"store-{k}")
        faulty = FaultyStore(store, Faults(crash_after=k), rng=0)
        repo = Repo(faulty, "sim/crash", clock=lambda: 2.0)
        try:
            first = await land(repo, await repo.sessions.load(sid))
        except SimulatedCrash:
            first = None
        fresh = Repo(store, "sim/crash", clock=lambda: 3.0)  # the restarted process
        landed_before = await store.head(log_key(fresh.prefix, 2)) is not None
        assert first is None or landed_before
        result = await land(fresh, await fresh.sessions.load(sid))
        assert (result.position, result.already) == (2, landed_before)
        assert await fresh.mainline.head() == 2
        record = await fresh.mainline.record(2)
        assert [s.session for s in record.sessions] == [sid]
        assert (await fresh.sessions.state(sid))["position"] == 2
        return faulty.count

    total = run_virtual(crash_at(None))
    assert total > 10
    for k in range(1, total + 1):
        run_virtual(crash_at(k))

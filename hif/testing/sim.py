"""A deterministic simulation of many agents landing sessions over one store with injected faults.

``run_simulation(seed)`` runs ``agents`` coroutines on one asyncio event loop over ONE shared
:class:`EmbeddedStore`, each through its own :class:`FaultyStore` (seeded errors, lost replies, S3-like
latency, crash points). Every agent starts sessions through the plumbing, writes files (its own files,
plus line edits of a few shared files so that landings merge, and sometimes the same "hot" line so
that they conflict) and lands them with :func:`hif.landing.land`. A crash restarts the agent with fresh
objects (no caches) and it retries the same session, which must land exactly once.

Determinism: every random choice comes from ``random.Random`` seeded from ``seed``, and the event loop
runs on *virtual time* (:class:`VirtualTimeLoop`): ``asyncio.sleep`` advances a simulated clock
instead of waiting, so the interleaving of the agents depends only on the seed. Session ids contain
OS randomness, so reports name sessions by ``(agent, n)``, never by id.

After the run :func:`check_invariants` verifies the log, the trees and the outcome of every session
against an independent model, and raises ``AssertionError`` naming the seed.
"""

from __future__ import annotations

import asyncio
import functools
import selectors
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any, TypeVar

from hif.errors import ConflictError, CorruptObject, NotFound, StoreError
from hif.landing import land
from hif.mainline import LandingRecord, log_key
from hif.objects import EMPTY_TREE, FILE, Entry, blob_id
from hif.repo import Repo
from hif.session import Session, make_event
from hif.store.base import ObjectStore
from hif.store.embedded import EmbeddedStore
from hif.testing.faults import Faults, FaultyStore, Latency, SimulatedCrash, s3_latency
from hif.tree import apply, lookup_file, walk

T = TypeVar("T")

REPO = "sim/repo"
EPOCH = 1_700_000_000.0
HOT_LINE = 0  # the line of each shared file that "hot" edits fight over


# -- virtual time ------------------------------------------------------------------------------


class _VirtualSelector(selectors.SelectSelector):
    """Never blocks: waiting ``timeout`` seconds advances the loop's virtual clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        events = super().select(0)  # the loop's self-pipe (call_soon_threadsafe) still works
        if events or not timeout:
            return events
        if timeout is None:  # pragma: no cover - nothing scheduled and nothing ready
            raise RuntimeError("simulation deadlock: no task can make progress")
        assert self.loop is not None
        self.loop.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock only moves when every task is waiting: sleeps cost no wall time."""

    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self.now = 0.0

    def time(self) -> float:
        return self.now


def run_virtual(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion on a fresh :class:`VirtualTimeLoop`."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


# -- the plan: what each agent intends -----------------------------------------------------------


@dataclass
class Plan:
    """One session's intent, fixed before it starts (its shared-file content depends on its base)."""

    agent: int
    n: int
    own: dict[str, bytes | None]  # whole-file writes (None: delete) of the agent's own files
    drafts: dict[str, bytes]  # earlier iterations written before the final content
    lines: list[tuple[str, int, bytes]]  # (shared path, line number, new line) edits
    stale: int  # how far behind the head the session's base is taken

    @property
    def label(self) -> str:
        return f"a{self.agent}s{self.n}"


def shared_path(i: int) -> str:
    return f"shared/file{i}.txt"


def original_line(path: str, line: int) -> bytes:
    return f"{path} line {line}: original\n".encode()


def make_plans(
    seed: int, agents: int, sessions: int, shared_files: int, shared_lines: int, hot_rate: float
) -> list[list[Plan]]:
    # distinct, non-adjacent line slots (even lines > HOT_LINE) so that ordinary edits always merge
    slots = [(shared_path(f), ln) for f in range(shared_files) for ln in range(2, shared_lines, 2)]
    Random(f"{seed}:slots").shuffle(slots)
    plans: list[list[Plan]] = []
    for a in range(agents):
        rng = Random(f"{seed}:plan:{a}")
        mine: list[Plan] = []
        for n in range(sessions):
            label = f"a{a}s{n}"
            own: dict[str, bytes | None] = {
                f"agents/a{a}/s{n}.txt": f"{label} final\n".encode() * 3
            }
            drafts = {f"agents/a{a}/s{n}.txt": f"{label} draft\n".encode()}
            if rng.random() < 0.4:
                own[f"agents/a{a}/notes.txt"] = f"notes after {label}\n".encode()
            if n > 0 and rng.random() < 0.25:
                own[f"agents/a{a}/s{rng.randrange(n)}.txt"] = None
            lines: list[tuple[str, int, bytes]] = []
            for _ in range(rng.choice((0, 1, 1, 2))):
                path, ln = slots.pop()
                lines.append((path, ln, f"{path} line {ln}: {label}\n".encode()))
            if rng.random() < hot_rate:
                path = shared_path(rng.randrange(shared_files))
                if all(p != path or ln != HOT_LINE for p, ln, _ in lines):
                    lines.append((path, HOT_LINE, f"{path} line {HOT_LINE}: {label}\n".encode()))
            stale = rng.choice((0, 0, 0, 1, 2, 4))
            mine.append(Plan(a, n, own, drafts, lines, stale))
        plans.append(mine)
    return plans


def edit_lines(content: bytes, edits: list[tuple[int, bytes]]) -> bytes:
    lines = content.splitlines(keepends=True)
    for ln, text in edits:
        lines[ln] = text
    return b"".join(lines)


# -- the report --------------------------------------------------------------------------------


@dataclass
class SimReport:
    """What happened, by ``(agent, n)``; two runs of one seed give equal reports."""

    seed: int
    positions: dict[int, list[tuple[int, int]]]  # mainline position -> (agent, session index)...
    conflicts: list[tuple[int, int]]
    already: list[tuple[int, int]]  # landings acknowledged as already=True (after a retry/crash)
    crashes: int
    retries: int
    store_calls: dict[str, int]
    injected_errors: int
    lost_replies: int
    max_attempts: int
    virtual_seconds: float
    ids: dict[str, tuple[int, int]] = field(default_factory=dict, compare=False)

    def summary(self) -> str:
        return (
            f"seed {self.seed}: {len(self.positions)} positions, "
            f"{sum(map(len, self.positions.values()))} landed, {len(self.conflicts)} conflicts, "
            f"{self.crashes} crashes, {self.retries} retries, {self.injected_errors} errors, "
            f"{self.lost_replies} lost replies, {sum(self.store_calls.values())} store calls, "
            f"{self.virtual_seconds:.1f} virtual s"
        )


@dataclass
class _Outcome:
    plan: Plan
    sid: str | None = None
    base: int | None = None
    shared: dict[str, bytes] = field(default_factory=dict)  # full new content of shared files
    landed: int | None = None
    already: bool = False
    conflict: ConflictError | None = None
    attempts: int = 0


# -- agents ------------------------------------------------------------------------------------


class _Agent:
    def __init__(self, sim: _Sim, index: int) -> None:
        self.sim = sim
        self.index = index
        self.rng = Random(f"{sim.seed}:agent:{index}")
        self.incarnation = 0
        self.stores: list[FaultyStore] = []
        self.repo = self._boot()

    def _boot(self) -> Repo:
        """A fresh process: new store wrapper and Repo (no caches), maybe with a crash point."""
        crash = None
        if self.incarnation < self.sim.max_crashes and self.rng.random() < self.sim.crash_rate:
            crash = self.rng.randint(1, self.sim.crash_within)
        faults = Faults(self.sim.error_rate, self.sim.lost_reply_rate, self.sim.latency, crash)
        rng = Random(f"{self.sim.seed}:store:{self.index}:{self.incarnation}")
        store = FaultyStore(self.sim.store, faults, rng=rng)
        self.stores.append(store)
        return Repo(store, REPO, clock=self.sim.clock)

    def restart(self) -> None:
        self.sim.crashes += 1
        self.incarnation += 1
        self.repo = self._boot()

    async def retry(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        last: StoreError | None = None
        for attempt in range(self.sim.max_retries):
            try:
                return await fn(*args)
            except StoreError as e:
                last = e
                self.sim.retries += 1
                await asyncio.sleep(self.rng.uniform(0, 0.01 * min(attempt + 1, 10)))
        raise AssertionError(
            f"seed {self.sim.seed}: agent {self.index} gave up on {getattr(fn, '__name__', fn)} "
            f"after {self.sim.max_retries} store errors (last: {last})"
        )

    async def run(self) -> None:
        for plan in self.sim.plans[self.index]:
            out = _Outcome(plan)
            self.sim.outcomes.append(out)
            while True:
                try:
                    await self.session(out)
                    break
                except SimulatedCrash:
                    self.restart()
            await asyncio.sleep(self.rng.uniform(0, 0.2))  # think time

    async def session(self, out: _Outcome) -> None:
        plan = out.plan
        repo = self.repo
        author = f"agent{plan.agent}"
        if out.sid is None:
            head = await self.retry(repo.mainline.head)
            base = max(1, head - plan.stale)
            base_tree = await self.retry(repo.mainline.tree_at, base)
            shared: dict[str, bytes] = {}
            for path in sorted({p for p, _, _ in plan.lines}):
                entry = await self.retry(lookup_file, repo.objects, base_tree, path)
                assert entry is not None, f"seed {self.sim.seed}: {path} missing at {base}"
                content = await self.retry(repo.objects.get_blob, entry.oid)
                shared[path] = edit_lines(
                    content, [(ln, t) for p, ln, t in plan.lines if p == path]
                )
            s = await self.retry(repo.sessions.start, f"work {plan.label}", author, "agent", base)
            # only now does the agent "know" its session (as a working copy's state.json would)
            out.sid, out.base, out.shared = s.id, base, shared
        sid = out.sid
        final = self.final_changes(out)
        s = await self.retry(repo.sessions.load, sid)
        if s.is_open and s.changes != final:
            for path, content in plan.drafts.items():
                await self.write(s, author, path, content)
            for path, content in [*plan.own.items(), *out.shared.items()]:
                if content is None:
                    ev = make_event("delete", author, "agent", self.sim.clock(), path=path)
                    await self.retry(repo.sessions.append, sid, ev)
                else:
                    await self.write(s, author, path, content)
            s = await self.retry(repo.sessions.load, sid)
            assert s.changes == final, f"seed {self.sim.seed}: {plan.label} events lost"
        await self.land(out, s)

    def final_changes(self, out: _Outcome) -> dict[str, Entry | None]:
        changes: dict[str, Entry | None] = {}
        for path, content in [*out.plan.drafts.items(), *out.plan.own.items(), *out.shared.items()]:
            changes[path] = None if content is None else Entry(FILE, blob_id(content))
        return changes

    async def write(self, s: Session, author: str, path: str, content: bytes) -> None:
        repo = self.repo
        oid = await self.retry(repo.objects.put_blob, content)
        ev = make_event("write", author, "agent", self.sim.clock(), path=path, kind=FILE, blob=oid)
        await self.retry(repo.sessions.append, s.id, ev)

    async def land(self, out: _Outcome, s: Session) -> None:
        try:
            result = await self.retry(functools.partial(land, group=self.sim.group), self.repo, s)
        except ConflictError as e:
            out.conflict = e
            return
        assert result.session == s.id
        if out.landed is not None:
            raise AssertionError(f"seed {self.sim.seed}: {out.plan.label} acknowledged twice")
        out.landed, out.already, out.attempts = result.position, result.already, result.attempts


# -- the run -----------------------------------------------------------------------------------


class _Sim:
    def __init__(self, seed: int, store: ObjectStore, **cfg: Any) -> None:
        self.seed = seed
        self.store = store
        self.__dict__.update(cfg)
        self.plans = make_plans(
            seed,
            self.agents,
            self.sessions_per_agent,
            self.shared_files,
            self.shared_lines,
            self.hot_rate,
        )
        self.outcomes: list[_Outcome] = []
        self.crashes = 0
        self.retries = 0

    def clock(self) -> float:
        return EPOCH + asyncio.get_running_loop().time()

    async def setup(self) -> None:
        """Position 1: the shared files, landed without faults."""
        repo = Repo(self.store, REPO, clock=self.clock)
        await repo.create()
        s = await repo.sessions.start("seed the shared files", "setup", "human", 0)
        for i in range(self.shared_files):
            path = shared_path(i)
            content = b"".join(original_line(path, ln) for ln in range(self.shared_lines))
            oid = await repo.objects.put_blob(content)
            ev = make_event("write", "setup", "human", self.clock(), path=path, kind=FILE, blob=oid)
            await repo.sessions.append(s.id, ev)
        result = await land(repo, await repo.sessions.load(s.id))
        assert result.position == 1

    async def run(self) -> None:
        await self.setup()
        agents = [_Agent(self, i) for i in range(self.agents)]
        self.agent_objs = agents
        await asyncio.gather(*(a.run() for a in agents))


def run_simulation(
    seed: int,
    *,
    agents: int = 8,
    sessions_per_agent: int = 4,
    shared_files: int = 3,
    error_rate: float = 0.05,
    lost_reply_rate: float = 0.05,
    crash_rate: float = 0.3,
    max_crashes: int = 3,
    crash_within: int = 120,
    hot_rate: float = 0.2,
    latency: Latency | None = s3_latency,
    max_retries: int = 200,
    group: int = 1,
    root: str | Path | None = None,
) -> SimReport:
    """Run one seeded simulation, check every invariant (AssertionError names the seed), report."""
    slots_needed = agents * sessions_per_agent * 2 + 4
    shared_lines = max(16, 2 * (slots_needed // shared_files + 2))
    cfg = dict(
        agents=agents,
        sessions_per_agent=sessions_per_agent,
        shared_files=shared_files,
        shared_lines=shared_lines,
        error_rate=error_rate,
        lost_reply_rate=lost_reply_rate,
        crash_rate=crash_rate,
        max_crashes=max_crashes,
        crash_within=crash_within,
        hot_rate=hot_rate,
        latency=latency,
        max_retries=max_retries,
        group=group,
    )
    with tempfile.TemporaryDirectory(prefix="hif-sim-", dir=root) as tmp:
        store = EmbeddedStore(Path(tmp) / "store", create=True, fsync=False)
        sim = _Sim(seed, store, **cfg)

        async def main() -> SimReport:
            try:
                await sim.run()
            except (AssertionError, SimulatedCrash):
                raise
            except Exception as e:  # any unexpected error is a finding too: name the seed
                raise AssertionError(f"seed {seed}: unexpected {type(e).__name__}: {e}") from e
            await check_invariants(sim)
            return _report(sim)

        return run_virtual(main())


def _report(sim: _Sim) -> SimReport:
    calls: dict[str, int] = {}
    errors = lost = 0
    for agent in sim.agent_objs:
        for st in agent.stores:
            for op, n in sorted(st.calls.items()):
                calls[op] = calls.get(op, 0) + n
            errors += sum(st.errors.values())
            lost += sum(st.lost_replies.values())
    landed = sorted((o for o in sim.outcomes if o.landed is not None), key=lambda o: o.landed or 0)
    return SimReport(
        seed=sim.seed,
        positions=_by_position(landed),
        conflicts=sorted((o.plan.agent, o.plan.n) for o in sim.outcomes if o.conflict is not None),
        already=sorted((o.plan.agent, o.plan.n) for o in sim.outcomes if o.already),
        crashes=sim.crashes,
        retries=sim.retries,
        store_calls=dict(sorted(calls.items())),
        injected_errors=errors,
        lost_replies=lost,
        max_attempts=max((o.attempts for o in sim.outcomes), default=0),
        virtual_seconds=round(asyncio.get_running_loop().time(), 6),
        ids={o.sid: (o.plan.agent, o.plan.n) for o in sim.outcomes if o.sid is not None},
    )


def _by_position(landed: list[_Outcome]) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = {}
    for o in landed:
        if o.landed is not None:
            out.setdefault(o.landed, []).append((o.plan.agent, o.plan.n))
    return {p: sorted(v) for p, v in out.items()}


# -- invariants --------------------------------------------------------------------------------


async def _files(repo: Repo, tree: bytes) -> dict[str, bytes]:
    return {path: await repo.objects.get_blob(e.oid) async for path, e in walk(repo.objects, tree)}


async def check_invariants(sim: _Sim) -> None:
    """Check the run against the brief's invariants and an independent model of the intended files."""
    seed = sim.seed

    def fail(msg: str) -> None:
        raise AssertionError(f"seed {seed}: {msg}")

    repo = Repo(sim.store, REPO, clock=sim.clock)  # fresh caches, no faults
    # 1. the log is gap-free: positions 1..N present, N+1 absent, nothing else under log/
    keys = [k async for k in sim.store.iter_keys(repo.prefix + "log/")]
    n = len(keys)
    if keys != [log_key(repo.prefix, p) for p in range(1, n + 1)]:
        fail(f"log is not gap-free: {[k.rsplit('/', 1)[1] for k in keys]}")
    if await repo.mainline.head() != n:
        fail(f"head() = {await repo.mainline.head()} but the log holds {n} records")
    records: dict[int, LandingRecord] = {}
    for p in range(1, n + 1):
        try:
            records[p] = LandingRecord.from_bytes(await sim.store.get(log_key(repo.prefix, p)), p)
        except CorruptObject as e:
            fail(f"record {p}: {e}")
    # 2. every session landed at most once
    where: dict[str, int] = {}
    for p, rec in records.items():
        for ls in rec.sessions:
            if ls.session in where:
                fail(f"session {ls.session} landed twice: at {where[ls.session]} and {p}")
            where[ls.session] = p
    by_sid = {o.sid: o for o in sim.outcomes if o.sid is not None}
    # 3. acknowledged landings are in the log where land() said; conflicts are not in the log
    for o in sim.outcomes:
        label = o.plan.label
        if o.landed is None and o.conflict is None:
            fail(f"{label} finished neither landed nor conflicted")
        if o.landed is not None:
            if where.get(o.sid or "") != o.landed:
                fail(f"{label} acknowledged at {o.landed}, log has it at {where.get(o.sid or '')}")
            state = await repo.sessions.state(o.sid or "")
            if state is None or state.get("state") != "landed" or state.get("position") != o.landed:
                fail(f"{label} landed at {o.landed} but its state marker says {state}")
        if o.conflict is not None and o.sid in where:
            fail(f"{label} reported a conflict but landed at {where[o.sid]}")
    for sid, p in where.items():
        if p > 1 and sid not in by_sid:
            fail(f"position {p} holds session {sid} that no agent knows")
    # 4. tree(p) == apply(tree(p-1), changes(p)) and parent_tree == tree(p-1); every object present
    prev = EMPTY_TREE
    for p, rec in records.items():
        if rec.parent_tree != prev:
            fail(f"record {p}: parent tree {rec.parent_tree.hex()} is not tree({p - 1})")
        if await apply(repo.objects, prev, rec.changes()) != rec.tree:
            fail(f"record {p}: tree is not tree({p - 1}) plus the record's changes")
        for ls in rec.sessions:
            try:
                await repo.objects.get_value("snapshot", ls.snapshot)
            except (NotFound, CorruptObject) as e:
                fail(f"record {p}: snapshot of {ls.session}: {e}")
        prev = rec.tree
    # 5. the model: each position is the previous files plus that session's intended edits
    files: dict[int, dict[str, bytes]] = {0: {}}
    for p in range(1, n + 1):
        files[p] = await _files(repo, records[p].tree)
    model = dict(files[1]) if n else {}
    owner: dict[tuple[str, int], tuple[int, Plan]] = {}  # (path, line) -> last landed edit
    last_own: dict[str, tuple[int, bytes | None, Plan]] = {}  # own path -> last effective change
    for p in range(2, n + 1):
        for sid in [ls.session for ls in records[p].sessions]:
            o = by_sid[sid]
            base = o.base or 0
            for path, content in o.plan.own.items():
                if files[base].get(path) == content:
                    continue  # a no-op against the session's base: not a change
                last = last_own.get(path)
                if last is not None and last[0] > base and last[1] != content:
                    fail(
                        f"{o.plan.label} landed at {p} over {last[2].label}'s change of {path} "
                        f"(at {last[0]}, after its base {base}) without a conflict"
                    )
                last_own[path] = (p, content, o.plan)
                if content is None:
                    model.pop(path, None)
                else:
                    model[path] = content
            for path in sorted({q for q, _, _ in o.plan.lines}):
                model[path] = edit_lines(
                    model[path], [(ln, t) for q, ln, t in o.plan.lines if q == path]
                )
            # no false "no conflict": nobody else changed our lines between our base and our landing
            for path, ln, _ in o.plan.lines:
                last_line = owner.get((path, ln))
                if last_line is not None and last_line[0] > base:
                    fail(
                        f"{o.plan.label} landed at {p} over {last_line[1].label}'s edit of {path}:{ln} "
                        f"(at {last_line[0]}, after its base {base}) without a conflict"
                    )
                owner[(path, ln)] = (p, o.plan)
        if files[p] != model:
            diff = sorted(
                k for k in model.keys() | files[p].keys() if model.get(k) != files[p].get(k)
            )
            fail(f"tree at {p} ({[ls.session for ls in records[p].sessions]}) differs from the model on {diff}")
    # 6. no false conflict: each reported conflict has a real overlapping landing after our base
    landed_at = {s: p for s, p in where.items() if p > 1}
    for o in sim.outcomes:
        if o.conflict is None:
            continue
        for c in o.conflict.conflicts:
            ours = {ln for q, ln, _ in o.plan.lines if q == c.path}

            def overlaps(
                sid: str, path: str = c.path, ours: set[int] = ours, me: Plan = o.plan
            ) -> bool:
                theirs = by_sid[sid].plan
                if path in me.own:  # an own file: any concurrent change of it is a real clash
                    return path in theirs.own
                return bool(ours & {ln for q, ln, _ in theirs.lines if q == path})

            real = [
                pos
                for pos, sid in c.sessions
                if pos > (o.base or 0) and landed_at.get(sid) == pos and overlaps(sid)
            ]
            if not real:
                fail(
                    f"{o.plan.label}: conflict on {c.path} ({c.reason}) without an overlapping edit"
                )

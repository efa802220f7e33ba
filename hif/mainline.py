"""The mainline: a gap-free, immutable log of landing records at ``log/<position>``.

Each record is created with put-if-absent, which makes that write the single linearisation point of
landing. ``head`` is only a hint (it may lag, never lead); the true head is found by probing forward
from the hint, exponentially then by bisection, so finding it costs O(log lag) reads.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from hif.aio import pause, running_loop, together
from hif.errors import CorruptObject, NotFound, PreconditionFailed
from hif.objects import EMPTY_TREE, FILE_KINDS, Entry, decode, encode
from hif.paths import check_entry_path, check_path, parent_dirs
from hif.store.base import ObjectStore

POS_WIDTH = 12
RECORD_CACHE = 2048  # records kept per handle (immutable, so a cache; cleared when full)


@dataclass(frozen=True, slots=True)
class LandedSession:
    """One session inside a landing record (a record holds several under group landing)."""

    session: str
    snapshot: bytes
    goal: str
    author: str
    role: str
    base: int
    changes: dict[str, Entry | None]

    def to_cbor(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "snapshot": self.snapshot,
            "goal": self.goal,
            "author": self.author,
            "role": self.role,
            "base": self.base,
            "changes": [
                [p, e.kind if e else None, e.oid if e else None]
                for p, e in sorted(self.changes.items())
            ],
        }

    @classmethod
    def from_cbor(cls, v: Any) -> LandedSession:
        changes: dict[str, Entry | None] = {}
        for path, kind, oid in v["changes"]:
            if kind is None:
                changes[check_path(path)] = None
            elif kind not in FILE_KINDS:
                raise CorruptObject(f"a landed change of {path!r} has kind {kind!r}, not a file's")
            else:
                changes[check_entry_path(path, kind)] = Entry(kind, oid)
        return cls(
            v["session"], v["snapshot"], v["goal"], v["author"], v["role"], v["base"], changes
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "snapshot": self.snapshot.hex(),
            "goal": self.goal,
            "author": self.author,
            "role": self.role,
            "base": self.base,
            "changes": [
                {"path": p, "action": "delete" if e is None else "write", **(e.to_json() if e else {})}
                for p, e in sorted(self.changes.items())
            ],
        }


@dataclass(frozen=True, slots=True)
class RecordTouches:
    """A landing record's sessions, changed paths (each with the sessions that changed it, in record
    order) and the directories above those paths."""

    sessions: frozenset[str]
    paths: dict[str, list[str]]
    dirs: frozenset[str]


@dataclass(frozen=True, slots=True)
class LandingRecord:
    """One position of the log: the tree it makes, the tree it was built on, and the sessions in it."""

    position: int
    tree: bytes
    parent_tree: bytes
    time: float
    sessions: list[LandedSession]
    extra: dict[str, Any] = field(default_factory=dict)  # bloom, signature... (later layers)
    _touches: RecordTouches | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def paths(self) -> set[str]:
        return {p for s in self.sessions for p in s.changes}

    @property
    def touches(self) -> RecordTouches:
        """What the record touches, built once per record object: every lander waiting on a record
        checks its own few paths against it, by set intersection instead of a walk of every change."""
        if self._touches is None:
            by_path: dict[str, list[str]] = {}
            for s in self.sessions:
                for p in s.changes:
                    by_path.setdefault(p, []).append(s.session)
            dirs = frozenset(d for p in by_path for d in parent_dirs(p))
            object.__setattr__(self, "_touches", RecordTouches(
                frozenset(s.session for s in self.sessions), by_path, dirs))
        return self._touches  # type: ignore[return-value]

    def changes(self) -> dict[str, Entry | None]:
        out: dict[str, Entry | None] = {}
        for s in self.sessions:
            out.update(s.changes)
        return out

    def to_bytes(self) -> bytes:
        body: dict[str, Any] = {
            "v": 1,
            "position": self.position,
            "tree": self.tree,
            "parent": self.parent_tree,
            "time": self.time,
            "sessions": [s.to_cbor() for s in self.sessions],
        }
        body.update(self.extra)
        return encode(body)

    @classmethod
    def from_bytes(cls, data: bytes, position: int) -> LandingRecord:
        v = decode(data)
        try:
            if v["position"] != position:
                raise CorruptObject(f"record at position {position} claims {v['position']}")
            known = {"v", "position", "tree", "parent", "time", "sessions"}
            return cls(
                position=v["position"],
                tree=v["tree"],
                parent_tree=v["parent"],
                time=float(v["time"]),
                sessions=[LandedSession.from_cbor(s) for s in v["sessions"]],
                extra={k: x for k, x in v.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptObject(f"malformed landing record at position {position}: {e}") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "tree": self.tree.hex(),
            "parent_tree": self.parent_tree.hex(),
            "time": self.time,
            "sessions": [s.to_json() for s in self.sessions],
        }


def log_key(prefix: str, position: int) -> str:
    return f"{prefix}log/{position:0{POS_WIDTH}d}"


class Mainline:
    """Read and extend one repository's landing log."""

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        self._records: dict[int, LandingRecord] = {}  # records are immutable: safe to cache
        self._waiters: dict[int, list[Any]] = {}  # position -> futures of landers waiting for it
        self._reading: dict[int, Any] = {}  # position -> the read in flight (``peek``)
        self.reads = 0

    async def record(self, position: int) -> LandingRecord:
        if position < 1:
            raise NotFound(f"no position {position}")
        rec = await self.peek(position)
        if rec is None:
            raise NotFound(f"no landing at position {position}")
        return rec

    def cached(self, position: int) -> LandingRecord | None:
        return self._records.get(position)

    async def peek(self, position: int) -> LandingRecord | None:
        """The record at ``position`` if it exists yet: one read that both probes and fetches (a lander
        waiting for the next position, or learning who beat it there). Under an event loop, callers
        asking for the same position at once share one read: the landers of one process waiting for
        the next record poll the store once between them, not once each."""
        cached = self._records.get(position)
        if cached is not None or position < 1:
            return cached
        loop = running_loop()
        if loop is None:
            return await self._read(position)
        import asyncio

        pending = self._reading.get(position)
        if pending is None:
            pending = self._reading[position] = loop.create_task(self._read(position))
            pending.add_done_callback(lambda t: self._read_done(position, t))
        return await asyncio.shield(pending)  # a caller that gives up does not cancel the others' read

    def _read_done(self, position: int, task: Any) -> None:
        self._reading.pop(position, None)
        if not task.cancelled():
            task.exception()  # retrieved: a read whose callers all gave up is not reported as lost

    async def _read(self, position: int) -> LandingRecord | None:
        self.reads += 1
        data = await self.store.get_or_none(log_key(self.prefix, position))
        if data is None:
            return None
        cached = self._records.get(position)  # read meanwhile by another caller: decode once
        if cached is not None:
            return cached
        rec = LandingRecord.from_bytes(data, position)
        if len(self._records) > RECORD_CACHE:
            self._records.clear()
        self._records[position] = rec
        self._wake(position)
        return rec

    async def exists(self, position: int) -> bool:
        if position in self._records:
            return True
        self.reads += 1
        return await self.store.head(log_key(self.prefix, position)) is not None

    async def head_hint(self) -> int:
        data = await self.store.get_or_none(self.prefix + "head")
        if data is None:
            return 0
        try:
            value = decode(data)
        except CorruptObject:
            return 0
        return value if isinstance(value, int) and value >= 0 else 0

    async def head(self, known: int | None = None) -> int:
        """The latest position: start from ``known``, or from the hint and the newest record this
        process has seen, and probe until absent. A process that keeps landing (an agent, a forge
        node) usually knows the head already: the hint is then read together with the one probe
        that confirms it, so finding the head costs one round trip."""
        if known is None and self._records:
            latest = max(self._records)
            hint, ahead = await together([self.head_hint(), self.exists(latest + 1)])
            if isinstance(ahead, BaseException):
                raise ahead
            if not ahead:
                return latest
            known = max(latest + 1, hint if isinstance(hint, int) else 0)
        low = max(known or 0, await self.head_hint() if known is None else 0)
        if low > 0 and not await self.exists(low):
            low = 0  # a hint ahead of the log cannot happen unless the store was tampered with
        step = 1
        high = low + step
        while await self.exists(high):
            low = high
            step *= 2
            high = low + step
        # invariant: low exists (or is 0), high does not
        while high - low > 1:
            mid = (low + high) // 2
            if await self.exists(mid):
                low = mid
            else:
                high = mid
        return low

    async def tree_at(self, position: int) -> bytes:
        if position == 0:
            return EMPTY_TREE
        return (await self.record(position)).tree

    async def append(self, record: LandingRecord) -> None:
        """Create the record with put-if-absent; raises PreconditionFailed if the position is taken."""
        await self.store.put(
            log_key(self.prefix, record.position), record.to_bytes(), if_none_match=True
        )
        self._records[record.position] = record
        self._wake(record.position)

    async def wait_for(self, position: int, seconds: float) -> None:
        """Sleep up to ``seconds``, less if this process writes or reads ``position`` meanwhile: landers
        sharing this mainline (a forge node's requests) learn of a record the moment one of them
        writes it, instead of at their next read of the store."""
        loop = running_loop()
        if loop is None or position in self._records:
            if position not in self._records:
                await pause(seconds)
            return
        waiter = loop.create_future()
        self._waiters.setdefault(position, []).append(waiter)
        handle = loop.call_later(seconds, lambda: waiter.done() or waiter.set_result(None))
        try:
            await waiter
        finally:
            handle.cancel()
            waiting = self._waiters.get(position)
            if waiting is not None:
                with contextlib.suppress(ValueError):
                    waiting.remove(waiter)
                if not waiting:
                    del self._waiters[position]

    def _wake(self, position: int) -> None:
        for waiter in self._waiters.pop(position, ()):
            if not waiter.done():
                waiter.set_result(None)

    def remember(self, record: LandingRecord) -> None:
        """Cache a record this process wrote some other way (``hif import git`` writes in batches)."""
        self._records[record.position] = record
        self._wake(record.position)

    async def advance_hint(self, position: int) -> None:
        """Best effort: move the head hint forward (never back)."""
        for _ in range(3):
            try:
                data, etag = await self.store.get_with_etag(self.prefix + "head")
            except NotFound:
                try:
                    await self.store.put(self.prefix + "head", encode(position), if_none_match=True)
                    return
                except PreconditionFailed:
                    continue
            try:
                current = decode(data)
            except CorruptObject:
                current = 0
            if isinstance(current, int) and current >= position:
                return
            try:
                await self.store.put(self.prefix + "head", encode(position), if_match=etag)
                return
            except PreconditionFailed:
                continue

    async def iter_back(self, start: int, stop: int = 1) -> AsyncIterator[LandingRecord]:
        """Records from ``start`` down to ``stop``, newest first."""
        for pos in range(start, stop - 1, -1):
            yield await self.record(pos)

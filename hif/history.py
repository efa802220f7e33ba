"""Reading history a page at a time: sessions, their changes and iterations, the log walked backwards.

Plumbing over a :class:`hif.repo.Repo` (no working copy, no HTTP): the web UI browses through these
functions, and the SDK can too. Everything here costs what it returns, never the length of the log:
walks go backwards from a cursor with a budget of records, skip blocks of positions through the
rollups when they look for paths, and report where to continue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from hif.errors import NotFound
from hif.mainline import LandedSession, LandingRecord
from hif.objects import Entry
from hif.repo import Repo
from hif.rollups import record_items
from hif.session import Session, fold
from hif.tree import diff as tree_diff
from hif.tree import lookup_file

# Rollup windows grow from the smallest to the largest while walking back: a path touched recently
# is found after a few reads, one untouched for a long time costs O(log n) windows of O(log w) reads.
_MIN_WINDOW = 64
_MAX_WINDOW = 1 << 16


@dataclass(frozen=True, slots=True)
class Change:
    """One file's change: its entry before and after (None: absent)."""

    path: str
    old: Entry | None
    new: Entry | None

    @property
    def action(self) -> str:
        if self.old is None:
            return "added"
        return "deleted" if self.new is None else "modified"


# -- sessions ------------------------------------------------------------------------------------


async def landed_session(repo: Repo, rec: LandingRecord, sid: str) -> Session:
    """A landed session as it was, from its snapshot, with the changes its landing applied."""
    landed = next((x for x in rec.sessions if x.session == sid), None)
    if landed is None:
        raise NotFound(f"session {sid} did not land at position {rec.position}")
    snap = await repo.objects.get_value("snapshot", landed.snapshot)
    s = fold(sid, snap["events"])
    s.state, s.position, s.snapshot = "landed", rec.position, landed.snapshot
    s.changes = dict(landed.changes)
    return s


async def session_record(repo: Repo, s: Session) -> LandingRecord | None:
    """The landing record of a landed session (None while open or once abandoned)."""
    if s.state != "landed" or not s.position:
        return None
    return await repo.mainline.record(s.position)


async def session_changes(repo: Repo, s: Session, rec: LandingRecord | None = None) -> list[Change]:
    """A session's file changes, in path order: for a landed session what its landing applied
    against the record's parent tree; for an open one its changes against its base."""
    if rec is not None:
        before = rec.parent_tree
        changes = next((x.changes for x in rec.sessions if x.session == s.id), s.changes)
    else:
        before = await repo.mainline.tree_at(s.base)
        changes = s.changes
    out = []
    for path, new in sorted(changes.items()):
        old = await lookup_file(repo.objects, before, path)
        if old != new:
            out.append(Change(path, old, new))
    return out


# Said when a session lands (``hif land``, the MCP land tool) or is shown landed (the web UI) with
# no decision recorded: the reasoning is what hif keeps, and a decision is never made up from text.
NO_DECISION = "this session records no decision (hif decide, or the MCP decide tool)"


def undecided(s: Session) -> bool:
    """Whether the session records no ``decide`` event."""
    return not s.of_type("decide")


def iterations(s: Session) -> list[dict[str, Any]]:
    """The session's checkpoint events; iteration ``i`` (1-based) is ``iterations(s)[i - 1]``."""
    return s.of_type("checkpoint")


async def iteration_tree(repo: Repo, s: Session, i: int) -> bytes:
    """The tree of iteration ``i``: 0 is the tree the session started from."""
    if i == 0:
        return await repo.mainline.tree_at(s.events[0]["base"])
    cps = iterations(s)
    if not 1 <= i <= len(cps):
        raise NotFound(f"no iteration {i} (the session has {len(cps)})")
    return cps[i - 1]["tree"]


async def iteration_changes(repo: Repo, s: Session, a: int, b: int) -> list[Change]:
    """What changed from iteration ``a`` to iteration ``b`` (0 = the session's starting tree)."""
    ta, tb = await iteration_tree(repo, s, a), await iteration_tree(repo, s, b)
    return [Change(p, old, new) async for p, old, new in tree_diff(repo.objects, ta, tb)]


async def blob_or_none(repo: Repo, entry: Entry | None) -> bytes | None:
    return None if entry is None else await repo.objects.get_blob(entry.oid)


async def events_after(repo: Repo, sid: str, since: int, *, limit: int = 500) -> list[dict[str, Any]]:
    """Events of a session with ``seq`` > ``since``, oldest first, about ``limit`` at most (a group
    is never split): one listing from the cursor plus one read per stored value, so watching a
    session live costs what is new (:meth:`hif.session.SessionStore.events_after`)."""
    return await repo.sessions.events_after(sid, since, limit=limit)


def session_text(events: list[dict[str, Any]]) -> str:
    """What full-text search looks at: the goal, the conversation and the decisions."""
    parts: list[str] = []
    for e in events:
        t = e.get("type")
        if t == "start":
            parts.append(str(e.get("goal", "")))
        elif t == "say":
            parts.append(str(e.get("text", "")))
        elif t == "decide":
            parts += [str(e.get("decision", "")), str(e.get("why", ""))]
            parts += [str(a) for a in e.get("alternatives", [])]
    return "\n".join(parts)


def matches_text(text: str, query: str) -> bool:
    """Every word of ``query`` occurs in ``text``, ignoring case."""
    low = text.casefold()
    return all(w in low for w in query.casefold().split())


def touches(changes: dict[str, Entry | None] | list[str], path: str) -> bool:
    """Whether a change set touches ``path`` or anything below it."""
    return any(p == path or p.startswith(path + "/") for p in changes)


def path_items(path: str) -> set[str]:
    """Rollup items of records that change ``path`` or something below it."""
    return {"p:" + path, "d:" + path}


# -- walking the log backwards ----------------------------------------------------------------------


@dataclass
class Walk:
    """Landing records from ``start`` down to position 1, newest first, within a budget.

    ``budget`` caps the records read (a rollup window counts as the reads it may cost), so a walk
    costs O(budget) whatever the log's length. With ``items`` (see :mod:`hif.rollups`) only records
    containing one of them are yielded, and blocks of positions whose rollups rule them out are
    skipped unread. Afterwards ``next`` is the highest position not examined yet (0: the whole log
    was examined), the cursor for the next page; ``exhausted`` says the budget ran out.
    """

    repo: Repo
    start: int
    budget: int | None = None
    items: set[str] | None = None
    next: int = field(init=False)
    spent: int = field(init=False, default=0)
    exhausted: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.next = max(0, self.start)

    def afford(self, cost: int) -> bool:
        """Spend ``cost`` of the budget, or note that it ran out. The first step is always taken,
        so every walk makes progress and a cursor never repeats."""
        if self.budget is not None and self.spent > 0 and self.spent + cost > self.budget:
            self.exhausted = True
            return False
        self.spent += cost
        return True

    async def __aiter__(self) -> AsyncIterator[LandingRecord]:
        if self.items is None:
            while self.next >= 1:
                if not self.afford(1):
                    return
                rec = await self.repo.mainline.record(self.next)
                self.next -= 1
                yield rec
            return
        window = _MIN_WINDOW
        while self.next >= 1:
            hi = self.next
            # aligned to the window, so that (lo, hi] is one rollup block after the first window
            lo = ((hi - 1) // window) * window
            if not self.afford(2 * window.bit_length()):
                return
            for pos in reversed(await self.repo.rollups.candidates(lo, hi, self.items)):
                self.next = pos  # everything above pos is examined
                if not self.afford(1):
                    return
                rec = await self.repo.mainline.record(pos)
                self.next = pos - 1
                if record_items(rec) & self.items:
                    yield rec
            self.next = lo
            window = min(window * 2, _MAX_WINDOW)


@dataclass
class Filters:
    """What a list of landed sessions may be narrowed by; empty fields do not filter."""

    author: str = ""
    role: str = ""
    path: str = ""
    text: str = ""

    def on_record(self, s: LandedSession) -> bool:
        """The checks a landing record answers alone (no snapshot read)."""
        if self.author and s.author.casefold() != self.author.casefold():
            return False
        if self.role and s.role != self.role:
            return False
        return not self.path or touches(s.changes, self.path)


@dataclass
class Page:
    """A page of landed sessions, newest first, and the cursor to continue from (None: no more)."""

    rows: list[tuple[LandingRecord, LandedSession]]
    next: int | None
    examined: int  # records read, snapshots included
    exhausted: bool  # the budget ran out before the page filled


async def search_landed(repo: Repo, start: int, filters: Filters, *, limit: int = 25,
                        budget: int = 2000) -> Page:
    """Landed sessions at positions ``start`` and below that pass ``filters``, newest first.

    Stops when ``limit`` sessions matched or ``budget`` records were examined; a text filter reads
    the snapshots of sessions that pass the other filters and whose goal does not already match,
    each counting against the budget.
    """
    walk = Walk(repo, start, budget, path_items(filters.path) if filters.path else None)
    rows: list[tuple[LandingRecord, LandedSession]] = []
    done = 0  # records examined whole
    async for rec in walk:
        found = []
        for s in rec.sessions:
            if not filters.on_record(s):
                continue
            if filters.text and not matches_text(s.goal, filters.text):
                # the first record is always finished, so the next page starts further back
                if not walk.afford(1) and done:
                    break
                snap = await repo.objects.get_value("snapshot", s.snapshot)
                if not matches_text(session_text(snap.get("events", [])), filters.text):
                    continue
            found.append((rec, s))
        if walk.exhausted and done:
            walk.next = rec.position  # the record was not finished: examine it whole next time
            break
        done += 1
        rows += found
        if len(rows) >= limit:
            break
    return Page(rows, walk.next or None, walk.spent, walk.exhausted)


async def file_history(repo: Repo, path: str, start: int, *, limit: int = 10,
                       budget: int = 2000) -> Page:
    """Landed sessions that changed ``path`` (or anything below it), newest first."""
    return await search_landed(repo, start, Filters(path=path), limit=limit, budget=budget)

"""Landing a session onto the mainline without a coordinator (see docs/architecture.md).

1. find the head N; 2. check the session's paths against every record after its base, 3-way merging
files changed on both sides; 3. build the tree at N+1; 4. create ``log/N+1`` with put-if-absent (the
single linearisation point); 5. on a lost race re-check only the new records and retry; 6. best
effort: advance the head hint and close the session. A crash anywhere leaves either no record (a retry
is safe and lands once) or a complete one (a retry finds it and reports the landing).
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hif.aio import RttEstimate, detach, hedged, pause, running_loop, together
from hif.errors import (
    Conflict,
    ConflictError,
    CorruptObject,
    HifError,
    InvalidInput,
    InvalidPath,
    NotFound,
    PreconditionFailed,
    SessionClosed,
    StoreError,
)
from hif.mainline import LandedSession, LandingRecord, RecordTouches
from hif.merge import is_binary, merge3, split_lines
from hif.objects import DIR, EXEC, FILE, FILE_KINDS, Entry, decode, digest, encode
from hif.paths import check_entry_path, check_path, collision, parent_dirs
from hif.repo import Repo
from hif.rollups import query_items
from hif.session import Session
from hif.tree import apply, cached_apply, collisions, lookup, lookup_file, prefetch

MAX_ATTEMPTS = 1000
# Group landing: every lander publishes an intent on entry; when others are waiting, the oldest of them
# (LEADERS) builds the next record with up to GROUP sessions while the rest wait to find themselves in
# it. By Little's law the group must hold about as many sessions as arrive during one record's round
# trips (128 agents on S3: most of them).
GROUP = 128
LEADERS = 1
INTENTS_LISTED = 256
GROUP_MAX_CHANGES = 4096  # a session changing more paths lands on its own (no intent)
EMBED_SNAPSHOT = 256 * 1024  # an intent carries its session's snapshot up to this size
DIRECT_SCAN = 8  # a gap this small is read record by record (together), not walked through rollups
PATIENCE = 30  # round trips a follower waits for the next record before passing its leader over
MIN_PATIENCE = 0.05  # seconds
MIN_POLL = 0.02  # seconds between a follower's reads of the next position, at least (a lander
# in the same process wakes it at once, see Mainline.wait_for)
HEDGE = 2.0  # round trips after which an idempotent write is sent a second time


@dataclass
class LandResult:
    """What ``land`` reports: where the session landed and how."""

    position: int
    session: str
    tree: bytes
    merged: list[str] = field(default_factory=list)
    already: bool = False
    attempts: int = 1
    grouped: bool = False  # landed inside a record written by another session's lander
    group: int = 1  # how many sessions the record holds

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "session": self.session,
            "tree": self.tree.hex(),
            "merged": self.merged,
            "already_landed": self.already,
            "attempts": self.attempts,
            "grouped": self.grouped,
            "group": self.group,
        }


async def effective_changes(repo: Repo, session: Session, base_tree: bytes | None = None) -> dict[str, Entry | None]:
    """The session's changes minus no-ops (a write equal to the base, a delete of an absent file)."""
    if base_tree is None:
        base_tree = await repo.mainline.tree_at(session.base)
    await prefetch(repo.objects, base_tree, session.changes)
    out: dict[str, Entry | None] = {}
    for path, entry in sorted(session.changes.items()):
        if await lookup_file(repo.objects, base_tree, path) != entry:
            out[path] = entry
    return out


@dataclass
class Scan:
    """What the mainline did after a session's base that matters to the session's paths."""

    checked: int
    paths: Iterable[str]
    touched: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    landed_at: int | None = None
    ours: frozenset[str] = field(init=False)
    interest: frozenset[str] = field(init=False)  # our paths and the directories above them

    def __post_init__(self) -> None:
        self.paths = list(self.paths)
        self.ours = frozenset(self.paths)
        self.interest = self.ours | {d for p in self.ours for d in parent_dirs(p)}

    def take(self, pos: int, touches: RecordTouches) -> None:
        """Note what a record did to our paths (``resolve`` reads it): a path of ours, a directory
        above one, or a path below one (ours became a directory)."""
        hits = touches.paths.keys() & self.interest
        below = self.ours & touches.dirs
        if below:
            hits |= {p for p in touches.paths if any(p.startswith(o + "/") for o in below)}
        for path in sorted(hits):
            self.touched.setdefault(path, []).extend((pos, who) for who in touches.paths[path])


async def scan_since(repo: Repo, sid: str, scan: Scan, head: int) -> None:
    """Read the records after ``scan.checked`` that may touch the session's paths (or be the session
    itself): a few records directly, together; a longer stretch through the rollups, in O(log n) reads
    when nothing overlaps."""
    if head <= scan.checked:
        return
    if head - scan.checked <= DIRECT_SCAN:
        positions = list(range(scan.checked + 1, head + 1))
    else:
        positions = await repo.rollups.candidates(scan.checked, head, query_items(sid, scan.paths))
    for i in range(0, len(positions), 64):
        chunk = positions[i:i + 64]
        cached = [repo.mainline.cached(pos) for pos in chunk]
        if any(r is None for r in cached):
            records = await together([repo.mainline.record(pos) for pos in chunk])
        else:
            records = cached
        for pos, record in zip(chunk, records, strict=True):
            if isinstance(record, BaseException):
                raise record
            touches = record.touches
            if sid in touches.sessions:
                scan.landed_at = pos
            scan.take(pos, touches)
    scan.checked = max(scan.checked, head)


@dataclass(frozen=True)
class FileMerge:
    """What became of one file changed on both sides: the entry to write (a clean merge, or one with
    conflict markers when they were asked for), whether it merged cleanly, and why it did not."""

    entry: Entry | None = None
    clean: bool = False
    conflict: str | None = None


async def merge_file(base: Entry | None, mine: Entry | None, theirs: Entry | None, *,
                     read: Callable[[bytes], Awaitable[bytes]], put: Callable[[bytes], Awaitable[bytes]],
                     ours_label: str = "session", markers: bool = False) -> FileMerge:
    """The per-file three-way decision of landing, syncing and accepting an offer: ``mine`` and
    ``theirs`` both changed the file since ``base`` (and differ). A deletion against a change, a
    symbolic link or a binary file is a conflict; text is merged line by line, its result stored
    with ``put`` (blobs read with ``read``); the merged file keeps the kind the changing side gave it."""
    if mine is None or theirs is None:
        return FileMerge(conflict="deleted on one side, changed on the other")
    if mine.kind not in (FILE, EXEC) or theirs.kind not in (FILE, EXEC) or (
        base is not None and base.kind not in (FILE, EXEC)
    ):
        return FileMerge(conflict="symbolic link changed on both sides")
    base_bytes = await read(base.oid) if base is not None else b""
    our_bytes = await read(mine.oid)
    their_bytes = await read(theirs.oid)
    if any(is_binary(b) for b in (base_bytes, our_bytes, their_bytes)):
        return FileMerge(conflict="binary file changed on both sides")
    result = merge3(base_bytes, our_bytes, their_bytes, ours_label=ours_label, theirs_label="mainline")
    kind = mine.kind if mine.kind != (base.kind if base else FILE) else theirs.kind
    entry = None
    if result.clean or markers:
        entry = Entry(kind if kind in (FILE, EXEC) else FILE, await put(result.data))
    return FileMerge(entry, result.clean, None if result.clean else f"{result.conflicts} overlapping change(s)")


async def resolve(
    repo: Repo,
    ours: dict[str, Entry | None],
    base_tree: bytes,
    head_tree: bytes,
    touched: dict[str, list[tuple[int, str]]],
    *,
    ours_label: str = "session",
    write_markers: bool = False,
) -> tuple[dict[str, Entry | None], list[str], list[Conflict]]:
    """Combine our changes with the mainline's: 3-way merge where both sides changed a file.

    Returns the changes to apply on ``head_tree``, the merged paths and the conflicts. With
    ``write_markers`` a conflicting text file gets conflict markers instead of being refused
    (``hif sync`` uses it; landing never does).
    """
    db = repo.objects
    final = dict(ours)
    merged: list[str] = []
    conflicts: list[Conflict] = []
    for path, mine in ours.items():
        for d in parent_dirs(path):
            if d in touched and await lookup_file(db, head_tree, d) is not None and ours.get(d, 0) is not None:
                conflicts.append(Conflict(path, touched[d], f"{d} became a file in the mainline"))
        if mine is not None:
            now = await lookup(db, head_tree, path)
            if now is not None and now.kind == DIR:
                was = await lookup(db, base_tree, path)
                if was is None or was.kind != DIR:
                    who = [w for p, ws in touched.items() if p.startswith(path + "/") for w in ws]
                    conflicts.append(Conflict(path, sorted(set(who)), "became a directory in the mainline"))
        if path not in touched:
            continue
        base = await lookup_file(db, base_tree, path)
        theirs = await lookup_file(db, head_tree, path)
        if theirs in (mine, base):
            continue
        who = touched[path]
        outcome = await merge_file(base, mine, theirs, read=db.get_blob, put=db.put_blob,
                                   ours_label=ours_label, markers=write_markers)
        if outcome.entry is not None:
            final[path] = outcome.entry
        if outcome.clean:
            merged.append(path)
        if outcome.conflict is not None:
            conflicts.append(Conflict(path, who, outcome.conflict))
    return final, merged, conflicts


async def land(
    repo: Repo,
    session: Session,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    rng: random.Random | None = None,
    group: int = GROUP,
    policy: Any = None,
) -> LandResult:
    """Land an open session; idempotent: landing a session that already landed reports that landing.

    ``policy(repo, session, effective changes, base tree)`` (default ``repo.land_policy``) may refuse
    the landing by raising, or return True to *pin* it: the landed tree must then be exactly the
    session's own tree (checks attested it), so the landing is refused if the mainline moved past
    the session's base, and no other session joins its record.

    With ``group`` > 1 (group landing, see docs/architecture.md), a lander publishes an intent
    (``intents/<id>``); when others are waiting, the oldest of them builds a record with up to
    ``group`` of the published sessions while the others wait to find themselves in it. Throughput
    is then no longer one landing per round trip.
    """
    sid = session.id
    rtt = RttEstimate(repo.clock)
    policy = policy if policy is not None else repo.land_policy
    checked = policy is not None
    if checked:  # a forge's rule must not judge a session that already landed or was closed
        state = await rtt.timed(repo.sessions.state(sid))
        if state is not None:
            return await _closed(repo, sid, state)
    try:
        base_tree = await repo.mainline.tree_at(session.base)
    except NotFound:
        raise InvalidInput(f"session base {session.base} is ahead of the mainline") from None
    check_changes(session.changes)
    ours = await effective_changes(repo, session, base_tree)
    # every file entry names a blob: read only what this process has not seen written or read
    await repo.objects.check_kinds((p, e) for p, e in ours.items() if e is not None)
    pinned = bool(await policy(repo, session, ours, base_tree)) if policy is not None else False
    if pinned or len(ours) > GROUP_MAX_CHANGES:
        group = 1  # pinned: nothing may join; huge: an intent listing every path would cost more than it saves
    lander = _Lander(repo, session, ours, base_tree, group, rng or random.Random(sid), rtt)
    return await lander.run(max_attempts, pinned, state_checked=checked)


MARKER = b"<<<<<<< "  # how a conflict that sync marked in a file starts (hif.merge.merge3)


async def refuse_markers(repo: Repo, s: Session) -> None:
    """Refuse to land a file that the session's last sync marked as a conflict while it still holds
    the markers (a working copy's ``hif land`` and the node's MCP ``land`` both ask)."""
    syncs = s.of_type("sync")
    if not syncs:
        return
    for path in syncs[-1].get("conflicts", []):
        entry = s.changes.get(path)
        if entry is None:
            continue
        data = await repo.objects.get_blob(entry.oid)
        if any(line.startswith(MARKER) for line in split_lines(data)):
            raise InvalidInput(f"{path} still has conflict markers; resolve them, then land")


def check_changes(changes: dict[str, Entry | None]) -> None:
    """Every path a session changes is one a working copy may write (hif.paths), and every write a
    file entry: checked on write already, again here since nothing that lands may break a clone."""
    for path, entry in changes.items():
        if entry is None:
            check_path(path)
        elif entry.kind not in FILE_KINDS:
            raise InvalidPath(f"{path}: a session writes files, not entries of kind {entry.kind!r}")
        else:
            check_entry_path(path, entry.kind)


def _owners(members: list[LandedSession], pairs: list[tuple[str, str]]) -> set[str]:
    """The members whose changes put a path of ``pairs`` there (itself or a path below it)."""
    hit = {p for pair in pairs for p in pair}
    return {m.session for m in members
            if any(p in hit or any(p.startswith(h + "/") for h in hit) for p in m.changes)}


async def _closed(repo: Repo, sid: str, state: dict[str, Any]) -> LandResult:
    """Landing a session that is no longer open: report its landing, or refuse."""
    if state["state"] == "landed":
        rec = await repo.mainline.record(state["position"])
        return LandResult(state["position"], sid, rec.tree, already=True, group=len(rec.sessions))
    raise SessionClosed(f"session {sid} was {state['state']}")


@dataclass
class _Pool:
    """What a lander learned about the other landers' intents, kept across its attempts."""

    intents: dict[str, LandedSession] = field(default_factory=dict)  # published, as read
    closed: set[str] = field(default_factory=set)  # intent gone, session closed, or unusable
    landed: set[str] = field(default_factory=set)  # seen in a record read while landing
    scans: dict[str, Scan] = field(default_factory=dict)
    snapshots: dict[str, bytes] = field(default_factory=dict)  # carried by intents, written when landed


class _Lander:
    """One ``land()`` call's state across its attempts (see ``land``)."""

    def __init__(self, repo: Repo, session: Session, ours: dict[str, Entry | None], base_tree: bytes,
                 group: int, rng: random.Random, rtt: RttEstimate) -> None:
        self.repo, self.session, self.sid = repo, session, session.id
        self.ours, self.base_tree, self.group, self.rng, self.rtt = ours, base_tree, group, rng, rtt
        self.scan = Scan(checked=session.base, paths=list(ours))
        self.noted = session.base  # records up to here are in pool.landed (when cached)
        self.snapshot_bytes = repo.sessions.snapshot_bytes(session, ours)
        self.snapshot = digest(self.snapshot_bytes)
        self.snapshot_stored = False
        self.intent = False  # our intent is published
        self.pool = _Pool()

    @property
    def hedge(self) -> float | None:
        """When to send a content-addressed write a second time: only over a store with a latency
        tail (S3); on disk a second copy is just another fsync."""
        return max(HEDGE * self.rtt.estimate, 0.002) if self.repo.hedged else None

    async def run(self, max_attempts: int, pinned: bool, *, state_checked: bool) -> LandResult:
        repo, sid = self.repo, self.sid
        try:
            # one round trip: is the session still open, where is the head (see Mainline.head), and our
            # intent published
            # (without an event loop, the CLI, calls run one after another: publishing waits for a lost race)
            state, head, _ = await together([
                self.rtt.timed(repo.sessions.state(sid)) if not state_checked else _none(),
                repo.mainline.head(),
                self._enter() if running_loop() is not None else _none(),
            ])
            if isinstance(state, BaseException):
                raise state
            if state is not None:
                return await _closed(repo, sid, state)
            if isinstance(head, BaseException):
                raise head
            if head < self.session.base:
                raise InvalidInput(f"session base {self.session.base} is ahead of the mainline ({head})")
            for attempt in range(1, max_attempts + 1):
                await scan_since(repo, sid, self.scan, head)
                self._note_landed(head)
                if self.scan.landed_at is not None:
                    return await self._finish_included(self.scan.landed_at)
                if pinned and head != self.session.base:
                    raise _moved(self.session.base, head)
                head_tree = await repo.mainline.tree_at(head)
                listing: list[str] = []
                if self.group > 1:
                    # whether others are waiting is learnt while preparing: no extra round trip
                    found, prepared = await together([self._list(), self._prepare(head_tree)])
                    listing = found if isinstance(found, list) else []
                else:
                    (prepared,) = await together([self._prepare(head_tree)])
                if isinstance(prepared, BaseException):
                    raise prepared
                final, merged = prepared
                if self.group > 1:
                    waiting = self._waiting(listing)
                    leaders = self._leaders(waiting)
                    # without an event loop (the CLI) a leader writes its record one call at a time, so
                    # waiting for it costs more than racing it: every lander builds, gathering others
                    follow = self.intent and bool(waiting) and self.sid not in leaders and running_loop() is not None
                    if follow:
                        # on a timeout the leader was passed over (``stale``): ask again who leads now,
                        # rather than every follower building at once
                        if await self._await_record(head + 1, leaders) is not None:
                            head += 1
                        continue
                members = [LandedSession(sid, self.snapshot, self.session.goal, self.session.author,
                                         self.session.role, self.session.base, final)]
                if self.intent:
                    members += await self._gather(head, head_tree, set(final), listing)
                changes: dict[str, Entry | None] = {}
                for m in members:
                    changes.update(m.changes)
                # the members' snapshots their intents carried go with the trees: a record never names
                # a missing object, whatever became of the member's own lander
                pending = [self.pool.snapshots[m.session] for m in members[1:] if m.session in self.pool.snapshots]
                if not self.snapshot_stored:
                    pending.append(self.snapshot_bytes)
                new_tree = await apply(repo.objects, head_tree, changes, pending=pending)
                pairs = await collisions(repo.objects, head_tree, new_tree, changes, pending)
                if pairs:  # two names one checkout would take for one: whose?
                    others = _owners(members, pairs) - {sid}
                    if not others:
                        raise collision(*pairs[0])
                    # leave the other members out and build again: what still collides then is
                    # ours; each of them is landed alone by its own lander, which hears why
                    self.pool.closed.update(others)
                    continue
                # the new trees do not depend on one another's writes: write them together
                hedge = self.hedge
                for failed in await together([
                    hedged(functools.partial(repo.objects.put_canonical, c), hedge) for c in pending
                ]):
                    if isinstance(failed, BaseException):
                        raise failed
                self.snapshot_stored = True
                record = LandingRecord(position=head + 1, tree=new_tree, parent_tree=head_tree,
                                       time=repo.clock(), sessions=members)
                # useful only if we lose: overlapped with the log write (after a first loss in the CLI)
                publish = self.group > 1 and not self.intent and (attempt > 1 or running_loop() is not None)
                outcome = (await together([
                    self.rtt.timed(repo.mainline.append(record)), *([self._publish()] if publish else [])
                ]))[0]
                if isinstance(outcome, PreconditionFailed):
                    head = await self._after_loss(head + 1)
                    if self.group == 1 and attempt > 8:  # heavy contention: spread retries out a little
                        await pause(self.rng.uniform(0, min(0.05, 0.001 * attempt)))
                    continue
                if isinstance(outcome, BaseException):
                    raise outcome
                return await self._finish_won(record, members, sorted(merged), attempt)
            raise InvalidInput(f"could not land session {sid} after {max_attempts} attempts (contention)")
        finally:
            if self.intent:
                self.intent = False
                await _drop_intent(repo, sid)

    async def _prepare(self, head_tree: bytes) -> tuple[dict[str, Entry | None], list[str]]:
        """Our changes resolved onto the head (3-way merges), and the snapshot written once."""
        repo = self.repo
        await prefetch(repo.objects, head_tree, self.ours)
        final, merged, conflicts = await resolve(repo, self.ours, self.base_tree, head_tree, self.scan.touched)
        if conflicts:
            raise ConflictError(conflicts)
        return final, merged

    async def _enter(self) -> None:
        """With group landing, publish the intent. It carries the snapshot when small, and whoever
        lands the session (us included) writes the snapshot with the record's trees; a larger one is
        stored first, so that a record never names a missing object."""
        if self.group <= 1:
            return
        if len(self.snapshot_bytes) > EMBED_SNAPSHOT:
            await hedged(functools.partial(self.repo.objects.put_canonical, self.snapshot_bytes), self.hedge)
            self.snapshot_stored = True
        await self._publish()

    async def _list(self) -> list[str]:
        """Session ids with a published intent, oldest first (session ids are time-ordered)."""
        try:
            keys = await self.repo.store.list_page(_intent_key(self.repo, ""), limit=INTENTS_LISTED)
        except StoreError:
            return []
        return [k.rsplit("/", 1)[1] for k in keys]

    def _waiting(self, listing: list[str]) -> list[str]:
        pool = self.pool
        return [o for o in listing if o != self.sid and o not in pool.landed and o not in pool.closed]

    def _leaders(self, waiting: list[str]) -> list[str]:
        """Who builds the next record: the longest-waiting landers (session ids are time-ordered), so
        the roles agree without anyone talking: a lander's listing may miss intents published after
        it was taken, but the oldest live lander never sees an older one than itself, so it leads.
        Intents whose lander let a follower time out are passed over from then on (``stale``)."""
        stale = self.repo.stale_intents
        return sorted(o for o in [*waiting, self.sid] if o not in stale or o == self.sid)[:LEADERS]

    async def _await_record(self, position: int, leaders: list[str]) -> LandingRecord | None:
        """Wait, bounded, for someone to write ``position`` (a leader, probably with us in it). If
        nobody does, the leaders we waited for are taken for dead: their intents stay valid requests
        to land those sessions, but they are not waited for again."""
        clock = self.repo.clock
        patience = max(MIN_PATIENCE, PATIENCE * self.rtt.estimate) * self.rng.uniform(1.0, 1.5)
        deadline = clock() + patience
        while True:
            try:
                record = await self.rtt.timed(self.repo.mainline.peek(position))
            except StoreError:
                record = None
            if record is not None:
                return record
            if clock() >= deadline:
                stale = self.repo.stale_intents
                if len(stale) > 4096:
                    stale.clear()
                stale.update(leaders)
                return None
            await self.repo.mainline.wait_for(position, max(self.rtt.estimate, MIN_POLL))

    async def _after_loss(self, position: int) -> int:
        """We lost ``position``: read it (to learn whether it holds us) and any beyond it."""
        record, nxt = await together([self.repo.mainline.record(position), self.repo.mainline.peek(position + 1)])
        if isinstance(record, BaseException):
            raise record
        head = position
        while isinstance(nxt, LandingRecord):
            head += 1
            nxt = await self.repo.mainline.peek(head + 1)
        return head

    def _replay(self, record: LandingRecord) -> None:
        """Apply a record to the trees we know: when its directories are cached, the new head's are
        then known without a read, so a lander that leads the next record (or merely prepares) does
        not wait depth round trips to read what it can compute. CPU only."""
        if self.repo.objects.cached_tree(record.tree) is not None:
            return  # known already (landers sharing this Repo: one of them replayed or wrote it)
        changes: dict[str, Entry | None] = {}
        for m in record.sessions:
            changes.update(m.changes)
        cached_apply(self.repo.objects, record.parent_tree, changes)

    def _note_landed(self, head: int) -> None:
        """Take in the records up to ``head`` that we have read: their sessions are no longer waiting,
        and replaying them keeps our cached trees those of the head."""
        for pos in range(max(self.noted + 1, head - DIRECT_SCAN + 1), head + 1):
            record = self.repo.mainline.cached(pos)
            if record is not None:
                self.pool.landed.update(m.session for m in record.sessions)
                self._replay(record)
        self.noted = max(self.noted, head)

    async def _publish(self) -> None:
        """What another lander needs to land this session for us: its effective changes and snapshot
        (the bytes when small, else the id of one already stored). Best effort."""
        s, ours = self.session, self.ours
        body = {
            "session": s.id, "snapshot": self.snapshot, "goal": s.goal, "author": s.author,
            "role": s.role, "base": s.base,
            "changes": [[p, e.kind if e else None, e.oid if e else None] for p, e in sorted(ours.items())],
        }
        if len(self.snapshot_bytes) <= EMBED_SNAPSHOT:
            body["snapshot_bytes"] = self.snapshot_bytes
        with contextlib.suppress(StoreError):
            await self.repo.store.put(_intent_key(self.repo, s.id), encode(body))
            self.intent = True

    async def _read_intent(self, osid: str) -> None:
        repo, pool = self.repo, self.pool
        raw, state = await together([repo.store.get_or_none(_intent_key(repo, osid)), repo.sessions.state(osid)])
        if isinstance(raw, BaseException) or isinstance(state, BaseException):
            return  # unknown for now: asked again next time
        if raw is None or state is not None:
            pool.closed.add(osid)
            return
        try:
            published = LandedSession.from_cbor(decode(raw))
        except (CorruptObject, KeyError, TypeError, ValueError, InvalidPath):
            pool.closed.add(osid)  # a damaged intent is ignored: its own lander still lands the session
            return
        embedded = decode(raw).get("snapshot_bytes")
        if published.session != osid or (embedded is not None and (
                not isinstance(embedded, bytes) or digest(embedded) != published.snapshot)):
            pool.closed.add(osid)
            return
        pool.intents[osid] = published
        if embedded is not None:
            pool.snapshots[osid] = embedded

    async def _gather(self, head: int, head_tree: bytes, taken: set[str], listing: list[str]) -> list[LandedSession]:
        """Published sessions that can land in our record, oldest first: not landed, still open,
        touching no path (or parent directory) another member touches, and merging cleanly onto
        ``head``. Best effort: an error leaves a candidate out, which is always safe."""
        repo, pool, room = self.repo, self.pool, self.group - 1
        waiting = self._waiting(listing)
        await together([self._read_intent(o) for o in waiting if o not in pool.intents])
        busy = set(taken) | {d for p in taken for d in parent_dirs(p)}
        candidates: list[LandedSession] = []
        for o in waiting:
            c = pool.intents.get(o)
            if c is None or o in pool.closed:
                continue
            paths = set(c.changes)
            if paths & busy or {d for p in paths for d in parent_dirs(p)} & taken:
                continue
            candidates.append(c)
            if len(candidates) >= 2 * room:
                break
        for c in candidates:
            if c.session not in pool.scans:
                pool.scans[c.session] = Scan(checked=c.base, paths=sorted(c.changes))
        scans = [pool.scans[c.session] for c in candidates]
        checked = await together([
            *(scan_since(repo, c.session, sc, head) for c, sc in zip(candidates, scans, strict=True)),
            *(repo.mainline.record(b) for b in {c.base for c in candidates if c.base > 0}),
            prefetch(repo.objects, head_tree, {p for c in candidates for p in c.changes}),
        ])
        out: list[LandedSession] = []
        for c, sc, ok in zip(candidates, scans, checked, strict=False):
            if len(out) >= room:
                break
            if isinstance(ok, BaseException):
                continue
            if sc.landed_at is not None:
                pool.landed.add(c.session)
                continue
            paths = set(c.changes)
            dirs = {d for p in paths for d in parent_dirs(p)}
            if paths & busy or dirs & taken:
                continue
            try:
                base_tree = await repo.mainline.tree_at(c.base)
                final, _merged, conflicts = await resolve(repo, c.changes, base_tree, head_tree, sc.touched)
            except HifError:
                continue
            if conflicts:
                continue
            out.append(LandedSession(c.session, c.snapshot, c.goal, c.author, c.role, c.base, final))
            taken |= paths
            busy |= paths | dirs
        return out

    async def _finish_won(self, record: LandingRecord, members: list[LandedSession], merged: list[str],
                          attempt: int) -> LandResult:
        # Waited for, together: our own state (a failure makes the caller retry, which finds the
        # record and writes it), the hint, the rollups, and our intent (a lander that has not seen
        # the record yet would take it for the oldest waiting one and wait for us to lead). Not
        # waited for: the members' closes and intent drops, which their own landers do too (ours
        # are for a member whose lander died; a wide fan-out would hold our landing back).
        repo = self.repo
        drops = [m.session for m in members[1:]]
        mine = self.intent
        self.intent = False
        own, *_rest = await together([
            repo.sessions.close(self.sid, {"state": "landed", "position": record.position,
                                           "snapshot": members[0].snapshot}),
            repo.mainline.advance_hint(record.position),
            repo.rollups.extend(record.position),
            *([_drop_intent(repo, self.sid)] if mine else []),
        ])
        if isinstance(own, BaseException):
            raise own
        await detach(together([
            *(repo.sessions.close(m.session, {"state": "landed", "position": record.position,
                                              "snapshot": m.snapshot}) for m in members[1:]),
            *(_drop_intent(repo, o) for o in drops),
        ]), repo.background)
        return LandResult(record.position, self.sid, record.tree, merged=merged, attempts=attempt,
                          group=len(members))

    async def _finish_included(self, position: int) -> LandResult:
        """Our session is in the record at ``position``: written by an earlier call of ours (a lost
        reply) or by another lander that took our intent."""
        repo, sid = self.repo, self.sid
        record = await repo.mainline.record(position)
        snap = next(s.snapshot for s in record.sessions if s.session == sid)
        drop = self.intent
        self.intent = False
        own, *_ = await together([
            repo.sessions.close(sid, {"state": "landed", "position": position, "snapshot": snap}),
            *([_drop_intent(repo, sid)] if drop else []),
        ])
        if isinstance(own, BaseException):
            raise own
        grouped = record.sessions[0].session != sid
        return LandResult(position, sid, record.tree, already=not grouped, grouped=grouped,
                          group=len(record.sessions))


async def _none() -> None:
    return None


def _moved(base: int, head: int) -> HifError:
    from hif.checks import ChecksRequired  # only reached under require_checks

    return ChecksRequired(f"the mainline moved from the session's base {base} to {head}, so the "
                          "landed tree would not be the checked one: sync, re-run checks, land")


def _intent_key(repo: Repo, sid: str) -> str:
    return f"{repo.prefix}intents/{sid}"


async def _drop_intent(repo: Repo, sid: str) -> None:
    with contextlib.suppress(StoreError):
        await repo.store.delete(_intent_key(repo, sid))

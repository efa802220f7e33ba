"""Landing a session onto the mainline without a coordinator (see docs/architecture.md).

1. find the head N; 2. check the session's paths against every record after its base, 3-way merging
files changed on both sides; 3. build the tree at N+1; 4. create ``log/N+1`` with put-if-absent (the
single linearisation point); 5. on a lost race re-check only the new records and retry; 6. best
effort: advance the head hint and close the session. A crash anywhere leaves either no record (a retry
is safe and lands once) or a complete one (a retry finds it and reports the landing).
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hif.errors import (
    Conflict,
    ConflictError,
    CorruptObject,
    HifError,
    InvalidInput,
    InvalidPath,
    PreconditionFailed,
    SessionClosed,
    StoreError,
)
from hif.mainline import LandedSession, LandingRecord
from hif.merge import is_binary, merge3
from hif.objects import DIR, EXEC, FILE, Entry, decode, encode
from hif.paths import parent_dirs
from hif.repo import Repo
from hif.rollups import query_items
from hif.session import Session
from hif.tree import apply, lookup, lookup_file

T = TypeVar("T")
MAX_ATTEMPTS = 1000
# Group landing: after losing a race, a lander publishes an intent and, when it wins a position,
# brings up to GROUP - 1 other pending, non-conflicting sessions into the same record.
GROUP = 32
INTENTS_LISTED = 256


async def _together(coros: list[Coroutine[Any, Any, T]]) -> list[T | BaseException]:
    """Await independent store calls concurrently under an event loop (one round trip of latency
    instead of a chain), one by one when driven without one. Errors are returned, not raised, except
    a BaseException that is not an Exception (a simulated crash), which is re-raised after all ended."""
    aio = sys.modules.get("asyncio")
    if aio is not None and aio._get_running_loop() is not None and len(coros) > 1:
        results = await aio.gather(*coros, return_exceptions=True)
    else:
        results = []
        for c in coros:
            try:
                results.append(await c)
            except Exception as e:
                results.append(e)
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, Exception):
            raise r
    return results


async def _pause(seconds: float) -> None:
    """Back off: ``asyncio.sleep`` under an event loop; a plain sleep when driven without one (the CLI
    over the embedded store never imports asyncio, see ``hif.porcelain``)."""
    aio = sys.modules.get("asyncio")
    if aio is not None and aio._get_running_loop() is not None:
        await aio.sleep(seconds)
    else:
        time.sleep(seconds)


@dataclass
class LandResult:
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


async def effective_changes(repo: Repo, session: Session) -> dict[str, Entry | None]:
    """The session's changes minus no-ops (a write equal to the base, a delete of an absent file)."""
    base_tree = await repo.mainline.tree_at(session.base)
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


async def scan_since(repo: Repo, sid: str, scan: Scan, head: int) -> None:
    """Read the records after ``scan.checked`` that may touch the session's paths (or be the session
    itself), found through the rollups in O(log n) reads when nothing overlaps."""
    if head <= scan.checked:
        return
    candidates = await repo.rollups.candidates(scan.checked, head, query_items(sid, scan.paths))
    for pos in candidates:
        record = await repo.mainline.record(pos)
        for landed in record.sessions:
            if landed.session == sid:
                scan.landed_at = pos
            for path in landed.changes:
                scan.touched.setdefault(path, []).append((pos, landed.session))
    scan.checked = max(scan.checked, head)


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
        if mine is None or theirs is None:
            conflicts.append(Conflict(path, who, "deleted on one side, changed on the other"))
            continue
        if mine.kind not in (FILE, EXEC) or theirs.kind not in (FILE, EXEC) or (
            base is not None and base.kind not in (FILE, EXEC)
        ):
            conflicts.append(Conflict(path, who, "symbolic link changed on both sides"))
            continue
        base_bytes = await db.get_blob(base.oid) if base is not None else b""
        our_bytes = await db.get_blob(mine.oid)
        their_bytes = await db.get_blob(theirs.oid)
        if any(is_binary(b) for b in (base_bytes, our_bytes, their_bytes)):
            conflicts.append(Conflict(path, who, "binary file changed on both sides"))
            continue
        result = merge3(base_bytes, our_bytes, their_bytes, ours_label=ours_label, theirs_label="mainline")
        kind = mine.kind if mine.kind != (base.kind if base else FILE) else theirs.kind
        if result.clean or write_markers:
            final[path] = Entry(kind if kind in (FILE, EXEC) else FILE, await db.put_blob(result.data))
            if result.clean:
                merged.append(path)
            else:
                conflicts.append(Conflict(path, who, f"{result.conflicts} overlapping change(s)"))
        else:
            conflicts.append(Conflict(path, who, f"{result.conflicts} overlapping change(s)"))
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

    With ``group`` > 1, a lander that lost a race publishes an intent (``intents/<id>``) and, when it
    wins a position, includes other published sessions that conflict with nothing; their landers find
    themselves in the record and report it. Throughput is then no longer one landing per round trip.
    """
    sid = session.id
    state = await repo.sessions.state(sid)
    if state is not None:
        if state["state"] == "landed":
            rec = await repo.mainline.record(state["position"])
            return LandResult(state["position"], sid, rec.tree, already=True, group=len(rec.sessions))
        raise SessionClosed(f"session {sid} was {state['state']}")
    ours = await effective_changes(repo, session)
    if any(
        p.split("/")[0] == ".hif" for p in ours
    ):  # pragma: no cover - paths are checked on write; defence in depth
        raise InvalidInput("session writes hif's own files")
    base_tree = await repo.mainline.tree_at(session.base)
    head = await repo.mainline.head()
    if head < session.base:
        raise InvalidInput(f"session base {session.base} is ahead of the mainline ({head})")
    policy = policy if policy is not None else repo.land_policy
    pinned = bool(await policy(repo, session, ours, base_tree)) if policy is not None else False
    if pinned:
        group = 1
    scan = Scan(checked=session.base, paths=list(ours))
    snapshot: bytes | None = None
    rng = rng or random.Random(sid)  # seeded, so a simulation replays exactly
    intent: bytes | None = None
    scans: dict[str, Scan] = {}  # other sessions' scans, kept across attempts
    try:
        for attempt in range(1, max_attempts + 1):
            await scan_since(repo, sid, scan, head)
            if scan.landed_at is not None:
                return await _finish_already(repo, sid, scan.landed_at, grouped=intent is not None)
            if pinned and head != session.base:
                raise _moved(session.base, head)
            head_tree = await repo.mainline.tree_at(head)
            final, merged, conflicts = await resolve(repo, ours, base_tree, head_tree, scan.touched)
            if conflicts:
                raise ConflictError(conflicts)
            if snapshot is None:
                snapshot = await repo.sessions.write_snapshot(session, ours)
            members = [LandedSession(sid, snapshot, session.goal, session.author, session.role,
                                     session.base, final)]
            if group > 1 and attempt > 1:
                if intent is None:
                    intent = await _publish_intent(repo, session, snapshot, ours)
                members += await _gather(repo, sid, head, head_tree, set(final), group - 1, scans)
            changes: dict[str, Entry | None] = {}
            for m in members:
                changes.update(m.changes)
            pending: list[bytes] = []
            new_tree = await apply(repo.objects, head_tree, changes, pending=pending)
            # the new trees do not depend on one another's writes: write them together
            for failed in await _together([repo.objects.put_canonical(c) for c in pending]):
                if isinstance(failed, BaseException):
                    raise failed
            record = LandingRecord(
                position=head + 1, tree=new_tree, parent_tree=head_tree, time=repo.clock(), sessions=members
            )
            try:
                await repo.mainline.append(record)
            except PreconditionFailed:
                head = await repo.mainline.head(known=head + 1)
                if attempt > 8:  # heavy contention: spread retries out a little
                    await _pause(rng.uniform(0, min(0.05, 0.001 * attempt)))
                continue
            # independent of each other: one round trip instead of a chain. Only our own state marker
            # must be written before we report the landing (a failure here makes the caller retry,
            # which finds the record and writes it); the rest is best effort.
            own, *_rest = await _together([
                *(repo.sessions.close(m.session, {"state": "landed", "position": record.position,
                                                  "snapshot": m.snapshot}) for m in members),
                repo.mainline.advance_hint(record.position),
                repo.rollups.extend(record.position),
                *(_drop_intent(repo, m.session) for m in members[1:]),
            ])
            if isinstance(own, BaseException):
                raise own
            return LandResult(record.position, sid, new_tree, merged=sorted(merged), attempts=attempt,
                              group=len(members))
        raise InvalidInput(f"could not land session {sid} after {max_attempts} attempts (contention)")
    finally:
        if intent is not None:
            await _drop_intent(repo, sid)


def _moved(base: int, head: int) -> HifError:
    from hif.checks import ChecksRequired  # only reached under require_checks

    return ChecksRequired(f"the mainline moved from the session's base {base} to {head}, so the "
                          "landed tree would not be the checked one: sync, re-run checks, land")


def _intent_key(repo: Repo, sid: str) -> str:
    return f"{repo.prefix}intents/{sid}"


async def _publish_intent(repo: Repo, session: Session, snapshot: bytes, ours: dict[str, Entry | None]) -> bytes:
    """What another lander needs to land this session for us: its effective changes and snapshot."""
    body = {
        "session": session.id, "snapshot": snapshot, "goal": session.goal, "author": session.author,
        "role": session.role, "base": session.base,
        "changes": [[p, e.kind if e else None, e.oid if e else None] for p, e in sorted(ours.items())],
    }
    await repo.store.put(_intent_key(repo, session.id), encode(body))
    return snapshot


async def _drop_intent(repo: Repo, sid: str) -> None:
    with contextlib.suppress(StoreError):
        await repo.store.delete(_intent_key(repo, sid))


async def _gather(
    repo: Repo, sid: str, head: int, head_tree: bytes, taken: set[str], room: int, scans: dict[str, Scan]
) -> list[LandedSession]:
    """Published sessions that can land in the same record: not landed, still open, touching no path
    (or parent directory) another member touches, and merging cleanly onto ``head``. Best effort: a
    store error skips a candidate (leaving one out is always safe) instead of failing our landing."""
    out: list[LandedSession] = []
    busy = set(taken) | {d for p in taken for d in parent_dirs(p)}
    try:
        keys = await repo.store.list_page(f"{repo.prefix}intents/", limit=INTENTS_LISTED)
    except StoreError:
        return out
    ids = [k for k in keys if k.rsplit("/", 1)[1] != sid][: 2 * room]
    # each check costs a few round trips: check them all at once, then keep a disjoint set
    checked = await _together([
        _candidate(repo, k.rsplit("/", 1)[1], k, head, head_tree, busy, taken, scans) for k in ids
    ])
    for member in checked:
        if len(out) >= room or not isinstance(member, LandedSession):
            continue  # not landable now, or a store error: leaving it out is always safe
        paths = set(member.changes)
        dirs = {d for p in paths for d in parent_dirs(p)}
        if paths & busy or dirs & taken:
            continue
        out.append(member)
        taken |= paths
        busy |= paths | dirs
    return out


async def _candidate(
    repo: Repo, osid: str, key: str, head: int, head_tree: bytes, busy: set[str], taken: set[str],
    scans: dict[str, Scan],
) -> LandedSession | None:
    raw = await repo.store.get_or_none(key)
    if raw is None or await repo.sessions.state(osid) is not None:
        return None
    try:
        published = LandedSession.from_cbor(decode(raw))
    except (CorruptObject, KeyError, TypeError, ValueError, InvalidPath):
        return None  # a damaged intent is ignored: its own lander still lands the session
    paths = set(published.changes)
    if published.session != osid or paths & busy or {d for p in paths for d in parent_dirs(p)} & taken:
        return None
    scan = scans.setdefault(osid, Scan(checked=published.base, paths=sorted(paths)))
    await scan_since(repo, osid, scan, head)
    if scan.landed_at is not None:
        return None
    base_tree = await repo.mainline.tree_at(published.base)
    final, _merged, conflicts = await resolve(repo, published.changes, base_tree, head_tree, scan.touched)
    if conflicts:
        return None
    return LandedSession(osid, published.snapshot, published.goal, published.author, published.role,
                         published.base, final)


async def _finish_already(repo: Repo, sid: str, position: int, *, grouped: bool = False) -> LandResult:
    record = await repo.mainline.record(position)
    snap = next(s.snapshot for s in record.sessions if s.session == sid)
    await repo.sessions.close(sid, {"state": "landed", "position": position, "snapshot": snap})
    return LandResult(position, sid, record.tree, already=not grouped, grouped=grouped,
                      group=len(record.sessions))

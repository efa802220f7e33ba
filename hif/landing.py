"""Landing a session onto the mainline without a coordinator (see docs/architecture.md).

1. find the head N; 2. check the session's paths against every record after its base, 3-way merging
files changed on both sides; 3. build the tree at N+1; 4. create ``log/N+1`` with put-if-absent (the
single linearisation point); 5. on a lost race re-check only the new records and retry; 6. best
effort: advance the head hint and close the session. A crash anywhere leaves either no record (a retry
is safe and lands once) or a complete one (a retry finds it and reports the landing).
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hif.errors import Conflict, ConflictError, InvalidInput, PreconditionFailed, SessionClosed
from hif.mainline import LandedSession, LandingRecord
from hif.merge import is_binary, merge3
from hif.objects import DIR, EXEC, FILE, Entry
from hif.paths import parent_dirs
from hif.repo import Repo
from hif.rollups import query_items
from hif.session import Session
from hif.tree import apply, lookup, lookup_file

MAX_ATTEMPTS = 1000


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

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "session": self.session,
            "tree": self.tree.hex(),
            "merged": self.merged,
            "already_landed": self.already,
            "attempts": self.attempts,
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
    repo: Repo, session: Session, *, max_attempts: int = MAX_ATTEMPTS, rng: random.Random | None = None
) -> LandResult:
    """Land an open session; idempotent: landing a session that already landed reports that landing."""
    sid = session.id
    state = await repo.sessions.state(sid)
    if state is not None:
        if state["state"] == "landed":
            rec = await repo.mainline.record(state["position"])
            return LandResult(state["position"], sid, rec.tree, already=True)
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
    scan = Scan(checked=session.base, paths=list(ours))
    snapshot: bytes | None = None
    rng = rng or random.Random(sid)  # seeded, so a simulation replays exactly
    for attempt in range(1, max_attempts + 1):
        await scan_since(repo, sid, scan, head)
        if scan.landed_at is not None:
            return await _finish_already(repo, sid, scan.landed_at)
        head_tree = await repo.mainline.tree_at(head)
        final, merged, conflicts = await resolve(repo, ours, base_tree, head_tree, scan.touched)
        if conflicts:
            raise ConflictError(conflicts)
        new_tree = await apply(repo.objects, head_tree, final)
        if snapshot is None:
            snapshot = await repo.sessions.write_snapshot(session, ours)
        record = LandingRecord(
            position=head + 1,
            tree=new_tree,
            parent_tree=head_tree,
            time=repo.clock(),
            sessions=[
                LandedSession(sid, snapshot, session.goal, session.author, session.role, session.base, final)
            ],
        )
        try:
            await repo.mainline.append(record)
        except PreconditionFailed:
            head = await repo.mainline.head(known=head + 1)
            if attempt > 8:  # heavy contention: spread retries out a little
                await _pause(rng.uniform(0, min(0.05, 0.001 * attempt)))
            continue
        await repo.mainline.advance_hint(record.position)
        await repo.rollups.extend(record.position)
        await repo.sessions.close(sid, {"state": "landed", "position": record.position, "snapshot": snapshot})
        return LandResult(record.position, sid, new_tree, merged=sorted(merged), attempts=attempt)
    raise InvalidInput(f"could not land session {sid} after {max_attempts} attempts (contention)")


async def _finish_already(repo: Repo, sid: str, position: int) -> LandResult:
    record = await repo.mainline.record(position)
    snap = next(s.snapshot for s in record.sessions if s.session == sid)
    await repo.sessions.close(sid, {"state": "landed", "position": position, "snapshot": snap})
    return LandResult(position, sid, record.tree, already=True)

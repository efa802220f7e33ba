"""``hif import git``: each commit of a branch's first-parent chain becomes a landed session, the
commits a merge brings in become its iterations, and the mainline's head record names the last
imported commit, so a rerun continues after it (see :mod:`hif.git`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from hif.errors import HifError, InvalidInput, PreconditionFailed
from hif.git.fastexport import Commit, FastExport, goal_and_body
from hif.git.source import GitSource, Progress
from hif.mainline import LandedSession, LandingRecord, log_key
from hif.objects import EMPTY_TREE, encode
from hif.repo import Repo
from hif.session import Session, new_session_id
from hif.tree import apply

BATCH = 256  # commits whose records are made durable together (two file-system syncs per batch)
BATCH_SECONDS = 1.0  # ... or fewer, so an interrupted import loses at most about a second of work
ROLE = "imported"  # git knows no roles: its commits are shown as imported, neither human nor agent
# -- import ----------------------------------------------------------------------------------


@dataclass
class ImportResult:
    source: str
    branch: str | None
    tip: str
    start: int  # the head before this run
    position: int  # the head after it
    sessions: int = 0  # sessions landed by this run
    commits: int = 0  # git commits read by this run (merged-in ones included)
    total: int = 0  # git commits this run had to import
    seconds: float = 0.0
    complete: bool = True  # False when stopped early (--max-commits)
    checked_out: bool | None = None  # set by the working copy

    @property
    def resumed(self) -> bool:
        return self.start > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "branch": self.branch, "tip": self.tip, "start": self.start,
            "position": self.position, "sessions": self.sessions, "commits": self.commits,
            "total": self.total, "seconds": round(self.seconds, 3), "complete": self.complete,
            "resumed": self.resumed, "up_to_date": self.complete and self.total == 0,
            "checked_out": self.checked_out,
            "commits_per_second": round(self.commits / self.seconds, 1) if self.seconds else None,
        }


async def last_imported(repo: Repo, head: int) -> str | None:
    """The git commit at the head of an imported mainline; refuses a mainline that is not one."""
    if head == 0:
        return None
    rec = await repo.mainline.record(head)
    meta = rec.extra.get("git")
    if not isinstance(meta, dict) or not isinstance(meta.get("commit"), str):
        raise InvalidInput(f"{repo.name}: position {head} did not come from git; importing continues "
                           "only a mainline that is an earlier import of the same history")
    return meta["commit"]


class _Importer:
    def __init__(self, repo: Repo, source: GitSource, head: int, result: ImportResult,
                 progress: Progress | None, max_sessions: int | None, batch: int) -> None:
        self.repo = repo
        self.db = repo.objects
        self.source = source
        self.position = head
        self.result = result
        self.progress = progress
        self.max_sessions = max_sessions
        self.batch_size = max(1, batch)
        self.trees: dict[str, bytes] = {}  # commit id -> hif tree, for every commit seen
        self.pending: dict[str, Commit] = {}  # merged-in commits waiting for their merge
        self.batch: list[tuple[LandingRecord, str, bytes]] = []  # (record, session, snapshot)
        self.scanned_down_to = head + 1  # earlier records not yet searched for commits' trees
        self.flushed = time.monotonic()

    async def tree_of(self, commit: str, child: str) -> bytes:
        tree = self.trees.get(commit)
        if tree is not None:
            return tree
        # a parent imported by an earlier run: search the mainline backwards (rare, and once)
        while self.scanned_down_to > 1 and commit not in self.trees:
            self.scanned_down_to -= 1
            rec = await self.repo.mainline.record(self.scanned_down_to)
            meta = rec.extra.get("git")
            if not isinstance(meta, dict):
                continue
            self.trees.setdefault(meta["commit"], rec.tree)
            if meta.get("merged"):
                for landed in rec.sessions:
                    snap = await self.db.get_value("snapshot", landed.snapshot)
                    for e in snap["events"]:
                        if e["type"] == "checkpoint" and isinstance(e.get("git"), dict):
                            self.trees.setdefault(e["git"]["commit"], e["tree"])
        if commit not in self.trees:
            raise InvalidInput(f"commit {child}: its parent {commit} is not in the imported history")
        return self.trees[commit]

    def take_merged(self, commit: Commit) -> list[Commit]:
        """The waiting commits a merge brings in: reachable from its other parents."""
        reach: set[str] = set()
        stack = list(commit.parents[1:])
        while stack:
            c = stack.pop()
            if c in self.pending and c not in reach:
                reach.add(c)
                stack.extend(self.pending[c].parents)
        out = [c for oid, c in self.pending.items() if oid in reach]  # stream order: parents first
        for c in out:
            del self.pending[c.oid]
        return out

    async def land(self, commit: Commit, merged: list[Commit]) -> None:
        """Write the session's snapshot and queue its record (written with the batch)."""
        base = self.position
        position = base + 1
        goal, body = goal_and_body(commit.message, commit.encoding)
        who = commit.author.name  # the address stays in the record's git identity (``meta["author"]``)
        started = commit.author.time
        # session ids sort by start time (48-bit milliseconds); a date git allows but that cannot
        # be one (before 1970, or absurdly late) gets the current time instead
        sid = new_session_id(started if 0 <= started < 2**47 / 1000 else None)
        events: list[dict[str, Any]] = [
            {"type": "start", "author": who, "role": ROLE, "time": commit.author.time, "goal": goal,
             "base": base, "git": {"commit": commit.oid}},
        ]
        if body:  # the message's body, line breaks kept, as what its author said (Markdown)
            events.append({"type": "say", "author": who, "role": ROLE, "time": commit.author.time,
                           "text": body, "git": {"commit": commit.oid}})
        for n, side in enumerate(merged, 1):
            note, _ = goal_and_body(side.message, side.encoding)
            events.append({"type": "checkpoint", "author": side.author.name, "role": ROLE,
                           "time": side.author.time, "note": note, "iteration": n, "tree": side.tree,
                           "git": side.git_meta()})
        when = commit.committer.time
        for path, entry in sorted(commit.changes.items()):
            if entry is None:
                events.append({"type": "delete", "author": who, "role": ROLE, "time": when, "path": path})
            else:
                events.append({"type": "write", "author": who, "role": ROLE, "time": when, "path": path,
                               "kind": entry.kind, "blob": entry.oid})
        for seq, e in enumerate(events):
            e["seq"] = seq
        session = Session(sid, goal, base, who, ROLE, commit.author.time, events)
        snapshot = await self.repo.sessions.write_snapshot(session, commit.changes)
        meta = commit.git_meta()
        if self.source.branch:
            meta["branch"] = self.source.branch
        if merged:
            meta["merged"] = [c.oid for c in merged]
        parent_tree = self.trees[commit.parents[0]] if commit.parents else EMPTY_TREE
        record = LandingRecord(
            position=position, tree=commit.tree, parent_tree=parent_tree, time=when,
            sessions=[LandedSession(sid, snapshot, goal, who, ROLE, base, dict(commit.changes))],
            extra={"git": meta},
        )
        self.batch.append((record, sid, snapshot))
        self.position = position
        if len(self.batch) >= self.batch_size or time.monotonic() - self.flushed >= BATCH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        """Make the batch's records the commit point: objects first (synced), then records in order,
        then the derived parts (rollups, head hint) and the sessions' state markers."""
        self.flushed = time.monotonic()
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        repo = self.repo
        try:
            await repo.store.create_all(
                [(log_key(repo.prefix, r.position), r.to_bytes()) for r, _, _ in batch])
        except PreconditionFailed:
            self.position = batch[0][0].position - 1
            raise InvalidInput(f"{repo.name}: the mainline moved during the import (position "
                               f"{batch[0][0].position} was taken); rerun to check and continue") from None
        for rec, _, _ in batch:
            repo.mainline.remember(rec)
            self.result.sessions += 1
        for rec, _, _ in batch:
            await repo.rollups.extend(rec.position)
        await repo.mainline.advance_hint(batch[-1][0].position)
        await repo.store.create_all([
            (repo.sessions.state_key(sid), encode({"state": "landed", "position": rec.position,
                                                   "snapshot": snap}))
            for rec, sid, snap in batch
        ])
        self.result.position = batch[-1][0].position

    async def run(self, last: str | None) -> None:
        chain = self.source.first_parent_chain(last)
        if not chain:  # the tip is the last imported commit, or one before it
            if last != self.source.tip:
                raise InvalidInput(f"{self.source.label}: {self.source.branch or 'HEAD'} is at "
                                   f"{self.source.tip}, behind the import (it has {last} already)")
            return
        mainline = set(chain)
        self.result.total = self.source.count(last)
        tree_ids = self.source.tree_ids(last)
        stream = FastExport(self.source, last)
        blob_ids: dict[int, bytes] = {}
        try:
            async for commit in stream.events(self.db.put_blob, blob_ids):
                base = await self.tree_of(commit.parents[0], commit.oid) if commit.parents else EMPTY_TREE
                commit.tree = await apply(self.db, base, commit.changes)
                self.trees[commit.oid] = commit.tree
                # what hif export git will give back: this very commit only if git dropped nothing
                tree_id = tree_ids.pop(commit.oid, None)
                commit.exact = tree_id is not None and commit.rebuilt_id(tree_id) == commit.oid
                self.result.commits += 1
                if commit.oid in mainline:
                    for p in commit.parents[1:]:
                        if p not in self.pending:
                            await self.tree_of(p, commit.oid)  # imported before: must be known
                    await self.land(commit, self.take_merged(commit))
                    if self.max_sessions is not None and self.result.sessions + len(self.batch) >= self.max_sessions:
                        self.result.complete = False
                        break
                else:
                    self.pending[commit.oid] = commit
                if self.progress is not None:
                    self.progress(self.result.commits, self.result.total)
        except HifError:
            await self.flush()  # what was read before the bad commit lands; that commit does not
            raise
        finally:
            stream.close()
        await self.flush()


async def import_git(repo: Repo, source: GitSource, *, progress: Progress | None = None,
                     max_sessions: int | None = None, batch: int = BATCH) -> ImportResult:
    """Land the commits of ``source`` not imported yet; see the module docstring for the mapping."""
    t0 = time.perf_counter()
    head = await repo.mainline.head()
    last = await last_imported(repo, head)
    if last is not None and not source.is_ancestor(last, source.tip):
        raise InvalidInput(f"{source.label} ({source.branch or 'HEAD'}) does not contain commit "
                           f"{last}, the last one imported into {repo.name}: it is another "
                           "repository or branch, or its history was rewritten")
    result = ImportResult(source.label, source.branch, source.tip, head, head)
    await _repair_states(repo, head)
    importer = _Importer(repo, source, head, result, progress, max_sessions, batch)
    with repo.store.deferred_sync():
        await importer.run(last)
    result.seconds = time.perf_counter() - t0
    return result


async def _repair_states(repo: Repo, head: int) -> None:
    """A crash between a batch's records and its state markers leaves sessions that landed without a
    marker. Markers are written in position order, so the missing ones are a suffix: find where it
    starts (newest first) and write them oldest first, so that a crash here keeps that true."""
    missing: list[tuple[int, LandedSession]] = []
    for pos in range(head, 0, -1):
        rec = await repo.mainline.record(pos)
        gaps = [s for s in rec.sessions if await repo.store.head(repo.sessions.state_key(s.session)) is None]
        if not gaps:
            break
        missing += [(pos, s) for s in gaps]
    for pos, s in reversed(missing):
        await repo.sessions.close(s.session, {"state": "landed", "position": pos, "snapshot": s.snapshot})



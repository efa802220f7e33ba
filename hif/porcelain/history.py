"""Reading the mainline through :class:`hif.Repository`: log, landings and sessions, their diffs,
files and directories at a position, blame."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from hif.errors import (
    InvalidInput,
    NotFound,
)
from hif.objects import DIR, Entry
from hif.porcelain.base import FileChange
from hif.porcelain.search import Searching
from hif.session import Session, fold, is_session_id
from hif.tree import diff as tree_diff
from hif.tree import lookup, read_dir, walk

if TYPE_CHECKING:
    from hif.blame import BlameLine
    from hif.mainline import LandingRecord
    from hif.search import CommitHit


_GIT_ID = re.compile(r"^[0-9a-fA-F]{7,64}$")  # a bare ref read as a git commit id (hif.search checks it)


class History(Searching):
    """The mainline's history, read."""

    def head(self) -> int:
        return self._run(self.repo.mainline.head())

    def log(self, *, limit: int | None = None, path: str | None = None) -> list[LandingRecord]:
        return self._run(self._log(limit, path))

    async def _log(self, limit: int | None, path: str | None) -> list[LandingRecord]:
        head = await self.repo.mainline.head()
        out: list[LandingRecord] = []
        async for rec in self.repo.mainline.iter_back(head):
            if path and not any(p == path or p.startswith(path + "/") for p in rec.paths):
                continue
            out.append(rec)
            if limit is not None and len(out) >= limit:
                break
        return out

    def record_at(self, position: int) -> LandingRecord:
        return self._run(self.repo.mainline.record(position))

    def resolve_ref(self, ref: str) -> tuple[Session, LandingRecord | None]:
        """A position number, a session id or an imported git commit -> (session, landing record
        if landed); see :meth:`resolve`."""
        s, rec, _ = self.resolve(ref)
        return s, rec

    def resolve(self, ref: str) -> tuple[Session, LandingRecord | None, CommitHit | None]:
        """A position number, a session id or an imported git commit (``git:<id>``, or a bare id of
        7 to 64 hex digits, not all digits) -> (session, landing record if landed, the commit when
        ``ref`` named one). A bare id that could be a session id too is a session first."""
        if ref.isdigit():
            rec = self.record_at(int(ref))
            sess = self._run(self._session_of(rec.sessions[0].session, rec))
            return sess, rec, None
        if ref[:4].lower() == "git:":
            return self._landing_of_commit(ref[4:])
        hexish = _GIT_ID.match(ref) is not None
        if hexish and not is_session_id(ref):
            return self._landing_of_commit(ref)
        try:
            s = self.load_session(ref)
        except NotFound:
            if hexish:
                return self._landing_of_commit(ref)
            raise
        rec = self.record_at(s.position) if s.position else None
        return s, rec, None

    def _landing_of_commit(self, text: str) -> tuple[Session, LandingRecord, CommitHit]:
        hit = self.find_commit(text)
        rec = self.record_at(hit.position)
        if not any(x.session == hit.session for x in rec.sessions):
            raise NotFound(f"git commit {hit.commit}: position {hit.position} holds no session {hit.session}")
        return self._run(self._session_of(hit.session, rec)), rec, hit

    def agent_trace(self, ref: str) -> dict[str, Any]:
        """The Agent Trace record (hif.agents.trace) of the landing of ``ref`` (a position, or a landed
        session's id), each session's conversation at its forge page when this is a clone of one."""
        # only this command writes records (start-up time)
        from importlib.metadata import version

        from hif.agents.trace import landing_record  # (start-up time, as above)

        s, rec = self.resolve_ref(ref)
        if rec is None:
            raise InvalidInput(f"session {s.id} is {s.state}: only a landing has an Agent Trace record")
        remote = self.config.get("remote")
        url = f"{str(remote).rstrip('/')}/{self.name}/sessions/{{session}}" if remote else None
        return self._run(landing_record(self.repo, rec, conversation_url=url, tool_version=version("micelio")))

    async def _session_of(self, sid: str, rec: LandingRecord) -> Session:
        landed = next(x for x in rec.sessions if x.session == sid)
        snap = await self.repo.objects.get_value("snapshot", landed.snapshot)
        s = fold(sid, snap["events"])
        s.state, s.position, s.snapshot = "landed", rec.position, landed.snapshot
        s.changes = dict(landed.changes)
        return s

    def session_diffs(self, s: Session, rec: LandingRecord | None) -> list[tuple[FileChange, str]]:
        # the views and the history plumbing: only show and diffs need them (start-up time)
        from hif.porcelain.views import session_diffs

        return self._run(session_diffs(self.repo, s, rec))

    def iteration_diff(self, s: Session, a: int, b: int) -> list[tuple[str, str]]:
        """Diff between two iterations (checkpoints) of a session; 0 is the session's base."""
        return self._run(self._iteration_diff(s, a, b))

    async def _iteration_diff(self, s: Session, a: int, b: int) -> list[tuple[str, str]]:
        # diffing and merging: only diffs, syncs and landings load them (start-up time)
        from hif.merge import unified_diff

        cps = s.of_type("checkpoint")
        start = s.events[0]["base"]

        async def tree_of(i: int) -> bytes:
            if i == 0:
                return await self.repo.mainline.tree_at(start)
            if not 1 <= i <= len(cps):
                raise NotFound(f"no iteration {i} (the session has {len(cps)})")
            return cps[i - 1]["tree"]

        ta, tb = await tree_of(a), await tree_of(b)
        db = self.repo.objects
        out = []
        async for path, old, new in tree_diff(db, ta, tb):
            x = await db.get_blob(old.oid) if old else None
            y = await db.get_blob(new.oid) if new else None
            out.append((path, unified_diff(x, y, path)))
        return out

    def _tree_at(self, at: int | None) -> bytes:
        pos = self.position if at is None else at
        head = self.head()
        if pos < 0 or pos > head:
            raise NotFound(f"no position {pos} (the mainline is at {head})")
        return self._run(self.repo.mainline.tree_at(pos))

    def cat(self, path: str, *, at: int | None = None) -> bytes:
        if not path:
            raise InvalidInput("the top directory is not a file (use hif ls)")
        tree = self._tree_at(at)
        entry = self._run(lookup(self.repo.objects, tree, path))
        if entry is None:
            raise NotFound(f"no file {path} at position {self.position if at is None else at}")
        if entry.kind == DIR:
            raise InvalidInput(f"{path} is a directory (use hif ls)")
        return self._run(self.repo.objects.get_blob(entry.oid))

    def ls(self, path: str = "", *, at: int | None = None, recursive: bool = False) -> list[tuple[str, Entry]]:
        tree = self._tree_at(at)
        return self._run(self._ls(tree, path, recursive))

    async def _ls(self, tree: bytes, path: str, recursive: bool) -> list[tuple[str, Entry]]:
        db = self.repo.objects
        prefix = path + "/" if path else ""
        if recursive:
            entry = await lookup(db, tree, path) if path else Entry(DIR, tree)
            if entry is None:
                raise NotFound(f"no directory {path}")
            if entry.kind != DIR:
                return [(path, entry)]
            return [(p, e) async for p, e in walk(db, entry.oid, prefix)]
        entries = await read_dir(db, tree, path)
        if entries is None:
            entry = await lookup(db, tree, path)
            if entry is None:
                raise NotFound(f"no such path: {path}")
            return [(path, entry)]
        return [(prefix + n, entries[n]) for n in sorted(entries, key=str.encode)]

    def blame(self, path: str, *, at: int | None = None) -> list[BlameLine]:
        # imported here: starting or landing a session does not need the history walk
        from hif.blame import blame

        return self._run(blame(self.repo, path, self.position if at is None else at))


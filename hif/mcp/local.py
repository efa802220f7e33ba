"""``hif mcp``: the MCP server of one working copy, over stdio. Each tool opens the working copy as
the CLI does (:class:`hif.Repository`), calls the same SDK method its CLI command calls, and
answers the document ``--json`` prints. Calls run one at a time in a worker thread (the SDK is
synchronous, and one working copy takes one command at a time), so the server keeps reading."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from hif.errors import ConflictError, NoOpenSession, NotFound
from hif.history import NO_DECISION, undecided
from hif.mcp.tools import (
    LANDING,
    SESSION,
    SESSIONS,
    Alternatives,
    At,
    Author,
    Content,
    Decision,
    Dir,
    Doc,
    FilePath,
    Goal,
    Limit,
    LogPath,
    Note,
    Reason,
    Recursive,
    Ref,
    Resource,
    Role,
    SessionId,
    Stat,
    Text,
    Why,
    build_server,
    conflict_doc,
)
from hif.porcelain import Repository
from hif.porcelain.views import record_summary, show_doc, show_text

T = TypeVar("T")
RECENT = 20  # landings the sessions resource lists


class LocalTools:
    """The tools over the working copy at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = anyio.Lock()

    async def _with(self, fn: Callable[[Repository], T]) -> T:
        """``fn`` on the working copy, opened for this call as a CLI command opens it."""

        def run() -> T:
            with Repository.open(self.root) as r:
                return fn(r)

        async with self._lock:
            return await anyio.to_thread.run_sync(run)

    # -- the open session ----------------------------------------------------------------------

    async def status(self) -> Doc:
        return await self._with(lambda r: r.status().to_json())

    async def session_start(self, goal: Goal, role: Role = "agent", author: Author = None) -> Doc:
        def run(r: Repository) -> Doc:
            h = r.start_session(goal, role=role, author=author)
            return {"session": h.id, "goal": goal.strip(), "base": r.position}

        return await self._with(run)

    async def session_show(self, session: SessionId = None) -> Doc:
        def run(r: Repository) -> Doc:
            sid = session or r.session_id
            if sid is None:
                raise NoOpenSession("no open session here; name one, or start one with session_start")
            s = r.load_session(sid)
            rec = r.record_at(s.position) if s.position else None
            return show_doc(s, rec, r.session_diffs(s, rec))

        return await self._with(run)

    async def session_list(self) -> Doc:
        return await self._with(lambda r: {"sessions": [s.to_json(events=False) for s in r.sessions()],
                                           "current": r.session_id})

    async def session_abandon(self, reason: Reason = "abandoned", author: Author = None) -> Doc:
        def run(r: Repository) -> Doc:
            s = r.abandon(reason, role="agent", author=author)
            return {"session": s.id, "state": "abandoned"}

        return await self._with(run)

    async def say(self, text: Text, role: Role = "agent", author: Author = None) -> Doc:
        def run(r: Repository) -> Doc:
            e = r.say(text, role=role, author=author)
            return {"seq": e["seq"], "role": e["role"], "author": e["author"]}

        return await self._with(run)

    async def decide(self, decision: Decision, why: Why, alternatives: Alternatives | None = None,
                     role: Role = "agent", author: Author = None) -> Doc:
        def run(r: Repository) -> Doc:
            e = r.decide(decision, why=why, alternatives=list(alternatives or []), role=role, author=author)
            return {"seq": e["seq"], "decision": decision, "alternatives": len(alternatives or [])}

        return await self._with(run)

    async def write(self, path: FilePath, content: Content, author: Author = None) -> Doc:
        def run(r: Repository) -> Doc:
            if r.session_id is None:
                r.record()  # refused before anything is written: no open session
            r.write(path, content)
            changes = r.record(role="agent", author=author)
            return {"path": path, "size": len(content.encode()), "recorded": [c.to_json() for c in changes]}

        return await self._with(run)

    async def checkpoint(self, note: Note, author: Author = None) -> Doc:
        def run(r: Repository) -> Doc:
            e = r.checkpoint(note, role="agent", author=author)
            return {"seq": e["seq"], "iteration": e["iteration"], "tree": e["tree"]}

        return await self._with(run)

    async def diff(self, stat: Stat = False) -> Doc:
        def run(r: Repository) -> Doc:
            return {"files": [{**c.to_json(), "added": a, "removed": d, **({} if stat else {"diff": t})}
                              for c, t, (a, d) in r.diff()]}

        return await self._with(run)

    async def land(self, author: Author = None) -> Doc:
        def run(r: Repository) -> Doc:
            try:
                res = r.land(role="agent", author=author)
            except ConflictError as e:
                return conflict_doc(e)
            doc: Doc = {"landed": True, **res.to_json(), "decided": True}
            if r.landed is not None and undecided(r.landed):
                doc.update(decided=False, note=NO_DECISION)
            return doc

        return await self._with(run)

    async def sync(self, author: Author = None) -> Doc:
        def run(r: Repository) -> Doc:
            res = r.sync(role="agent", author=author)
            doc = res.to_json()
            if res.conflicts:
                doc["next"] = "resolve the conflict markers in these files, then land"
            return doc

        return await self._with(run)

    # -- history -------------------------------------------------------------------------------

    async def log(self, limit: Limit = 20, path: LogPath = None) -> Doc:
        def run(r: Repository) -> Doc:
            rel = r.work.to_repo_path(path, r.root) if path else None
            return {"landings": [row for rec in r.log(limit=limit, path=rel) for row in record_summary(rec)]}

        return await self._with(run)

    async def show(self, ref: Ref) -> Doc:
        def run(r: Repository) -> Doc:
            s, rec = r.resolve_ref(ref)
            return show_doc(s, rec, r.session_diffs(s, rec))

        return await self._with(run)

    async def blame(self, path: FilePath, at: At = None) -> Doc:
        def run(r: Repository) -> Doc:
            rel = r.work.to_repo_path(path, r.root)
            return {"path": rel, "lines": [b.to_json() for b in r.blame(rel, at=at)]}

        return await self._with(run)

    async def cat(self, path: FilePath, at: At = None) -> Doc:
        def run(r: Repository) -> Doc:
            rel = r.work.to_repo_path(path, r.root)
            data = r.cat(rel, at=at)
            return {"path": rel, "size": len(data), "content": data.decode("utf-8", "replace")}

        return await self._with(run)

    async def ls(self, path: Dir = "", at: At = None, recursive: Recursive = False) -> Doc:
        def run(r: Repository) -> Doc:
            rel = r.work.to_repo_path(path or ".", r.root)
            return {"entries": [{"path": p, **e.to_json()} for p, e in r.ls(rel, at=at, recursive=recursive)]}

        return await self._with(run)

    # -- resources -----------------------------------------------------------------------------

    async def sessions_document(self) -> str:
        def run(r: Repository) -> str:
            lines = ["open sessions:"]
            lines += [f"  hif://session/{s.id}  {s.author} ({s.role})  {s.goal}" for s in r.sessions()] or ["  (none)"]
            lines += ["", "latest landings:"]
            lines += [f"  hif://landing/{x['position']}  {x['session']}  {x['goal']}"
                      for rec in r.log(limit=RECENT) for x in record_summary(rec)] or ["  (none)"]
            return "\n".join(lines) + "\n"

        return await self._with(run)

    async def session_document(self, session_id: str) -> str:
        return await self._with(lambda r: _document(r, session_id))

    async def landing_document(self, position: str) -> str:
        if not position.isdigit():
            raise NotFound(f"no landing {position}")
        return await self._with(lambda r: _document(r, position))

    def resources(self) -> list[Resource]:
        return [Resource("hif://sessions", "sessions", SESSIONS, self.sessions_document),
                Resource("hif://session/{session_id}", "session", SESSION, self.session_document),
                Resource("hif://landing/{position}", "landing", LANDING, self.landing_document)]


def _document(r: Repository, ref: str) -> str:
    s, rec = r.resolve_ref(ref)
    return show_text(s, rec, r.session_diffs(s, rec)) + "\n"


def serve(root: Path) -> None:
    """Serve the working copy at ``root`` on stdin/stdout until the client closes them."""
    tools = LocalTools(root)
    build_server(tools, tools.resources()).run("stdio")


__all__ = ["LocalTools", "serve"]

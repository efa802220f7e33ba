"""The node's MCP endpoint, ``/api/v1/mcp``: hif's MCP tools (:mod:`hif.mcp.tools`) over streamable
HTTP, for agents without a checkout. Tools act on a repository of this node (``repo``, or the one
the token is bound to) through the API's own handlers (``node.api.sessions``: the same checks,
the same events, the same landing) and the plumbing the API reads with.

Every HTTP request is authenticated before its body is read (``node.access.token_principal``, as
the API is: 401 without a live token), and every tool call is authorised like the API route it stands for
(``authorize_repo``: read, write, an agent token's own session), so an under-scoped call is a
tool error, never data. The SDK's transport is ASGI: it is mounted beside Quart (:func:`install`),
stateless (JSON answers, no per-connection state), so any replica answers any request, with the
session manager's lifespan run while the app serves."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import Field
from quart import Quart
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from hif.blame import blame as blame_lines
from hif.errors import ConflictError, HifError, InvalidInput, NotFound, SessionClosed
from hif.history import NO_DECISION, landed_session, session_record, touches, undecided
from hif.landing import Scan, effective_changes, refuse_markers, resolve, scan_since
from hif.mcp import tools
from hif.merge import diffstat
from hif.objects import DIR, FILE, Entry
from hif.paths import check_path
from hif.porcelain.views import record_summary, session_diffs, show_doc, show_text
from hif.session import Session
from hif.tree import apply, lookup, read_dir, walk
from node.access import token_principal
from node.api import sessions as api
from node.api.routing import Ctx, authorize_repo, load_session
from node.context import Node
from node.errors import AuthRequired
from node.principal import Principal
from node.wire import MCP_LIMIT, error_body

PATH = "/api/v1/mcp"
RECENT = 20  # landings the sessions resource lists

RepoName = Annotated[str | None, Field(
    description="The repository, owner/name (default: the one this token is bound to).")]
SessionArg = Annotated[str | None, Field(
    description="The session id session_start returned (default: an agent token's own session).")]

_caller: ContextVar[Principal] = ContextVar("mcp_caller")  # set per HTTP request, before its body


class NodeTools:
    """The tools over the node's repositories, as the caller of the current request."""

    def __init__(self, node: Node, app: Quart) -> None:
        self.node = node
        self.app = app

    async def _ctx(self, repo: str | None, access: str, *, agent: bool = True, sid: str | None = None,
                   body: dict[str, Any] | None = None) -> Ctx:
        """The API's handler context for ``repo``, authorised as the route standing for the tool."""
        p = _caller.get()
        name = repo or p.repo
        if name is None:
            raise InvalidInput("name the repository (repo: owner/name): this token is not bound to one")
        ctx = Ctx(self.node, p, body or {})
        await authorize_repo(ctx, name, access, agent, sid)
        return ctx

    def _sid(self, session: str | None) -> str:
        sid = session or _caller.get().session
        if sid is None:
            raise InvalidInput("name the session (session: the id session_start returned)")
        return sid

    async def _append(self, repo: str | None, session: str | None, *events: dict[str, Any]) -> dict[str, Any]:
        sid = self._sid(session)
        ctx = await self._ctx(repo, "write", sid=sid, body={"events": list(events)})
        async with self.app.app_context():
            return (await api.append_events(ctx, sid))["events"][-1]

    # -- sessions ------------------------------------------------------------------------------

    async def status(self, repo: RepoName = None, session: SessionArg = None) -> tools.Doc:
        ctx = await self._ctx(repo, "read")
        doc: tools.Doc = {"repo": ctx.r.name, "head": await ctx.r.mainline.head(),
                    "open_sessions": (await api.list_sessions(ctx))["sessions"]}
        sid = session or ctx.principal.session
        if sid is not None:
            s = await load_session(ctx, sid)
            doc["session"] = s.to_json(events=False)
        return doc

    async def session_start(self, goal: tools.Goal, repo: RepoName = None, role: tools.Role = "agent",
                            author: tools.Author = None) -> tools.Doc:
        body: dict[str, Any] = {"goal": goal, "role": role, **({"author": author} if author else {})}
        ctx = await self._ctx(repo, "write", agent=False, body=body)
        answer = await api.start_session(ctx)
        return {"session": answer["id"], "goal": goal.strip(), "base": answer["event"]["base"], "repo": ctx.r.name}

    async def session_show(self, session: SessionArg = None, repo: RepoName = None) -> tools.Doc:
        return await self._show(repo, self._sid(session))

    async def session_list(self, repo: RepoName = None) -> tools.Doc:
        return await api.list_sessions(await self._ctx(repo, "read"))

    async def session_abandon(self, session: SessionArg = None, reason: tools.Reason = "abandoned",
                              repo: RepoName = None) -> tools.Doc:
        sid = self._sid(session)
        ctx = await self._ctx(repo, "write", sid=sid, body={"reason": reason, "role": "agent"})
        return await api.abandon_session(ctx, sid)

    async def say(self, text: tools.Text, session: SessionArg = None, role: tools.Role = "agent",
                  author: tools.Author = None, repo: RepoName = None) -> tools.Doc:
        e = await self._append(repo, session, _event("say", role, author, text=text))
        return {"seq": e["seq"], "role": e["role"], "author": e["author"]}

    async def decide(self, decision: tools.Decision, why: tools.Why,
                     alternatives: tools.Alternatives | None = None, session: SessionArg = None,
                     role: tools.Role = "agent", author: tools.Author = None,
                     repo: RepoName = None) -> tools.Doc:
        e = await self._append(repo, session, _event("decide", role, author, decision=decision, why=why,
                                                     alternatives=list(alternatives or [])))
        return {"seq": e["seq"], "decision": decision, "alternatives": len(alternatives or [])}

    async def write(self, path: tools.FilePath, content: tools.Content, session: SessionArg = None,
                    author: tools.Author = None, repo: RepoName = None) -> tools.Doc:
        sid = self._sid(session)
        path = check_path(path.strip("/"))
        ctx = await self._ctx(repo, "write", sid=sid)
        await load_session(ctx, sid, open_only=True)  # refused before the blob is stored
        data = content.encode()
        oid = await ctx.r.objects.put_blob(data)
        e = await self._append(repo, sid, _event("write", "agent", author, path=path, kind=FILE, blob=oid))
        return {"path": path, "size": len(data), "seq": e["seq"]}

    async def checkpoint(self, note: tools.Note, session: SessionArg = None, author: tools.Author = None,
                         repo: RepoName = None) -> tools.Doc:
        sid = self._sid(session)
        ctx = await self._ctx(repo, "write", sid=sid)
        s = await load_session(ctx, sid, open_only=True)
        tree = await apply(ctx.r.objects, await ctx.r.mainline.tree_at(s.base), s.changes)
        n = len(s.of_type("checkpoint")) + 1
        e = await self._append(repo, sid, _event("checkpoint", "agent", author, note=note, tree=tree, iteration=n))
        return {"seq": e["seq"], "iteration": n, "tree": tree}

    async def diff(self, session: SessionArg = None, stat: tools.Stat = False,
                   repo: RepoName = None) -> tools.Doc:
        sid = self._sid(session)
        ctx = await self._ctx(repo, "read")
        s = await load_session(ctx, sid)
        files = []
        for c, text in await session_diffs(ctx.r, s, await session_record(ctx.r, s)):
            old = await ctx.r.objects.get_blob(c.old.oid) if c.old else None
            new = await ctx.r.objects.get_blob(c.new.oid) if c.new else None
            added, removed = diffstat(old, new)
            files.append({**c.to_json(), "added": added, "removed": removed, **({} if stat else {"diff": text})})
        return {"files": files}

    async def land(self, session: SessionArg = None, repo: RepoName = None) -> tools.Doc:
        sid = self._sid(session)
        ctx = await self._ctx(repo, "write", sid=sid)
        s = await load_session(ctx, sid)
        await refuse_markers(ctx.r, s)  # as hif land: a file sync marked must be resolved first
        try:
            async with self.app.app_context():  # the handler tells the replica's federation
                result = await api.land_session(ctx, sid)
        except ConflictError as e:
            return tools.conflict_doc(e)
        doc: tools.Doc = {"landed": True, **result, "decided": True}
        if undecided(s):
            doc.update(decided=False, note=NO_DECISION)
        return doc

    async def sync(self, session: SessionArg = None, author: tools.Author = None,
                   repo: RepoName = None) -> tools.Doc:
        """The session re-based on the head with landing's merge: merged files and conflict markers
        recorded as writes, then a sync event (what ``hif sync`` records from a working copy)."""
        sid = self._sid(session)
        ctx = await self._ctx(repo, "write", sid=sid)
        s = await load_session(ctx, sid, open_only=True)
        r = ctx.r
        head = await r.mainline.head()
        if head == s.base:
            return {"position": head, "updated": [], "merged": [], "conflicts": []}
        ours = await effective_changes(r, s)
        scan = Scan(checked=s.base, paths=list(ours))
        await scan_since(r, s.id, scan, head)
        if scan.landed_at is not None:
            raise SessionClosed(f"session {s.id} already landed at position {scan.landed_at}")
        base_tree, head_tree = await r.mainline.tree_at(s.base), await r.mainline.tree_at(head)
        final, merged, conflicts = await resolve(r, ours, base_tree, head_tree, scan.touched, write_markers=True)
        events = [_event("write", "agent", author, path=p, kind=e.kind, blob=e.oid)
                  for p, e in sorted(final.items()) if e is not None and ours.get(p) != e]
        events.append(_event("sync", "agent", author, base=head, merged=merged,
                             conflicts=sorted({c.path for c in conflicts})))
        await self._append(repo, sid, *events)
        doc: tools.Doc = {"position": head, "updated": [], "merged": merged,
                          "conflicts": [c.to_json() for c in conflicts]}
        if conflicts:
            doc["next"] = "write the resolved content of these files (they hold conflict markers), then land"
        return doc

    # -- history -------------------------------------------------------------------------------

    async def log(self, limit: tools.Limit = 20, path: tools.LogPath = None,
                  repo: RepoName = None) -> tools.Doc:
        ctx = await self._ctx(repo, "read")
        rel = check_path(path.strip("/")) if path and path.strip("/") else None
        rows: list[dict[str, Any]] = []
        async for rec in ctx.r.mainline.iter_back(await ctx.r.mainline.head()):
            if rel is None or touches(rec.paths, rel):
                rows += record_summary(rec)
                if len(rows) >= limit:
                    break
        return {"landings": rows[:limit]}

    async def show(self, ref: tools.Ref, repo: RepoName = None) -> tools.Doc:
        return await self._show(repo, ref)

    async def _show(self, repo: str | None, ref: str) -> tools.Doc:
        ctx = await self._ctx(repo, "read")
        s, rec = await _resolve(ctx, ref)
        return show_doc(s, rec, await session_diffs(ctx.r, s, rec))

    async def blame(self, path: tools.FilePath, at: tools.At = None, repo: RepoName = None) -> tools.Doc:
        ctx = await self._ctx(repo, "read")
        at, rel = await _at(ctx, at), check_path(path.strip("/"))
        return {"path": rel, "lines": [b.to_json() for b in await blame_lines(ctx.r, rel, at)]}

    async def cat(self, path: tools.FilePath, at: tools.At = None, repo: RepoName = None) -> tools.Doc:
        ctx = await self._ctx(repo, "read")
        at, rel = await _at(ctx, at), check_path(path.strip("/"))
        entry = await lookup(ctx.r.objects, await ctx.r.mainline.tree_at(at), rel)
        if entry is None or entry.kind == DIR:
            raise NotFound(f"no file {rel} at position {at}")
        data = await ctx.r.objects.get_blob(entry.oid)
        return {"path": rel, "size": len(data), "content": data.decode("utf-8", "replace")}

    async def ls(self, path: tools.Dir = "", at: tools.At = None, recursive: tools.Recursive = False, repo: RepoName = None) -> tools.Doc:
        ctx = await self._ctx(repo, "read")
        at, rel = await _at(ctx, at), path.strip("/").removeprefix(".").strip("/")
        rel = check_path(rel) if rel else ""
        db, root = ctx.r.objects, await ctx.r.mainline.tree_at(at)
        top = await lookup(db, root, rel) if rel else Entry(DIR, root)
        if top is None:
            raise NotFound(f"no {rel} at position {at}")
        if top.kind != DIR:
            items = [(rel, top)]
        elif recursive:
            items = [(p, e) async for p, e in walk(db, top.oid, rel + "/" if rel else "")]
        else:
            entries = await read_dir(db, root, rel) or {}
            items = [((rel + "/" if rel else "") + n, entries[n]) for n in sorted(entries, key=str.encode)]
        return {"position": at, "entries": [{"path": p, **e.to_json()} for p, e in items]}

    # -- resources -----------------------------------------------------------------------------

    async def sessions_document(self, owner: str, name: str) -> str:
        ctx = await self._ctx(f"{owner}/{name}", "read")
        lines = ["open sessions:"]
        lines += [f"  hif://{ctx.r.name}/session/{x['id']}  {x['author']}  {x['goal']}"
                  for x in (await api.list_sessions(ctx))["sessions"]] or ["  (none)"]
        lines += ["", "latest landings:"]
        rows = (await self.log(RECENT, None, ctx.r.name))["landings"]
        lines += [f"  hif://{ctx.r.name}/landing/{x['position']}  {x['session']}  {x['goal']}" for x in rows] or ["  (none)"]
        return "\n".join(lines) + "\n"

    async def session_document(self, owner: str, name: str, session_id: str) -> str:
        return await self._document(f"{owner}/{name}", session_id)

    async def landing_document(self, owner: str, name: str, position: str) -> str:
        if not position.isdigit():
            raise NotFound(f"no landing {position}")
        return await self._document(f"{owner}/{name}", position)

    async def _document(self, repo: str, ref: str) -> str:
        ctx = await self._ctx(repo, "read")
        s, rec = await _resolve(ctx, ref)
        return show_text(s, rec, await session_diffs(ctx.r, s, rec)) + "\n"

    def resources(self) -> list[tools.Resource]:
        return [tools.Resource("hif://{owner}/{name}/sessions", "sessions", tools.SESSIONS, self.sessions_document),
                tools.Resource("hif://{owner}/{name}/session/{session_id}", "session", tools.SESSION, self.session_document),
                tools.Resource("hif://{owner}/{name}/landing/{position}", "landing", tools.LANDING, self.landing_document)]


def _event(etype: str, role: str, author: str | None, **fields: Any) -> dict[str, Any]:
    """An event as the API's events route takes it (it checks and stamps it)."""
    return {"type": etype, "role": role, **({"author": author} if author else {}), **fields}


async def _resolve(ctx: Ctx, ref: str) -> tuple[Session, Any]:
    """A position number or a session id -> (session, its landing record or None)."""
    if ref.isdigit():
        rec = await ctx.r.mainline.record(int(ref))
        return await landed_session(ctx.r, rec, rec.sessions[0].session), rec
    s = await load_session(ctx, ref)
    return s, await session_record(ctx.r, s)


async def _at(ctx: Ctx, at: int | None) -> int:
    head = await ctx.r.mainline.head()
    if at is None:
        return head
    if not 0 <= at <= head:
        raise NotFound(f"no position {at} (the mainline is at {head})")
    return at


class Endpoint:
    """The ASGI app in front of Quart: ``PATH`` goes to the MCP transport once the caller is
    authenticated; everything else to Quart."""

    def __init__(self, app: Quart, node: Node, server: MCPServer) -> None:
        self.app, self.node, self.quart = app, node, app.asgi_app
        # JSON answers without per-connection state: any replica serves any request. Bearer tokens,
        # not cookies, authenticate, so a rebinding page has nothing to ride on: any Host is served.
        server.streamable_http_app(streamable_http_path=PATH, stateless_http=True, json_response=True,
                                   max_request_body_size=MCP_LIMIT,
                                   transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        self.manager = server.session_manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != PATH:
            await self.quart(scope, receive, send)
            return
        try:
            async with self.app.app_context():
                p = await token_principal(self.node.auth, Headers(scope=scope).get("authorization"))
            if p.user is None:
                raise AuthRequired("this needs a token (Authorization: Bearer ...)")
        except HifError as e:  # refused before a byte of the body is read
            await _refuse(send, e)
            return
        token = _caller.set(p)
        try:
            await self.manager.handle_request(scope, receive, send)
        finally:
            _caller.reset(token)


async def _refuse(send: Send, e: HifError) -> None:
    status = e.response_status
    body = json.dumps(error_body(status, str(e))).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="micelio"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install(app: Quart, node: Node) -> None:
    """Serve ``PATH`` beside the app, with the MCP session manager running while the app serves."""
    backend = NodeTools(node, app)
    endpoint = Endpoint(app, node, tools.build_server(backend, backend.resources(), name="micelio", local=False))
    app.asgi_app = endpoint  # type: ignore[method-assign]

    @app.while_serving
    async def _mcp() -> AsyncIterator[None]:
        async with endpoint.manager.run():
            yield

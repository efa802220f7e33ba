"""Routes of repositories: listing, creating, members, and reading the mainline (head, log, tree,
blame, scan) (docs/api.md)."""

from __future__ import annotations

import json
from typing import Any

from hif.agents.trace import MIME, landing_record
from hif.errors import NotFound
from hif.mainline import log_key
from hif.objects import (
    DIR,
)
from hif.paths import check_path
from hif.repo import Repo, check_repo_name
from hif.rollups import query_items
from hif.tree import lookup
from node.access import need_scope
from node.api.routing import (
    REPO,
    Ctx,
    cbor_or_json,
    route,
)
from node.errors import InvalidInput
from node.heavy import cached_blame
from node.principal import check_description
from node.repos import check_owner, create_repository, delete_repository, update_repository
from node.search import search_of
from node.wire import (
    Answer,
    field,
    query_int,
)

MAX_LOG = 500
MAX_HAVE = 10_000


async def _meta(ctx: Ctx, info: dict[str, Any], repo: Repo) -> dict[str, Any]:
    return {
        "name": info["name"],
        "private": bool(info["private"]),
        "description": info.get("description") or "",
        "created": info.get("created"),
        "head": await repo.mainline.head(),
    }


@route("GET", "/api/v1/repos", "public")
async def list_repos(ctx: Ctx) -> dict[str, Any]:
    limit = query_int("limit", 100, lo=1, hi=500, args=ctx.args) or 100
    after = ctx.args.get("after") or None
    infos = await ctx.node.auth.visible_repos(ctx.principal, limit=limit + 1, after=after)
    more = len(infos) > limit
    infos = infos[:limit]
    repos = [await _meta(ctx, i, ctx.node.repo(i["name"])) for i in infos]
    return {"repos": repos, "next": infos[-1]["name"] if more and infos else None}


@route("POST", "/api/v1/repos", "user", status=201)
async def create_repo(ctx: Ctx) -> dict[str, Any]:
    name = check_repo_name(field(ctx.body, "name", str))
    private = field(ctx.body, "private", bool, default=False)
    description = check_description(field(ctx.body, "description", str, default=""))
    need_scope(ctx.principal, "write")
    info = await create_repository(ctx.node, ctx.principal, name, private=private, description=description)
    return await _meta(ctx, info, ctx.node.repo(name))


@route("GET", REPO, "read", agent=True)
async def repo_meta(ctx: Ctx) -> dict[str, Any]:
    info = await ctx.node.auth.get_repo(ctx.r.name)
    assert info is not None
    return await _meta(ctx, info, ctx.r)


@route("PATCH", REPO, "admin")
async def update_repo(ctx: Ctx) -> dict[str, Any]:
    """``{"description"?, "private"?}``: what the web UI's settings form changes, for the same
    roles (maintainers and owners, an admin-scope token), through the same code."""
    description = field(ctx.body, "description", str, default=None)
    private = field(ctx.body, "private", bool, default=None)
    if description is None and private is None:
        raise InvalidInput("give description and/or private to change")
    info = await update_repository(ctx.node, ctx.r.name, private=private,
                                   description=None if description is None else description.strip())
    return await _meta(ctx, info, ctx.r)


@route("DELETE", REPO, "admin")
async def delete_repo(ctx: Ctx) -> dict[str, Any]:
    """Delete the repository and all it holds: owners only (as in the web UI), and only with
    ``?confirm=<owner/name>`` repeating its full name (a typed confirmation)."""
    check_owner(ctx.principal, ctx.role, ctx.r.name)
    removed = await delete_repository(ctx.node, ctx.r.name, ctx.args.get("confirm", ""))
    return {"deleted": ctx.r.name, "keys": removed}


@route("PUT", REPO + "/members/<user>", "admin")
async def set_repo_member(ctx: Ctx, user: str) -> dict[str, Any]:
    role = field(ctx.body, "role", str)
    await ctx.node.auth.set_repo_member(ctx.r.name, user, role, by=ctx.principal)
    return {"repo": ctx.r.name, "user": user, "role": role}


@route("DELETE", REPO + "/members/<user>", "admin")
async def remove_repo_member(ctx: Ctx, user: str) -> dict[str, Any]:
    await ctx.node.auth.remove_repo_member(ctx.r.name, user, by=ctx.principal)
    return {"removed": user}


@route("GET", REPO + "/head", "read", agent=True)
async def head(ctx: Ctx) -> dict[str, Any]:
    return {"position": await ctx.r.mainline.head()}


@route("GET", REPO + "/log", "read", agent=True)
async def log(ctx: Ctx) -> dict[str, Any]:
    top = await ctx.r.mainline.head()
    limit = query_int("limit", 100, lo=1, hi=MAX_LOG, args=ctx.args) or 100
    order = ctx.args.get("order", "asc")
    if order not in ("asc", "desc"):
        raise InvalidInput("order is asc or desc")
    if order == "asc":
        start = query_int("start", 1, lo=1, args=ctx.args) or 1
        positions = list(range(start, min(top, start + limit - 1) + 1))
        nxt = positions[-1] + 1 if positions and positions[-1] < top else None
    else:
        start = min(query_int("start", top, lo=0, args=ctx.args) or 0, top)
        positions = list(range(start, max(0, start - limit), -1))
        nxt = positions[-1] - 1 if positions and positions[-1] > 1 else None
    records = [[pos, await ctx.r.store.get(log_key(ctx.r.prefix, pos))] for pos in positions]
    return {"head": top, "records": records, "next": nxt}


async def _position(ctx: Ctx) -> int:
    top = await ctx.r.mainline.head()
    at = query_int("at", top, lo=0, args=ctx.args)
    assert at is not None
    if at > top:
        raise NotFound(f"no position {at} (the head is {top})")
    return at


def _path_arg(ctx: Ctx) -> str:
    path = ctx.args.get("path", "").strip("/")
    return check_path(path) if path else ""


@route("GET", REPO + "/landings/<position>/agent-trace", "read", agent=True)
async def agent_trace(ctx: Ctx, position: str) -> Answer:
    """The landing's Agent Trace record (JSON, not CBOR: it is a published format), each session's
    conversation at its page on this node. Records are immutable, so is this answer."""
    from importlib.metadata import version  # only this route names the software's version

    if not position.isascii() or not position.isdigit() or len(position) > 12:
        raise NotFound(f"no landing at position {position}")
    rec = await ctx.r.mainline.record(int(position))
    url = f"{ctx.node.config.url}/{ctx.r.name}/sessions/{{session}}"
    doc = await landing_record(ctx.r, rec, conversation_url=url, tool_version=version("micelio"))
    return Answer((json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), 200, MIME)


@route("GET", REPO + "/tree", "read", agent=True)
async def tree(ctx: Ctx) -> dict[str, Any]:
    at = await _position(ctx)
    path = _path_arg(ctx)
    root = await ctx.r.mainline.tree_at(at)
    entry = await lookup(ctx.r.objects, root, path) if path else None
    oid, kind = (entry.oid, entry.kind) if entry else (root, DIR)
    if path and entry is None:
        raise NotFound(f"no {path} at position {at}")
    out: dict[str, Any] = {"position": at, "path": path, "id": oid, "kind": kind}
    if kind == DIR:
        entries = await ctx.r.objects.get_tree(oid)
        out["entries"] = [[n, e.kind, e.oid] for n, e in sorted(entries.items(), key=lambda kv: kv[0].encode())]
    return out


@route("GET", REPO + "/blame", "read", agent=True)
async def blame_route(ctx: Ctx) -> dict[str, Any]:
    at = await _position(ctx)
    path = _path_arg(ctx)
    if not path:
        raise InvalidInput("blame needs ?path=")
    # off the event loop, in the bounded heavy-work pool, through the blame cache the web UI fills
    lines = await cached_blame(ctx.r, path, at, ctx.node)
    return {"position": at, "path": path,
            "lines": [[ln.position, ln.session, ln.goal, ln.author, ln.text, ln.commit, ln.iteration]
                      for ln in lines]}


@route("GET", REPO + "/commits/<sha>", "read", agent=True)
async def commit(ctx: Ctx, sha: str) -> Any:
    """The landing an imported git commit became (``sha``: its id or at least 7 of its first hex
    digits, any case), from the node's derived index: ``exact`` says whether ``hif export git``
    writes it back with this id. 400 for a malformed id, 404 unknown, 409 ambiguous (candidates)."""
    hit = await search_of(ctx.node).commit(ctx.r, sha)
    return cbor_or_json(ctx, hit.to_json())


@route("POST", REPO + "/scan", "read", agent=True)
async def scan(ctx: Ctx) -> dict[str, Any]:
    since = field(ctx.body, "since", int)
    until = field(ctx.body, "until", int)
    top = await ctx.r.mainline.head()
    if not 0 <= since <= until <= top:
        raise InvalidInput(f"need 0 <= since <= until <= head ({top})")
    if "items" in ctx.body:
        items = field(ctx.body, "items", list)
    else:
        items = sorted(query_items(field(ctx.body, "session", str), field(ctx.body, "paths", list)))
    if len(items) > MAX_HAVE or not all(isinstance(i, str) for i in items):
        raise InvalidInput(f"items: at most {MAX_HAVE} strings")
    return {"positions": await ctx.r.rollups.candidates(since, until, set(items))}

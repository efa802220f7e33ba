"""The hif HTTP API (docs/api.md): CBOR in, CBOR out, every route declared once in ``ROUTES``.

Each route states the access it needs; :func:`route` authenticates, resolves the repository and
checks role and scope before the handler runs, so no handler can forget a check. The matrix test
walks ``ROUTES`` to prove it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import cbor2
from quart import Blueprint, Response, current_app, g, request

from hif.blame import blame
from hif.errors import CorruptObject, HifError, NotFound, PreconditionFailed, SessionClosed
from hif.landing import land
from hif.mainline import log_key
from hif.objects import (
    DIR,
    EXEC,
    FILE,
    FILE_KINDS,
    LINK,
    Entry,
    check_stored,
    decode,
    stored_kind,
)
from hif.paths import check_no_collisions, check_path
from hif.repo import Repo, check_repo_name
from hif.rollups import query_items
from hif.session import ROLES, SEQ_WIDTH, Session, check_session_id, check_text, make_event
from hif.tree import lookup
from node.access import NEEDS, check_login, manages_org, may, need_scope, repo_access
from node.accounts import ANONYMOUS, INHERIT, Inherit, Principal, check_description
from node.app import Node, node_of
from node.errors import AuthRequired, Exists, InvalidInput, PermissionDenied
from node.wire import (
    CBOR_SEQ,
    DEFAULT_LIMIT,
    FORM_LIMIT,
    MiB,
    cbor_response,
    error_body,
    field,
    query_int,
    read_body,
)

bp = Blueprint("api", __name__)

LOGIN_DAYS = 30
AGENT_DAYS = 7  # an agent token's lifetime when the request names none (capped at the creator's)
MAX_HAVE = 10_000
MAX_GET = 1_000
MAX_STREAM = 100_000  # ids per objects/stream (3.4 MB of request body)
STREAM_FIRST = 64  # objects read before the answer starts (so a missing one is still a 404)
STREAM_MAX_BATCH = 512  # objects per read while streaming
STREAM_BYTES = 4 * MiB  # about this much object data read ahead of the connection
MAX_LOG = 500
EVENT_TYPES = ("say", "decide", "write", "delete", "checkpoint", "sync")
FUTURE_SLACK = 86400.0  # an event's time may be at most a day ahead of the node's clock
MAX_SEQ = 10**SEQ_WIDTH - 1  # sequence numbers are keys of SEQ_WIDTH digits


@dataclass(frozen=True)
class Route:
    method: str
    rule: str
    access: str  # public | user | read | write | admin
    limit: int
    agent: bool  # may an agent token (bound to one session) use it?


ROUTES: list[Route] = []


@dataclass
class Ctx:
    """What a handler gets: the node, the caller, the request body and, for repository routes, the
    repository and the caller's role on it."""

    node: Node
    principal: Principal
    body: dict[str, Any]
    repo: Repo | None = None
    role: str | None = None

    @property
    def r(self) -> Repo:
        assert self.repo is not None
        return self.repo

    @property
    def user(self) -> str:
        assert self.principal.user is not None
        return self.principal.user


Handler = Callable[..., Awaitable[Any]]


def route(method: str, rule: str, access: str, *, limit: int = DEFAULT_LIMIT, agent: bool = False,
          status: int = 200) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        ROUTES.append(Route(method, rule, access, limit, agent))

        @functools.wraps(fn)
        async def view(**kw: str) -> Any:
            node = node_of(current_app)  # type: ignore[arg-type]
            principal = await _principal(node)
            ctx = Ctx(node, principal, {})
            body_read = False
            if "host" in kw:  # a read-only mirror: public, so the body may be read first
                if method in ("POST", "PUT"):
                    _refuse_bound(principal)
                    ctx.body, body_read = await read_body(limit), True
                await _authorize_mirror(ctx, kw.pop("host"), f"{kw.pop('owner')}/{kw.pop('name')}")
            elif "owner" in kw:
                name = f"{kw.pop('owner')}/{kw.pop('name')}"
                await _authorize_repo(ctx, name, access, agent, kw.get("sid"))
            elif access != "public" and principal.user is None:
                raise AuthRequired("this needs a token (Authorization: Bearer ...)")
            elif access != "public" and principal.session is not None and not agent:
                raise PermissionDenied("an agent token only works on its own session")
            if method in ("POST", "PUT") and not body_read:  # only once the caller may send it
                ctx.body = await read_body(limit)
            answer = await fn(ctx, **kw)
            return answer if isinstance(answer, Response) else cbor_response(answer, status)

        bp.add_url_rule(rule, endpoint=fn.__name__, view_func=view, methods=[method])
        return fn

    return deco


async def _principal(node: Node) -> Principal:
    header = request.headers.get("Authorization")
    if not header:
        return ANONYMOUS
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthRequired("use Authorization: Bearer <token>")
    p = await node.auth.authenticate(secret.strip())
    if p is None:
        raise AuthRequired("the token is unknown, expired or revoked")
    g.user = p.user
    return p


async def _authorize_repo(ctx: Ctx, name: str, access: str, agent_ok: bool, sid: str | None) -> None:
    p = ctx.principal
    try:
        check_repo_name(name)
    except InvalidInput:
        raise NotFound(f"no repository {name}") from None
    info, role = await repo_access(ctx.node.auth, p, name, access)
    if p.user is None and (role is None or access != "read"):
        # anonymous: a missing and a private repository answer alike, so existence does not leak
        raise AuthRequired("this needs a token (Authorization: Bearer ...)")
    if info is None or role is None:
        raise NotFound(f"no repository {name}")
    if not may(p, role, access, name):
        want_role, want_scope = NEEDS[access]
        raise PermissionDenied(f"{access} access to {name} needs the {want_role} role and a {want_scope} token")
    repo = ctx.node.repo(name)
    if p.session is not None:
        if p.repo != name:
            raise PermissionDenied("this agent token is for another repository")
        if await repo.sessions.state(p.session) is not None:
            raise AuthRequired(f"this agent token's session {p.session} has ended")
        if access != "read" and (not agent_ok or (sid is not None and sid != p.session)):
            raise PermissionDenied(f"an agent token only works on its own session {p.session}")
    ctx.repo, ctx.role = repo, role


_HOST = re.compile(r"^[a-z0-9][a-z0-9.-]{0,252}(:[0-9]{1,5})?$|^\[[0-9a-f:.]+\](:[0-9]{1,5})?$")


def _refuse_bound(p: Principal) -> None:
    if p.repo is not None:
        raise PermissionDenied(f"this token is bound to repository {p.repo}")


async def _authorize_mirror(ctx: Ctx, host: str, name: str) -> None:
    """Mirrors are public copies of public repositories: anyone may read them, but a token bound to
    one repository (or an agent's session) is for that repository only."""
    _refuse_bound(ctx.principal)
    fed = current_app.extensions.get("federation")
    try:
        check_repo_name(name)
        valid = fed is not None and _HOST.match(host) is not None
    except InvalidInput:
        valid = False
    repo = fed.mirror(host, name) if valid else None
    if repo is None or not await repo.exists():
        raise NotFound(f"no mirror {host}/{name}")
    ctx.repo, ctx.role = repo, "reader"


# -- node routes -------------------------------------------------------------------------------


@route("GET", "/api/v1/whoami", "user", agent=True)
async def whoami(ctx: Ctx) -> dict[str, Any]:
    p = ctx.principal
    return {"user": p.user, "admin": p.admin, "scope": p.scope, "repo": p.repo, "session": p.session,
            "expires": p.expires}


@route("POST", "/api/v1/login", "public", limit=FORM_LIMIT)
async def login(ctx: Ctx) -> dict[str, Any]:
    user = field(ctx.body, "user", str)
    password = field(ctx.body, "password", str)
    if not await check_login(ctx.node.auth, ctx.node.limiter, user, password, ctx.node.client_address()):
        raise AuthRequired("wrong user name or password")
    tid, secret = await ctx.node.auth.create_token(user, scope="write", name="login",
                                                   expires_in=LOGIN_DAYS * 86400)
    return {"id": tid, "token": secret, "expires_days": LOGIN_DAYS}


@route("GET", "/api/v1/tokens", "user")
async def list_tokens(ctx: Ctx) -> dict[str, Any]:
    return {"tokens": await ctx.node.auth.list_tokens(ctx.user)}


@route("POST", "/api/v1/tokens", "user", status=201)
async def create_token(ctx: Ctx) -> dict[str, Any]:
    """A token never outranks or outlives the one that makes it: what the body leaves out is the
    creator's (scope, repository, expiry), what it asks beyond that is a 403."""
    scope = field(ctx.body, "scope", str, default=None)
    repo = field(ctx.body, "repo", str, default=None)
    days = _days(ctx.body)
    if scope is not None and scope not in NEEDS:
        raise InvalidInput("scope must be read, write or admin")
    if repo is not None:
        check_repo_name(repo)
    tid, secret = await ctx.node.auth.create_token(
        ctx.user, scope=scope, repo=repo, name=field(ctx.body, "name", str, default=""),
        expires_in=INHERIT if days is None else days * 86400, by=ctx.principal,
    )
    made = next(t for t in await ctx.node.auth.list_tokens(ctx.user) if t["id"] == tid)
    return {"id": tid, "token": secret, "scope": made["scope"], "repo": made["repo"],
            "expires": made["expires"]}


def _days(body: dict[str, Any]) -> float | None:
    """``expires_days``: a positive number of days, or None when the body leaves it out."""
    days = field(body, "expires_days", (int, float), default=None)
    if days is not None and (isinstance(days, bool) or not 0 < days <= 100 * 366):
        raise InvalidInput("expires_days must be a positive number of days (at most 100 years)")
    return days


@route("DELETE", "/api/v1/tokens/<tid>", "user")
async def revoke_token(ctx: Ctx, tid: str) -> dict[str, Any]:
    await ctx.node.auth.revoke_token(tid, by=ctx.principal)
    return {"revoked": tid}


@route("POST", "/api/v1/orgs", "user", status=201)
async def create_org(ctx: Ctx) -> dict[str, Any]:
    need_scope(ctx.principal, "write")
    name = field(ctx.body, "name", str)
    await ctx.node.auth.create_org(name, ctx.user)
    return {"name": name, "owner": ctx.user}


@route("PUT", "/api/v1/orgs/<org>/members/<user>", "user")
async def set_org_member(ctx: Ctx, org: str, user: str) -> dict[str, Any]:
    await _need_org_admin(ctx, org)
    role = field(ctx.body, "role", str)
    await ctx.node.auth.set_org_member(org, user, role, by=ctx.principal)
    return {"org": org, "user": user, "role": role}


@route("DELETE", "/api/v1/orgs/<org>/members/<user>", "user")
async def remove_org_member(ctx: Ctx, org: str, user: str) -> dict[str, Any]:
    await _need_org_admin(ctx, org)
    await ctx.node.auth.remove_org_member(org, user, by=ctx.principal)
    return {"removed": user}


async def _need_org_admin(ctx: Ctx, org: str) -> None:
    need_scope(ctx.principal, "admin")
    if not await manages_org(ctx.node.auth, ctx.principal, org):
        raise NotFound(f"no organisation {org} that you manage")


# -- repositories ------------------------------------------------------------------------------

REPO = "/api/v1/repos/<owner>/<name>"


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
    limit = query_int("limit", 100, lo=1, hi=500) or 100
    after = request.args.get("after") or None
    infos = await ctx.node.auth.visible_repos(ctx.principal, limit=limit + 1, after=after)
    more = len(infos) > limit
    infos = infos[:limit]
    repos = [await _meta(ctx, i, ctx.node.repo(i["name"])) for i in infos]
    return {"repos": repos, "next": infos[-1]["name"] if more and infos else None}


@route("POST", "/api/v1/repos", "user", status=201)
async def create_repo(ctx: Ctx) -> dict[str, Any]:
    p = ctx.principal
    name = check_repo_name(field(ctx.body, "name", str))
    private = field(ctx.body, "private", bool, default=False)
    description = check_description(field(ctx.body, "description", str, default=""))
    need_scope(p, "write")
    if not await ctx.node.auth.can_create_repo(p, name):
        raise PermissionDenied(f"you cannot create repositories under {name.split('/')[0]}")
    owner = name.split("/")[0]
    if p.admin and owner != p.user and await ctx.node.auth.get_user(owner) is None:
        with contextlib.suppress(Exists):
            await ctx.node.auth.create_org(owner, ctx.user)
    if await ctx.node.auth.get_repo(name) is not None:
        raise Exists(f"repository {name} already exists")
    repo = ctx.node.repo(name)
    # the store part first: a crash between the two leaves an unlisted repository that a retry adopts
    created = False
    with contextlib.suppress(PreconditionFailed):
        await repo.create(description=description)
        created = True
    try:
        info = await ctx.node.auth.register_repo(name, private=private, owner_user=ctx.user,
                                                description=description)
    except HifError:  # refused after all (a name taken meanwhile): a refused request stores nothing
        if created:
            await repo.store.delete(repo.prefix + "meta")
        raise
    return await _meta(ctx, info, repo)


@route("GET", REPO, "read", agent=True)
async def repo_meta(ctx: Ctx) -> dict[str, Any]:
    info = await ctx.node.auth.get_repo(ctx.r.name)
    assert info is not None
    return await _meta(ctx, info, ctx.r)


@route("PUT", REPO + "/members/<user>", "admin")
async def set_repo_member(ctx: Ctx, user: str) -> dict[str, Any]:
    role = field(ctx.body, "role", str)
    await ctx.node.auth.set_repo_member(ctx.r.name, user, role, by=ctx.principal)
    return {"repo": ctx.r.name, "user": user, "role": role}


@route("DELETE", REPO + "/members/<user>", "admin")
async def remove_repo_member(ctx: Ctx, user: str) -> dict[str, Any]:
    await ctx.node.auth.remove_repo_member(ctx.r.name, user, by=ctx.principal)
    return {"removed": user}


# -- objects -----------------------------------------------------------------------------------


def _ids(body: dict[str, Any], most: int) -> list[bytes]:
    ids = field(body, "ids", list)
    if len(ids) > most:
        raise InvalidInput(f"at most {most} ids per request")
    if not all(isinstance(i, bytes) and len(i) == 32 for i in ids):
        raise InvalidInput("ids must be 32-byte strings")
    return ids


@route("POST", REPO + "/objects/have", "read", agent=True)
async def objects_have(ctx: Ctx) -> dict[str, Any]:
    ids = _ids(ctx.body, MAX_HAVE)
    return {"missing": [i for i in ids if not await ctx.r.objects.has(i)]}


@route("POST", REPO + "/objects/get", "read", agent=True)
async def objects_get(ctx: Ctx) -> dict[str, Any]:
    ids = _ids(ctx.body, MAX_GET)
    # read concurrently: on S3 each read is a round trip, on disk the store's threads overlap them
    found = await asyncio.gather(*(ctx.r.store.get_or_none(ctx.r.objects.key(oid)) for oid in ids))
    for oid, data in zip(ids, found, strict=True):
        if data is None:
            raise NotFound(f"object {oid.hex()} is missing")
    return {"objects": [[oid, data] for oid, data in zip(ids, found, strict=True)]}


@route("POST", REPO + "/objects/stream", "read", limit=4 * MiB, agent=True)
async def objects_stream(ctx: Ctx) -> Response:
    """Many objects in one streamed answer (a clone's whole checkout in one request instead of one per
    1,000): read a bounded batch ahead while the last one is sent, so memory stays flat at any size."""
    ids = _ids(ctx.body, MAX_STREAM)
    store, key = ctx.r.store, ctx.r.objects.key

    async def read(batch: list[bytes]) -> list[bytes | None]:
        return await store.get_many([key(oid) for oid in batch])

    first = ids[:STREAM_FIRST]
    found = await read(first)
    _check_found(first, found)  # a missing object still answers 404 before anything is sent

    async def body() -> AsyncIterator[bytes]:
        batch, got, at, sent = first, found, len(first), 0
        while True:
            size = sum(len(d) for d in got if d is not None)
            sent += len(batch)
            # the next batch is read while this one goes out; its length keeps about STREAM_BYTES in hand
            n = max(1, min(STREAM_MAX_BATCH, STREAM_BYTES * len(batch) // max(size, 1)))
            nxt = ids[at:at + n]
            pending = asyncio.ensure_future(read(nxt)) if nxt else None
            try:
                _check_found(batch, got)
                yield b"".join(cbor2.dumps([oid, data]) for oid, data in zip(batch, got, strict=True))
                if pending is None:
                    break
                batch, got, at = nxt, await pending, at + len(nxt)
            except HifError as e:  # too late for a status: the last item says what went wrong
                yield cbor2.dumps(error_body(e.http_status, str(e)))
                return
            finally:
                if pending is not None and not pending.done():
                    pending.cancel()
        yield cbor2.dumps({"count": sent})

    resp = Response(body(), status=200, content_type=CBOR_SEQ)
    resp.timeout = None  # a large checkout may stream for longer than Quart's default minute
    return resp


def _check_found(ids: list[bytes], found: list[bytes | None]) -> None:
    for oid, data in zip(ids, found, strict=True):
        if data is None:
            raise NotFound(f"object {oid.hex()} is missing")


@route("POST", REPO + "/objects/put", "write", limit=64 * MiB, agent=True)
async def objects_put(ctx: Ctx) -> dict[str, Any]:
    return {"ids": await _put_objects(ctx, field(ctx.body, "objects", list))}


async def _put_objects(ctx: Ctx, objects: list[Any]) -> list[bytes]:
    """Keep stored objects, each verified against its id first: none is kept if any is bad."""
    checked = _check_objects(objects)
    await _keep_objects(ctx, checked)
    return [oid for oid, _ in checked]


def _check_objects(objects: list[Any]) -> list[tuple[bytes, bytes]]:
    """(id, stored form) of objects a caller sent, each decoded under the expansion limits."""
    if not all(isinstance(o, bytes) for o in objects):
        raise InvalidInput("objects must be byte strings")
    return [(check_stored(o)[0], o) for o in objects]


async def _keep_objects(ctx: Ctx, checked: list[tuple[bytes, bytes]]) -> None:
    for oid, stored in checked:
        with contextlib.suppress(PreconditionFailed):
            await ctx.r.store.put(ctx.r.objects.key(oid), stored, if_none_match=True)
        ctx.r.objects.note_kind(oid, stored_kind(stored))  # a write event naming it need not read it


# -- mainline ----------------------------------------------------------------------------------


@route("GET", REPO + "/head", "read", agent=True)
async def head(ctx: Ctx) -> dict[str, Any]:
    return {"position": await ctx.r.mainline.head()}


@route("GET", REPO + "/log", "read", agent=True)
async def log(ctx: Ctx) -> dict[str, Any]:
    top = await ctx.r.mainline.head()
    limit = query_int("limit", 100, lo=1, hi=MAX_LOG) or 100
    order = request.args.get("order", "asc")
    if order not in ("asc", "desc"):
        raise InvalidInput("order is asc or desc")
    if order == "asc":
        start = query_int("start", 1, lo=1) or 1
        positions = list(range(start, min(top, start + limit - 1) + 1))
        nxt = positions[-1] + 1 if positions and positions[-1] < top else None
    else:
        start = min(query_int("start", top, lo=0) or 0, top)
        positions = list(range(start, max(0, start - limit), -1))
        nxt = positions[-1] - 1 if positions and positions[-1] > 1 else None
    records = [[pos, await ctx.r.store.get(log_key(ctx.r.prefix, pos))] for pos in positions]
    return {"head": top, "records": records, "next": nxt}


async def _position(ctx: Ctx) -> int:
    top = await ctx.r.mainline.head()
    at = query_int("at", top, lo=0)
    assert at is not None
    if at > top:
        raise NotFound(f"no position {at} (the head is {top})")
    return at


def _path_arg() -> str:
    path = request.args.get("path", "").strip("/")
    return check_path(path) if path else ""


@route("GET", REPO + "/tree", "read", agent=True)
async def tree(ctx: Ctx) -> dict[str, Any]:
    at = await _position(ctx)
    path = _path_arg()
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
    path = _path_arg()
    if not path:
        raise InvalidInput("blame needs ?path=")
    lines = await blame(ctx.r, path, at)
    return {"position": at, "path": path,
            "lines": [[ln.position, ln.session, ln.goal, ln.author, ln.text] for ln in lines]}


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


# -- sessions ----------------------------------------------------------------------------------

SESSION = REPO + "/sessions/<sid>"


async def _load_session(ctx: Ctx, sid: str, *, open_only: bool = False) -> Session:
    """The session ``sid`` of the request's repository; with ``open_only``, refused once closed."""
    if not _is_session_id(sid):
        raise NotFound(f"no session {sid}")
    s = await ctx.r.sessions.load(sid)
    if open_only and not s.is_open:
        raise SessionClosed(f"session {sid} was {s.state}")
    return s


def _is_session_id(sid: str) -> bool:
    try:
        check_session_id(sid)
    except InvalidInput:
        return False
    return True


@route("GET", REPO + "/sessions", "read", agent=True)
async def list_sessions(ctx: Ctx) -> dict[str, Any]:
    out = []
    for sid in (await ctx.r.sessions.list_open())[:1000]:
        data = await ctx.r.store.get_or_none(f"{ctx.r.prefix}open/{sid}")
        if data is None:
            continue  # closed meanwhile
        marker = decode(data)
        out.append({"id": sid, "goal": marker.get("goal"), "author": marker.get("author"),
                    "started": marker.get("time")})
    return {"sessions": out}


@route("POST", REPO + "/sessions", "write", status=201)
async def start_session(ctx: Ctx) -> dict[str, Any]:
    opening = await _opening(ctx)
    s = await ctx.r.sessions.start(*opening)
    return {"id": s.id, "event": s.events[0]}


async def _opening(ctx: Ctx) -> tuple[str, str, str, int]:
    """The checked goal, author, role and base of a session the request starts."""
    goal = check_text(field(ctx.body, "goal", str), "goal")
    base = field(ctx.body, "base", int, default=None)
    top = await ctx.r.mainline.head()
    base = top if base is None else base
    if not 0 <= base <= top:
        raise InvalidInput(f"base must be between 0 and the head ({top})")
    role = _role(ctx)
    author = field(ctx.body, "author", str, default=ctx.user)
    check_text(author, "author")
    return goal, author, role, base


def _role(ctx: Ctx, body: dict[str, Any] | None = None) -> str:
    role = field(body if body is not None else ctx.body, "role", str, default="human")
    if ctx.principal.session is not None:
        return "agent"  # an agent token speaks as an agent, whatever it claims
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
    return role


@route("GET", SESSION, "read", agent=True)
async def get_session(ctx: Ctx, sid: str) -> dict[str, Any]:
    s = await _load_session(ctx, sid)
    since = query_int("since", -1, lo=-1)
    after = since if since is not None else -1
    events = [e for e in s.events if not isinstance(e, dict) or not isinstance(e.get("seq", 0), int)
              or e.get("seq", 0) > after]  # stored data: a malformed event is passed on, not a crash
    return {
        "id": s.id, "goal": s.goal, "author": s.author, "role": s.role, "base": s.base,
        "state": s.state, "position": s.position, "snapshot": s.snapshot, "events": events,
        "changes": [[p, e.kind if e else None, e.oid if e else None] for p, e in sorted(s.changes.items())],
    }


async def _check_event(ctx: Ctx, raw: Any, top: int, known: frozenset[bytes]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidInput("each event is a map")
    etype = field(raw, "type", str)
    if etype not in EVENT_TYPES:
        raise InvalidInput(f"event type must be one of {', '.join(EVENT_TYPES)}")
    author = field(raw, "author", str, default=ctx.user)
    check_text(author, "author")
    fields: dict[str, Any] = {}
    if etype == "say":
        fields["text"] = check_text(field(raw, "text", str), "message")
    elif etype == "decide":
        fields["decision"] = check_text(field(raw, "decision", str), "decision")
        fields["why"] = check_text(field(raw, "why", str), "rationale")
        alts = field(raw, "alternatives", list, default=[])
        fields["alternatives"] = [check_text(a, "alternative") for a in alts if isinstance(a, str)]
        if len(fields["alternatives"]) != len(alts):
            raise InvalidInput("alternatives are strings")
    elif etype in ("write", "delete"):
        fields["path"] = field(raw, "path", str)
        if etype == "write":
            fields["kind"] = field(raw, "kind", str)
            if fields["kind"] not in FILE_KINDS:
                raise InvalidInput(f"kind must be {FILE}, {EXEC} or {LINK}")
            fields["blob"] = await _existing(ctx, field(raw, "blob", bytes), known)
    elif etype == "checkpoint":
        fields["note"] = check_text(field(raw, "note", str), "checkpoint note")
        fields["tree"] = await _existing(ctx, field(raw, "tree", bytes), known)
        fields["iteration"] = field(raw, "iteration", int)
    elif etype == "sync":
        fields["base"] = field(raw, "base", int)
        if not 0 <= fields["base"] <= top:
            raise InvalidInput(f"sync base must be between 0 and the head ({top})")
        fields["merged"] = [check_path(p) for p in field(raw, "merged", list, default=[])]
        fields["conflicts"] = [check_path(p) for p in field(raw, "conflicts", list, default=[])]
    now = ctx.r.clock()
    when = field(raw, "time", (int, float), default=None)
    event = make_event(etype, author, _role(ctx, raw), now if when is None else _check_time(when, now),
                       **fields)
    event["user"] = ctx.user
    return event


def _check_time(when: float, now: float) -> float:
    """An event's time as a caller states it: a real moment from 1970 to a day ahead of the node."""
    if isinstance(when, bool):
        raise InvalidInput("an event's time is a number of seconds since 1970")
    try:
        t = float(when)
    except OverflowError:  # an integer too large for a float
        t = float("inf")
    if not math.isfinite(t) or t < 0 or t > now + FUTURE_SLACK:
        raise InvalidInput("an event's time is seconds since 1970, at most a day ahead of the node's clock")
    return t


async def _existing(ctx: Ctx, oid: bytes, known: frozenset[bytes]) -> bytes:
    if len(oid) != 32:
        raise InvalidInput("object ids are 32 bytes")
    if oid not in known and not await ctx.r.objects.has(oid):
        raise CorruptObject(f"the event refers to object {oid.hex()}, which the node does not have")
    return oid


@route("POST", SESSION + "/events", "write", agent=True)
async def append_events(ctx: Ctx, sid: str) -> dict[str, Any]:
    s = await _load_session(ctx, sid, open_only=True)
    events = await _checked_events(ctx, field(ctx.body, "events", list), at_least=1)
    next_seq = field(ctx.body, "next_seq", int, default=s.next_seq)
    if not 1 <= next_seq <= MAX_SEQ:
        raise InvalidInput(f"next_seq is between 1 (0 is the start event) and {MAX_SEQ}")
    return {"events": await _append(ctx, sid, events, next_seq)}


async def _checked_events(ctx: Ctx, raw: list[Any], *, at_least: int,
                          known: dict[bytes, str] | None = None) -> list[dict[str, Any]]:
    """Every event checked before any is appended, so a bad one leaves the session as it was.
    ``known``: objects the request itself carries, with their kinds (no need to ask the store)."""
    if not at_least <= len(raw) <= 1000:
        raise InvalidInput(f"send between {at_least} and 1000 events")
    syncs = any(isinstance(e, dict) and e.get("type") == "sync" for e in raw)
    top = await ctx.r.mainline.head() if syncs else 0  # only a sync names a position
    carried = frozenset(known or ())
    events = [await _check_event(ctx, e, top, carried) for e in raw]
    # a file names a blob, a checkpoint a tree: read together, only those not seen stored here
    await ctx.r.objects.check_kinds(
        [(e["path"], Entry(e["kind"], e["blob"])) for e in events if e["type"] == "write"]
        + [(f"checkpoint {e['note']!r}", Entry(DIR, e["tree"])) for e in events if e["type"] == "checkpoint"],
        known)
    return events


async def _append(ctx: Ctx, sid: str, events: list[dict[str, Any]], next_seq: int) -> list[dict[str, Any]]:
    out = []
    for event in events:
        stamped = await ctx.r.sessions.append(sid, event, next_seq)
        out.append(stamped)
        next_seq = stamped["seq"] + 1
    return out


@route("POST", SESSION + "/land", "write", agent=True)
async def land_session(ctx: Ctx, sid: str) -> dict[str, Any]:
    return await _land(ctx, await _load_session(ctx, sid))


async def _land(ctx: Ctx, s: Session) -> dict[str, Any]:
    result = await land(ctx.r, s)
    fed = current_app.extensions.get("federation")
    if fed is not None:  # deliver to followers now, not at the next poll
        fed.landed(ctx.r.name)
    return {"position": result.position, "session": result.session, "tree": result.tree,
            "merged": result.merged, "already_landed": result.already, "attempts": result.attempts}


@route("POST", REPO + "/land", "write", limit=64 * MiB)
async def land_whole(ctx: Ctx) -> dict[str, Any]:
    """A whole session in one request (start, objects, events, land): for an agent that worked
    offline and has nothing to stream, one round trip instead of four. Everything is checked before
    the session starts; a refused landing (a conflict) leaves it open and names it (``session``) for a
    sync or an abandon."""
    opening = await _opening(ctx)
    objects = _check_objects(field(ctx.body, "objects", list, default=[]))
    events = await _checked_events(ctx, field(ctx.body, "events", list, default=[]), at_least=0,
                                   known={oid: stored_kind(stored) for oid, stored in objects})
    written: dict[str, bool] = {}
    for e in events:
        if e["type"] in ("write", "delete"):
            written[e["path"]] = e["type"] == "write"
    check_no_collisions(p for p, w in written.items() if w)  # refused before the session starts
    await _keep_objects(ctx, objects)  # only once the whole request is checked: a refusal keeps nothing
    s = await ctx.r.sessions.start(*opening, events=events)  # the start and the events: one round trip
    try:
        return await _land(ctx, s)
    except HifError as e:  # refused (a conflict, missing checks) or failed: the session stays open
        e.session = s.id
        raise


@route("POST", SESSION + "/abandon", "write", agent=True)
async def abandon_session(ctx: Ctx, sid: str) -> dict[str, Any]:
    s = await _load_session(ctx, sid, open_only=True)
    reason = check_text(field(ctx.body, "reason", str, default="abandoned"), "reason")
    event = make_event("abandon", ctx.user, _role(ctx), ctx.r.clock(), reason=reason)
    event["user"] = ctx.user
    await ctx.r.sessions.abandon(s, event, reason)
    return {"id": sid, "state": "abandoned"}


@route("POST", SESSION + "/tokens", "write", status=201)
async def agent_token(ctx: Ctx, sid: str) -> dict[str, Any]:
    await _load_session(ctx, sid, open_only=True)
    days = _days(ctx.body)
    # unspecified: a week, but never past the creator's own expiry; asked for longer: refused
    lifetime = Inherit(most=AGENT_DAYS * 86400) if days is None else days * 86400
    tid, secret = await ctx.node.auth.create_token(ctx.user, scope="write", repo=ctx.r.name, session=sid,
                                                   name=f"agent for {sid}", expires_in=lifetime,
                                                   by=ctx.principal)
    return {"id": tid, "token": secret, "session": sid}


import node.checks_api  # noqa: E402,F401 - registers the checks routes in ROUTES
from node import federation_api  # noqa: E402,F401 - registers the federation routes in ROUTES

"""The routing of the hif HTTP API (docs/api.md): CBOR in, CBOR out, every route declared once in
``ROUTES`` by :func:`route`, here, and the helpers the route modules of ``node.api`` share.

Each route states the access it needs; :func:`route` authenticates, resolves the repository and
checks role and scope before the handler runs, so no handler can forget a check. The matrix test
walks ``ROUTES`` to prove it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from quart import Blueprint, current_app, g, request
from werkzeug.datastructures import MultiDict

from hif.errors import NotFound, SessionClosed
from hif.repo import Repo, check_repo_name
from hif.session import ROLES, Session, is_session_id
from node.access import NEEDS, may, repo_access, token_principal
from node.context import Node, node_of
from node.errors import AuthRequired, InvalidInput, PermissionDenied
from node.principal import Principal
from node.ratelimit import client_address
from node.wire import (
    DEFAULT_LIMIT,
    Answer,
    body_map,
    cbor_answer,
    field,
    read_bytes,
    to_response,
)

bp = Blueprint("api", __name__)


@dataclass(frozen=True)
class Route:
    method: str
    rule: str
    access: str  # public | user | read | write | admin
    limit: int
    agent: bool  # may an agent token (bound to one session) use it?


ROUTES: list[Route] = []
BODY_METHODS = ("POST", "PUT", "PATCH")  # the methods whose requests carry a CBOR body


class Call:
    """What a handler may read of its HTTP request, the same whichever server path carries it (the
    thin ASGI path of ``node.api.asgi`` or Quart's, :class:`QuartCall`): handlers never touch
    Quart's request globals, so the hot routes skip Quart's request and response objects."""

    method: str = ""
    path: str = ""
    remote: str | None = None
    user: str | None = None  # the caller, once known (the access log names it)

    def header(self, name: str) -> str | None:
        return None

    def header_list(self, name: str) -> list[str]:
        return []

    @property
    def args(self) -> MultiDict[str, str]:
        return MultiDict()

    async def read(self, limit: int) -> bytes:
        """The body, refused (413) past ``limit`` bytes or when its Content-Length says so."""
        return b""

    def identified(self, user: str) -> None:
        self.user = user


class QuartCall(Call):
    """The request Quart is handling (HEAD, and whatever reaches a route through Quart)."""

    def __init__(self) -> None:
        self.method, self.path, self.remote = request.method, request.path, request.remote_addr

    def header(self, name: str) -> str | None:
        return request.headers.get(name)

    def header_list(self, name: str) -> list[str]:
        return request.headers.getlist(name)

    @property
    def args(self) -> MultiDict[str, str]:
        return request.args

    async def read(self, limit: int) -> bytes:
        return await read_bytes(limit)

    def identified(self, user: str) -> None:
        self.user = g.user = user


@dataclass
class Ctx:
    """What a handler gets: the node, the caller, the request body and, for repository routes, the
    repository and the caller's role on it; ``call``, the HTTP request (None for a tool call of
    ``node.mcp``)."""

    node: Node
    principal: Principal
    body: dict[str, Any]
    repo: Repo | None = None
    role: str | None = None
    call: Call | None = None

    @property
    def r(self) -> Repo:
        assert self.repo is not None
        return self.repo

    @property
    def user(self) -> str:
        assert self.principal.user is not None
        return self.principal.user

    @property
    def args(self) -> MultiDict[str, str]:
        """The query's arguments (none outside an HTTP request)."""
        return self.call.args if self.call is not None else MultiDict()

    def header(self, name: str) -> str | None:
        return self.call.header(name) if self.call is not None else None

    def client_address(self) -> str:
        """The client: the TCP peer, or behind a trusted proxy the address it forwarded."""
        call = self.call or Call()
        return client_address(call.remote, call.header_list("X-Forwarded-For"), self.node.trusted_proxies)


Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    """A route of ``ROUTES`` with its handler: what both server paths run (:func:`answer`)."""

    route: Route
    fn: Handler
    status: int
    pattern: re.Pattern[str]


ENDPOINTS: list[Endpoint] = []  # ROUTES with their handlers, in the same order
_PARAM = re.compile(r"<([a-z_]+)>")


def _pattern(rule: str) -> re.Pattern[str]:
    """``rule`` as werkzeug's default converter matches it: each ``<name>`` one non-empty segment."""
    if "<" in _PARAM.sub("", rule):
        raise ValueError(f"{rule}: API rules use plain <name> segments only")
    parts = _PARAM.split(rule)
    return re.compile("".join(re.escape(x) if i % 2 == 0 else f"(?P<{x}>[^/]+)" for i, x in enumerate(parts)) + "$")


def route(method: str, rule: str, access: str, *, limit: int = DEFAULT_LIMIT, agent: bool = False,
          status: int = 200) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        ROUTES.append(Route(method, rule, access, limit, agent))
        ep = Endpoint(ROUTES[-1], fn, status, _pattern(rule))
        ENDPOINTS.append(ep)

        @functools.wraps(fn)
        async def view(**kw: str) -> Any:
            return to_response(await answer(ep, node_of(current_app), QuartCall(), kw))  # type: ignore[arg-type]

        bp.add_url_rule(rule, endpoint=fn.__name__, view_func=view, methods=[method])
        return fn

    return deco


async def answer(ep: Endpoint, node: Node, call: Call, kw: dict[str, str]) -> Answer:
    """Run route ``ep`` for ``call``: authenticate, resolve the repository and check role and scope
    before the handler runs (so no handler can forget a check), read the body only once the caller
    may send it, and encode the handler's answer once."""
    r = ep.route
    principal = await token_principal(node.auth, call.header("Authorization"))
    if principal.user is not None:
        call.identified(principal.user)
    ctx = Ctx(node, principal, {}, call=call)
    body_read = False
    if "host" in kw:  # a read-only mirror: public, so the body may be read first
        if r.method in BODY_METHODS:
            _refuse_bound(principal)
            ctx.body, body_read = body_map(await call.read(r.limit)), True
        await _authorize_mirror(ctx, kw.pop("host"), f"{kw.pop('owner')}/{kw.pop('name')}")
    elif "owner" in kw:
        name = f"{kw.pop('owner')}/{kw.pop('name')}"
        await authorize_repo(ctx, name, r.access, r.agent, kw.get("sid"))
    elif r.access != "public" and principal.user is None:
        raise AuthRequired("this needs a token (Authorization: Bearer ...)")
    elif r.access != "public" and principal.session is not None and not r.agent:
        raise PermissionDenied("an agent token only works on its own session")
    if r.method in BODY_METHODS and not body_read:  # only once the caller may send it
        ctx.body = body_map(await call.read(r.limit))
    out = await ep.fn(ctx, **kw)
    return out if isinstance(out, Answer) else cbor_answer(out, ep.status)


async def authorize_repo(ctx: Ctx, name: str, access: str, agent_ok: bool, sid: str | None) -> None:
    """Resolve repository ``name`` for ``ctx`` if its principal has ``access`` there (an agent
    token: on its own session ``sid`` only, and only where ``agent_ok``); else 401/403/404."""
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
    fed = ctx.node.extensions.get("federation")
    try:
        check_repo_name(name)
        valid = fed is not None and _HOST.match(host) is not None
    except InvalidInput:
        valid = False
    repo = fed.mirror(host, name) if valid else None
    if repo is None or not await repo.exists():
        raise NotFound(f"no mirror {host}/{name}")
    ctx.repo, ctx.role = repo, "reader"



REPO = "/api/v1/repos/<owner>/<name>"
SESSION = REPO + "/sessions/<sid>"


async def load_session(ctx: Ctx, sid: str, *, open_only: bool = False) -> Session:
    """The session ``sid`` of the request's repository; with ``open_only``, refused once closed."""
    if not is_session_id(sid):
        raise NotFound(f"no session {sid}")
    s = await ctx.r.sessions.load(sid)
    if open_only and not s.is_open:
        raise SessionClosed(f"session {sid} was {s.state}")
    return s


async def check_open(ctx: Ctx, sid: str) -> None:
    """Refuse unless session ``sid`` exists (its start event) and is still open (no closing state):
    two small reads together, where :func:`load_session` reads every event the session has."""
    if not is_session_id(sid):
        raise NotFound(f"no session {sid}")
    start, state = await asyncio.gather(ctx.r.sessions.start_event(sid), ctx.r.sessions.state(sid))
    if start is None or start.get("seq") != 0:
        raise NotFound(f"no session {sid}")
    if state is not None and state.get("state", "open") != "open":
        raise SessionClosed(f"session {sid} was {state['state']}")


def cbor_or_json(ctx: Ctx, doc: Any) -> Any:
    """``doc`` as JSON when the request asks for it (``Accept: application/json`` or
    ``format=json``: a browser or curl reading a plain document), else left to the CBOR answer."""
    if "application/json" in (ctx.header("Accept") or "") or ctx.args.get("format") == "json":
        return Answer(json.dumps(doc).encode(), 200, "application/json")
    return doc


def session_role(ctx: Ctx, body: dict[str, Any] | None = None) -> str:
    role = field(body if body is not None else ctx.body, "role", str, default="human")
    if ctx.principal.session is not None:
        return "agent"  # an agent token speaks as an agent, whatever it claims
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
    return role


def expires_days(body: dict[str, Any]) -> float | None:
    """``expires_days``: a positive number of days, or None when the body leaves it out."""
    days = field(body, "expires_days", (int, float), default=None)
    if days is not None and (isinstance(days, bool) or not 0 < days <= 100 * 366):
        raise InvalidInput("expires_days must be a positive number of days (at most 100 years)")
    return days

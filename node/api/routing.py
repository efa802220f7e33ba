"""The routing of the hif HTTP API (docs/api.md): CBOR in, CBOR out, every route declared once in
``ROUTES`` by :func:`route`, here, and the helpers the route modules of ``node.api`` share.

Each route states the access it needs; :func:`route` authenticates, resolves the repository and
checks role and scope before the handler runs, so no handler can forget a check. The matrix test
walks ``ROUTES`` to prove it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from quart import Blueprint, Response, current_app, g, request

from hif.errors import NotFound, SessionClosed
from hif.repo import Repo, check_repo_name
from hif.session import ROLES, Session, is_session_id
from node.access import NEEDS, may, repo_access, token_principal
from node.context import Node, node_of
from node.errors import AuthRequired, InvalidInput, PermissionDenied
from node.principal import Principal
from node.wire import (
    DEFAULT_LIMIT,
    cbor_response,
    field,
    read_body,
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
                if method in BODY_METHODS:
                    _refuse_bound(principal)
                    ctx.body, body_read = await read_body(limit), True
                await _authorize_mirror(ctx, kw.pop("host"), f"{kw.pop('owner')}/{kw.pop('name')}")
            elif "owner" in kw:
                name = f"{kw.pop('owner')}/{kw.pop('name')}"
                await authorize_repo(ctx, name, access, agent, kw.get("sid"))
            elif access != "public" and principal.user is None:
                raise AuthRequired("this needs a token (Authorization: Bearer ...)")
            elif access != "public" and principal.session is not None and not agent:
                raise PermissionDenied("an agent token only works on its own session")
            if method in BODY_METHODS and not body_read:  # only once the caller may send it
                ctx.body = await read_body(limit)
            answer = await fn(ctx, **kw)
            return answer if isinstance(answer, Response) else cbor_response(answer, status)

        bp.add_url_rule(rule, endpoint=fn.__name__, view_func=view, methods=[method])
        return fn

    return deco


async def _principal(node: Node) -> Principal:
    p = await token_principal(node.auth, request.headers.get("Authorization"))
    if p.user is not None:
        g.user = p.user
    return p


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

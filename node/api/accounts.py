"""Routes of the node itself: who am I, logging in, tokens and organisations (docs/api.md)."""

from __future__ import annotations

from typing import Any

from hif.errors import NotFound
from hif.repo import check_repo_name
from node.access import NEEDS, check_login, manages_org, need_scope
from node.api.routing import (
    Ctx,
    expires_days,
    route,
)
from node.errors import AuthRequired, InvalidInput
from node.principal import INHERIT
from node.wire import (
    FORM_LIMIT,
    field,
)

LOGIN_DAYS = 30


@route("GET", "/api/v1/whoami", "user", agent=True)
async def whoami(ctx: Ctx) -> dict[str, Any]:
    p = ctx.principal
    return {"user": p.user, "admin": p.admin, "scope": p.scope, "repo": p.repo, "session": p.session,
            "expires": p.expires}


@route("POST", "/api/v1/login", "public", limit=FORM_LIMIT)
async def login(ctx: Ctx) -> dict[str, Any]:
    user = field(ctx.body, "user", str)
    password = field(ctx.body, "password", str)
    if not await check_login(ctx.node.auth, ctx.node.limiter, user, password, ctx.client_address()):
        raise AuthRequired("wrong user name or password")
    tid, secret = await ctx.node.auth.create_token(user, scope="write", name="login",
                                                   expires_in=LOGIN_DAYS * 86400, login=True)
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
    days = expires_days(ctx.body)
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

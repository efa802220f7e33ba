"""Account pages: tokens, signing out everywhere, organisations and their members."""

from __future__ import annotations

from typing import Any

from quart import Response, redirect, render_template, request, url_for

from hif.errors import (
    HifError,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from hif.repo import check_repo_name
from node.access import NEEDS, check_login, manages_org
from node.errors import RateLimited
from node.principal import INHERIT, Principal, role_rank
from node.principal import ROLES as MEMBER_ROLES
from ui import auth
from ui.auth import viewer
from ui.web import bp, login_redirect, node, page_status


@bp.post("/account/signout")
async def sign_out_everywhere() -> Response:
    """End every browser session of the viewer, this one included (every device, every copy)."""
    p = await viewer()
    if p.user is None:
        return login_redirect()
    await node().auth.end_web_sessions(p.user)
    await auth.log_out(ended=True)
    return redirect(url_for("ui.login"))  # type: ignore[return-value]


async def _account_page(created: dict[str, Any] | None = None, error: str | None = None,
                        status: int = 200) -> tuple[str, int]:
    p = await viewer()
    assert p.user is not None
    tokens = await node().auth.list_tokens(p.user)
    now = node().auth.clock()
    for t in tokens:
        t["state"] = ("revoked" if t["revoked"] else
                      "expired" if t["expires"] is not None and t["expires"] <= now else "active")
    tokens.sort(key=lambda t: (t["state"] != "active", -t["created"]))
    page = await render_template("account.html", tokens=tokens, created=created, error=error,
                                 node_url=node().config.url, session_expires=p.expires)
    return page, status


@bp.get("/account")
async def account() -> Response | tuple[str, int]:
    if (await viewer()).user is None:
        return login_redirect()
    flash = await auth.take_flash() or {}
    return await _account_page(created=flash.get("created"))


@bp.post("/account/tokens")
async def create_token() -> Response | tuple[str, int]:
    p = await viewer()
    if p.user is None:
        return login_redirect()
    form = await request.form
    scope = form.get("scope", "read")
    repo = form.get("repo", "").strip() or None
    name = form.get("name", "").strip()
    password = form.get("password", "")
    try:
        if scope not in NEEDS:
            raise InvalidInput("the scope is read, write or admin")
        if repo is not None:
            check_repo_name(repo)
        days_text = form.get("expires_days", "").strip()
        days = float(days_text) if days_text else None
        if days is not None and not 0 < days <= 100 * 366:
            raise InvalidInput("a token's lifetime is a positive number of days (at most 100 years)")
        # a token never outlives what makes it: this browser session, unless the password (the
        # account itself) is given again
        maker = p
        if password:
            if not await check_login(node().auth, node().limiter, p.user, password, node().client_address()):
                raise PermissionDenied("wrong password: the token was not made")
            maker = Principal(user=p.user, admin=p.admin, scope="admin")
        tid, secret = await node().auth.create_token(
            p.user, scope=scope, repo=repo, name=name, by=maker,
            expires_in=INHERIT if days is None else days * 86400)
    except (HifError, ValueError) as e:
        if isinstance(e, RateLimited):
            raise
        message = str(e) if isinstance(e, HifError) else "the lifetime is a number of days"
        status = page_status(e) if isinstance(e, HifError) else 400
        return await _account_page(error=message, status=status)
    # post-redirect-get: the new secret is shown once by the page the redirect loads, so a reload
    # neither makes a second token nor shows this one again
    await auth.set_flash(created={"id": tid, "token": secret, "name": name, "scope": scope, "repo": repo})
    return redirect(url_for("ui.account"), 303)  # type: ignore[return-value]


@bp.post("/account/tokens/<tid>/revoke")
async def revoke_token(tid: str) -> Response:
    p = await viewer()
    if p.user is None:
        return login_redirect()
    await node().auth.revoke_token(tid, by=p)
    return redirect(url_for("ui.account"))  # type: ignore[return-value]


# -- organisations ---------------------------------------------------------------------------------


@bp.get("/orgs/<org>")
async def org_page(org: str) -> str:
    return await _org_page(org)


async def _org_page(org: str, error: str | None = None) -> str:
    p = await viewer()
    info = await node().auth.get_org(org)
    if info is None:
        raise NotFound(f"no organisation {org}")
    repos = [r for r in await node().auth.visible_repos(p, limit=200, after=f"{org}/")
             if r["name"].startswith(f"{org}/")]
    member = p.user is not None and (p.admin or p.user in info["members"])
    mine = "owner" if p.admin else await node().auth.org_role(org, p.user)
    return await render_template("org.html", org=info, repos=repos, show_members=member,
                                 manage=await manages_org(node().auth, p, org), roles=grantable(mine),
                                 error=error)


def form_status(e: HifError) -> int:
    """A refused member form: 403 when it asks more than the viewer holds, else 400."""
    return 403 if isinstance(e, PermissionDenied) else 400


def grantable(role: str | None) -> tuple[str, ...]:
    """The roles someone holding ``role`` may give (none above their own)."""
    return MEMBER_ROLES[:role_rank(role) + 1]


async def _need_org_manager(org: str) -> Principal:
    p = await viewer()
    if p.user is None or not await manages_org(node().auth, p, org):
        raise NotFound(f"no organisation {org} that you manage")
    return p


@bp.post("/orgs/<org>/members")
async def org_member_set(org: str) -> Response | tuple[str, int]:
    p = await _need_org_manager(org)
    form = await request.form
    try:
        await node().auth.set_org_member(org, form.get("user", "").strip(), form.get("role", ""), by=p)
    except (InvalidInput, NotFound, PermissionDenied) as e:
        return await _org_page(org, str(e)), form_status(e)
    return redirect(url_for("ui.org_page", org=org))  # type: ignore[return-value]


@bp.post("/orgs/<org>/members/<user>/remove")
async def org_member_remove(org: str, user: str) -> Response | tuple[str, int]:
    p = await _need_org_manager(org)
    try:
        await node().auth.remove_org_member(org, user, by=p)
    except (InvalidInput, NotFound, PermissionDenied) as e:
        return await _org_page(org, str(e)), form_status(e)
    return redirect(url_for("ui.org_page", org=org))  # type: ignore[return-value]

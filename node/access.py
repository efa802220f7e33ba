"""Who may do what: the checks the HTTP API and the web UI share, so both always answer alike.

The API speaks through tokens and CBOR errors, the UI through a cookie session and HTML pages; what
a caller may see or change is decided here once, over :mod:`node.accounts`.
"""

from __future__ import annotations

from typing import Any

from node.accounts import Accounts
from node.errors import AuthRequired, PermissionDenied
from node.principal import ANONYMOUS, Principal, allowed
from node.ratelimit import LoginLimiter

# What each access level needs: (role on the repository, token scope).
NEEDS = {"read": ("reader", "read"), "write": ("writer", "write"), "admin": ("maintainer", "admin")}


async def repo_role(auth: Accounts, p: Principal, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """The repository's registration (None when unknown) and ``p``'s role on it."""
    info = await auth.get_repo(name)
    return info, (await auth.role_on(p.user, name) if info is not None else None)


async def repo_access(auth: Accounts, p: Principal, name: str,
                      access: str) -> tuple[dict[str, Any] | None, str | None]:
    """Like :func:`repo_role`, but when the local copy of the auth database would refuse ``access``
    the latest version is read first: a grant made through another replica must count at once
    (granting on a stale copy is bounded by its max age)."""
    info, role = await repo_role(auth, p, name)
    if info is None or not may(p, role, access, name):
        await auth.db.refresh()
        info, role = await repo_role(auth, p, name)
    return info, role


def may(p: Principal, role: str | None, access: str, name: str) -> bool:
    """Whether ``p`` with ``role`` on ``name`` has ``access`` (read, write or admin) there."""
    need_role, need_scope = NEEDS[access]
    return role is not None and allowed(p, role, need_role, need_scope, name)


def scope_ge(have: str | None, need: str) -> bool:
    order = list(NEEDS)
    return have is not None and order.index(have) >= order.index(need)


def need_scope(p: Principal, scope: str) -> None:
    """Refuse unless ``p`` holds at least ``scope`` through a token not bound to one repository."""
    if not scope_ge(p.scope, scope) or p.repo is not None:
        raise PermissionDenied(f"this needs a {scope} token not bound to one repository")


async def manages_org(auth: Accounts, p: Principal, org: str) -> bool:
    """Site admins and the organisation's maintainers and owners manage its members."""
    if p.user is None:
        return False
    role = "owner" if p.admin else await auth.org_role(org, p.user)
    return role in ("maintainer", "owner")


async def check_login(auth: Accounts, limiter: LoginLimiter, user: str, password: str,
                      address: str) -> bool:
    """Verify a password under the login rate limits (raises RateLimited when over them)."""
    limiter.begin(user, address)  # counted before the verification: concurrent guesses count too
    if not await auth.check_password(user, password):
        return False
    limiter.granted(user, address)
    return True


async def token_principal(auth: Accounts, header: str | None) -> Principal:
    """Who an ``Authorization: Bearer <token>`` header names (anonymous without one); an unknown,
    expired or revoked token, or another scheme, is refused rather than taken as anonymous."""
    if not header:
        return ANONYMOUS
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthRequired("use Authorization: Bearer <token>")
    p = await auth.authenticate(secret.strip())
    if p is None:
        raise AuthRequired("the token is unknown, expired or revoked")
    return p

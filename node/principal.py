"""Who asks and what they may be given, as pure functions over no database: account and repository
names, roles and scopes and their order, the ``Principal`` of a request, whether a principal's role
and token allow an access, and the cap on a token made by a token. ``node.accounts`` applies them to
the auth database; the API and the UI check input with them before anything is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hif.errors import InvalidInput
from hif.repo import check_repo_name
from node.errors import PermissionDenied

ROLES = ("reader", "writer", "maintainer", "owner")  # ordered: each includes the ones before
SCOPES = ("read", "write", "admin")  # ordered likewise
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,38}$")
_REPO = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}/[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


@dataclass(frozen=True)
class Principal:
    """Who is asking, as far as a request is concerned: a user through one token, or nobody."""

    user: str | None  # None = anonymous
    admin: bool = False
    scope: str | None = None  # None for anonymous
    repo: str | None = None  # token bound to one repository
    session: str | None = None  # agent token: bound to one session of `repo`
    token_id: str | None = None
    expires: float | None = None
    web_session: str | None = None  # a browser session's id (the web UI), not a token


ANONYMOUS = Principal(None)


@dataclass(frozen=True)
class Inherit:
    """A new token's lifetime when the request names none: the creator's expiry, and at most
    ``most`` seconds from now when given (a default that is capped, never refused)."""

    most: float | None = None


INHERIT = Inherit()


# -- pure helpers ----------------------------------------------------------------------------------


# First path segments the node's own pages and protocols use: an account with one of these names
# would have repositories no URL can reach.
RESERVED = frozenset({
    "account", "ap", "api", "assets", "federation", "healthz", "import", "login", "logout", "mirrors",
    "nodeinfo",
    "orgs", "search", "static",
})


def check_name(name: object, what: str = "name") -> str:
    """User and organisation names (one namespace): letters, digits, ``_ . -``, at most 39."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid {what} {name!r}: use 1-39 letters, digits, '_', '.' or '-' (not first)"
        )
    if name.lower() in RESERVED:
        raise InvalidInput(f"{what} {name!r} is reserved for the node's own pages")
    return name


def check_repo(name: object) -> str:
    """``owner/name``, as :func:`hif.repo.check_repo_name`, and refusing a trailing newline, which
    that function's ``$`` lets through."""
    if not isinstance(name, str) or not _REPO.fullmatch(name):
        raise InvalidInput(f"repository names look like owner/name (letters, digits, . _ -), not {name!r}")
    return check_repo_name(name)


def check_role(role: object) -> str:
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    return role  # type: ignore[return-value]


def check_scope(scope: object) -> str:
    if scope not in SCOPES:
        raise InvalidInput(f"unknown scope {scope!r} (one of {', '.join(SCOPES)})")
    return scope  # type: ignore[return-value]


def role_rank(role: str | None) -> int:
    """-1 for no role, else the role's place in :data:`ROLES`."""
    return -1 if role is None else ROLES.index(check_role(role))


def scope_rank(scope: str | None) -> int:
    return -1 if scope is None else SCOPES.index(check_scope(scope))


def max_role(*roles: str | None) -> str | None:
    best: str | None = None
    for r in roles:
        if role_rank(r) > role_rank(best):
            best = r
    return best


def allowed(p: Principal, role: str | None, need_role: str, need_scope: str, repo: str) -> bool:
    """May ``p``, whose role on ``repo`` is ``role`` (from :meth:`Accounts.role_on`), do something
    that needs ``need_role`` and a token scope of ``need_scope``? The lower of role and scope wins.

    Anonymous callers (no scope) may only read. A token bound to another repository may do nothing
    here. An agent token's session is checked by the HTTP layer, which knows the store.
    """
    need_r, need_s = role_rank(need_role), scope_rank(need_scope)
    if role_rank(role) < need_r:
        return False
    if p.scope is None:
        return need_s == 0  # anonymous, or no token: read only
    if scope_rank(p.scope) < need_s:
        return False
    return p.repo is None or p.repo == repo


def cap_token(by: Principal, scope: str | None, repo: str | None, expires_in: float | None | Inherit,
              now: float) -> tuple[str, str | None, float | None]:
    """Scope, repository and expiry of a token ``by`` makes: never more than ``by`` holds.

    What the request leaves out is ``by``'s own (its scope, its repository, its expiry); what it asks
    beyond that is refused (PermissionDenied), so nobody is handed less than they think they got.
    ``expires_in`` None asks for a token that never expires.
    """
    if by.user is None or by.scope is None:
        raise PermissionDenied("only a logged-in user makes tokens")
    if by.session is not None:
        raise PermissionDenied("an agent token cannot make tokens")
    scope = by.scope if scope is None else check_scope(scope)
    if scope_rank(scope) > scope_rank(by.scope):
        raise PermissionDenied(f"a {by.scope} token cannot make a {scope} token (no token grants more "
                               "than it holds)")
    if repo is None:
        repo = by.repo
    elif by.repo is not None and repo != by.repo:
        raise PermissionDenied(f"this token is bound to {by.repo}: it cannot make a token for {repo}")
    if isinstance(expires_in, Inherit):
        expires = by.expires
        if expires_in.most is not None and (expires is None or expires > now + expires_in.most):
            expires = now + expires_in.most
    elif expires_in is None:
        if by.expires is not None:
            raise PermissionDenied("a token that expires cannot make one that never does")
        expires = None
    else:
        expires = now + expires_in
        if by.expires is not None and expires > by.expires:
            raise PermissionDenied(f"a token cannot outlive the one that makes it: this one expires "
                                   f"in {max(0.0, (by.expires - now) / 86400):.2f} days")
    return scope, repo, expires



MAX_DESCRIPTION = 1000  # characters of a repository's description


def check_description(description: object) -> str:
    """A repository description, checked before anything is written (a refused one stores nothing)."""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidInput(f"a description is a string of at most {MAX_DESCRIPTION} characters")
    return description


"""Users, organisations, repository registrations, tokens and permissions, over :class:`AuthDB`
(the pure rules they apply, names, roles, scopes and the token cap, are :mod:`node.principal`).

This is the one domain API the HTTP layer and the ``micelio admin`` CLI use; neither touches SQL.
Every change is a function of the database alone (it may be re-applied after a lost race, see
:meth:`AuthDB.write`), so expensive or random work (password hashing, token secrets) happens before.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import sqlite_utils

from hif.errors import InvalidInput, NotFound
from node.authdb import AuthDB
from node.errors import Exists, PermissionDenied
from node.principal import (
    Inherit,
    Principal,
    cap_token,
    check_description,
    check_name,
    check_repo,
    check_role,
    check_scope,
    max_role,
    role_rank,
    scope_rank,
)

TOKEN_PREFIX = "mcl_"
_SECRET_LEN = len(TOKEN_PREFIX) + 32
# A browser session's secret (kept in the signed cookie): another prefix, so it is no bearer token.
WEB_PREFIX = "mcw_"
_WEB_SECRET_LEN = len(WEB_PREFIX) + 32
MAX_WEB_SESSIONS = 100  # browser sessions kept per user; a new log-in ends the oldest beyond it
MAX_LOGIN_TOKENS = 100  # tokens made by log-in (POST /api/v1/login) kept per user, likewise
_MAX_PASSWORD = 1024
# Expired or revoked tokens (and browser sessions) are listed for this long (seconds), then deleted
# on the next token (or log-in) write.
FORGET_DEAD_TOKENS_AFTER = 30 * 86400.0


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _user_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "admin": bool(row["admin"]),
        "created": row["created"],
        "disabled": bool(row["disabled"]),
    }


def _token_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "name", "scope", "repo", "session", "created", "expires", "revoked")}


def _repo_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "private": bool(row["private"]),
        "description": row["description"] or "",
        "owner": row["owner"],
        "created": row["created"],
    }


def _one(db: sqlite_utils.Database, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
    """The first row of a query, as a dict. Straight on the connection: ``db.query`` wraps each
    statement in a savepoint, which tripled the cost of the few lookups every request makes."""
    cur = db.conn.execute(sql, params)
    row = cur.fetchone()
    return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))


def _insert(db: sqlite_utils.Database, table: str, row: dict[str, Any]) -> None:
    """One row, as plain SQL: ``Table.insert`` reads the table's schema on every call, which was
    most of a token's cost (and a write may run its change again after a lost race)."""
    cols = ", ".join(f'"{c}"' for c in row)
    db.conn.execute(f'insert into "{table}" ({cols}) values ({", ".join("?" * len(row))})', list(row.values()))


Lookup = Callable[[sqlite_utils.Database, str, tuple[Any, ...]], dict[str, Any] | None]


def _one_or_none(db: sqlite_utils.Database, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
    """:func:`_one` on a table a database written by an older node may lack (then: no row)."""
    try:
        return _one(db, sql, params)
    except sqlite3.OperationalError:
        return None


def _refuse_taken(db: sqlite_utils.Database, name: str) -> None:
    taken = _name_taken(db, name)
    if taken is not None:
        raise Exists(f"the name {name} is taken" + ("" if taken == name else f" (by {taken})"))


def _name_taken(db: sqlite_utils.Database, name: str) -> str | None:
    """The existing user or org whose name equals ``name`` ignoring case, if any.

    Case-insensitive so that ``Alice`` cannot pose as ``alice`` and so repository paths cannot
    collide on a case-insensitive file system.
    """
    row = _one(
        db,
        "select name from users where name = ? collate nocase"
        " union all select name from orgs where name = ? collate nocase limit 1",
        (name, name),
    )
    return None if row is None else row["name"]


def _need_user(db: sqlite_utils.Database, name: str) -> dict[str, Any]:
    row = _one(db, "select * from users where name = ?", (name,))
    if row is None:
        raise NotFound(f"no user {name}")
    return row


def _need_org(db: sqlite_utils.Database, name: str) -> None:
    if _one(db, "select name from orgs where name = ?", (name,)) is None:
        raise NotFound(f"no organisation {name}")


def _need_repo(db: sqlite_utils.Database, name: str) -> dict[str, Any]:
    row = _one(db, "select * from repos where name = ?", (name,))
    if row is None:
        raise NotFound(f"no repository {name}")
    return row


def _org_role(db: sqlite_utils.Database, org: str, user: str) -> str | None:
    row = _one(db, "select role from org_members where org = ? and user = ?", (org, user))
    return None if row is None else row["role"]


def _role_on(db: sqlite_utils.Database, user: str | None, repo: str, *, anyone: bool = True) -> str | None:
    """``user``'s role on ``repo``; with ``anyone`` False, only a role of their own (the reader's
    role everyone has on a public repository does not count)."""
    row = _one(db, "select owner, private from repos where name = ?", (repo,))
    if row is None:
        return None
    public = None if row["private"] or not anyone else "reader"
    if user is None:
        return public
    u = _one(db, "select admin, disabled from users where name = ?", (user,))
    if u is None or u["disabled"]:
        return public
    if u["admin"] or row["owner"] == user:
        return "owner"
    member = _one(db, "select role from repo_members where repo = ? and user = ?", (repo, user))
    return max_role(public, _org_role(db, row["owner"], user), None if member is None else member["role"])


def _end_web_sessions(db: sqlite_utils.Database, user: str, now: float) -> int:
    """End every live browser session of ``user``; return how many there were."""
    cur = db.execute("update web_sessions set revoked = ? where user = ? and revoked is null", (now, user))
    return cur.rowcount


def _is_admin(db: sqlite_utils.Database, user: str | None) -> bool:
    u = None if user is None else _one(db, "select admin, disabled from users where name = ?", (user,))
    return u is not None and bool(u["admin"]) and not u["disabled"]


def _refuse_outranking(by: Principal | None, have: str | None, role: str | None, current: str | None,
                       user: str, place: str) -> None:
    """No one grants more than they hold: ``by`` (None: the operator), whose role on ``place`` is
    ``have``, may give ``user`` the role ``role`` (None: remove) only if neither it nor the role
    ``user`` holds now (``current``) ranks above ``have``. So only owners make, demote or remove
    owners, and a maintainer cannot promote themselves."""
    if by is None:
        return
    if role_rank(role) > role_rank(have):
        raise PermissionDenied(f"you are {have or 'not a member'} of {place}: you cannot make anyone "
                               f"{role} (only an owner can)")
    if role_rank(current) > role_rank(have):
        raise PermissionDenied(f"{user} is {current} of {place}: only an owner can change that")


# -- the domain API --------------------------------------------------------------------------------



class Accounts:
    """Users, orgs, repositories, tokens and roles; every method reads or writes the AuthDB.

    ``opslimit``/``memlimit`` set the argon2id cost of new password hashes (verification reads the
    cost from each hash); tests lower them.
    """

    def __init__(
        self,
        db: AuthDB,
        *,
        clock: Callable[[], float] = time.time,
        opslimit: int = argon2id.OPSLIMIT_INTERACTIVE,
        memlimit: int = argon2id.MEMLIMIT_INTERACTIVE,
    ) -> None:
        self.db = db
        self.clock = clock
        self.opslimit = opslimit
        self.memlimit = memlimit
        self._dummy_hash: bytes | None = None

    # -- passwords ------------------------------------------------------------------------------

    async def _hash(self, password: str) -> str:
        if not isinstance(password, str) or not password:
            raise InvalidInput("the password must not be empty")
        if len(password) > _MAX_PASSWORD:
            raise InvalidInput(f"the password is longer than {_MAX_PASSWORD} characters")
        # argon2 takes tens of milliseconds on purpose: keep it off the event loop
        h = await asyncio.to_thread(argon2id.str, password.encode(), self.opslimit, self.memlimit)
        return h.decode()

    @staticmethod
    def _verify(hashed: bytes, password: str) -> bool:
        try:
            return argon2id.verify(hashed, password.encode())
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            return False

    async def create_user(self, name: str, password: str | None = None, *, admin: bool = False) -> str:
        """Create a user; return the password (a generated one, 24 characters, when None)."""
        check_name(name, "user name")
        password = secrets.token_urlsafe(18) if password is None else password
        hashed = await self._hash(password)
        now = self.clock()

        def change(db: sqlite_utils.Database) -> None:
            _refuse_taken(db, name)
            db["users"].insert(
                {"name": name, "password_hash": hashed, "admin": int(admin), "created": now, "disabled": 0}
            )

        await self.db.write(change)
        return password

    async def set_password(self, name: str, password: str) -> None:
        """A new password; every browser session of the user ends (API tokens stay)."""
        hashed = await self._hash(password)
        now = self.clock()

        def change(db: sqlite_utils.Database) -> None:
            _need_user(db, name)
            db["users"].update(name, {"password_hash": hashed})
            _end_web_sessions(db, name, now)

        await self.db.write(change)

    async def set_disabled(self, name: str, disabled: bool = True) -> None:
        """Disable (or re-enable) a user: their password and tokens stop working at once, and their
        browser sessions end for good (re-enabling does not bring them back)."""
        now = self.clock()

        def change(db: sqlite_utils.Database) -> None:
            _need_user(db, name)
            db["users"].update(name, {"disabled": int(disabled)})
            if disabled:
                _end_web_sessions(db, name, now)

        await self.db.write(change)

    async def set_admin(self, name: str, admin: bool = True) -> None:
        def change(db: sqlite_utils.Database) -> None:
            _need_user(db, name)
            db["users"].update(name, {"admin": int(admin)})

        await self.db.write(change)

    async def check_password(self, name: str, password: str) -> bool:
        """argon2id verification; an unknown or disabled user costs the same work and is False."""
        query = "select password_hash, disabled from users where name = ?"
        row = await self._fresh_row(query, (name,))
        if row is None or not isinstance(password, str):
            if self._dummy_hash is None:
                self._dummy_hash = (await self._hash("not a password")).encode()
            await asyncio.to_thread(self._verify, self._dummy_hash, str(password))
            return False
        ok = await asyncio.to_thread(self._verify, row["password_hash"].encode(), password)
        return ok and not row["disabled"]

    # -- users ----------------------------------------------------------------------------------

    async def get_user(self, name: str) -> dict[str, Any] | None:
        """``{"name", "admin", "created", "disabled"}`` (never the password hash) or None."""
        row = _one(await self.db.read(), "select * from users where name = ?", (name,))
        return None if row is None else _user_row(row)

    async def add_key(self, user: str, public_key: bytes) -> None:
        """Register an Ed25519 public key on ``user`` (idempotent): it may sign attestations."""
        if len(public_key) != 32:
            raise InvalidInput("a public key is 32 bytes (Ed25519)")
        now = self.clock()

        def change(db: sqlite_utils.Database) -> None:
            _need_user(db, user)
            db["keys"].insert({"user": user, "public_key": public_key.hex(), "created": now},
                              ignore=True)

        await self.db.write(change)

    async def user_keys(self, user: str) -> list[bytes]:
        db = await self.db.read()
        try:
            rows = db.query("select public_key from keys where user = ?", (user,))
            return [bytes.fromhex(r["public_key"]) for r in rows]
        except sqlite3.OperationalError:  # a database written before keys existed
            return []

    async def list_users(self) -> list[dict[str, Any]]:
        db = await self.db.read()
        return [_user_row(r) for r in db.query("select * from users order by name")]

    # -- tokens ---------------------------------------------------------------------------------

    async def create_token(
        self,
        user: str,
        *,
        scope: str,
        repo: str | None = None,
        session: str | None = None,
        name: str = "",
        expires_in: float | None | Inherit = None,
        by: Principal | None = None,
        login: bool = False,
    ) -> tuple[str, str]:
        """Create a token; return (id, secret). Only the secret's SHA-256 is stored.

        ``login``: made by a log-in, so marked and capped: the user's oldest log-in tokens beyond
        :data:`MAX_LOGIN_TOKENS` are removed in the same write (repeated log-ins cannot grow the
        database every replica downloads); tokens made otherwise are never touched by the cap.

        ``by`` is who makes it (None: the operator, unlimited): the token is capped at ``by``'s
        scope, repository and expiry by :func:`cap_token`; ``scope=None`` and :data:`INHERIT` take
        ``by``'s own.
        """
        if scope is not None:
            check_scope(scope)
        if repo is not None:
            check_repo(repo)
        if session is not None and (repo is None or not isinstance(session, str) or not session):
            raise InvalidInput("an agent token needs a repository and a session")
        if isinstance(expires_in, (int, float)) and not expires_in > 0:
            raise InvalidInput("a token's lifetime must be positive")
        if not isinstance(name, str) or len(name) > 200:
            raise InvalidInput("a token's name is at most 200 characters")
        now = self.clock()
        if by is not None:
            scope, repo, expires = cap_token(by, scope, repo, expires_in, now)
            if by.user != user:
                raise PermissionDenied("a token is made for its maker only")
        elif isinstance(expires_in, Inherit) or scope is None:
            raise InvalidInput("the operator names a token's scope and lifetime")
        else:
            expires = None if expires_in is None else now + expires_in
        token_id = secrets.token_hex(8)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(24)
        row = {
            "id": token_id,
            "user": user,
            "hash": hash_token(secret),
            "name": name,
            "scope": scope,
            "repo": repo,
            "session": session,
            "created": now,
            "expires": expires,
            "revoked": None,
            "login": int(login),
        }

        def change(db: sqlite_utils.Database) -> None:
            _need_user(db, user)
            # every login adds a token: forget long-dead ones so the shared file stays small
            db.execute(
                "delete from tokens where expires < ? or revoked < ?",
                (now - FORGET_DEAD_TOKENS_AFTER, now - FORGET_DEAD_TOKENS_AFTER),
            )
            _insert(db, "tokens", row)
            if login:  # a user's oldest log-in tokens beyond the cap end
                db.execute(
                    "delete from tokens where user = ? and login = 1 and id not in (select id from tokens"
                    " where user = ? and login = 1 order by created desc, rowid desc limit ?)",
                    (user, user, MAX_LOGIN_TOKENS),
                )

        await self.db.write(change)
        return token_id, secret

    async def revoke_token(self, token_id: str, *, by: Principal | None = None) -> None:
        """Revoke a token. ``by=None`` is the operator; others may revoke their own (admins any)."""
        now = self.clock()

        def change(db: sqlite_utils.Database) -> None:
            row = _one(db, "select user, revoked from tokens where id = ?", (token_id,))
            if row is None or (by is not None and not by.admin and row["user"] != by.user):
                raise NotFound(f"no token {token_id}")
            if row["revoked"] is None:
                db["tokens"].update(token_id, {"revoked": now})

        await self.db.write(change)

    async def list_tokens(self, user: str) -> list[dict[str, Any]]:
        """The user's tokens, oldest first, without their hashes."""
        db = await self.db.read()
        rows = db.query("select * from tokens where user = ? order by created, id", (user,))
        return [_token_row(r) for r in rows]

    async def authenticate(self, secret: str) -> Principal | None:
        """The principal a bearer token stands for, or None (unknown, expired, revoked, disabled).

        An unknown token triggers one refresh: it may have been created on another replica a
        moment ago, and must work at once.
        """
        if not isinstance(secret, str) or len(secret) != _SECRET_LEN or not secret.startswith(TOKEN_PREFIX):
            return None
        digest = hash_token(secret)
        sql = (
            "select t.*, u.admin as user_admin, u.disabled as user_disabled from tokens t"
            " join users u on u.name = t.user where t.hash = ?"
        )
        row = await self._live_row(sql, digest)
        if row is None:
            return None
        return Principal(
            user=row["user"],
            admin=bool(row["user_admin"]),
            scope=row["scope"],
            repo=row["repo"],
            session=row["session"],
            token_id=row["id"],
            expires=row["expires"],
        )

    async def _fresh_row(self, sql: str, params: tuple[Any, ...], lookup: Lookup = _one) -> dict[str, Any] | None:
        """One row from the local copy; on a miss, from a fresh one (the row may have been written
        on another replica or by ``micelio admin`` since this replica last looked)."""
        row = lookup(await self.db.read(), sql, params)
        if row is None:
            await self.db.refresh()
            row = lookup(await self.db.read(), sql, params)
        return row

    async def _live_row(self, sql: str, digest: str, lookup: Lookup = _one) -> dict[str, Any] | None:
        """The token or browser session row whose secret hashes to ``digest`` (``sql`` joins its
        user as ``user_disabled``), or None when unknown, revoked, expired or its user disabled."""
        row = await self._fresh_row(sql, (digest,), lookup)
        if row is None or row["revoked"] is not None or row["user_disabled"]:
            return None
        if row["expires"] is not None and row["expires"] <= self.clock():
            return None
        return row

    # -- browser sessions -----------------------------------------------------------------------

    async def start_web_session(self, user: str, lifetime: float) -> tuple[str, float]:
        """A browser session for ``user`` after a password log-in: return (secret, expiry).

        The secret goes into the (signed) cookie; the database keeps its SHA-256, so log-out, a
        password change, disabling the user and "sign out everywhere" end every copy of the cookie
        (on this replica at once, on others within ``auth_max_age``).
        """
        secret = WEB_PREFIX + secrets.token_urlsafe(24)
        now = self.clock()
        row = {"id": secrets.token_hex(8), "user": user, "hash": hash_token(secret), "created": now,
               "expires": now + lifetime, "revoked": None}

        def change(db: sqlite_utils.Database) -> None:
            _need_user(db, user)
            db.execute(  # every log-in adds a row: forget long-dead ones, as tokens do
                "delete from web_sessions where expires < ? or revoked < ?",
                (now - FORGET_DEAD_TOKENS_AFTER, now - FORGET_DEAD_TOKENS_AFTER),
            )
            _insert(db, "web_sessions", row)
            db.execute(  # a user's oldest sessions beyond the cap end: log-ins cannot grow the database
                "delete from web_sessions where user = ? and id not in"
                " (select id from web_sessions where user = ? order by created desc, rowid desc limit ?)",
                (user, user, MAX_WEB_SESSIONS),
            )

        await self.db.write(change)
        return secret, row["expires"]

    async def web_session(self, secret: object) -> Principal | None:
        """The user a browser session's secret stands for, with the full rights of their roles (a
        password log-in is the whole account), or None (unknown, ended, expired, user disabled).

        A local read, like a token's; an unknown secret refreshes once (the session may have been
        started on another replica a moment ago).
        """
        if not isinstance(secret, str) or len(secret) != _WEB_SECRET_LEN or not secret.startswith(WEB_PREFIX):
            return None
        digest = hash_token(secret)
        sql = ("select s.*, u.admin as user_admin, u.disabled as user_disabled from web_sessions s"
               " join users u on u.name = s.user where s.hash = ?")
        row = await self._live_row(sql, digest, lookup=_one_or_none)
        if row is None:
            return None
        return Principal(user=row["user"], admin=bool(row["user_admin"]), scope="admin",
                         expires=row["expires"], web_session=row["id"])

    async def end_web_session(self, secret: object) -> None:
        """Log out: end the browser session ``secret`` names (every copy of its cookie)."""
        if not isinstance(secret, str) or not secret.startswith(WEB_PREFIX):
            return
        digest, now = hash_token(secret), self.clock()

        def change(db: sqlite_utils.Database) -> None:
            db.execute("update web_sessions set revoked = ? where hash = ? and revoked is null", (now, digest))

        await self.db.write(change)

    async def end_web_sessions(self, user: str) -> int:
        """Sign ``user`` out everywhere: end all their browser sessions; return how many."""
        now = self.clock()

        def change(db: sqlite_utils.Database) -> int:
            _need_user(db, user)
            return _end_web_sessions(db, user, now)

        return await self.db.write(change)

    # -- organisations --------------------------------------------------------------------------

    async def create_org(self, name: str, owner: str) -> None:
        """Create an organisation with ``owner`` as its first owner."""
        check_name(name, "organisation name")
        now = self.clock()

        def change(db: sqlite_utils.Database) -> None:
            _need_user(db, owner)
            _refuse_taken(db, name)
            db["orgs"].insert({"name": name, "created": now})
            db["org_members"].insert({"org": name, "user": owner, "role": "owner"})

        await self.db.write(change)

    async def get_org(self, name: str) -> dict[str, Any] | None:
        """``{"name", "created", "members": {user: role}}`` or None."""
        db = await self.db.read()
        row = _one(db, "select * from orgs where name = ?", (name,))
        if row is None:
            return None
        members = db.query("select user, role from org_members where org = ? order by user", (name,))
        return {**row, "members": {m["user"]: m["role"] for m in members}}

    async def orgs_of(self, user: str) -> dict[str, str]:
        """The organisations ``user`` belongs to, with their role in each, by name."""
        rows = (await self.db.read()).query(
            "select org, role from org_members where user = ? order by org", (user,))
        return {r["org"]: r["role"] for r in rows}

    async def org_role(self, org: str, user: str | None) -> str | None:
        """``user``'s role in ``org`` (what managing its members needs), None when not a member."""
        if user is None:
            return None
        return _org_role(await self.db.read(), org, user)

    async def set_org_member(self, org: str, user: str, role: str, *, by: Principal | None = None) -> None:
        """Give ``user`` the ``role`` in ``org``. ``by`` is who asks (None: the operator): nobody
        grants a role above their own, or changes the role of someone who outranks them."""
        check_role(role)

        def change(db: sqlite_utils.Database) -> None:
            _need_org(db, org)
            _need_user(db, user)
            _refuse_outranking(by, self._org_actor_role(db, org, by), role, _org_role(db, org, user), user, org)
            if role != "owner":
                self._keep_an_owner(db, org, user)
            db["org_members"].upsert({"org": org, "user": user, "role": role}, pk=("org", "user"))

        await self.db.write(change)

    async def remove_org_member(self, org: str, user: str, *, by: Principal | None = None) -> None:
        def change(db: sqlite_utils.Database) -> None:
            _need_org(db, org)
            current = _org_role(db, org, user)
            if current is None:
                raise NotFound(f"{user} is not a member of {org}")
            _refuse_outranking(by, self._org_actor_role(db, org, by), None, current, user, org)
            self._keep_an_owner(db, org, user)
            db.execute("delete from org_members where org = ? and user = ?", (org, user))

        await self.db.write(change)

    @staticmethod
    def _org_actor_role(db: sqlite_utils.Database, org: str, by: Principal | None) -> str | None:
        """The role ``by`` acts with in ``org``, read from the database being changed (site admins
        and the operator act as owners)."""
        if by is None or _is_admin(db, by.user):
            return "owner"
        return None if by.user is None else _org_role(db, org, by.user)

    @staticmethod
    def _keep_an_owner(db: sqlite_utils.Database, org: str, leaving: str) -> None:
        """Refuse to demote or remove an organisation's last owner (it could not be managed)."""
        others = _one(
            db,
            "select count(*) as n from org_members where org = ? and role = 'owner' and user != ?",
            (org, leaving),
        )
        if _org_role(db, org, leaving) == "owner" and others is not None and others["n"] == 0:
            raise InvalidInput(f"{leaving} is the last owner of {org}")

    # -- repositories ---------------------------------------------------------------------------

    async def register_repo(
        self, name: str, *, private: bool, owner_user: str | None, description: str = ""
    ) -> dict[str, Any]:
        """Register ``owner/name``; the owner namespace must be an existing user or organisation
        (else a user created later under that name would own it). ``owner_user``, when given and
        not the namespace itself, becomes an explicit owner of the repository."""
        check_repo(name)
        check_description(description)
        owner = name.split("/")[0]
        row = {"name": name, "private": int(bool(private)), "description": description, "owner": owner,
               "created": self.clock()}

        def change(db: sqlite_utils.Database) -> None:
            taken = _one(db, "select name from repos where name = ? collate nocase", (name,))
            if taken is not None:
                raise Exists(f"repository {taken['name']} exists")
            is_user = _one(db, "select name from users where name = ?", (owner,)) is not None
            is_org = _one(db, "select name from orgs where name = ?", (owner,)) is not None
            if not (is_user or is_org):
                raise NotFound(f"no user or organisation {owner}")
            if owner_user is not None:
                _need_user(db, owner_user)
            db["repos"].insert(row)
            if owner_user is not None and owner_user != owner:
                db["repo_members"].insert({"repo": name, "user": owner_user, "role": "owner"})

        await self.db.write(change)
        return _repo_row(row)

    async def get_repo(self, name: str) -> dict[str, Any] | None:
        """``{"name", "private", "description", "owner", "created"}`` or None."""
        row = _one(await self.db.read(), "select * from repos where name = ?", (name,))
        return None if row is None else _repo_row(row)

    async def set_repo_private(self, name: str, private: bool) -> None:
        await self.update_repo(name, private=private)

    async def update_repo(self, name: str, *, description: str | None = None,
                          private: bool | None = None) -> None:
        """Change what is given of a repository's description and visibility, in one write."""
        fields: dict[str, Any] = {}
        if description is not None:
            fields["description"] = check_description(description)
        if private is not None:
            fields["private"] = int(bool(private))

        def change(db: sqlite_utils.Database) -> None:
            _need_repo(db, name)
            if fields:
                db["repos"].update(name, fields)

        await self.db.write(change)

    async def unregister_repo(self, name: str) -> None:
        """Forget a repository and its members (``node.repos.delete_repository`` empties the store)."""

        def change(db: sqlite_utils.Database) -> None:
            _need_repo(db, name)
            db.execute("delete from repo_members where repo = ?", (name,))
            db.execute("delete from repos where name = ?", (name,))

        await self.db.write(change)

    async def set_repo_member(self, repo: str, user: str, role: str, *, by: Principal | None = None) -> None:
        """Give ``user`` the explicit ``role`` on ``repo``. ``by`` is who asks (None: the operator):
        nobody grants a role above their own or changes the role of someone who outranks them."""
        check_role(role)

        def change(db: sqlite_utils.Database) -> None:
            _need_repo(db, repo)
            _need_user(db, user)
            self._refuse_namespace_owner(repo, user)
            _refuse_outranking(by, self._repo_actor_role(db, repo, by), role, _role_on(db, user, repo),
                               user, repo)
            if role != "owner":
                self._keep_a_repo_owner(db, repo, user)
            db["repo_members"].upsert({"repo": repo, "user": user, "role": role}, pk=("repo", "user"))

        await self.db.write(change)

    async def remove_repo_member(self, repo: str, user: str, *, by: Principal | None = None) -> None:
        def change(db: sqlite_utils.Database) -> None:
            _need_repo(db, repo)
            if _one(db, "select 1 as x from repo_members where repo = ? and user = ?", (repo, user)) is None:
                raise NotFound(f"{user} is not a member of {repo}")
            _refuse_outranking(by, self._repo_actor_role(db, repo, by), None, _role_on(db, user, repo),
                               user, repo)
            self._keep_a_repo_owner(db, repo, user)
            db.execute("delete from repo_members where repo = ? and user = ?", (repo, user))

        await self.db.write(change)

    @staticmethod
    def _repo_actor_role(db: sqlite_utils.Database, repo: str, by: Principal | None) -> str | None:
        return "owner" if by is None else _role_on(db, by.user, repo)

    @staticmethod
    def _refuse_namespace_owner(repo: str, user: str) -> None:
        """The user whose namespace holds a repository owns it implicitly; an explicit role for
        them would change nothing, so it is refused rather than shown as if it did."""
        if repo.split("/")[0] == user:
            raise InvalidInput(f"{user} owns {repo} (it is in their namespace): that role cannot change")

    @staticmethod
    def _keep_a_repo_owner(db: sqlite_utils.Database, repo: str, leaving: str) -> None:
        """Refuse to demote or remove a repository's last owner. Owners are its explicit owners,
        the user whose namespace holds it, and the owners of the organisation that holds it."""
        if _one(db, "select 1 as x from repo_members where repo = ? and user = ? and role = 'owner'",
                (repo, leaving)) is None:
            return
        namespace = repo.split("/")[0]
        other = _one(
            db,
            "select 1 as x from repo_members where repo = ? and role = 'owner' and user != ?"
            " union all select 1 from users where name = ?"
            " union all select 1 from org_members where org = ? and role = 'owner' limit 1",
            (repo, leaving, namespace, namespace),
        )
        if other is None:
            raise InvalidInput(f"{leaving} is the last owner of {repo}")

    async def repo_members(self, repo: str) -> dict[str, str]:
        """Explicit repository members and their roles (organisation roles not included)."""
        db = await self.db.read()
        rows = db.query("select user, role from repo_members where repo = ? order by user", (repo,))
        return {r["user"]: r["role"] for r in rows}

    # -- permissions ----------------------------------------------------------------------------

    async def role_on(self, user: str | None, repo: str) -> str | None:
        """The highest of: site admin or owner namespace → owner; org role; repository role;
        ``reader`` on a public repository (anonymous too). None for an unregistered repository."""
        return _role_on(await self.db.read(), user, repo)

    async def member_of(self, user: str | None, repo: str) -> bool:
        """Whether ``user`` is one of the repository's members: a site admin, its owner, a member of
        its organisation or of the repository itself (what may see its authors' e-mail addresses)."""
        return user is not None and _role_on(await self.db.read(), user, repo, anyone=False) is not None

    async def visible_repos(
        self, p: Principal, *, limit: int = 100, after: str | None = None
    ) -> list[dict[str, Any]]:
        """Repositories ``p`` can read, by name, ``limit`` (1-1000) at a time after ``after``."""
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidInput("limit is between 1 and 1000")
        where, params = ["(? is null or name > ?)"], [after, after]
        if p.repo is not None:
            where.append("name = ?")
            params.append(p.repo)
        db = await self.db.read()
        user = None
        if p.user is not None:
            u = _one(db, "select admin, disabled from users where name = ?", (p.user,))
            user = None if u is None or u["disabled"] else (p.user, bool(u["admin"]))
        if user is None:
            where.append("private = 0")
        elif not user[1]:
            where.append(
                "(private = 0 or owner = ? or owner in (select org from org_members where user = ?)"
                " or name in (select repo from repo_members where user = ?))"
            )
            params += [p.user, p.user, p.user]
        sql = f"select * from repos where {' and '.join(where)} order by name limit ?"
        return [_repo_row(r) for r in db.query(sql, (*params, limit))]

    async def repo_names(self, *, limit: int = 1000, after: str | None = None) -> list[str]:
        """Every registered repository's name, ``limit`` at a time after ``after``: what a node's
        derived indexes cover (node/search.py), whoever may read them."""
        db = await self.db.read()
        return [r["name"] for r in db.query("select name from repos where (? is null or name > ?)"
                                            " order by name limit ?", (after, after, limit))]

    async def can_create_repo(self, p: Principal, name: str) -> bool:
        """Own namespace, an org where ``p`` is maintainer or owner, or anywhere for a site admin;
        always through a write (or admin) token that is not bound to a repository."""
        check_repo(name)
        if p.user is None or p.repo is not None or p.session is not None:
            return False
        if scope_rank(p.scope) < scope_rank("write"):
            return False
        if p.admin:
            return True
        owner = name.split("/")[0]
        if owner == p.user:
            return True
        return role_rank(_org_role(await self.db.read(), owner, p.user)) >= role_rank("maintainer")

"""Browser sessions: a signed cookie naming a server-side session, keyed by a secret every replica
shares, and CSRF tokens for every form.

The cookie holds the secret of a row of the auth database's ``web_sessions`` (only its hash is
stored), checked on every request against the replica's local copy, so log-out, a password change,
disabling the user and "sign out everywhere" end every copy of the cookie: at once on the replica
that made the change, on the others within ``auth_max_age``. The signing key lives in the store
(``_node/ui-secret``, created once with put-if-absent), never in one process: any replica must
accept a cookie another one set, and a restart must not log everyone out. API requests (``/api/``,
``/healthz``) never open a cookie session.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from datetime import timedelta
from typing import Any

import cbor2
import nacl.utils
from nacl.secret import SecretBox
from quart import Quart, current_app, g, session
from quart.sessions import SecureCookieSession, SecureCookieSessionInterface
from quart.wrappers import BaseRequestWebsocket

from hif.errors import HifError, PreconditionFailed
from node.accounts import Accounts
from node.context import node_of
from node.principal import ANONYMOUS, Principal

SECRET_KEY = "_node/ui-secret"
FLASH_PREFIX = "_node/ui-flash/"  # one-time messages after a redirect (a new token), by random id
FLASH_MAX_AGE = 600.0  # seconds a flash waits for the page that shows it
COOKIE = "micelio_session"
LOGIN_DAYS = 30
error_log = logging.getLogger("micelio.error")


def is_api_path(path: str) -> bool:
    """Paths that belong to the API, which answers in CBOR and authenticates by token only."""
    return path.startswith("/api/") or path in ("/api", "/healthz")


class StoreSecretSessions(SecureCookieSessionInterface):
    """Quart's signed-cookie sessions with the signing key read from (or created in) the store."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def _ensure_secret(self, app: Quart) -> None:
        if app.secret_key:
            return
        async with self._lock:
            if app.secret_key:
                return
            store = node_of(app).store
            data = await store.get_or_none(SECRET_KEY)
            if data is None:
                with contextlib.suppress(PreconditionFailed):  # another replica was first: use theirs
                    await store.put(SECRET_KEY, secrets.token_bytes(32), if_none_match=True)
                data = await store.get(SECRET_KEY)
            app.secret_key = data

    async def open_session(self, app: Quart, request: BaseRequestWebsocket) -> SecureCookieSession | None:
        if is_api_path(request.path):
            return None
        try:
            await self._ensure_secret(app)
        except HifError:
            error_log.exception("cannot read the UI's session secret; pages are served without sessions")
            return None
        return await super().open_session(app, request)


def configure(app: Quart) -> None:
    """Cookie settings and the session interface, applied when the UI blueprint is registered."""
    node = node_of(app)
    app.session_interface = StoreSecretSessions()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=node.config.url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(days=LOGIN_DAYS),
    )


def has_session() -> bool:
    return not current_app.session_interface.is_null_session(session)


def csrf_token() -> str:
    """This browser session's CSRF token (created on first use): a hidden field of every form."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return str(token)


def csrf_ok(sent: str | None) -> bool:
    expected = session.get("csrf") if has_session() else None
    return bool(expected) and bool(sent) and hmac.compare_digest(str(expected), str(sent))


async def log_in(user: str) -> None:
    """Start a fresh browser session for ``user`` (a new CSRF token: nothing carries over)."""
    secret, _expires = await _accounts().start_web_session(user, LOGIN_DAYS * 86400.0)
    session.clear()
    session["web"] = secret
    session["since"] = time.time()
    session["csrf"] = secrets.token_urlsafe(24)
    g.ui_viewer = None


async def log_out(*, ended: bool = False) -> None:
    """End this browser session, for every copy of its cookie, and forget it here (``ended``: it
    was ended already, forget it only). Only a live session costs a write: replaying the cookie of
    an ended one writes nothing."""
    secret = session.get("web") if has_session() else None
    if secret is not None and not ended and (await viewer()).web_session is not None:
        await _accounts().end_web_session(secret)
    session.clear()
    g.ui_viewer = None


def _accounts() -> Accounts:
    return node_of(current_app).auth  # type: ignore[arg-type]


async def viewer() -> Principal:
    """Who is browsing: the logged-in user with the full rights of their roles (a password login
    is the whole account, like the API's admin-scope token) until their browser session expires,
    or anonymous. An ended session (or a disabled user) is logged out on its next request; a
    cookie from before server-side sessions (no ``web``) is too."""
    cached: Principal | None = getattr(g, "ui_viewer", None)
    if cached is not None:
        return cached
    p = ANONYMOUS
    if has_session() and ("web" in session or "user" in session):
        found = await _accounts().web_session(session.get("web"))
        if found is None:
            session.clear()
        else:
            p = found
            g.user = p.user  # the access log names who asked
    g.ui_viewer = p
    return p


async def set_flash(**data: Any) -> None:
    """Keep ``data`` for the next page this browser loads (post-redirect-get): in the store, so any
    replica can show it and a secret (a new token) never travels in a URL, sealed with a key only
    this browser's cookie holds (with the flash's random id), so the store alone never reveals it
    even when a flash is never shown. Showing it deletes it: a reload shows nothing again."""
    fid, key = secrets.token_urlsafe(18), nacl.utils.random(SecretBox.KEY_SIZE)
    sealed = SecretBox(key).encrypt(cbor2.dumps({"time": time.time(), "data": data}))
    store = node_of(current_app).store  # type: ignore[arg-type]
    await store.put(FLASH_PREFIX + fid, bytes(sealed))
    old = session.get("flash")
    session["flash"] = [fid, key.hex()]
    if isinstance(old, list) and old and isinstance(old[0], str):  # one at a time: drop an unshown one
        with contextlib.suppress(HifError):
            await store.delete(FLASH_PREFIX + old[0])


async def take_flash() -> dict[str, Any] | None:
    """The flash this browser was sent, once (deleted as it is read); None when there is none."""
    if not has_session():
        return None
    kept = session.pop("flash", None)
    if not (isinstance(kept, list) and len(kept) == 2 and all(isinstance(x, str) for x in kept)):
        return None
    fid, key = kept
    if not fid.replace("-", "").replace("_", "").isalnum():
        return None
    store = node_of(current_app).store  # type: ignore[arg-type]
    raw = await store.get_or_none(FLASH_PREFIX + fid)
    if raw is None:
        return None
    await store.delete(FLASH_PREFIX + fid)
    try:
        value = cbor2.loads(SecretBox(bytes.fromhex(key)).decrypt(raw))
    except Exception:  # a stale or tampered entry: nothing to show
        return None
    if not isinstance(value, dict) or time.time() - float(value.get("time", 0)) > FLASH_MAX_AGE:
        return None
    data = value.get("data")
    return data if isinstance(data, dict) else None

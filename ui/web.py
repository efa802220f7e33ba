"""The web UI's core: server-rendered pages over the same plumbing as the API, htmx as an optional speed-up.

Every page reads only what it shows: one tree object for a directory, the records of one page of
the log (walked back from a cursor with a budget), one session's events. Access is decided by
:mod:`node.access`, exactly as for the API; a repository the viewer cannot read is a 404, the same
answer as a missing one.

This module holds the blueprint, its error pages and the helpers every page shares; the pages
themselves live one module per resource (``ui.site``, ``ui.account``, ``ui.repo``, ``ui.sessions``,
``ui.offers``), registered on the blueprint by ``ui.views``.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import cbor2
from quart import Blueprint, Response, current_app, g, redirect, render_template, request, url_for
from quart.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException

from federation import status as federation_status
from federation.layout import offer_key
from federation.mirror import mirror_repo
from hif.errors import (
    HifError,
    InvalidInput,
    InvalidPath,
    NotFound,
    PermissionDenied,
)
from hif.paths import check_path
from hif.repo import Repo, check_repo_name
from node.access import NEEDS, may, repo_access
from node.context import Node, node_of
from node.errors import RateLimited
from node.principal import ROLES as MEMBER_ROLES
from node.principal import Principal, role_rank
from node.wire import CBOR, cbor_response, error_body, query_int
from ui import auth, render
from ui.auth import csrf_ok, csrf_token, viewer
from ui.render import (
    human_size,
)

bp = Blueprint("ui", __name__, template_folder="templates", static_folder="static",
               static_url_path="/assets")
error_log = logging.getLogger("micelio.error")

HTMX = Path(__file__).parent / "static" / "vendor" / "htmx.min.js"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@bp.before_app_serving
async def _warm_lexers() -> None:
    """Build pygments' table of lexers by file name before the first page needs it: the first lookup
    in a process scans every lexer (20-60 ms), which would otherwise land on whichever visitor asks
    first, usually the one opening the heaviest page (a cold blame)."""
    await asyncio.to_thread(render.warm_lexers)


@bp.record_once
def _setup(state: BlueprintSetupState) -> None:
    auth.configure(state.app)  # type: ignore[arg-type]
    env = state.app.jinja_env
    env.filters.update(ago=render.ago, absolute=render.absolute, iso=render.iso, size=human_size,
                       xml_text=render.xml_text)
    env.globals.update(csrf_token=csrf_token, htmx=HTMX.exists(), short=lambda oid: oid.hex()[:12],
                       person=shown_person, landed_role=render.landed_role,
                       message_html=render.message_html)


def shown_person(who: Any) -> str:
    """An author as this viewer may see it: e-mail addresses only for the repository's members
    (``open_repo`` records whether the viewer is one)."""
    return render.person(who, addresses=bool(g.get("addresses")))


def node() -> Node:
    return node_of(current_app)  # type: ignore[arg-type]


@bp.app_context_processor
async def _context() -> dict[str, Any]:
    try:
        p = await viewer()
    except HifError:  # the store is failing: an error page must still render
        return {"me": None, "is_admin": False}
    return {"me": p.user, "is_admin": p.admin}


# -- errors: HTML pages for people, CBOR for the API -------------------------------------------------


async def error_page(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    if auth.is_api_path(request.path):
        return cbor_response(error_body(status, message), status, headers)
    titles = {400: "Bad request", 401: "Log in needed", 403: "Not allowed", 404: "Not found",
              405: "Method not allowed", 409: "Conflict", 413: "Too large", 422: "Cannot do that",
              429: "Too many attempts", 500: "Something went wrong", 503: "Unavailable"}
    body = await render_template("error.html", status=status, title=titles.get(status, "Error"),
                                 message=message)
    return Response(body, status=status, headers=headers, content_type="text/html; charset=utf-8")


@bp.errorhandler(HifError)
async def _hif_error(e: HifError) -> Response:
    status = e.response_status
    headers = {"Retry-After": str(e.retry_after)} if isinstance(e, RateLimited) else None
    return await error_page(status, str(e), headers)


@bp.errorhandler(HTTPException)
async def _http_error(e: HTTPException) -> Response:
    return await error_page(e.code or 500, e.description or e.name)


@bp.errorhandler(Exception)
async def _unexpected(e: Exception) -> Response:
    error_log.exception("unhandled error on %s %s", request.method, request.path)
    return await error_page(500, "The node hit an unexpected error; it is in the node's log.")


@bp.after_app_request
async def _finish(response: Response) -> Response:
    """Pages get security headers; an error from outside the UI (an unknown URL, a wrong method)
    is turned into a page unless it was asked of the API."""
    if auth.is_api_path(request.path):
        return response
    if response.status_code >= 400 and response.mimetype == CBOR:
        try:
            message = cbor2.loads(await response.get_data())["message"]
        except Exception:
            message = "error"
        keep = {k: v for k, v in response.headers.items() if k in ("Retry-After", "Allow")}
        response = await error_page(response.status_code, message, keep)
    if response.mimetype == "text/html":
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        response.headers.setdefault("Cache-Control", "no-cache, private")
        response.vary.update(("Cookie", "HX-Request", "HX-Target"))
    if request.endpoint == "ui.static" and response.status_code == 200:
        name = (request.view_args or {}).get("filename", "")
        if request.args.get("v") == asset_version(name):  # the URL names the content: keep it for good
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return await compressed(response)


# -- caching and compression ------------------------------------------------------------------------

COMPRESSED_TYPES = ("text/html", "text/css", "text/javascript", "application/javascript", "text/plain",
                    "image/svg+xml")
COMPRESS_MIN = 1024  # smaller bodies are sent as they are
_versions: dict[str, str] = {}


def asset_version(filename: str) -> str:
    """A short hash of a static file's bytes (read once per process): its URLs carry it as ``?v=``,
    so a changed file gets a new URL and the old one can be cached for good."""
    v = _versions.get(filename)
    if v is None:
        try:
            data = (Path(__file__).parent / "static" / filename).resolve(strict=True).read_bytes()
        except (OSError, ValueError):
            return ""
        v = _versions[filename] = hashlib.sha256(data).hexdigest()[:16]
    return v


@bp.url_defaults
def _versioned_assets(endpoint: str, values: dict[str, Any]) -> None:
    if endpoint == "ui.static" and "filename" in values and "v" not in values:
        version = asset_version(values["filename"])
        if version:
            values["v"] = version


def client_has(tag: str) -> bool:
    """The request's ``If-None-Match`` names ``tag`` (weakly compared, as for a GET)."""
    wanted = request.headers.get("If-None-Match", "")
    names = {t.strip().removeprefix("W/") for t in wanted.split(",")}
    return "*" in names or tag.removeprefix("W/") in names


async def compressed(response: Response) -> Response:
    """Pages, styles and scripts: an ETag (the body's hash unless the route set one) with 304 for a
    client that has it, and gzip when the client accepts it (``Vary: Accept-Encoding``)."""
    if request.method not in ("GET", "HEAD") or response.status_code != 200 \
            or response.mimetype not in COMPRESSED_TYPES or "Content-Encoding" in response.headers:
        return response
    body = await response.get_data()
    assert isinstance(body, bytes)
    tag = response.headers.get("ETag") or f'W/"{hashlib.sha256(body).hexdigest()[:32]}"'
    response.vary.add("Accept-Encoding")
    response.headers["ETag"] = tag
    if client_has(tag):
        return not_modified(response)
    if len(body) >= COMPRESS_MIN and _accepts_gzip():
        response.set_data(gzip.compress(body, compresslevel=6, mtime=0))
        response.headers["Content-Encoding"] = "gzip"
    return response


def not_modified(response: Response) -> Response:
    """A 304 keeping the headers a cache needs (validators, caching, Vary)."""
    out = Response(b"", status=304)
    for k in ("ETag", "Cache-Control", "Vary", "Content-Location", "Expires"):
        if k in response.headers:
            out.headers[k] = response.headers[k]
    return out


def _accepts_gzip() -> bool:
    """``Accept-Encoding`` names gzip (or ``*``) with a non-zero q."""
    for part in request.headers.get("Accept-Encoding", "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().removeprefix("q=")
            try:
                return not params or float(q) > 0
            except ValueError:
                return False
    return False


@bp.before_request
async def _csrf() -> Response | None:
    if auth.is_api_path(request.path):
        return await error_page(404, "not found")
    if request.method == "POST":
        form = await request.form
        if not csrf_ok(form.get("csrf")):
            return await error_page(403, "The form has expired or did not come from this site: "
                                         "reload the page and try again.")
    return None


# -- helpers ---------------------------------------------------------------------------------------


def is_htmx(target: str | None = None) -> bool:
    if request.headers.get("HX-Request") != "true":
        return False
    return target is None or request.headers.get("HX-Target") == target


def safe_next(target: str | None) -> str:
    """Only same-site paths: a login link must not become an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def login_redirect() -> Response:
    return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))  # type: ignore[return-value]


@dataclass
class RepoView:
    """A repository the viewer may read, and what the pages need to know about it."""

    name: str
    info: dict[str, Any]
    role: str
    p: Principal
    repo: Repo
    head: int
    base: str = ""  # URL prefix: "/owner/name", or "/mirrors/host/owner/name" for a mirror
    mirror: str | None = None  # the origin host of a mirrored repository
    offers: int = 0  # sessions other nodes offered here, for the tab (counted by the pages that show it)
    member: bool = False  # the viewer is a member (sees authors' e-mail addresses)

    @property
    def owner(self) -> str:
        return self.name.split("/")[0]

    @property
    def short(self) -> str:
        return self.name.split("/")[1]

    @property
    def clone_url(self) -> str:
        """What ``hif clone`` takes: this node's public URL and the repository's path (for a
        mirror, its origin's: that is where sessions land)."""
        origin = web_link(self.info.get("origin_url")) if self.mirror else None
        return origin or node().config.url.rstrip("/") + self.url()

    @property
    def can_admin(self) -> bool:
        return may(self.p, self.role, "admin", self.name)

    def url(self, *parts: str, **query: Any) -> str:
        base = (self.base or "/" + self.name) + "".join("/" + x for x in parts if x)
        q = {k: v for k, v in query.items() if v not in (None, "")}
        return base + ("?" + urlencode(q) if q else "")

    def position(self) -> int:
        """``?at=N`` (the head by default); a position past the head is a 404."""
        at = query_int("at", self.head)
        assert at is not None
        if at > self.head:
            raise NotFound(f"no position {at} in {self.name} (the head is {self.head})")
        return at


async def open_repo(owner: str, name: str, access: str = "read") -> RepoView:
    full = f"{owner}/{name}"
    try:
        check_repo_name(full)
    except InvalidInput:
        raise NotFound(f"no repository {full}") from None
    host = g.get("mirror_host")
    if host is not None:
        return await open_mirror(host, full, access)
    p = await viewer()
    info, role = await repo_access(node().auth, p, full, access)
    if info is None or role is None or not may(p, role, "read", full):
        raise NotFound(f"no repository {full}")  # private and missing look alike
    if not may(p, role, access, full):
        raise PermissionDenied(f"this needs the {NEEDS[access][0]} role on {full}")
    repo = node().repo(full)
    member = await node().auth.member_of(p.user, full)
    g.addresses = member
    return RepoView(full, info, role, p, repo, await repo.mainline.head(), member=member)


async def open_mirror(host: str, full: str, access: str) -> RepoView:
    """A repository this node follows on ``host``: public and read-only, like its API."""
    row = next((m for m in await federation_status.mirrors(node().store)
                if (m["host"], m["name"]) == (host, full)), None)
    if row is None:
        raise NotFound(f"no mirror {host}/{full}")
    if access != "read":
        raise PermissionDenied("mirrors are read-only")
    repo = mirror_repo(node().store, host, full)
    # where it comes from and how fresh it is, shown in every page's header
    info = {"name": full, "private": False, "description": f"mirror of {host}", "origin": host,
            "origin_url": row["url"], "last_sync": row["last_sync"], "sync_error": row["error"],
            "follow_state": row["state"], "follow_reason": row.get("reason")}
    return RepoView(full, info, "reader", await viewer(), repo, await repo.mainline.head(),
                    base=f"/mirrors/{host}/{full}", mirror=host)


def mirrored(rule: str, endpoint: str, view: Any) -> None:
    """Serve a repository page for mirrors too, under ``/mirrors/<host>``: the same view, with
    ``open_repo`` reading the host from the request."""

    async def mirrored(host: str, **kw: Any) -> Any:
        g.mirror_host = host
        return await view(**kw)

    bp.add_url_rule("/mirrors/<host>" + rule, endpoint=endpoint, view_func=mirrored, methods=["GET"])


def clean_path(path: str) -> str:
    path = path.strip("/")
    if not path:
        return ""
    try:
        return check_path(path)
    except InvalidPath:
        raise NotFound(f"no such path: {path}") from None


def crumbs(rv: RepoView, path: str, at: int | None) -> list[tuple[str, str]]:
    """(name, tree URL) for each directory above ``path``, the repository first."""
    out = [(rv.short, rv.url(at=at))]
    parts = path.split("/") if path else []
    for i in range(len(parts) - 1):
        out.append((parts[i], rv.url("tree", "/".join(parts[: i + 1]), at=at)))
    return out



def page_status(e: HifError) -> int:
    """The status of a form page shown again with its error: the error's own (node.wire's rule),
    except that a 401 is a 400: the viewer is signed in, a browser must not prompt for a log-in."""
    status = e.response_status
    return 400 if status == 401 else status


def form_status(e: HifError) -> int:
    """A refused member form: 403 when it asks more than the viewer holds, else 400."""
    return 403 if isinstance(e, PermissionDenied) else 400


def grantable(role: str | None) -> tuple[str, ...]:
    """The roles someone holding ``role`` may give (none above their own)."""
    return MEMBER_ROLES[:role_rank(role) + 1]



def web_link(url: Any) -> str | None:
    """``url`` if it is an http(s) address: a peer's strings become links only when harmless."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme in ("http", "https") and parts.netloc else None


async def count_offers(rv: RepoView) -> None:
    """Fill ``rv.offers`` for the repository's tab: one listing, no record read."""
    if rv.mirror is None:
        rv.offers = len(await rv.repo.store.list_page(offer_key(rv.repo.prefix, ""), limit=1000))

"""The web UI: server-rendered pages over the same plumbing as the API, htmx as an optional speed-up.

Every page reads only what it shows: one tree object for a directory, the records of one page of
the log (walked back from a cursor with a budget), one session's events. Access is decided by
:mod:`node.access`, exactly as for the API; a repository the viewer cannot read is a 404, the same
answer as a missing one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import cbor2
from markupsafe import Markup
from quart import Blueprint, Response, current_app, g, redirect, render_template, request, url_for
from quart.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException

from federation import control as federation_control
from federation import offers as federation_offers
from federation import status as federation_status
from federation.layout import offer_key
from federation.mirror import mirror_repo
from hif import history
from hif.blame import blame
from hif.errors import (
    ConflictError,
    CorruptObject,
    HifError,
    InvalidInput,
    InvalidPath,
    NotFound,
    PermissionDenied,
)
from hif.mainline import LandingRecord
from hif.merge import is_binary
from hif.objects import DIR, LINK, Entry, decode
from hif.paths import check_path
from hif.repo import Repo, check_repo_name
from hif.session import ROLES, SEQ_WIDTH, Session, check_session_id, check_text, fold
from hif.tree import lookup, lookup_file
from node.access import NEEDS, check_login, manages_org, may, repo_access
from node.accounts import INHERIT, Principal, role_rank
from node.accounts import ROLES as MEMBER_ROLES
from node.api.federation import offer_id
from node.context import Node, fed_of, node_of
from node.errors import RateLimited
from node.imports import import_repository
from node.wire import CBOR, cbor_response, error_body
from ui import auth, render
from ui.auth import csrf_ok, csrf_token, viewer
from ui.render import (
    FileView,
    code_rows,
    file_diff,
    file_view,
    human_size,
    markdown,
    readable_events,
)
from ui.signature import verify_mirrored, verify_record

bp = Blueprint("ui", __name__, template_folder="templates", static_folder="static",
               static_url_path="/assets")
error_log = logging.getLogger("micelio.error")

PAGE = 25  # sessions per page
BUDGET = 2000  # records one sessions-list request may examine
TEXT_BUDGET = 300  # ... when a text filter makes it read snapshots too
OPEN_CAP = 100  # open sessions listed at most
DIFF_FILES = 100  # files whose diff a session page renders
DIFF_BYTES = 4 << 20  # total bytes of content diffed on one page
BLAME_MAX = 512 * 1024
README_NAMES = ("readme.md", "readme.markdown", "readme", "readme.txt", "readme.rst")
HTMX = Path(__file__).parent / "static" / "vendor" / "htmx.min.js"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@bp.record_once
def _setup(state: BlueprintSetupState) -> None:
    auth.configure(state.app)  # type: ignore[arg-type]
    env = state.app.jinja_env
    env.filters.update(ago=render.ago, absolute=render.absolute, iso=render.iso, size=human_size)
    env.globals.update(csrf_token=csrf_token, htmx=HTMX.exists(), short=lambda oid: oid.hex()[:12])


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
    status = 409 if e.http_status == 412 else e.http_status
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
    return response


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


def query_int(name: str, default: int | None = None, *, lo: int = 0) -> int | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number") from None
    if value < lo:
        raise InvalidInput(f"{name} must be at least {lo}")
    return value


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

    @property
    def owner(self) -> str:
        return self.name.split("/")[0]

    @property
    def short(self) -> str:
        return self.name.split("/")[1]

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
    return RepoView(full, info, role, p, repo, await repo.mainline.head())


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


def _mirrored(rule: str, endpoint: str, view: Any) -> None:
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


async def open_marker(repo: Repo, sid: str) -> dict[str, Any] | None:
    """An open session's listing entry: goal, author and start time from its marker, the role from
    its start event (two reads, whatever the session's length)."""
    data = await repo.store.get_or_none(f"{repo.prefix}open/{sid}")
    if data is None:
        return None  # closed meanwhile
    marker = decode(data)
    start = await repo.store.get_or_none(f"{repo.prefix}sessions/{sid}/events/{0:08d}")
    role = decode(start).get("role") if start is not None else None
    return {"id": sid, "goal": marker.get("goal", ""), "author": marker.get("author", ""),
            "time": marker.get("time"), "role": role, "state": "open", "files": None}


async def open_sessions(repo: Repo, filters: history.Filters | None = None, *,
                        cap: int = OPEN_CAP) -> list[dict[str, Any]]:
    """Open sessions, newest first (ids sort by start time), at most ``cap``; filters other than
    the author need the session's events, so they load each candidate."""
    rows = []
    for sid in sorted(await repo.sessions.list_open(), reverse=True)[:cap]:
        row = await open_marker(repo, sid)
        if row is None:
            continue
        f = filters
        if f is not None:
            if f.author and row["author"].casefold() != f.author.casefold():
                continue
            if f.role and row["role"] != f.role:
                continue
            if f.path or f.text:
                try:
                    s = await repo.sessions.load(sid)
                except NotFound:
                    continue
                row["files"] = len(s.changes)
                if f.path and not history.touches(s.changes, f.path):
                    continue
                if f.text and not history.matches_text(history.session_text(s.events), f.text):
                    continue
        rows.append(row)
    return rows


def landed_row(rec: LandingRecord, s: Any) -> dict[str, Any]:
    return {"id": s.session, "goal": s.goal, "author": s.author, "role": s.role, "time": rec.time,
            "state": "landed", "position": rec.position, "files": len(s.changes),
            "group": len(rec.sessions)}


# -- home and search -------------------------------------------------------------------------------


@bp.get("/")
async def home() -> str:
    p = await viewer()
    after = request.args.get("after") or None
    infos = await node().auth.visible_repos(p, limit=51, after=after)
    more = infos[50]["name"] if len(infos) > 50 else None
    infos = infos[:50]
    repos = []
    heap: list[tuple[float, str, int]] = []
    records: dict[tuple[str, int], LandingRecord] = {}
    for info in infos:
        repo = node().repo(info["name"])
        head = await repo.mainline.head()
        latest = await repo.mainline.record(head) if head else None
        repos.append({**info, "head": head, "latest": latest})
        if latest is not None:
            records[(info["name"], head)] = latest
            heapq.heappush(heap, (-latest.time, info["name"], head))
    # recent landings across these repositories: a k-way merge that reads one record per item shown
    recent = []
    while heap and len(recent) < 12:
        _, name, pos = heapq.heappop(heap)
        rec = records.pop((name, pos))
        recent.append((name, rec))
        if pos > 1:
            prev = await node().repo(name).mainline.record(pos - 1)
            records[(name, pos - 1)] = prev
            heapq.heappush(heap, (-prev.time, name, pos - 1))
    # repositories this node follows on other nodes: read-only mirrors, with where they come from
    mirrors = [m for m in await federation_status.mirrors(node().store, limit=50)
               if m["state"] in ("accepted", "pending", "failed")] if after is None else []
    return await render_template("home.html", repos=repos, recent=recent, more=more, mirrors=mirrors,
                                 node_url=node().config.url)


@bp.get("/search")
async def search() -> str:
    """Repositories whose name or description contains every word; sessions are searched per
    repository (links below each result), where the walk can be bounded."""
    q = request.args.get("q", "").strip()
    p = await viewer()
    found: list[dict[str, Any]] = []
    scanned = 0
    after = None
    while q and scanned < 5000 and len(found) < 50:
        batch = await node().auth.visible_repos(p, limit=500, after=after)
        if not batch:
            break
        scanned += len(batch)
        after = batch[-1]["name"]
        found += [r for r in batch if history.matches_text(f"{r['name']} {r['description']}", q)]
    return await render_template("search.html", q=q, found=found[:50])


# -- log in, log out, account ---------------------------------------------------------------------


@bp.get("/login")
async def login() -> str:
    return await render_template("login.html", next=safe_next(request.args.get("next")), error=None,
                                 user="")


@bp.post("/login")
async def login_post() -> Response | tuple[str, int, dict[str, str]]:
    form = await request.form
    user, password = form.get("user", "").strip(), form.get("password", "")
    nxt = safe_next(form.get("next"))
    try:
        ok = bool(user) and await check_login(node().auth, node().limiter, user, password,
                                              node().client_address())
    except RateLimited as e:
        page = await render_template("login.html", next=nxt, user=user,
                                     error=f"Too many failed attempts: try again in {e.retry_after} s.")
        return page, 429, {"Retry-After": str(e.retry_after)}
    if not ok:
        page = await render_template("login.html", next=nxt, user=user, error="Wrong user name or password.")
        return page, 401, {}
    await auth.log_in(user)
    return redirect(nxt)  # type: ignore[return-value]


@bp.post("/logout")
async def logout() -> Response:
    await auth.log_out()
    return redirect("/")  # type: ignore[return-value]


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


async def _federation_page(done: str | None = None, error: str | None = None,
                           status: int = 200) -> tuple[str, int]:
    summary = await federation_status.summary(node().store)
    return await render_template("federation.html", s=summary, done=done, error=error), status


async def _site_admin() -> Response | None:
    p = await viewer()
    if p.user is None:
        return login_redirect()
    if not p.admin:
        raise NotFound("no such page")  # site admins only, and nobody else learns it exists
    return None


@bp.get("/federation")
async def federation_page() -> Response | tuple[str, int]:
    """Followed repositories, deliveries waiting or given up, peers' circuits (site admins)."""
    return await _site_admin() or await _federation_page()


@bp.post("/federation/<action>")
async def federation_action(action: str) -> Response | tuple[str, int]:
    refused = await _site_admin()
    if refused is not None:
        return refused
    if action not in ("follow", "unfollow"):
        raise NotFound("no such page")
    url = (await request.form).get("url", "").strip()
    try:
        fed = current_app.extensions["federation"]
        if action == "follow":
            await federation_control.follow(node().store, url, fed.settings)
        else:
            await federation_control.unfollow(node().store, url)
        fed.wake_outbox()
    except HifError as e:
        return await _federation_page(error=str(e), status=e.http_status if e.http_status != 401 else 400)
    return await _federation_page(done=f"{'Following' if action == 'follow' else 'Stopped following'} {url}")


@bp.get("/import")
async def import_form() -> Response | tuple[str, int]:
    p = await viewer()
    if p.user is None:
        return login_redirect()
    if not p.admin:
        raise NotFound("no such page")  # site admins only, and nobody else learns it exists
    return await render_template("import.html", form={}, error=None), 200


@bp.post("/import")
async def import_run() -> Response | tuple[str, int]:
    """Import a git repository into this node (site admins). The import runs within the request:
    fine for the histories one imports from a browser; the CLI is there for big ones."""
    p = await viewer()
    if p.user is None:
        return login_redirect()
    if not p.admin:
        raise NotFound("no such page")
    form = await request.form
    name, source = form.get("name", "").strip(), form.get("source", "").strip()
    try:
        if not name or not source:
            raise InvalidInput("both the repository name and the source are needed")
        await import_repository(node().auth, node().store, name, source,
                                branch=form.get("branch", "").strip() or None,
                                private=form.get("private") == "1", owner_user=p.user)
    except HifError as e:
        page = await render_template("import.html", form=form, error=str(e))
        return page, e.http_status if e.http_status != 401 else 400
    return redirect("/" + name), 302  # type: ignore[return-value]


@bp.get("/account")
async def account() -> Response | tuple[str, int]:
    if (await viewer()).user is None:
        return login_redirect()
    return await _account_page()


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
        status = e.http_status if isinstance(e, HifError) and e.http_status != 401 else 400
        return await _account_page(error=message, status=status)
    return await _account_page(created={"id": tid, "token": secret, "name": name, "scope": scope,
                                        "repo": repo}, status=201)


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


# -- repository pages ------------------------------------------------------------------------------


@bp.get("/<owner>/<name>")
async def repo_home(owner: str, name: str) -> Response | str:
    return await _tree(owner, name, "")


@bp.get("/<owner>/<name>/tree/<path:path>")
async def tree(owner: str, name: str, path: str) -> Response | str:
    return await _tree(owner, name, path)


async def _tree(owner: str, name: str, path: str) -> Response | str:
    rv = await open_repo(owner, name)
    path = clean_path(path)
    at = rv.position()
    at_q = at if at != rv.head else None
    root = await rv.repo.mainline.tree_at(at)
    entry = await lookup(rv.repo.objects, root, path) if path else Entry(DIR, root)
    if entry is None:
        raise NotFound(f"no {path} at position {at}")
    if entry.kind != DIR:
        return redirect(rv.url("blob", path, at=at_q))  # type: ignore[return-value]
    listing = await rv.repo.objects.get_tree(entry.oid)
    entries = sorted(listing.items(), key=lambda kv: (kv[1].kind != DIR, kv[0].casefold(), kv[0]))
    readme = None
    for n, e in entries:
        if e.kind != DIR and n.casefold() in README_NAMES:
            data = await rv.repo.objects.get_blob(e.oid)
            text = data[: 512 * 1024].decode("utf-8", "replace")
            is_md = n.casefold().endswith((".md", ".markdown"))
            readme = {"name": n, "html": await asyncio.to_thread(markdown, text) if is_md else None,
                      "text": text}
            break
    recent: list[LandingRecord] = []
    open_rows: list[dict[str, Any]] = []
    if not path:
        recent = [r async for r in rv.repo.mainline.iter_back(at, max(1, at - 9))] if at else []
        open_rows = await open_sessions(rv.repo, cap=10)
        await count_offers(rv)
    return await render_template(
        "tree.html", rv=rv, path=path, at=at, at_q=at_q, entries=entries, readme=readme,
        crumbs=crumbs(rv, path, at_q), recent=recent, open_rows=open_rows, node_url=node().config.url,
    )


@dataclass
class FilePage:
    """What the file and blame pages start from: the file at the asked position, and its bytes."""

    rv: RepoView
    path: str
    at: int
    at_q: int | None  # the position for links, None at the head
    entry: Entry
    data: bytes


async def _file_page(owner: str, name: str, path: str) -> FilePage | Response:
    """The file ``path`` of a repository at ``?at=`` (or the head); a directory redirects to its tree."""
    rv = await open_repo(owner, name)
    path = clean_path(path)
    at = rv.position()
    at_q = at if at != rv.head else None
    entry = await _file(rv, path, at)
    if entry.kind == DIR:
        return redirect(rv.url("tree", path, at=at_q))  # type: ignore[return-value]
    return FilePage(rv, path, at, at_q, entry, await rv.repo.objects.get_blob(entry.oid))


async def _file(rv: RepoView, path: str, at: int) -> Entry:
    if not path:
        raise NotFound("no file named")
    root = await rv.repo.mainline.tree_at(at)
    entry = await lookup(rv.repo.objects, root, path)
    if entry is None:
        raise NotFound(f"no {path} at position {at}")
    return entry


@bp.get("/<owner>/<name>/blob/<path:path>")
async def blob(owner: str, name: str, path: str) -> Response | str:
    page = await _file_page(owner, name, path)
    if not isinstance(page, FilePage):
        return page
    rv, path, at, at_q, entry, data = page.rv, page.path, page.at, page.at_q, page.entry, page.data
    view: FileView | None = None
    target = None
    if entry.kind == LINK:
        target = data.decode("utf-8", "replace")
    else:
        view = await asyncio.to_thread(file_view, data, path)
    hist = await history.file_history(rv.repo, path, at, limit=10, budget=500)
    return await render_template("blob.html", rv=rv, path=path, at=at, at_q=at_q, entry=entry, view=view,
                                 target=target, history=hist, crumbs=crumbs(rv, path, at_q),
                                 code_rows=code_rows(view.lines) if view else "")


@bp.get("/<owner>/<name>/blame/<path:path>")
async def blame_page(owner: str, name: str, path: str) -> Response | str:
    page = await _file_page(owner, name, path)
    if not isinstance(page, FilePage):
        return page
    rv, path, at, at_q, entry, data = page.rv, page.path, page.at, page.at_q, page.entry, page.data
    view = await asyncio.to_thread(file_view, data, path)
    notice = None
    rows: list[dict[str, Any]] = []
    if entry.kind == LINK or view.binary:
        notice = "Blame works on text files; this one is binary or a link."
    elif len(data) > BLAME_MAX:
        notice = f"Blame is shown for files up to {human_size(BLAME_MAX)}; this one is {human_size(len(data))}."
    else:
        lines = await blame(rv.repo, path, at)
        prev = None
        for ln, html in zip(lines, view.lines + [Markup("")] * (len(lines) - len(view.lines)), strict=False):
            rows.append({"line": ln.line, "position": ln.position, "session": ln.session, "goal": ln.goal,
                         "author": ln.author, "html": html, "first": ln.session != prev})
            prev = ln.session
    return await render_template("blame.html", rv=rv, path=path, at=at, at_q=at_q, rows=rows,
                                 notice=notice, crumbs=crumbs(rv, path, at_q))


@bp.get("/<owner>/<name>/raw/<path:path>")
async def raw(owner: str, name: str, path: str) -> Response:
    """The file's bytes, never interpreted by the browser as a page of this site."""
    rv = await open_repo(owner, name)
    path = clean_path(path)
    at = rv.position()
    entry = await _file(rv, path, at)
    if entry.kind == DIR:
        raise NotFound(f"{path} is a directory")
    data = await rv.repo.objects.get_blob(entry.oid)
    binary = is_binary(data)
    headers = {"Content-Security-Policy": "sandbox; default-src 'none'", "X-Content-Type-Options": "nosniff",
               "Cache-Control": "private, max-age=60"}
    if binary:
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1], safe='')}"
    return Response(data, content_type="application/octet-stream" if binary else "text/plain; charset=utf-8",
                    headers=headers)


# -- sessions --------------------------------------------------------------------------------------


@bp.get("/<owner>/<name>/sessions")
async def sessions(owner: str, name: str) -> str:
    rv = await open_repo(owner, name)
    await count_offers(rv)
    args = request.args
    state = args.get("state", "all")
    if state not in ("all", "landed", "open"):
        raise InvalidInput("state is all, landed or open")
    role = args.get("role", "")
    if role and role not in ROLES:
        raise InvalidInput(f"role is one of {', '.join(ROLES)}")
    path = args.get("path", "").strip().strip("/")
    if path:
        try:
            check_path(path)
        except InvalidPath as e:
            raise InvalidInput(str(e)) from None
    filters = history.Filters(author=args.get("author", "").strip(), role=role, path=path,
                              text=args.get("q", "").strip())
    before = query_int("before", None, lo=1)
    rows: list[dict[str, Any]] = []
    open_rows: list[dict[str, Any]] = []
    page: history.Page | None = None
    if state in ("all", "open") and before is None:
        open_rows = await open_sessions(rv.repo, filters)
    if state in ("all", "landed"):
        start = rv.head if before is None else min(before - 1, rv.head)
        page = await history.search_landed(rv.repo, start, filters, limit=PAGE,
                                           budget=TEXT_BUDGET if filters.text else BUDGET)
        rows = [landed_row(rec, s) for rec, s in page.rows]
        if rv.mirror is not None:  # each mirrored landing's origin signature, checked again
            for row in rows:
                row["signature"] = await verify_mirrored(node().store, rv.mirror, rv.name, row["position"])
    query = {"author": filters.author, "role": filters.role, "path": filters.path, "q": filters.text,
             "state": state if state != "all" else ""}
    next_url = rv.url("sessions", **query, before=page.next + 1) if page and page.next else None
    ctx = {"rv": rv, "rows": rows, "open_rows": open_rows, "page": page, "filters": filters,
           "state": state, "before": before, "next_url": next_url, "roles": ROLES,
           "filtered": any(query.values())}
    if is_htmx("more"):
        return await render_template("_session_rows.html", **ctx)
    if is_htmx("results"):
        return await render_template("_session_results.html", **ctx)
    return await render_template("sessions.html", **ctx)


async def _load_session(rv: RepoView, sid: str) -> Session:
    """The session as its page shows it: a malformed stored event (written by someone else) shows as
    an unreadable one (``render.readable_events``) and the rest of the page works."""
    try:
        check_session_id(sid)
    except InvalidInput:
        raise NotFound(f"no session {sid}") from None
    try:
        s = await rv.repo.sessions.load(sid)
    except (CorruptObject, KeyError, TypeError, AttributeError):  # malformed events, snapshot or state
        s = await _lenient_session(rv, sid)
    s.events = readable_events(s.events)
    return s


async def _raw_events(rv: RepoView, sid: str, since: int, *, limit: int | None) -> list[Any]:
    """A session's stored events after ``since``, each decoded on its own (None when it does not
    decode): what a page shows when the session's log holds malformed events."""
    prefix = f"{rv.repo.prefix}sessions/{sid}/events/"
    after = prefix + f"{since:0{SEQ_WIDTH}d}" if since >= 0 else None
    keys = [k async for k in rv.repo.store.iter_keys(prefix) if after is None or k > after]
    out: list[Any] = []
    for key in keys[:limit]:
        try:
            out.append(decode(await rv.repo.store.get(key)))
        except CorruptObject:
            out.append(None)
    return out


async def _lenient_session(rv: RepoView, sid: str) -> Session:
    """The session folded from its event log read one event at a time, unreadable ones replaced;
    still a CorruptObject (422) when its start event itself is unreadable."""
    s = fold(sid, readable_events(await _raw_events(rv, sid, -1, limit=None)))
    with contextlib.suppress(HifError, AttributeError):
        state = await rv.repo.sessions.state(sid)
        if isinstance(state, dict) and isinstance(state.get("state"), str):
            s.state, s.position, s.snapshot = state["state"], state.get("position"), state.get("snapshot")
    return s


async def _diffs(rv: RepoView, changes: list[history.Change]) -> tuple[list[Any], list[history.Change]]:
    """Rendered diffs for the first files (bounded in count and bytes); the rest are only listed."""
    out, rest, spent = [], [], 0
    for c in changes:
        if len(out) >= DIFF_FILES or spent > DIFF_BYTES:
            rest.append(c)
            continue
        old = await history.blob_or_none(rv.repo, c.old)
        new = await history.blob_or_none(rv.repo, c.new)
        spent += len(old or b"") + len(new or b"")
        out.append(await asyncio.to_thread(file_diff, c.path, c.action, old, new))
    return out, rest


@bp.get("/<owner>/<name>/sessions/<sid>")
async def session_page(owner: str, name: str, sid: str) -> str:
    rv = await open_repo(owner, name)
    s = await _load_session(rv, sid)
    rec = await history.session_record(rv.repo, s)
    view = request.args.get("view", "unified")
    if view not in ("unified", "split"):
        view = "unified"
    cps = history.iterations(s)
    a, b = query_int("a"), query_int("b")
    iter_diffs = None
    if a is not None and b is not None:
        iter_diffs = await _diffs(rv, await history.iteration_changes(rv.repo, s, a, b))
    diffs = await _diffs(rv, await history.session_changes(rv.repo, s, rec))
    fed = current_app.extensions.get("federation")
    verdict = (await verify_record(rec, store=node().store, repo=rv.repo, key=fed.key if fed else None,
                                   mirror=(rv.mirror, rv.name) if rv.mirror else None)
               if rec is not None else None)
    say = [e for e in s.events if e["type"] == "say"]
    decisions = s.of_type("decide")
    last_seq = s.events[-1]["seq"] if s.events else 0
    state_info = await rv.repo.sessions.state(sid) if s.state == "abandoned" else None
    return await render_template(
        "session.html", rv=rv, s=s, rec=rec, view=view, cps=cps, a=a, b=b, iter_diffs=iter_diffs,
        diffs=diffs, verdict=verdict, says=len(say), decisions=decisions, last_seq=last_seq,
        cp_index={e["seq"]: i for i, e in enumerate(cps, 1)},
        reason=(state_info or {}).get("reason"), check_logs=await _check_logs(rv.repo, s),
        sent_offers=await _sent_offers(rv, sid),
    )


def web_link(url: Any) -> str | None:
    """``url`` if it is an http(s) address: a peer's strings become links only when harmless."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme in ("http", "https") and parts.netloc else None


async def _sent_offers(rv: RepoView, sid: str) -> list[dict[str, Any]]:
    """Offers made from this session to other nodes and what they answered (what
    ``GET .../sessions/<sid>/offers`` returns), newest first; mirrors hold none."""
    if rv.mirror is not None:
        return []
    rows = sorted(await federation_offers.sent_offers(rv.repo, sid),
                  key=lambda o: o.get("created") or 0, reverse=True)
    for o in rows:
        target = web_link(o.get("target"))
        o["target_href"] = target or "#"
        remote = o.get("remote_session")
        o["remote_url"] = (f"{target}/sessions/{remote}" if target and isinstance(remote, str)
                           and remote.isalnum() else None)
    return rows


CHECK_LOG_SHOWN = 64 * 1024


async def _check_logs(repo: Repo, s: Session) -> list[tuple[str, int, str]]:
    """The log of each attested check (its first 64 KiB), by event seq: the result object names
    the log blob. A missing or damaged one is simply not shown."""
    out: list[tuple[str, int, str]] = []
    for e in s.of_type("attest"):
        att = e.get("attestation")
        if not isinstance(att, dict) or not isinstance(att.get("result"), bytes):
            continue
        try:
            result = await repo.objects.get_value("check", att["result"])
            log = await repo.objects.get_blob(result["log"])
        except (HifError, KeyError, TypeError):
            continue
        text = log[:CHECK_LOG_SHOWN].decode("utf-8", "replace")
        more = "\n… (log truncated)" if len(log) > CHECK_LOG_SHOWN else ""
        out.append((str(att.get("check", "?")), int(att.get("exit", -1)), text + more))
    return out


@bp.get("/<owner>/<name>/sessions/<sid>/events")
async def session_events(owner: str, name: str, sid: str) -> Response | str:
    """New events of a session after ``since``, as timeline items plus the poller for the next
    ones (htmx swaps them in every 2 s); 204 when nothing is new, which htmx leaves alone."""
    rv = await open_repo(owner, name)
    try:
        check_session_id(sid)
    except InvalidInput:
        raise NotFound(f"no session {sid}") from None
    since = query_int("since", -1, lo=-1)
    assert since is not None
    try:
        events = readable_events(await history.events_after(rv.repo, sid, since))
    except CorruptObject:  # an event that does not decode: read them one by one
        events = readable_events(await _raw_events(rv, sid, since, limit=500))
    state = await rv.repo.sessions.state(sid)
    if not events and state is None:
        if since < 0:
            raise NotFound(f"no session {sid}")
        if is_htmx():
            return Response("", status=204)
    last = events[-1]["seq"] if events else since
    return await render_template("_events.html", rv=rv, sid=sid, events=events, last_seq=last,
                                 closed=state, live=state is None)


# -- offered sessions (federation: sessions other nodes offer to a local repository) -------------------


async def count_offers(rv: RepoView) -> None:
    """Fill ``rv.offers`` for the repository's tab: one listing, no record read."""
    if rv.mirror is None:
        rv.offers = len(await rv.repo.store.list_page(offer_key(rv.repo.prefix, ""), limit=1000))


def _origin_link(o: dict[str, Any]) -> None:
    """The contributor's session on its home node, as a link when the origin is a web address."""
    origin = web_link(o.get("origin"))
    o["origin_href"] = (f"{origin}/{o['source_repo']}/sessions/{o['session']}"
                        if origin and isinstance(o.get("source_repo"), str)
                        and isinstance(o.get("session"), str) else None)


@bp.get("/<owner>/<name>/offers")
async def offers_page(owner: str, name: str) -> str:
    """Sessions other nodes offered to this repository, newest first, in every state."""
    rv = await open_repo(owner, name)
    if rv.mirror is not None:
        raise NotFound("offers go to the origin of a mirror")
    rows = sorted(await federation_offers.list_offers(rv.repo, fed_of().settings),
                  key=lambda o: o.get("received") or 0, reverse=True)
    for o in rows:
        _origin_link(o)
    rv.offers = len(rows)
    # maintainers see what each offer keeps on the node, and the total (strangers' offers cost storage)
    return await render_template("offers.html", rv=rv, rows=rows, node_url=node().config.url,
                                 total_size=federation_offers.total_size(rows))


async def _offer_page(rv: RepoView, oid: str, *, error: str | None = None,
                      conflicts: list[dict[str, Any]] | None = None, status: int = 200) -> tuple[str, int]:
    """One offered session as the API reads it (``offers.get_offer``), its diff rendered like a
    session's; ``error`` and ``conflicts`` come from a land or reject that failed."""
    o = await federation_offers.get_offer(rv.repo, offer_id(oid))
    _origin_link(o)
    await count_offers(rv)
    view = request.args.get("view", "unified")
    if view not in ("unified", "split"):
        view = "unified"
    changes = [history.Change(path, Entry(bk, bo) if bk else None, Entry(nk, no) if nk else None)
               for path, bk, bo, nk, no in o["changes"]]
    # files this repository changed since the offer's base: landing 3-way merges them
    head_tree = await rv.repo.mainline.tree_at(rv.head)
    moved = [c.path for c in changes
             if await lookup_file(rv.repo.objects, head_tree, c.path) not in (c.old, c.new)]
    events = [e for e in o["events"] if isinstance(e, dict) and e.get("type") != "start"]
    decisions = [e for e in events if e.get("type") == "decide"]
    open_ = o["state"] in ("offered", "landing")
    page = await render_template(
        "offer.html", rv=rv, o=o, events=events, decisions=decisions, view=view,
        says=sum(1 for e in events if e.get("type") == "say"),
        diffs=await _diffs(dataclasses.replace(rv, repo=federation_offers.offer_repo(rv.repo, o["id"])), changes),
        moved=moved, error=error, conflicts=conflicts or [],
        can_decide=open_ and rv.can_admin,
    )
    return page, status


@bp.get("/<owner>/<name>/offers/<oid>")
async def offer_page(owner: str, name: str, oid: str) -> tuple[str, int]:
    rv = await open_repo(owner, name)
    if rv.mirror is not None:
        raise NotFound("offers go to the origin of a mirror")
    return await _offer_page(rv, oid)


@bp.post("/<owner>/<name>/offers/<oid>/<action>")
async def offer_action(owner: str, name: str, oid: str, action: str) -> Response | tuple[str, int]:
    """Land or reject an offered session (maintainers), through the same functions as the API's
    ``POST .../offers/<oid>/land|reject``; a refusal re-renders the page with the reason (a
    conflict: 409 and the conflicting paths), a success goes back to the offer's page."""
    if action not in ("land", "reject"):
        raise NotFound("no such page")
    rv = await open_repo(owner, name, "admin")  # unreadable: 404; not a maintainer: 403
    assert rv.p.user is not None  # a maintainer is logged in
    lid = offer_id(oid)
    try:
        if action == "land":
            await federation_offers.land_offer(fed_of(), rv.repo, lid, rv.p.user)
        else:
            reason = (await request.form).get("reason", "").strip() or "rejected"
            await federation_offers.reject_offer(fed_of(), rv.repo, lid, rv.p.user,
                                                 check_text(reason, "reason"))
    except ConflictError as e:
        return await _offer_page(rv, lid, error=str(e), status=409,
                                 conflicts=[c.to_json() for c in e.conflicts])
    except HifError as e:
        if isinstance(e, NotFound):
            raise
        return await _offer_page(rv, lid, error=str(e), status=409 if e.http_status == 412 else e.http_status)
    return redirect(rv.url("offers", lid))  # type: ignore[return-value]


# -- settings --------------------------------------------------------------------------------------


async def _settings_page(rv: RepoView, error: str | None = None) -> str:
    members = await node().auth.repo_members(rv.name)
    org = await node().auth.get_org(rv.owner)
    return await render_template("settings.html", rv=rv, members=members, org=org,
                                 roles=grantable(rv.role), error=error)


@bp.get("/<owner>/<name>/settings")
async def settings(owner: str, name: str) -> Response | str:
    if (await viewer()).user is None:
        await open_repo(owner, name)  # a private or missing repository stays a 404
        return login_redirect()
    return await _settings_page(await open_repo(owner, name, "admin"))


@bp.post("/<owner>/<name>/settings/members")
async def settings_member_set(owner: str, name: str) -> Response | tuple[str, int]:
    rv = await open_repo(owner, name, "admin")
    form = await request.form
    try:
        await node().auth.set_repo_member(rv.name, form.get("user", "").strip(), form.get("role", ""),
                                          by=rv.p)
    except (InvalidInput, NotFound, PermissionDenied) as e:
        return await _settings_page(rv, str(e)), form_status(e)
    return redirect(rv.url("settings"))  # type: ignore[return-value]


@bp.post("/<owner>/<name>/settings/members/<user>/remove")
async def settings_member_remove(owner: str, name: str, user: str) -> Response | tuple[str, int]:
    rv = await open_repo(owner, name, "admin")
    try:
        await node().auth.remove_repo_member(rv.name, user, by=rv.p)
    except (InvalidInput, NotFound, PermissionDenied) as e:
        return await _settings_page(rv, str(e)), form_status(e)
    return redirect(rv.url("settings"))  # type: ignore[return-value]


for _rule, _endpoint, _view in (
    ("/<owner>/<name>", "mirror_home", repo_home),
    ("/<owner>/<name>/tree/<path:path>", "mirror_tree", tree),
    ("/<owner>/<name>/blob/<path:path>", "mirror_blob", blob),
    ("/<owner>/<name>/blame/<path:path>", "mirror_blame", blame_page),
    ("/<owner>/<name>/raw/<path:path>", "mirror_raw", raw),
    ("/<owner>/<name>/sessions", "mirror_sessions", sessions),
    ("/<owner>/<name>/sessions/<sid>", "mirror_session", session_page),
    ("/<owner>/<name>/sessions/<sid>/events", "mirror_session_events", session_events),
):
    _mirrored(_rule, _endpoint, _view)

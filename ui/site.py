"""Site pages: home, search, logging in and out, federation administration, imports."""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from quart import Response, current_app, redirect, render_template, request

from federation import control as federation_control
from federation import status as federation_status
from hif import history
from hif.errors import (
    BadQuery,
    HifError,
    InvalidInput,
    NotFound,
)
from hif.mainline import LandingRecord
from hif.search import KINDS
from hif.session import ROLES
from node.access import check_login
from node.errors import RateLimited
from node.imports import import_repository
from node.search import query_of, search_of
from ui import auth
from ui.auth import viewer

# -- home and search -------------------------------------------------------------------------------
from ui.web import bp, is_htmx, login_redirect, node, page_status, safe_next


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
    flash = await auth.take_flash() or {}  # "Deleted owner/name." after a repository's deletion
    return await render_template("home.html", repos=repos, recent=recent, more=more, mirrors=mirrors,
                                 node_url=node().config.url, done=flash.get("done"))


FAVICON = Path(__file__).parent / "static" / "favicon.svg"


@bp.get("/favicon.ico")
async def favicon() -> Response:
    """Browsers ask for /favicon.ico where a page names none (a raw file, an image): the SVG icon."""
    return Response(FAVICON.read_bytes(), content_type="image/svg+xml",
                    headers={"Cache-Control": "public, max-age=86400"})


FACET_PARAMS = {"repository": "repo", "origin": "origin", "author": "author", "role": "role",
                "state": "state", "kind": "kind"}
SEARCH_ARGS = ("q", "repo", "origin", "author", "role", "state", "kind", "since", "until", "from", "to")


def _search_url(args: Any, **change: str | None) -> str:
    """This search with some arguments changed (None drops one); paging starts again unless given."""
    keep = [(k, v) for k in SEARCH_ARGS for v in args.getlist(k) if v and k not in change]
    keep += [(k, v) for k, v in change.items() if v]
    return "/search?" + urlencode(keep)


def _hit_link(h: dict[str, Any], base: str = "") -> str:
    """The exact event of a hit on its session page (``#e<seq>``): local, mirror, or a peer's."""
    repo = h["repo"] if base else (f"mirrors/{h['origin']}/{h['repo']}" if h.get("origin") else h["repo"])
    anchor = f"#e{h['seq']}" if isinstance(h.get("seq"), int) else ""
    return f"{base}/{repo}/sessions/{h['session']}{anchor}"


@bp.get("/search")
async def search() -> Response | str:
    """Sessions found by what was said and decided, across every repository the viewer may read and
    every mirror (the node's index, node/search.py), with facets; repositories whose name or
    description matches; with ``remote=1`` also the followed nodes' public matches (the htmx page
    asks for them separately, so they never hold up the local results)."""
    args = request.args
    q = args.get("q", "").strip()
    p = await viewer()
    searcher = search_of(current_app)  # type: ignore[arg-type]
    found: list[dict[str, Any]] = []
    results = None
    error = None
    if q:
        batch = await node().auth.visible_repos(p, limit=500)
        found = [r for r in batch if history.matches_text(f"{r['name']} {r['description']}", q)][:10]
        try:
            results = await searcher.search(p, query_of(args))
        except BadQuery as e:
            error = str(e)
    remote = args.get("remote") == "1"
    peers = None
    if remote and q and error is None and (is_htmx("peers") or not is_htmx()):
        peers = await searcher.federated({"q": q, "kind": args.getlist("kind"), "author": args.get("author"),
                                          "role": args.get("role"), "state": args.get("state")})
    hits = [{**h.to_json(), "href": _hit_link(h.to_json())} for h in results.hits] if results else []
    peer_rows = []
    for a in peers or []:
        peer_rows.append({"node": a.node, "error": a.error, "total": a.total,
                          "hits": [{**h, "href": _hit_link(h, a.base)} for h in a.results]})
    facets = []
    if results is not None:
        for name, values in results.facets.items():
            param = FACET_PARAMS[name]
            facets.append((name, [(v, n, _search_url(args, **{param: "local" if param == "origin" and v == "local" else v}))
                                  for v, n in values]))
    ctx = {"q": q, "found": found, "results": results, "hits": hits, "facets": facets, "error": error,
           "peers": peer_rows if peers is not None else None, "remote": remote,
           "next_url": _search_url(args, offset=str(results.next)) if results and results.next else None,
           "peers_url": _search_url(args, remote="1"), "clear_url": _search_url(args, **{k: None for k in SEARCH_ARGS[1:]}),
           "filtered": any(args.get(k) for k in SEARCH_ARGS[1:]), "args": args, "kinds": KINDS, "roles": ROLES}
    if is_htmx("peers"):
        return await render_template("_search_peers.html", **ctx)
    if is_htmx("search-results"):
        return await render_template("_search_results.html", **ctx)
    page = await render_template("search.html", **ctx)
    return Response(page, status=400) if error else page


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
    refused = await _site_admin()
    if refused is not None:
        return refused
    flash = await auth.take_flash() or {}
    done = flash.get("done")
    return await _federation_page(done=done if isinstance(done, str) else None)


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
        return await _federation_page(error=str(e), status=page_status(e))
    await auth.set_flash(done=f"{'Following' if action == 'follow' else 'Stopped following'} {url}")
    return redirect("/federation", 303)  # type: ignore[return-value]


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
        return page, page_status(e)
    return redirect("/" + name), 302  # type: ignore[return-value]

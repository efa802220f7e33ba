"""Site pages: home, search, logging in and out, federation administration, imports."""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any

from quart import Response, current_app, redirect, render_template, request

from federation import control as federation_control
from federation import status as federation_status
from hif import history
from hif.errors import (
    HifError,
    InvalidInput,
    NotFound,
)
from hif.mainline import LandingRecord
from node.access import check_login
from node.errors import RateLimited
from node.imports import import_repository
from ui import auth
from ui.auth import viewer

# -- home and search -------------------------------------------------------------------------------
from ui.web import bp, login_redirect, node, page_status, safe_next


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

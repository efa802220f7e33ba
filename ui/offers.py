"""Offered sessions: what other nodes offer to a local repository, and landing or rejecting them."""

from __future__ import annotations

import dataclasses
from typing import Any

from quart import Response, redirect, render_template, request

from federation import offers as federation_offers
from hif import history
from hif.errors import (
    ConflictError,
    HifError,
    InvalidInput,
    NotFound,
)
from hif.objects import Entry
from hif.session import check_session_id, check_text
from hif.tree import lookup_file
from node.api.federation import offer_id
from node.context import fed_of

# -- offered sessions (federation: sessions other nodes offer to a local repository) -------------------
from ui.auth import set_flash, viewer
from ui.sessions import page_diffs
from ui.web import (
    RepoView,
    bp,
    count_offers,
    login_redirect,
    node,
    open_repo,
    page_status,
    web_link,
)


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
        diffs=await page_diffs(dataclasses.replace(rv, repo=federation_offers.offer_repo(rv.repo, o["id"])), changes),
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
        return await _offer_page(rv, lid, error=str(e), status=e.response_status)
    return redirect(rv.url("offers", lid))  # type: ignore[return-value]


# -- offering a local open session to a repository on another node (what ``hif offer`` does) ---------


async def _open_session_to_offer(owner: str, name: str, sid: str) -> tuple[RepoView, Any]:
    """A writer's open session of a local repository (mirrors hold none to offer)."""
    rv = await open_repo(owner, name, "write")
    if rv.mirror is not None:
        raise NotFound("offer sessions from their own repository, not from a mirror")
    try:
        check_session_id(sid)
        s = await rv.repo.sessions.load(sid)
    except (InvalidInput, NotFound):
        raise NotFound(f"no session {sid}") from None
    return rv, s


async def _offer_form(rv: RepoView, s: Any, target: str = "", error: str | None = None,
                      status: int = 200) -> tuple[str, int]:
    page = await render_template("offer_new.html", rv=rv, s=s, target=target, error=error)
    return page, status


@bp.get("/<owner>/<name>/sessions/<sid>/offer")
async def offer_form(owner: str, name: str, sid: str) -> Response | tuple[str, int]:
    if (await viewer()).user is None:
        await open_repo(owner, name)  # a private or missing repository stays a 404
        return login_redirect()
    rv, s = await _open_session_to_offer(owner, name, sid)
    return await _offer_form(rv, s, request.args.get("target", ""))


@bp.post("/<owner>/<name>/sessions/<sid>/offer")
async def offer_send(owner: str, name: str, sid: str) -> Response | tuple[str, int]:
    """Offer the session through the API's own ``federation.offers.make_offer``; the session page
    then lists it under the id the target shows too, and its state as the target answers."""
    rv, s = await _open_session_to_offer(owner, name, sid)
    assert rv.p.user is not None  # a writer is logged in
    target = (await request.form).get("target", "").strip()
    try:
        if not target:
            raise InvalidInput("name the repository to offer to: https://forge.example/owner/name")
        rec = await federation_offers.make_offer(fed_of(), rv.repo, sid, target, rv.p.user)
    except HifError as e:
        return await _offer_form(rv, s, target, str(e), page_status(e))
    await set_flash(done=f"Offered to {rec['target']} as offer {rec['id']}.")
    return redirect(rv.url("sessions", sid) + "#offers", 303)  # type: ignore[return-value]

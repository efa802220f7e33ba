"""Atom feeds: a repository's landings and a user's sessions, for feed readers.

A feed reader sends no cookie, so besides the browser session a feed accepts an API token
(``Authorization: Bearer``, :func:`node.access.token_principal`); what it lists is exactly what that
viewer may read through the pages, a private repository being a 404 like everywhere else. Each feed
reads a bounded number of records (see the Limits table in docs/architecture.md).
"""

from __future__ import annotations

import heapq
from typing import Any

from quart import Response, g, render_template, request

from hif import history
from hif.errors import NotFound
from node.access import token_principal
from ui.auth import viewer
from ui.sessions import open_sessions
from ui.web import bp, mirrored, node, open_repo

FEED_ENTRIES = 50  # entries per feed
# what a user's feed reads, about 2,400 records at most (the sessions list's budget is 2,000)
USER_FEED_REPOS = 20  # repositories it looks in (the first the viewer may read, by name)
USER_FEED_SCAN = 100  # landing records read per repository
USER_FEED_OPEN = 10  # open sessions examined per repository (two reads each)
ATOM = "application/atom+xml; charset=utf-8"


async def _feed_viewer() -> None:
    """Take a Bearer token as the viewer when one is sent (``ui.auth.viewer`` reads ``g``)."""
    header = request.headers.get("Authorization")
    if header:
        p = await token_principal(node().auth, header)
        g.ui_viewer = p
        g.user = p.user


async def _atom(title: str, self_path: str, html_path: str, entries: list[dict[str, Any]]) -> Response:
    base = node().config.url.rstrip("/")
    body = await render_template("feed.xml", title=title, self_url=base + self_path, html_url=base + html_path,
                                 entries=entries, updated=max((e["time"] for e in entries), default=0),
                                 base=base)
    return Response(body, content_type=ATOM, headers={"Cache-Control": "private, no-cache",
                                                      "Vary": "Authorization, Cookie",
                                                      "X-Content-Type-Options": "nosniff"})


@bp.get("/<owner>/<name>/landings.atom")
async def landings_feed(owner: str, name: str) -> Response:
    """The latest landings of a repository, one entry per landed session, newest first."""
    await _feed_viewer()
    rv = await open_repo(owner, name)
    entries: list[dict[str, Any]] = []
    if rv.head:
        async for rec in rv.repo.mainline.iter_back(rv.head, max(1, rv.head - FEED_ENTRIES + 1)):
            for s in rec.sessions:
                entries.append(_entry(rv.url("sessions", s.session), s, rec.time,
                                      f"Landed at position {rec.position}"))
    return await _atom(f"Landings of {rv.name}", rv.url("landings.atom"), rv.url(), entries[:FEED_ENTRIES])


def _entry(path: str, s: Any, time: Any, what: str) -> dict[str, Any]:
    files = len(s.changes)
    return {"path": path, "title": s.goal or "(no goal)", "author": s.author or "unknown", "time": time,
            "summary": f"{what} · {files} file{'' if files == 1 else 's'} · {s.role}"}


@bp.get("/users/<user>/sessions.atom")
async def user_feed(user: str) -> Response:
    """Sessions ``user`` started, landed or open, in the repositories the viewer may read."""
    await _feed_viewer()
    if await node().auth.get_user(user) is None:
        raise NotFound(f"no user {user}")
    p = await viewer()
    filters = history.Filters(author=user)
    best: list[tuple[float, int, dict[str, Any]]] = []
    n = 0
    for info in await node().auth.visible_repos(p, limit=USER_FEED_REPOS):
        rv = await open_repo(*info["name"].split("/"))
        page = await history.search_landed(rv.repo, rv.head, filters, limit=FEED_ENTRIES, budget=USER_FEED_SCAN)
        found = [_entry(rv.url("sessions", s.session), s, rec.time, f"Landed in {rv.name} at position {rec.position}")
                 for rec, s in page.rows]
        for row in await open_sessions(rv.repo, filters, cap=USER_FEED_OPEN):
            found.append({"path": rv.url("sessions", row["id"]), "title": row["goal"] or "(no goal)",
                          "author": row["author"], "time": row["time"] or 0,
                          "summary": f"Open in {rv.name} · {row['role'] or 'unknown role'}"})
        for e in found:
            n += 1
            item = (float(e["time"]) if isinstance(e["time"], int | float) else 0.0, n, e)
            if len(best) < FEED_ENTRIES:
                heapq.heappush(best, item)
            else:
                heapq.heappushpop(best, item)
    entries = [e for _, _, e in sorted(best, key=lambda t: (t[0], t[1]), reverse=True)]
    return await _atom(f"Sessions of {user}", f"/users/{user}/sessions.atom", "/", entries)


mirrored("/<owner>/<name>/landings.atom", "mirror_landings_feed", landings_feed)

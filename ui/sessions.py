"""Session pages: the list (open and landed, filtered, paged under a budget), one session with
its diffs, checks and offers, and its live events."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any

from quart import Response, current_app, redirect, render_template, request

from federation import offers as federation_offers
from hif import history
from hif.errors import (
    Ambiguous,
    CorruptObject,
    HifError,
    InvalidInput,
    InvalidPath,
    NotFound,
)
from hif.git.fastexport import Ident
from hif.mainline import LandingRecord
from hif.objects import decode
from hif.paths import check_path
from hif.repo import Repo
from hif.search import MAX_LIMIT, Query
from hif.session import ROLES, Session, check_session_id, fold
from node.access import may
from node.search import search_of
from node.wire import query_int
from ui.auth import take_flash
from ui.heavy import cache, offload, warm_later
from ui.render import (
    FileDiff,
    Highlighter,
    file_diff,
    imported_view,
    landed_role,
    readable_events,
)
from ui.signature import verify_mirrored, verify_record
from ui.web import (
    RepoView,
    bp,
    clean_path,
    count_offers,
    is_htmx,
    mirrored,
    node,
    open_repo,
    web_link,
)

PAGE = 25  # sessions per page
BUDGET = 2000  # records one sessions-list request may examine
OPEN_CAP = 100  # open sessions listed at most
DIFF_FILES = 100  # files whose diff a session page renders
DIFF_BYTES = 4 << 20  # total bytes of content diffed on one page
DIFF_ROWS = 2500  # diff rows a session page renders; the files beyond are collapsed (on demand)
FILE_ROWS = 400  # a file's diff longer than this is collapsed on the session page
READ_AHEAD = 8  # files whose blobs a session page reads at once
FILE_PAGE_ROWS = 5000  # rows of a file's own diff page; a longer diff says to view the files


async def open_marker(repo: Repo, sid: str) -> dict[str, Any] | None:
    """An open session's listing entry: goal, author and start time from its marker, the role from
    its start event (two reads, whatever the session's length)."""
    marker = await repo.sessions.open_marker(sid)
    if marker is None:
        return None  # closed meanwhile
    start = await repo.sessions.start_event(sid)
    role = start.get("role") if start is not None else None
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
    return {"id": s.session, "goal": s.goal, "author": s.author, "role": landed_role(rec, s.role), "time": rec.time,
            "state": "landed", "position": rec.position, "files": len(s.changes),
            "group": len(rec.sessions)}


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
    start = rv.head if before is None else min(before - 1, rv.head)
    if state in ("all", "open") and before is None:
        open_rows = (await _indexed_open(rv, filters) if filters.text else
                     await open_sessions(rv.repo, filters))
    if state in ("all", "landed"):
        if filters.text:  # the search index: every landing, not a budgeted walk
            page = await _indexed_landed(rv, filters, start)
        else:
            page = await history.search_landed(rv.repo, start, filters, limit=PAGE, budget=BUDGET)
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


def _indexed_query(rv: RepoView, filters: history.Filters, **kw: Any) -> Query:
    return Query(filters.text, repo=rv.name, origin=rv.mirror or "", author=filters.author,
                 role=filters.role, facets=False, newest=True, **kw)


async def _indexed_open(rv: RepoView, filters: history.Filters) -> list[dict[str, Any]]:
    """Open sessions whose text matches, from the node's search index (a path filter loads each)."""
    found = await search_of(current_app).search_in(  # type: ignore[arg-type]
        rv.repo, _indexed_query(rv, filters, state="open", limit=min(OPEN_CAP, MAX_LIMIT)))
    rows = []
    for h in found.hits:
        if filters.path:
            try:
                if not history.touches((await rv.repo.sessions.load(h.session)).changes, filters.path):
                    continue
            except NotFound:
                continue
        rows.append({"id": h.session, "goal": h.goal, "author": h.author, "time": h.time, "role": h.role,
                     "state": "open", "files": None})
    return rows


async def _indexed_landed(rv: RepoView, filters: history.Filters, start: int) -> history.Page:
    """Landed sessions at ``start`` and below whose text matches, newest first, from the node's
    search index; each shown row reads its landing record (the path filter is checked on it)."""
    found = await search_of(current_app).search_in(  # type: ignore[arg-type]
        rv.repo, _indexed_query(rv, filters, state="landed", pos_to=max(start, 0), limit=PAGE + 1))
    rows: list[tuple[LandingRecord, Any]] = []
    last = None
    for h in found.hits[:PAGE]:
        if h.position is None or h.position > start:
            continue
        rec = await rv.repo.mainline.record(h.position)
        last = h.position
        for s in rec.sessions:
            if s.session == h.session and filters.on_record(s):
                rows.append((rec, s))
    more = len(found.hits) > PAGE and last is not None and last > 1
    return history.Page(rows, last - 1 if more and last else None, len(found.hits), False)


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
    s.events = imported_view(readable_events(s.events))
    if s.events and s.events[0].get("role") == "imported":
        s.role = "imported"
    return s


async def _raw_events(rv: RepoView, sid: str, since: int, *, limit: int | None) -> list[Any]:
    """A session's stored events after ``since``, each decoded on its own (None when it does not
    decode): what a page shows when the session's log holds malformed events."""
    keys = await rv.repo.sessions.event_keys(sid, since)
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


async def page_diffs(rv: RepoView, changes: list[history.Change],
                     href: Callable[[history.Change], str] | None = None) -> tuple[list[FileDiff], list[history.Change]]:
    """Rendered diffs for the first files (bounded in count and bytes); the rest are only listed.
    A file's diff longer than :data:`FILE_ROWS` rows, or past the page's :data:`DIFF_ROWS`, is
    collapsed: counted, and loaded on demand from ``href(change)`` (its own page)."""
    out: list[FileDiff] = []
    rest: list[history.Change] = []
    spent = rows = 0
    hl = Highlighter(cache("highlight"))

    async def both(c: history.Change) -> tuple[bytes | None, bytes | None]:
        return await history.blob_or_none(rv.repo, c.old), await history.blob_or_none(rv.repo, c.new)

    read: dict[int, tuple[bytes | None, bytes | None]] = {}
    for i, c in enumerate(changes):
        if len(out) >= DIFF_FILES or spent > DIFF_BYTES:
            rest.append(c)
            continue
        if i not in read:  # the next few files' blobs at once: one wait for the store, not two a file
            batch = range(i, min(i + READ_AHEAD, len(changes), DIFF_FILES))
            read.update(zip(batch, await asyncio.gather(*(both(changes[k]) for k in batch)), strict=True))
        old, new = read.pop(i)
        spent += len(old or b"") + len(new or b"")
        limit = max(0, min(FILE_ROWS, DIFF_ROWS - rows))
        fd = await offload(functools.partial(file_diff, c.path, c.action, old, new, rows_max=limit, highlight=hl))
        if fd.collapsed and href is not None:
            fd.href = href(c)
        rows += len(fd.rows)
        out.append(fd)
    warm_later(hl)
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
    shown = view if view != "unified" else None  # the view a per-file diff link keeps
    iter_diffs = None
    if a is not None and b is not None:
        iter_diffs = await page_diffs(rv, await history.iteration_changes(rv.repo, s, a, b),
                                      lambda c: rv.url("sessions", s.id, "diff", c.path, a=a, b=b, view=shown))
    diffs = await page_diffs(rv, await history.session_changes(rv.repo, s, rec),
                             lambda c: rv.url("sessions", s.id, "diff", c.path, view=shown))
    fed = current_app.extensions.get("federation")
    verdict = (await verify_record(rec, store=node().store, repo=rv.repo, key=fed.key if fed else None,
                                   mirror=(rv.mirror, rv.name) if rv.mirror else None)
               if rec is not None else None)
    say = [e for e in s.events if e["type"] == "say"]
    decisions = s.of_type("decide")
    last_seq = s.events[-1]["seq"] if s.events else 0
    state_info = await rv.repo.sessions.state(sid) if s.state == "abandoned" else None
    return await render_template(
        "session.html", rv=rv, s=s, rec=rec, git=await _git_origin(rv, s, rec), view=view, cps=cps, a=a, b=b, iter_diffs=iter_diffs,
        diffs=diffs, verdict=verdict, says=len(say), decisions=decisions, last_seq=last_seq,
        cp_index={e["seq"]: i for i, e in enumerate(cps, 1)},
        reason=(state_info or {}).get("reason"), check_logs=await _check_logs(rv.repo, s),
        sent_offers=await _sent_offers(rv, sid),
        # git commits hold no decisions to miss: no note on imported sessions
        no_decision=(history.NO_DECISION if s.state == "landed" and history.undecided(s) and s.role != "imported"
                     else None),
        done=(await take_flash() or {}).get("done"), can_write=may(rv.p, rv.role, "write", rv.name),
    )



@bp.get("/<owner>/<name>/sessions/<sid>/diff/<path:path>")
async def session_file_diff(owner: str, name: str, sid: str, path: str) -> str:
    """One file's diff of a session (``?a=&b=``: between two of its iterations) on a page of its
    own, or as the fragment htmx swaps into a collapsed diff of the session page."""
    rv = await open_repo(owner, name)
    s = await _load_session(rv, sid)
    path = clean_path(path)
    view = request.args.get("view", "unified")
    if view not in ("unified", "split"):
        view = "unified"
    a, b = query_int("a"), query_int("b")
    rec = await history.session_record(rv.repo, s)
    if a is not None and b is not None:
        changes = await history.iteration_changes(rv.repo, s, a, b)
    else:
        changes = await history.session_changes(rv.repo, s, rec)
    change = next((c for c in changes if c.path == path), None)
    if change is None:
        raise NotFound(f"session {sid} did not change {path}")
    old = await history.blob_or_none(rv.repo, change.old)
    new = await history.blob_or_none(rv.repo, change.new)
    hl = Highlighter(cache("highlight"))
    fd = await offload(functools.partial(file_diff, path, change.action, old, new, rows_max=FILE_PAGE_ROWS,
                                         highlight=hl))
    warm_later(hl)
    if fd.collapsed:
        fd.collapsed = False
        fd.note = (f"the diff is too large to show ({fd.total_rows} lines, +{fd.added} −{fd.removed}): "
                   "view the files instead")
    at = rec.position if rec is not None else None
    ctx = {"rv": rv, "s": s, "fd": fd, "view": view, "a": a, "b": b, "at": at,
           "link": rv.url("blob", path, at=at) if at and change.new is not None else rv.url("sessions", s.id) + "#changes"}
    if is_htmx():
        return await render_template("_file_diff.html", **ctx)
    return await render_template("file_diff.html", **ctx)


async def _git_origin(rv: RepoView, s: Session, rec: LandingRecord | None) -> dict[str, Any] | None:
    """The git commit an imported session came from: its id, its permalink (``/commit/<id>``),
    whether ``hif export git`` writes it back with this same id (the index's ``exact``: only said
    when known to hold) and, for the repository's members only, the author's address."""
    git = s.events[0].get("git") if s.events else None
    if not isinstance(git, dict) or not isinstance(git.get("commit"), str):
        return None
    hit = await search_of(current_app).commit_known(rv.repo, git["commit"])  # type: ignore[arg-type]
    out: dict[str, Any] = {"commit": git["commit"], "author": None, "link": rv.url("commit", git["commit"]),
                           "exact": bool(hit and hit.exact and hit.position == (rec.position if rec else None))}
    meta = rec.extra.get("git") if rec is not None else None
    if rv.member and isinstance(meta, dict) and meta.get("commit") == git["commit"]:
        raw = meta.get("author")
        ident = Ident(raw.encode("utf-8", "replace") if isinstance(raw, str) else bytes(raw or b""))
        out["author"] = f"{ident.name} <{ident.email}>" if ident.email else ident.name
    return out


@bp.get("/<owner>/<name>/commit/<sha>")
async def commit_page(owner: str, name: str, sha: str) -> Response:
    """A git commit's permalink: a redirect (303) to the session of the landing that commit became,
    at its iteration for a commit a merge brought in. 400 for what is no commit id, 404 for one
    the repository never imported, and for a prefix several commits share, a page listing them."""
    rv = await open_repo(owner, name)
    try:
        hit = await search_of(current_app).commit(rv.repo, sha)  # type: ignore[arg-type]
    except Ambiguous as e:
        body = await render_template("commits.html", rv=rv, prefix=sha.lower(), message=str(e),
                                     commits=e.candidates)
        return Response(body, status=300, content_type="text/html; charset=utf-8")
    anchor = f"#iteration-{hit.iteration}" if hit.iteration else ""
    return redirect(rv.url("sessions", hit.session) + anchor, 303)  # type: ignore[return-value]


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
    view = request.args.get("view", "")
    keep = {"view": view if view == "split" else "", "a": query_int("a"), "b": query_int("b")}
    return await render_template("_events.html", rv=rv, sid=sid, events=events, last_seq=last,
                                 closed=state, live=state is None, keep=keep)


@bp.get("/<owner>/<name>/sessions/<sid>/live")
async def session_live_note(owner: str, name: str, sid: str) -> str:
    """The session page's note on live updates, fetched by htmx when the page loads: only a browser
    that runs the poller is told that the page follows the session (without JavaScript the page
    offers a reload link instead)."""
    rv = await open_repo(owner, name)
    try:
        check_session_id(sid)
    except InvalidInput:
        raise NotFound(f"no session {sid}") from None
    state = await rv.repo.sessions.state(sid)
    return await render_template("_live_note.html", open=state is None)


for _rule, _endpoint, _view in (
    ("/<owner>/<name>/sessions", "mirror_sessions", sessions),
    ("/<owner>/<name>/sessions/<sid>", "mirror_session", session_page),
    ("/<owner>/<name>/sessions/<sid>/events", "mirror_session_events", session_events),
    ("/<owner>/<name>/sessions/<sid>/live", "mirror_session_live_note", session_live_note),
    ("/<owner>/<name>/sessions/<sid>/diff/<path:path>", "mirror_session_file_diff", session_file_diff),
    ("/<owner>/<name>/commit/<sha>", "mirror_commit", commit_page),
):
    mirrored(_rule, _endpoint, _view)

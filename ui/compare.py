"""Comparing two positions of a repository: ``/owner/name/compare/A...B``.

The page lists the sessions that landed between A and B (newest first, at most
:data:`COMPARE_SESSIONS` records read) and the combined diff of the two trees, rendered by the
session page's own bounded ``page_diffs``. The tree diff skips every directory the two trees share,
so its cost grows with what changed, never with the repository; at most :data:`COMPARE_FILES`
changed files are collected.
"""

from __future__ import annotations

from typing import Any

from quart import Response, redirect, render_template, request

from hif import history
from hif.errors import InvalidInput, NotFound
from hif.session import check_session_id
from hif.tree import diff
from ui.sessions import landed_row, page_diffs
from ui.web import RepoView, bp, mirrored, open_repo

COMPARE_SESSIONS = 200  # landing records listed between A and B
COMPARE_FILES = 1000  # changed files collected from the two trees


async def _position(rv: RepoView, ref: str) -> int:
    """A position number, or the id of a landed session (the position it landed at)."""
    ref = ref.strip()
    if ref.isascii() and ref.isdigit() and len(ref) <= 18:
        pos = int(ref)
        if pos > rv.head:
            raise NotFound(f"no position {pos} in {rv.name} (the head is {rv.head})")
        return pos
    try:
        check_session_id(ref)
    except InvalidInput:
        raise NotFound(f"{ref!r} is neither a position nor a session id") from None
    state = await rv.repo.sessions.state(ref)
    if not isinstance(state, dict) or state.get("state") != "landed" or not isinstance(state.get("position"), int):
        raise NotFound(f"no landed session {ref} in {rv.name}")
    return int(state["position"])


async def compare_form(owner: str, name: str) -> Response:
    """The repository page's small form (``?a=&b=``) sent on to the comparison's own address."""
    rv = await open_repo(owner, name)
    a, b = request.args.get("a", "").strip(), request.args.get("b", "").strip()
    if not a or not b or "/" in a + b:
        raise InvalidInput("compare needs two positions (or landed session ids), a and b")
    return redirect(rv.url("compare", f"{a}...{b}"))  # type: ignore[return-value]


async def compare(owner: str, name: str, spec: str) -> str:
    rv = await open_repo(owner, name)
    left, sep, right = spec.partition("...")
    if not sep:
        raise NotFound("a comparison is A...B (two positions or landed session ids)")
    a, b = await _position(rv, left), await _position(rv, right)
    view = request.args.get("view", "unified")
    if view not in ("unified", "split"):
        view = "unified"
    lo, hi = min(a, b), max(a, b)
    rows: list[dict[str, Any]] = []
    if hi > lo:
        async for rec in rv.repo.mainline.iter_back(hi, max(lo + 1, hi - COMPARE_SESSIONS + 1)):
            rows += [landed_row(rec, s) for s in rec.sessions]
    more_sessions = max(0, hi - lo - COMPARE_SESSIONS)  # older landings between, not listed
    changes: list[history.Change] = []
    more_files = False
    old_tree, new_tree = await rv.repo.mainline.tree_at(a), await rv.repo.mainline.tree_at(b)
    async for path, old, new in diff(rv.repo.objects, old_tree, new_tree):
        if len(changes) >= COMPARE_FILES:
            more_files = True
            break
        changes.append(history.Change(path, old, new))
    diffs = await page_diffs(rv, changes)
    return await render_template("compare.html", rv=rv, a=a, b=b, a_ref=left, b_ref=right, rows=rows,
                                 more_sessions=more_sessions, older_before=hi - COMPARE_SESSIONS + 1, diffs=diffs, files=len(changes),
                                 more_files=more_files, view=view, spec=spec)


bp.add_url_rule("/<owner>/<name>/compare", endpoint="compare_form", view_func=compare_form, methods=["GET"])
bp.add_url_rule("/<owner>/<name>/compare/<spec>", endpoint="compare", view_func=compare, methods=["GET"])
mirrored("/<owner>/<name>/compare", "mirror_compare_form", compare_form)
mirrored("/<owner>/<name>/compare/<spec>", "mirror_compare", compare)

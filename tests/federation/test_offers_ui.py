"""Offered sessions in the web UI, between two real nodes on loopback: B offers sessions to a
repository on A; A's pages list them and show their goal, conversation, decisions and diff; a
maintainer lands or rejects them with the page's forms (CSRF token and cookie, as a browser); B's
session page shows the outcome. Non-maintainers get no buttons and 403, strangers of a private
repository 404."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from fedkit import api, land, make_repo, open_session, start_node, ui_login, wait_for
from forge import Forge

REPO = "acme/api"
SECRET = "acme/secret"


@dataclass
class Pair:
    a: Forge  # the repository's node: offers arrive here
    b: Forge  # the contributor's home node
    bob: str  # bob's write token on B


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("offers-ui")
    a = start_node(root / "a")
    b = start_node(root / "b")
    try:
        make_repo(a, REPO)
        make_repo(a, SECRET, private=True)
        land(a, REPO, {"README.md": "hello\n"}, "start")
        bob = b.user("bob")
        make_repo(b, "bob/api")
        land(b, "bob/api", {"README.md": "hello\n"}, "start from the same file")
        yield Pair(a, b, bob)
    finally:
        a.stop()
        b.stop()


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m is not None, page
    return m.group(1)


def offer(p: Pair, files: dict[str, str], goal: str, **kw: object) -> tuple[str, str]:
    """Open a session on B and offer it to A's repository; (B's session id, A's offer id)."""
    sid = open_session(p.b, "bob/api", files, goal, p.bob, **kw)  # type: ignore[arg-type]
    status, data = api(
        p.b, "POST", f"/api/v1/repos/bob/api/sessions/{sid}/offer", p.bob, {"target": f"{p.a.url}/{REPO}"}
    )
    assert status == 201, data

    def arrived() -> str | None:
        rows = api(p.a, "GET", f"/api/v1/repos/{REPO}/offers")[1]["offers"]
        return next((o["id"] for o in rows if o["session"] == sid), None)

    return sid, wait_for(arrived, f"the offer of {goal!r} at A")


def state_on_a(p: Pair, oid: str) -> dict[str, object]:
    status, data = api(p.a, "GET", f"/api/v1/repos/{REPO}/offers/{oid}")
    assert status == 200, data
    return data


def member(p: Pair, user: str, role: str, repo: str = REPO) -> httpx.Client:
    """Log ``user`` in to A's UI, with ``role`` on ``repo``."""
    c = ui_login(p.a, user)
    r = p.a.api("PUT", f"/api/v1/repos/{repo}/members/{user}", p.a.admin_token, {"role": role})
    assert r.status_code in (200, 201), r.data
    return c


def has_buttons(page: str, oid: str) -> bool:
    return f'action="/{REPO}/offers/{oid}/land"' in page or f"/offers/{oid}/reject" in page


def test_offered_session_pages_and_landing_from_the_ui(pair: Pair) -> None:
    p = pair
    anon = httpx.Client(base_url=p.a.url, timeout=60)
    assert "Offered sessions" not in anon.get(f"/{REPO}").text  # none yet: no tab

    sid, oid = offer(
        p,
        {"CONTRIBUTING.md": "be kind\n", "README.md": "hello\nsee CONTRIBUTING.md\n"},
        "add a contributing guide",
        say="the guide explains reviews",
        decide={"decision": "one file", "why": "short is better", "alternatives": ["a wiki page"]},
    )

    home = anon.get(f"/{REPO}")
    assert home.status_code == 200
    assert f'href="/{REPO}/offers"' in home.text and "Offered sessions" in home.text
    listing = anon.get(f"/{REPO}/offers")
    assert listing.status_code == 200
    assert f'href="/{REPO}/offers/{oid}"' in listing.text
    for text in ("add a contributing guide", "offered", f"{p.b.url}/bob/api", "bob"):
        assert text in listing.text, text

    page = anon.get(f"/{REPO}/offers/{oid}")
    assert page.status_code == 200
    for text in (
        "add a contributing guide",  # goal
        f"{p.b.url}/bob/api",  # origin
        "the guide explains reviews",  # conversation
        "short is better",  # decision's rationale
        "a wiki page",  # and its rejected alternative
        "CONTRIBUTING.md",
        "be kind",  # the diff, highlighted
        "see CONTRIBUTING.md",
    ):
        assert text in page.text, text
    assert 'class="add"' in page.text  # rendered as the session page's diff rows
    assert not has_buttons(page.text, oid)  # anonymous: no buttons

    # a writer (not a maintainer) sees the page without buttons and is refused the actions
    wes = member(p, "wes", "writer")
    page = wes.get(f"/{REPO}/offers/{oid}")
    assert page.status_code == 200 and not has_buttons(page.text, oid)
    token = csrf_of(page.text)
    for action, data in (("land", {}), ("reject", {"reason": "no"})):
        r = wes.post(f"/{REPO}/offers/{oid}/{action}", data={"csrf": token, **data})
        assert r.status_code == 403 and "text/html" in r.headers["content-type"], action
    assert state_on_a(p, oid)["state"] == "offered"

    # a maintainer lands it through the page's form
    mia = member(p, "mia", "maintainer")
    page = mia.get(f"/{REPO}/offers/{oid}")
    assert has_buttons(page.text, oid)
    before = api(p.a, "GET", f"/api/v1/repos/{REPO}/head")[1]["position"]
    r = mia.post(f"/{REPO}/offers/{oid}/land", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 302 and r.headers["location"] == f"/{REPO}/offers/{oid}", r.text
    done = state_on_a(p, oid)
    assert done["state"] == "landed" and done["position"] == before + 1
    assert done["landed_by"] == "mia"
    tree = api(p.a, "GET", f"/api/v1/repos/{REPO}/tree")[1]
    assert "CONTRIBUTING.md" in [e[0] for e in tree["entries"]]
    page = mia.get(f"/{REPO}/offers/{oid}")
    assert f"Landed at position <a href=\"/{REPO}?at={before + 1}\">#{before + 1}</a>" in page.text
    assert f'href="/{REPO}/sessions/{done["landed_session"]}"' in page.text
    assert not has_buttons(page.text, oid)  # nothing left to decide
    landed = anon.get(f"/{REPO}/sessions/{done['landed_session']}")
    assert landed.status_code == 200 and "the guide explains reviews" in landed.text

    # B, the contributor's home node, shows the outcome on the session's page
    def outcome_on_b() -> str | None:
        text = httpx.get(f"{p.b.url}/bob/api/sessions/{sid}", timeout=30).text
        return text if f"landed at position {before + 1} on" in text else None

    b_page = wait_for(outcome_on_b, "the outcome on B's session page")
    assert f'href="{p.a.url}/{REPO}"' in b_page
    assert f'href="{p.a.url}/{REPO}/sessions/{done["landed_session"]}"' in b_page


def test_reject_with_a_reason_from_the_ui(pair: Pair) -> None:
    p = pair
    sid, oid = offer(p, {"NOTES.md": "maybe\n"}, "add notes")
    mia = member(p, "mia", "maintainer")
    page = mia.get(f"/{REPO}/offers/{oid}")
    r = mia.post(
        f"/{REPO}/offers/{oid}/reject",
        data={"csrf": csrf_of(page.text), "reason": "needs tests first"},
    )
    assert r.status_code == 302, r.text
    rec = state_on_a(p, oid)
    assert rec["state"] == "rejected" and rec["reason"] == "needs tests first"
    page = mia.get(f"/{REPO}/offers/{oid}")
    assert "Rejected" in page.text and "needs tests first" in page.text
    assert not has_buttons(page.text, oid)
    # landing it now is refused with a page, not a traceback
    r = mia.post(f"/{REPO}/offers/{oid}/land", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 409 and "was rejected" in r.text
    assert "rejected" in mia.get(f"/{REPO}/offers").text

    wait_for(
        lambda: "needs tests first"
        in httpx.get(f"{p.b.url}/bob/api/sessions/{sid}", timeout=30).text,
        "the rejection on B's session page",
    )
    b_page = httpx.get(f"{p.b.url}/bob/api/sessions/{sid}", timeout=30).text
    assert "rejected by" in b_page and "landed at position" not in b_page


def test_conflict_is_a_409_page_with_the_paths(pair: Pair) -> None:
    p = pair
    _, oid = offer(p, {"README.md": "hello from bob\n"}, "reword the greeting")
    land(p.a, REPO, {"README.md": "HELLO FROM A\n"}, "shout")  # A changes the same line meanwhile
    head = api(p.a, "GET", f"/api/v1/repos/{REPO}/head")[1]["position"]
    mia = member(p, "mia", "maintainer")
    page = mia.get(f"/{REPO}/offers/{oid}")
    assert "Changed here since the contributor" in page.text
    r = mia.post(f"/{REPO}/offers/{oid}/land", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 409 and "text/html" in r.headers["content-type"]
    assert "<code>README.md</code>" in r.text and "Nothing landed" in r.text
    assert "reword the greeting" in r.text  # the offered session's page, with the error on it
    assert api(p.a, "GET", f"/api/v1/repos/{REPO}/head")[1]["position"] == head
    rec = state_on_a(p, oid)
    assert rec["state"] == "offered" and "README.md" in str(rec["error"])
    assert has_buttons(r.text, oid)  # still open: it can be rejected, or landed later


def test_private_repository_offers_are_invisible(pair: Pair) -> None:
    p = pair
    stranger = ui_login(p.a, "sam")
    anon = httpx.Client(base_url=p.a.url, timeout=60)
    token = csrf_of(stranger.get("/account").text)
    fake = "0" * 20
    for c in (stranger, anon):
        assert c.get(f"/{SECRET}/offers").status_code == 404
        assert c.get(f"/{SECRET}/offers/{fake}").status_code == 404
    r = stranger.post(f"/{SECRET}/offers/{fake}/land", data={"csrf": token})
    assert r.status_code == 404
    # a member may read it: the page exists (no offers: federation offers only to public ones)
    ria = member(p, "ria", "reader", SECRET)
    page = ria.get(f"/{SECRET}/offers")
    assert page.status_code == 200 and "No session has been offered" in page.text
    assert ria.get(f"/{REPO}/offers/{fake}").status_code == 404  # unknown offer
    assert ria.get(f"/{REPO}/offers/not-an-id").status_code == 404

"""Offering an open session to a repository on another forge from the web UI (what ``hif offer``
does), between two real nodes on loopback: the contributor's node B and the seeded node A. The
offer goes by one id on both nodes, and B's session page shows what A answered."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from forge import Forge, start_forge
from playwright.sync_api import expect
from test_ui_browser import log_in
from test_ui_http import csrf_of
from test_ui_mirror import wait_for
from ui_seed import FED_ENV, PASSWORD, Client, Seeded, write

TARGET = "acme/offer-target"


@pytest.fixture(scope="module")
def contributor(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Forge, str]]:
    """Node B, where bob works on ``bob/work``; A (the seeded node) gets ``acme/offer-target``."""
    r = seeded.forge.api("POST", "/api/v1/repos", seeded.forge.admin_token, {"name": TARGET})
    assert r.status_code == 201, r.data
    b = start_forge(tmp_path_factory.mktemp("ui-contributor"), env=FED_ENV)
    try:
        b.micelio("admin", "user", "create", "bob", "--password-stdin", input=PASSWORD + "\n")
        bob = b.user("bob")
        assert b.api("POST", "/api/v1/repos", bob, {"name": "bob/work"}).status_code == 201
        yield b, bob
    finally:
        b.stop()


def open_session(b: Forge, bob: str, goal: str, path: str) -> str:
    c = Client(b, bob, "bob/work")
    sid = c.start(goal)
    c.events(sid, write(path, c.put(f"{goal}\n".encode()), "human", "bob"))
    return sid


def offers_at_a(seeded: Seeded) -> list[dict[str, Any]]:
    return seeded.forge.api("GET", f"/api/v1/repos/{TARGET}/offers").data["offers"]


@pytest.mark.parametrize("js", [True, False], ids=["js", "nojs"])
def test_offer_a_session_from_the_ui_and_see_the_answer(browser: Any, seeded: Seeded,
                                                        contributor: tuple[Forge, str], js: bool) -> None:
    b, bob = contributor
    context = browser.new_context(base_url=b.url, java_script_enabled=js)
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        log_in(page, "bob")
        answers = {"land": "accepted", "reject": "declined"}
        for action, shown in answers.items():
            goal = f"{action} me ({'js' if js else 'nojs'})"
            sid = open_session(b, bob, goal, f"{action}-{'js' if js else 'nojs'}.md")
            page.goto(f"/bob/work/sessions/{sid}")
            page.get_by_role("link", name="Offer this session to a repository on another forge").click()
            page.get_by_label("Repository on another forge").fill(f"{seeded.forge.url}/{TARGET}")
            page.get_by_role("button", name="Offer this session").click()
            expect(page).to_have_url(re.compile(f"/bob/work/sessions/{sid}#offers$"))
            item = page.locator("li.offer-sent")
            expect(item.locator(".badge")).to_have_text("pending")
            oid = item.get_attribute("data-offer")
            assert oid and re.fullmatch("[0-9a-f]{20}", oid)
            expect(page.get_by_role("status")).to_contain_text(f"as offer {oid}")
            expect(item.locator("code")).to_have_text(oid)
            # one id on both nodes: A lists the offer under the id B shows
            wait_for(lambda sid=sid: any(o["session"] == sid for o in offers_at_a(seeded)), "the offer at A")
            at_a = [o for o in offers_at_a(seeded) if o["session"] == sid]
            assert at_a[0]["id"] == oid and at_a[0]["goal"] == goal
            body = {} if action == "land" else {"reason": "not now"}
            r = seeded.forge.api("POST", f"/api/v1/repos/{TARGET}/offers/{oid}/{action}", seeded.ana, body)
            assert r.status_code == 200, r.data

            def answered(sid: str = sid, shown: str = shown) -> bool:
                page.goto(f"/bob/work/sessions/{sid}")
                return page.locator("li.offer-sent .badge").inner_text() == shown

            wait_for(answered, f"B to show the offer {shown}")
            if action == "reject":
                expect(page.locator("li.offer-sent")).to_contain_text("not now")
            else:
                expect(page.locator("li.offer-sent")).to_contain_text("landed at position")
    finally:
        context.close()


def test_offering_is_refused_clearly(seeded: Seeded, contributor: tuple[Forge, str]) -> None:
    b, bob = contributor
    sid = open_session(b, bob, "refusals", "refusals.md")
    form = f"/bob/work/sessions/{sid}/offer"
    anon = httpx.Client(base_url=b.url, timeout=60)
    r = anon.get(form)
    assert r.status_code == 302 and r.headers["location"].startswith("/login")
    c = httpx.Client(base_url=b.url, timeout=60)
    token = csrf_of(c.get("/login").text)
    assert c.post("/login", data={"user": "bob", "password": PASSWORD, "csrf": token, "next": "/"}).status_code == 302
    csrf = csrf_of(c.get(form).text)
    before = len(offers_at_a(seeded))
    for target, status in ((f"{b.url}/bob/work", 400),  # its own node: land it there instead
                           ("not a url", 400), ("", 400), ("ftp://127.0.0.1/acme/x", 400),
                           (f"{seeded.forge.url}/acme", 400)):
        r = c.post(form, data={"target": target, "csrf": csrf})
        assert r.status_code == status, (target, r.status_code, r.text[:500])
        assert 'role="alert"' in r.text
    assert c.post(form, data={"target": f"{seeded.forge.url}/{TARGET}"}).status_code == 403  # no CSRF token
    r = c.post(f"/bob/work/sessions/{'a' * 16}/offer", data={"target": f"{seeded.forge.url}/{TARGET}", "csrf": csrf})
    assert r.status_code == 404
    assert b.api("GET", f"/api/v1/repos/bob/work/sessions/{sid}/offers", bob).data["offers"] == []
    time.sleep(1)
    assert len(offers_at_a(seeded)) == before

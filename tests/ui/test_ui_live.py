"""The live session view: while a session is open its page follows it whole (state, counts,
decisions, iterations, diff), up to and after its landing, without a reload; without JavaScript the
page promises nothing live and offers a reload link."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect
from test_ui_browser import assert_not_reloaded, no_reload_marker
from ui_seed import Client, Seeded, decide, say, write

LIVE = "acme/live"


def open_session(seeded: Seeded, goal: str) -> tuple[Client, str]:
    """A new open session in ``acme/live`` (a repository of its own: the other tests' counts of
    ``acme/widgets`` stay as they are)."""
    forge = seeded.forge
    if forge.api("GET", f"/api/v1/repos/{LIVE}", seeded.ana).status_code == 404:
        r = forge.api("POST", "/api/v1/repos", forge.admin_token, {"name": LIVE, "private": False})
        assert r.status_code == 201, r.data
    c = Client(forge, seeded.ana, LIVE)
    sid = c.start(goal, role="agent", author="claude")
    c.events(sid, say("Starting.", "agent", "claude"))
    return c, sid


def test_live_view_follows_the_session_through_its_landing(page: Any, seeded: Seeded) -> None:
    c, sid = open_session(seeded, "Write the live guide")
    page.goto(f"/{LIVE}/sessions/{sid}?view=split")  # the side-by-side choice survives the updates
    expect(page.locator("#live-note")).to_contain_text("appear here as they happen")
    expect(page.locator("#session-head .badge.open")).to_have_text("open")
    expect(page.locator("#decisions")).to_contain_text("No decisions")
    no_reload_marker(page)

    blob = c.put(b"# Live\n\nEvery part of the page follows the session.\n")
    tree = c.tree({"docs/live.md": blob})
    c.events(sid, write("docs/live.md", blob, "agent", "claude"),
             {"type": "checkpoint", "note": "the first draft", "iteration": 1, "role": "agent",
              "author": "claude", "tree": tree},
             decide("One page per feature", "short pages are read", ["one long manual"], "agent", "claude"))
    head = page.locator("#session-head")
    expect(head).to_contain_text("1 decision", timeout=10_000)
    expect(head).to_contain_text("1 iteration")
    expect(head).to_contain_text("1 file")
    expect(page.locator("#decisions")).to_contain_text("One page per feature")
    expect(page.locator("#iterations")).to_contain_text("the first draft")
    changes = page.locator("#changes")
    expect(changes.locator(".diff-head h3")).to_have_text(["docs/live.md"])
    expect(changes.locator("table.split")).to_have_count(1)  # still side by side
    assert_not_reloaded(page)

    assert c.land(sid) == 1
    expect(head.locator(".badge.landed")).to_have_text("landed at #1", timeout=10_000)
    expect(head.locator(".landing")).to_contain_text("#1")
    expect(changes.get_by_role("heading", level=2)).to_have_text("Changes landed")
    expect(page.locator("#live-note")).to_have_text("")  # no promise about a closed session
    expect(page.locator("#timeline .closed-note")).to_contain_text("landed at position 1")
    expect(page.locator("#timeline .event")).to_have_count(6)  # start, say, write, checkpoint, decide, note
    expect(page.locator("#timeline .refresh")).to_have_count(0)  # each refresh removed itself
    assert_not_reloaded(page)


def test_without_javascript_nothing_live_is_promised(browser: Any, seeded: Seeded) -> None:
    _, sid = open_session(seeded, "Write the static guide")
    context = browser.new_context(java_script_enabled=False, base_url=seeded.forge.url)
    try:
        pg = context.new_page()
        pg.goto(f"/{LIVE}/sessions/{sid}")
        expect(pg.locator("#timeline .ev-say .say")).to_have_text(["Starting."])
        expect(pg.locator("#conversation")).not_to_contain_text(re.compile("as they happen|live|real time", re.I))
        note = pg.locator("#live-note")
        note.get_by_role("link", name="Reload").click()
        expect(pg.get_by_role("heading", level=1)).to_have_text("Write the static guide")
    finally:
        context.close()

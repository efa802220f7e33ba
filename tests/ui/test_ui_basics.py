"""Issue 17's forge basics in a real browser (headless Chromium), with JavaScript and without:
creating a repository and its settings, the clone box and copy buttons, line links and ranges,
compare, Markdown and images, archives, feeds, and post-redirect-get."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect
from test_ui_browser import log_in
from ui_seed import PUBLIC, Seeded


@pytest.fixture(params=[True, False], ids=["js", "nojs"])
def any_page(request: pytest.FixtureRequest, browser: Any, seeded: Seeded) -> Iterator[Any]:
    """A fresh page with JavaScript on, then off; script or console errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=seeded.forge.url,
                                  java_script_enabled=request.param)
    context.set_default_timeout(15_000)
    if request.param:
        context.grant_permissions(["clipboard-read", "clipboard-write"])
    pg = context.new_page()
    pg.js = request.param
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text)
          if m.type == "error" and "Failed to load resource" not in m.text else None)
    try:
        yield pg
    finally:
        context.close()
    assert not errors, errors


def test_create_a_repository_change_its_settings_and_delete_it(any_page: Any, seeded: Seeded) -> None:
    page, js = any_page, any_page.js
    name = f"made-{'js' if js else 'nojs'}"
    log_in(page)
    page.get_by_role("link", name="New repository").click()
    expect(page.get_by_label("Owner").locator("option")).to_have_text(["ana", "acme"])  # own + maintained org
    page.get_by_label("Name").fill(name)
    page.get_by_label("Description (optional)").fill("Made in a browser")
    page.get_by_label("Private: only members can see it").check()
    page.get_by_role("button", name="Create repository").click()
    expect(page).to_have_url(re.compile(f"/ana/{name}$"))
    expect(page.locator(".repo-head .badge.private")).to_have_text("private")
    expect(page.locator(".repo-head .desc")).to_have_text("Made in a browser")
    # the same registry and store as the API's creation: the API sees it, private
    meta = seeded.forge.api("GET", f"/api/v1/repos/ana/{name}", seeded.ana)
    assert meta.status_code == 200 and meta.data["private"] is True and meta.data["description"] == "Made in a browser"
    assert seeded.forge.api("GET", f"/api/v1/repos/ana/{name}", seeded.stranger).status_code == 404

    page.get_by_role("link", name="Settings").click()
    page.get_by_label("Description", exact=True).fill("Now public")
    page.get_by_label("Public").check()
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(re.compile(f"/ana/{name}/settings$"))  # post-redirect-get
    expect(page.get_by_role("status")).to_have_text("Saved.")
    page.reload()  # a GET: nothing is posted again, the message was shown once
    expect(page.get_by_role("status")).to_have_count(0)
    meta = seeded.forge.api("GET", f"/api/v1/repos/ana/{name}", seeded.stranger)
    assert meta.status_code == 200 and meta.data["description"] == "Now public"

    page.get_by_label("User").fill("stranger")
    page.get_by_label("Role", exact=True).select_option("writer")
    page.get_by_role("button", name="Add").click()
    expect(page.locator("table.members")).to_contain_text("stranger")

    page.get_by_label(f"Type {'ana/' + name} to confirm").fill("ana/wrong")
    page.get_by_role("button", name=f"Delete ana/{name}").click()
    expect(page.get_by_role("alert")).to_contain_text(f"ana/{name}")
    assert seeded.forge.api("GET", f"/api/v1/repos/ana/{name}", seeded.ana).status_code == 200  # kept
    page.get_by_label(f"Type {'ana/' + name} to confirm").fill(f"ana/{name}")
    page.get_by_role("button", name=f"Delete ana/{name}").click()
    expect(page).to_have_url(re.compile("/$"))
    expect(page.get_by_role("status")).to_have_text(f"Deleted ana/{name}.")
    assert seeded.forge.api("GET", f"/api/v1/repos/ana/{name}", seeded.ana).status_code == 404
    r = page.goto(f"/ana/{name}")
    assert r is not None and r.status == 404


def test_clone_command_and_session_id_copy(any_page: Any, seeded: Seeded) -> None:
    page, js = any_page, any_page.js
    sid = seeded.sessions["Add a spinner widget"]
    for path, box, text in ((f"/{PUBLIC}", "#clone-cmd", f"hif clone {seeded.forge.url}/{PUBLIC}"),
                            (f"/{PUBLIC}/sessions/{sid}", "#sid", sid)):
        page.goto(path)
        expect(page.locator("#clone-cmd")).to_have_text(f"hif clone {seeded.forge.url}/{PUBLIC}")
        button = page.locator(f"button.copy[data-copy='{box[1:]}']")
        if not js:  # no script to copy with: no button, and the text is there to select
            expect(button).to_be_hidden()
            continue
        button.click()
        expect(button).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == text
    for path in (f"/{PUBLIC}/sessions", f"/{PUBLIC}/blob/src/widgets/core.py", f"/{PUBLIC}/blame/README.md"):
        page.goto(path)  # every repository page
        expect(page.locator("#clone-cmd")).to_contain_text(f"hif clone {seeded.forge.url}/{PUBLIC}")


def test_line_links_ranges_and_permalink(any_page: Any, seeded: Seeded) -> None:
    page, js = any_page, any_page.js
    for view, table in (("blob", "#code"), ("blame", "#blame")):
        page.goto(f"/{PUBLIC}/{view}/src/widgets/core.py")
        head = seeded.forge.api("GET", f"/api/v1/repos/{PUBLIC}/head").data["position"]
        permalink = page.get_by_role("link", name="Permalink")
        expect(permalink).to_have_attribute("href", f"/{PUBLIC}/{view}/src/widgets/core.py?at={head}")
        page.locator(f"{table} #L3 td.ln a").click()
        expect(page).to_have_url(re.compile("#L3$"))
        expect(page.locator(f"{table} #L3 td.src")).to_have_css("background-color", re.compile(r"rgb\(255, 248, 197\)"))
        if not js:  # a plain link: one line, highlighted by :target
            continue
        page.locator(f"{table} #L6 td.ln a").click(modifiers=["Shift"])
        expect(page).to_have_url(re.compile("#L3-L6$"))
        expect(page.locator(f"{table} tr.sel")).to_have_count(4)
        expect(permalink).to_have_attribute("href", f"/{PUBLIC}/{view}/src/widgets/core.py?at={head}#L3-L6")
        # a range link opened afresh: highlighted, pinned to the position
        page.goto(f"/{PUBLIC}/{view}/src/widgets/core.py?at=1#L2-L4")
        expect(page.locator(f"{table} tr.sel")).to_have_count(3)
        expect(page.locator(f"{table} #L2.sel")).to_be_visible()


def test_reloading_after_creating_a_token_makes_no_second_one(any_page: Any, seeded: Seeded) -> None:
    page, js = any_page, any_page.js
    name = f"prg-{'js' if js else 'nojs'}"
    log_in(page, next_path="/account")
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create token").click()
    expect(page).to_have_url(re.compile("/account$"))
    secret = page.locator("#new-token").inner_text()
    assert secret.startswith("mcl_")
    page.reload()
    expect(page.locator("#new-token")).to_have_count(0)  # shown once, never in the URL
    assert secret not in page.url
    expect(page.locator("tr", has_text=name)).to_have_count(1)  # the reload made no second token


def test_favicon_and_named_landmarks(any_page: Any, seeded: Seeded) -> None:
    page = any_page
    for path in ("/", f"/{PUBLIC}", f"/{PUBLIC}/sessions", "/login"):
        page.goto(path)
        icon = page.locator("link[rel=icon]")
        expect(icon).to_have_attribute("type", "image/svg+xml")
        r = page.request.get(icon.get_attribute("href"))
        assert r.status == 200 and r.headers["content-type"].startswith("image/svg+xml") and b"<svg" in r.body()
        expect(page.get_by_role("banner")).to_have_count(1)
        expect(page.get_by_role("navigation", name="Site")).to_have_count(1)
        expect(page.get_by_role("main")).to_have_count(1)
        expect(page.get_by_role("contentinfo")).to_have_count(1)
    r = page.request.get("/favicon.ico")
    assert r.status == 200 and b"<svg" in r.body()

"""The web UI in a real browser: headless Chromium (Debian's) driven by Playwright against a seeded
``micelio serve`` on loopback."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect
from ui_seed import PASSWORD, PRIVATE, PUBLIC, Seeded


def log_in(page: Any, user: str = "ana", next_path: str = "/") -> None:
    page.goto(f"/login?next={next_path}")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name=user, exact=True)).to_be_visible()


def no_reload_marker(page: Any) -> None:
    """Set a variable that a full page load would wipe out."""
    page.evaluate("window.__still_here = 'yes'")


def assert_not_reloaded(page: Any) -> None:
    assert page.evaluate("window.__still_here") == "yes", "the page was reloaded"


def test_log_in_browse_tree_file_and_blame(page: Any, seeded: Seeded) -> None:
    page.goto("/login")
    page.get_by_label("User name").fill("ana")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong user name or password")
    log_in(page)
    # home: repositories (the private one too, ana is in acme) and recent landings
    repos = page.locator(".repo-list")
    expect(repos.get_by_role("link", name=PRIVATE)).to_be_visible()
    expect(page.locator(".recent")).to_contain_text("Fix the spinner's off-by-one")

    repos.get_by_role("link", name=PUBLIC).click()
    expect(page).to_have_url(re.compile(f"/{PUBLIC}$"))
    readme = page.locator("article.readme")
    expect(readme.locator("h1")).to_have_text("Widgets")  # Markdown rendered
    expect(readme).not_to_contain_text("<script>")  # raw HTML is sanitised, never escaped into text
    expect(readme.locator("script")).to_have_count(0)
    expect(page.locator("#open-h + ul")).to_contain_text("Document every widget")  # open right now

    # the tree, one directory at a time
    page.get_by_role("link", name="src/").click()
    page.get_by_role("link", name="widgets/").click()
    expect(page).to_have_url(re.compile(f"/{PUBLIC}/tree/src/widgets$"))
    page.get_by_role("link", name="core.py").click()
    expect(page).to_have_url(re.compile(f"/{PUBLIC}/blob/src/widgets/core.py$"))
    code = page.locator("#code")
    expect(code).to_contain_text("class Spinner(Widget):")
    expect(code.locator("span.k").first).to_have_text("class")  # highlighted by pygments
    expect(page.locator("aside.history li")).to_have_count(3)  # three sessions touched it

    # blame: each line links to the session that wrote it, its goal on hover
    page.get_by_role("link", name="Blame").click()
    row = page.locator("#blame tr", has_text="self.FRAMES[self.tick % len(self.FRAMES)]")
    link = row.locator("td.who a")
    expect(link).to_have_attribute("title", re.compile("^Fix the spinner's off-by-one"))
    first_line = page.locator("#L1 td.who a")
    expect(first_line).to_have_attribute("title", re.compile("^Create the widget library"))
    link.click()
    expect(page.get_by_role("heading", level=1, name="Fix the spinner's off-by-one")).to_be_visible()

    # older positions stay browsable
    page.goto(f"/{PUBLIC}/blob/src/widgets/core.py?at=1")
    expect(page.locator("#code")).not_to_contain_text("Spinner")


def test_sessions_list_filters_in_place(page: Any, seeded: Seeded) -> None:
    page.goto(f"/{PUBLIC}/sessions")
    rows = page.locator("#results .session-row")
    expect(rows).to_have_count(4)  # three landed, one open
    no_reload_marker(page)

    page.get_by_label("Role").select_option("agent")
    expect(rows).to_have_count(2)
    expect(page.locator("#results")).to_contain_text("Add a spinner widget")
    expect(page.locator("#results")).to_contain_text("Document every widget")
    assert_not_reloaded(page)
    expect(page).to_have_url(re.compile(r"role=agent"))  # the filters stay in the address

    page.get_by_label("Role").select_option("")
    page.get_by_label("State").select_option("landed")
    page.get_by_label("Search goals, conversation and decisions").fill("curses")  # a rejected alternative
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Create the widget library")
    page.get_by_label("Search goals, conversation and decisions").fill("")
    page.get_by_label("Path").fill("docs")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Add a spinner widget")
    page.get_by_label("Author").fill("nobody")
    expect(page.locator("#results")).to_contain_text("No landed session matches")
    assert_not_reloaded(page)


def test_session_page_conversation_decisions_and_diffs(page: Any, seeded: Seeded) -> None:
    sid = seeded.sessions["Add a spinner widget"]
    page.goto(f"/{PUBLIC}/sessions/{sid}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Add a spinner widget")
    timeline = page.locator("#timeline")
    human = timeline.locator(".ev-say.role-human")
    expect(human).to_contain_text("Start on the second frame, please")
    expect(human.locator(".author")).to_have_text("ana")
    expect(timeline.locator(".ev-say.role-agent .author").first).to_have_text("claude")
    decisions = page.locator("#decisions")
    expect(decisions).to_contain_text("Offset the frame index by one")
    expect(decisions).to_contain_text("the human asked to start on the second frame")
    expect(decisions.locator(".rejected li")).to_have_text("a configurable start frame")
    landing = page.locator(".landing")  # position, and this node's signature, checked
    expect(landing).to_contain_text("#2")
    expect(landing.locator(".badge.verified")).to_have_text("verified")
    expect(landing).to_contain_text(f"signed by {seeded.forge.url}/ap/node#main-key")

    changes = page.locator("#changes")
    expect(changes.locator(".diff-head h3")).to_have_text(["docs/guide.md", "src/widgets/core.py"])
    expect(changes.locator("table.unified tr.add").first).to_be_visible()
    changes.get_by_role("link", name="Side by side").click()
    expect(page.locator("#changes table.split")).to_have_count(2)

    # the diff between the two iterations: only the frame offset changed in core.py
    page.locator("#iterations").get_by_role("link", name="diff with 1").click()
    it = page.locator("#iterations")
    expect(it.get_by_role("heading", name="From iteration 1 to iteration 2")).to_be_visible()
    expect(it.locator("td.src.add").filter(has_text="+ 1]")).to_have_count(1)


def test_open_session_receives_events_live(page: Any, seeded: Seeded) -> None:
    sid = seeded.open_session
    page.goto(f"/{PUBLIC}/sessions/{sid}")
    expect(page.locator("#timeline .ev-say")).to_have_count(1)
    no_reload_marker(page)
    r = seeded.forge.api("POST", f"/api/v1/repos/{PUBLIC}/sessions/{sid}/events", seeded.ana, {"events": [
        {"type": "say", "text": "Live from the test: the docstrings are done.", "role": "agent", "author": "claude"},
        {"type": "decide", "decision": "One docstring per widget", "why": "short and findable",
         "alternatives": ["a separate manual"], "role": "agent", "author": "claude"},
    ]})
    assert r.status_code == 200, r.data
    expect(page.locator("#timeline")).to_contain_text("Live from the test", timeout=10_000)
    expect(page.locator("#timeline .ev-decide")).to_contain_text("One docstring per widget")
    assert_not_reloaded(page)
    expect(page.locator("#timeline .event")).to_have_count(4)  # start, say, say, decide: no duplicates


def test_create_and_revoke_a_token(page: Any, seeded: Seeded) -> None:
    log_in(page, next_path="/account")
    expect(page).to_have_url(re.compile("/account$"))
    page.get_by_label("Name").fill("browser-made")
    page.get_by_label("Scope").select_option("read")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token").inner_text()
    assert secret.startswith("mcl_")
    who = seeded.forge.api("GET", "/api/v1/whoami", secret)
    assert who.status_code == 200 and who.data["user"] == "ana" and who.data["scope"] == "read"

    row = page.locator("tr", has_text="browser-made")
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator("tr", has_text="browser-made")).to_contain_text("revoked")
    assert seeded.forge.api("GET", "/api/v1/whoami", secret).status_code == 401


def test_private_repository_is_a_404_for_a_stranger(page: Any, seeded: Seeded) -> None:
    r = page.goto(f"/{PRIVATE}")
    assert r is not None and r.status == 404  # anonymous
    log_in(page, "stranger")
    expect(page.get_by_role("link", name=PRIVATE)).to_have_count(0)
    for path in (f"/{PRIVATE}", f"/{PRIVATE}/blob/plan.md", f"/{PRIVATE}/sessions", "/acme/missing"):
        r = page.goto(path)
        assert r is not None and r.status == 404, path
        expect(page.get_by_role("heading", level=1)).to_contain_text("Not found")
    page.goto(f"/{PUBLIC}/settings")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Not allowed")


def test_phone_width_and_keyboard(browser: Any, seeded: Seeded) -> None:
    """Readable at 390 px (nothing wider than the screen but scrolling code), and the first Tab
    reaches the skip link."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=seeded.forge.url)
    page = context.new_page()
    try:
        for path in ("/", f"/{PUBLIC}", f"/{PUBLIC}/sessions", f"/{PUBLIC}/sessions/{seeded.sessions['Add a spinner widget']}"):
            page.goto(path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    finally:
        context.close()


def test_everything_works_without_javascript(browser: Any, seeded: Seeded) -> None:
    """Filters submit as a plain form, "older sessions" is a link, forms post normally."""
    context = browser.new_context(java_script_enabled=False, base_url=seeded.forge.url)
    page = context.new_page()
    try:
        log_in(page)
        page.goto(f"/{PUBLIC}/sessions")
        page.get_by_label("Role").select_option("human")
        page.get_by_label("State").select_option("landed")
        page.get_by_role("button", name="Filter").click()
        expect(page).to_have_url(re.compile(r"role=human"))
        rows = page.locator("#results .session-row")
        expect(rows).to_have_count(2)
        expect(rows.first).to_contain_text("Fix the spinner's off-by-one")
        sid = seeded.sessions["Add a spinner widget"]
        page.goto(f"/{PUBLIC}/sessions/{sid}")
        page.get_by_label("Compare iteration").select_option("0")
        page.get_by_label("with").select_option("2")
        page.get_by_role("button", name="Compare").click()
        expect(page.get_by_role("heading", name="From iteration 0 to iteration 2")).to_be_visible()
    finally:
        context.close()


def background(page: Any, selector: str = "body") -> str:
    return page.evaluate(f"getComputedStyle(document.querySelector('{selector}')).backgroundColor")


def test_themes_follow_the_system_setting(browser: Any, seeded: Seeded) -> None:
    """The same page in a light and a dark system theme: page and code colours both switch."""
    seen = {}
    for scheme in ("light", "dark"):
        context = browser.new_context(color_scheme=scheme, base_url=seeded.forge.url)
        page = context.new_page()
        try:
            page.goto(f"/{PUBLIC}/blob/src/widgets/core.py")
            keyword = page.locator("#code span.k").first
            seen[scheme] = (background(page), page.evaluate("getComputedStyle(document.body).color"),
                            keyword.evaluate("e => getComputedStyle(e).color"))
        finally:
            context.close()
    assert seen["light"][0] == "rgb(255, 255, 255)" and seen["dark"][0] == "rgb(13, 17, 23)", seen
    assert all(a != b for a, b in zip(seen["light"], seen["dark"], strict=True)), seen


def test_wide_screen_keeps_a_readable_column(browser: Any, seeded: Seeded) -> None:
    context = browser.new_context(viewport={"width": 2560, "height": 1440}, base_url=seeded.forge.url)
    page = context.new_page()
    try:
        for path in ("/", f"/{PUBLIC}", f"/{PUBLIC}/sessions/{seeded.sessions['Add a spinner widget']}"):
            page.goto(path)
            box = page.locator("main").bounding_box()
            assert box is not None and box["width"] <= 1280 and box["x"] > 500, (path, box)  # centred
            assert page.evaluate("document.documentElement.scrollWidth") <= 2560, path
    finally:
        context.close()


def test_sessions_filter_by_keyboard_only(page: Any, seeded: Seeded) -> None:
    """Tab reaches the filters with a visible focus ring; typing and Enter filter the list."""
    page.goto(f"/{PUBLIC}/sessions")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.labels?.[0]?.textContent ?? ''").strip() == "Author":
            break
    else:
        raise AssertionError("Tab never reached the Author filter")
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.keyboard.type("ana")
    page.keyboard.press("Enter")
    rows = page.locator("#results .session-row")
    expect(rows).to_have_count(2)  # the two sessions ana started and landed
    expect(page.locator("#results")).not_to_contain_text("Add a spinner widget")


def test_search_from_the_box_on_every_page(page: Any, seeded: Seeded) -> None:
    """The header's box leads to the search page; typing there updates the results in place;
    a facet narrows them; a result opens the session at the matching event."""
    page.goto(f"/{PUBLIC}/sessions")
    page.get_by_label("Search sessions and repositories").fill("curses")
    page.get_by_label("Search sessions and repositories").press("Enter")
    expect(page).to_have_url(re.compile(r"/search\?q=curses"))
    results = page.locator("#search-results .hit")
    expect(results).to_have_count(1)
    expect(results.first.locator("mark")).to_have_text("curses")
    no_reload_marker(page)
    box = page.get_by_label(re.compile("^Sessions whose goal"))
    box.fill("spinner")
    expect(page.locator("#search-results")).to_contain_text("Add a spinner widget")
    expect(page).to_have_url(re.compile(r"q=spinner"))
    assert_not_reloaded(page)
    page.locator(".facets a", has_text="claude").first.click()
    expect(page).to_have_url(re.compile(r"author=claude"))
    expect(page.locator("#search-results")).not_to_contain_text("Fix the spinner")
    page.locator("#search-results .hit a.goal").first.click()
    expect(page).to_have_url(re.compile(r"/sessions/[a-z2-7]{16}#e\d+$"))
    anchor = page.url.rsplit("#", 1)[1]
    expect(page.locator(f"#{anchor}")).to_be_visible()


def test_search_works_without_javascript(browser: Any, seeded: Seeded) -> None:
    """A plain GET form: the box, the kind of text, the Search button, paging and asking the
    followed nodes are links and submissions."""
    context = browser.new_context(java_script_enabled=False, base_url=seeded.forge.url)
    page = context.new_page()
    try:
        page.goto("/")
        page.get_by_label("Search sessions and repositories").fill("frame")
        page.get_by_label("Search sessions and repositories").press("Enter")
        expect(page).to_have_url(re.compile(r"/search\?q=frame"))
        expect(page.locator("#search-results .hit").first).to_be_visible()
        page.get_by_label("In", exact=True).select_option("rejected")
        page.get_by_role("button", name="Search").click()
        expect(page).to_have_url(re.compile(r"kind=rejected"))
        hits = page.locator("#search-results .hit")
        expect(hits).to_have_count(1)
        expect(hits.first).to_contain_text("a configurable start frame")
        page.get_by_role("link", name="Ask the nodes this node follows").click()
        expect(page).to_have_url(re.compile(r"remote=1"))
        expect(page.locator("#peers")).to_contain_text("On the nodes this node follows")
        expect(page.locator("#search-results .hit")).to_have_count(1)  # the local results stay
    finally:
        context.close()

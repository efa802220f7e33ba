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
from ui_seed import IMPORTED, PUBLIC, Client, Seeded, landed_session, write


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
    # a raw file opened on its own is sandboxed: the browser says it blocked its scripts, as it must
    pg.on("console", lambda m: errors.append(m.text)
          if m.type == "error" and "Failed to load resource" not in m.text and "/raw/" not in m.text else None)
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


def test_imported_commit_id_is_a_permalink_with_a_copy_button(any_page: Any, seeded: Seeded) -> None:
    """Basic 8: the git commit id on an imported landing's page links to ``/commit/<id>``, which
    (like any short id typed into the address bar) comes back to that landing; an iteration's
    commit goes to its iteration; the id can be copied."""
    page, js = any_page, any_page.js
    sha, side = seeded.commits["Merge the notes"], seeded.commits["Extend the notes"]
    session_url = f"{seeded.forge.url}/{IMPORTED}/sessions/{landed_session(seeded, IMPORTED, 3)}"
    page.goto(f"/{IMPORTED}/commit/{sha[:7].upper()}")
    expect(page).to_have_url(session_url)
    link = page.locator("dl.landing a.commit-id")
    expect(link).to_have_text(sha)
    expect(page.locator(".export-same")).to_have_text("hif export git writes this landing back as this same commit")
    link.click()
    expect(page).to_have_url(session_url)
    expect(page.locator("#goal")).to_have_text("Merge the notes")
    page.get_by_role("link", name=side[:12]).click()
    expect(page).to_have_url(session_url + "#iteration-2")
    expect(page.locator("#iteration-2")).to_contain_text("Extend the notes")
    button = page.locator("button.copy[data-copy='git-commit']")
    if not js:
        expect(button).to_be_hidden()
        return
    button.click()
    expect(button).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == sha


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


def test_compare_two_positions(any_page: Any, seeded: Seeded) -> None:
    page = any_page
    page.goto(f"/{PUBLIC}")
    page.get_by_label("Compare position").fill("1")
    page.get_by_label("with").fill("3")
    page.get_by_role("button", name="Compare").click()
    expect(page).to_have_url(re.compile(rf"/{PUBLIC}/compare/1\.\.\.3$"))
    first, second, third = (seeded.sessions[g] for g in ("Create the widget library", "Add a spinner widget",
                                                        "Fix the spinner's off-by-one"))
    for url in (page.url, f"/{PUBLIC}/compare/{first}...{third}", f"/{PUBLIC}/compare/1...{third}"):
        page.goto(url)
        goals = page.locator(".session-row .goal")
        expect(goals).to_have_text(["Fix the spinner's off-by-one", "Add a spinner widget"])
        diffs = page.locator("#changes section.diff")
        expect(diffs.locator("h3")).to_have_text(["docs/guide.md", "src/widgets/core.py"])
        core = diffs.filter(has_text="src/widgets/core.py")
        expect(core.locator("tr.add")).to_contain_text(["class Spinner(Widget):"])
        expect(core.locator("tr.del")).to_have_count(0)  # the off-by-one came and went in between
    page.goto(f"/{PUBLIC}/compare/{second}...{second}")
    expect(page.locator("#changes")).to_contain_text("The two positions hold the same files.")
    for bad in ("9...1", "x...1", "1..3", "１...3", f"{seeded.open_session}...1"):
        r = page.goto(f"/{PUBLIC}/compare/{bad}")
        assert r is not None and r.status == 404, bad


def make_docs_repo(seeded: Seeded, name: str) -> None:
    """A repository with Markdown holding hostile raw HTML, relative links and images."""
    assert seeded.forge.api("POST", "/api/v1/repos", seeded.ana, {"name": name}).status_code == 201
    c = Client(seeded.forge, seeded.ana, name)
    sid = c.start("Docs with pictures")
    files = {"README.md": README_MD.encode(), "docs/guide.md": GUIDE_MD.encode(), "img/logo.png": PNG, "img/evil.svg": EVIL_SVG,
             "img/fake.png": b"<html><script>document.title='ran'</script></html>"}
    c.events(sid, *(write(p, c.put(data), "human", "ana") for p, data in files.items()))
    c.land(sid)


PNG = bytes.fromhex(  # a 2x2 red PNG
    "89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a73000000164944415478"
    "9c63f8cfc0f09f81e13f03c37f0686ff0c00370e06fe4ec3fea80000000049454e44ae426082")
EVIL_SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" onload="document.documentElement'
            b'.setAttribute(\'data-ran\', \'onload\')"><script>document.documentElement.setAttribute(\'data-ran\', '
            b'\'script\')</script><rect width="10" height="10" fill="blue"/></svg>')
HOSTILE = [  # raw HTML that must not act, each spelled differently
    '<script>document.title = "pwned"</script>',
    '<img src="img/logo.png" alt="logo-html" onerror="document.title=\'pwned\'">',
    '<a href="javascript:document.title=\'pwned\'">js link</a>',
    '<a href="JaVaScRiPt:alert(1)">mixed case</a>',
    '<a href="data:text/html,<script>alert(1)</script>">data link</a>',
    '<iframe src="https://example.com"></iframe>',
    '<svg><script>alert(1)</script></svg>',
    '<form action="https://example.com"><input name="q"><button>go</button></form>',
    '<div style="position:fixed;top:0;left:0;width:100%;height:100%">overlay</div>',
    '<style>body { display: none }</style>',
    '<object data="x.swf"></object><embed src="x.swf">',
    '<p onclick="alert(1)" onmouseover="alert(1)">handlers</p>',
    '<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style></mglyph></table></mtext></math>',
    '<base href="https://evil.example/">',
    '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
]
README_MD = ("# Docs demo\n\nSee the [guide](docs/guide.md) and ![logo](img/logo.png).\n\n"
             "<details><summary>More</summary><p>Hidden <b>details</b></p></details>\n\n"
             + "\n\n".join(HOSTILE) + "\n")
GUIDE_MD = ("# Guide\n\n![up](../img/logo.png) [back](../README.md) [escape](../../../etc/passwd)\n\n"
            "![remote](https://tracker.example/pixel.png)\n")


def test_markdown_raw_html_through_an_allow_list_and_images(any_page: Any, seeded: Seeded) -> None:
    page, js = any_page, any_page.js
    name = f"ana/docs-{'js' if js else 'nojs'}"
    make_docs_repo(seeded, name)
    page.goto(f"/{name}")
    readme = page.locator("article.readme")
    expect(readme.locator("h1")).to_have_text("Docs demo")
    expect(readme.locator("details summary")).to_have_text("More")  # allowed raw HTML is HTML
    expect(readme.locator("details b")).to_have_text("details")
    text = readme.inner_text()
    for needle in ("<script", "<iframe", "<details", "onerror", "&lt;", "javascript:"):
        assert needle not in text, needle  # never escaped into the page as text
    for selector in ("script", "iframe", "form", "input", "style", "object", "embed", "base", "meta",
                     "[onerror]", "[onclick]", "[onmouseover]", "[onload]", "[style]",
                     "a[href^='javascript' i]", "a[href^='data' i]"):
        expect(readme.locator(selector)).to_have_count(0)
    assert page.title() != "pwned"
    logo = readme.get_by_role("img", name="logo", exact=True)
    expect(logo).to_have_attribute("src", f"/{name}/raw/img/logo.png")
    page.wait_for_function("img => img.complete && img.naturalWidth === 2", arg=logo.element_handle())
    readme.get_by_role("link", name="guide").click()
    expect(page).to_have_url(re.compile(f"/{name}/blob/docs/guide.md$"))
    guide = page.locator(".file .markdown")
    expect(guide.locator("h1")).to_have_text("Guide")
    expect(guide.get_by_role("img", name="up")).to_have_attribute("src", f"/{name}/raw/img/logo.png")
    expect(guide.get_by_role("link", name="back")).to_have_attribute("href", f"/{name}/blob/README.md")
    expect(guide.locator("a", has_text="escape")).not_to_have_attribute("href", re.compile("."))
    expect(guide.locator("img[alt=remote]")).not_to_have_attribute("src", re.compile("."))
    page.get_by_role("link", name="Source").click()
    expect(page.locator("#code")).to_contain_text("![up](../img/logo.png)")

    page.goto(f"/{name}/blob/img/logo.png")  # an image is previewed
    preview = page.locator(".image-preview img")
    page.wait_for_function("img => img.complete && img.naturalWidth === 2", arg=preview.element_handle())
    page.goto(f"/{name}/blob/img/evil.svg")
    expect(page.locator(".image-preview img")).to_have_attribute("src", f"/{name}/raw/img/evil.svg")
    # opened on its own, the SVG is an image whose scripts never run
    r = page.goto(f"/{name}/raw/img/evil.svg")
    assert r is not None and r.headers["content-type"] == "image/svg+xml"
    assert "sandbox" in r.headers["content-security-policy"] and r.headers["x-content-type-options"] == "nosniff"
    assert page.evaluate("document.documentElement.getAttribute('data-ran')") is None
    r = page.goto(f"/{name}/raw/img/fake.png")  # HTML named .png: an image, never a page
    assert r is not None and r.headers["content-type"] == "image/png"
    assert page.title() != "ran"


def test_download_an_archive_of_a_position(any_page: Any, seeded: Seeded) -> None:
    page = any_page
    page.goto(f"/{PUBLIC}?at=2")
    for link, filename in ((".zip", "widgets-2.zip"), (".tar.gz", "widgets-2.tar.gz")):
        with page.expect_download() as info:
            page.get_by_role("link", name=link, exact=True).click()
        assert info.value.suggested_filename == filename
        assert info.value.failure() is None


def test_new_pages_fit_a_phone(browser: Any, seeded: Seeded) -> None:
    """The pages these basics add are no wider than a 390 px screen (code scrolls in its box)."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=seeded.forge.url)
    page = context.new_page()
    try:
        log_in(page)
        sid = seeded.sessions["Add a spinner widget"]
        for path in ("/new", f"/{PUBLIC}", f"/{PUBLIC}/settings", f"/{PUBLIC}/compare/0...3",
                     f"/{PUBLIC}/compare/1...3?view=split", f"/{PUBLIC}/blob/docs/guide.md",
                     f"/{PUBLIC}/blob/src/widgets/core.py#L3-L5", f"/{PUBLIC}/sessions/{sid}",
                     f"/{PUBLIC}/sessions/{seeded.open_session}/offer"):
            r = page.goto(path)
            assert r is not None and r.status == 200, path
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
    finally:
        context.close()

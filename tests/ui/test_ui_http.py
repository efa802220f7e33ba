"""The web UI over plain HTTP (no JavaScript): status codes, error pages, CSRF, cookies shared by
replicas, private repositories, big directories and files, and htmx's partial answers."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from ui_seed import BIG, BIG_DIR_ENTRIES, PASSWORD, PRIVATE, PUBLIC, Seeded

HTML = "text/html; charset=utf-8"


def get(seeded: Seeded, path: str, client: httpx.Client | None = None, **kw: object) -> httpx.Response:
    if client is not None:
        return client.get(path, **kw)  # type: ignore[arg-type]
    return httpx.get(seeded.forge.url + path, timeout=60, **kw)  # type: ignore[arg-type]


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, "no CSRF field in the page"
    return m.group(1)


def logged_in(seeded: Seeded, user: str = "ana", url: str | None = None) -> httpx.Client:
    c = httpx.Client(base_url=url or seeded.forge.url, timeout=60)
    token = csrf_of(c.get("/login").text)
    r = c.post("/login", data={"user": user, "password": PASSWORD, "csrf": token, "next": "/account"})
    assert r.status_code == 302 and r.headers["location"] == "/account", r.text
    return c


def test_pages_render_without_javascript(seeded: Seeded) -> None:
    sid = seeded.sessions["Add a spinner widget"]
    expectations = {
        "/": ["acme/widgets", "Recent landings", "Fix the spinner&#39;s off-by-one"],
        f"/{PUBLIC}": ["<h1>Widgets</h1>", "Document every widget", "Latest landings"],
        f"/{PUBLIC}/tree/src/widgets": ["core.py", "__init__.py"],
        f"/{PUBLIC}/blob/src/widgets/core.py": ['<span class="k">class</span>', "Sessions that touched it"],
        f"/{PUBLIC}/blame/src/widgets/core.py": ['title="Create the widget library', "#1"],
        f"/{PUBLIC}/sessions": ["Create the widget library", "Document every widget", 'name="role"'],
        f"/{PUBLIC}/sessions/{sid}": ["Start on the second frame", "Offset the frame index by one",
                                      "a configurable start frame", 'class="badge verified"',
                                      f"signed by {seeded.forge.url}/ap/node#main-key", 'class="diff"'],
        f"/{PUBLIC}/sessions/{sid}?view=split&a=1&b=2": ["table class=\"code hl split\"", "From iteration 1"],
        "/search?q=widgets": ["acme/widgets"],
        "/orgs/acme": ["acme/widgets"],
        "/login": ['name="csrf"'],
    }
    for path, needles in expectations.items():
        r = get(seeded, path)
        assert r.status_code == 200 and r.headers["content-type"] == HTML, (path, r.status_code)
        for needle in needles:
            assert needle in r.text, (path, needle)
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    # filters are plain query parameters: a link or a form without JavaScript works
    r = get(seeded, f"/{PUBLIC}/sessions?role=agent&state=landed")
    assert "Add a spinner widget" in r.text and "Create the widget library" not in r.text
    assert "Document every widget" not in r.text
    r = get(seeded, f"/{PUBLIC}/sessions?state=open")
    assert "Document every widget" in r.text and "Add a spinner widget" not in r.text
    # the position picker: the tree at position 1 has no docs/ yet
    assert "docs/" in get(seeded, f"/{PUBLIC}").text
    assert "docs/" not in get(seeded, f"/{PUBLIC}?at=1").text
    raw = get(seeded, f"/{PUBLIC}/raw/src/widgets/core.py")
    assert raw.headers["content-type"].startswith("text/plain") and "sandbox" in raw.headers["content-security-policy"]
    assert raw.text.startswith('"""Widgets')


def test_errors_are_pages_with_their_status(seeded: Seeded) -> None:
    cases = {
        "/acme/nothing": 404,
        f"/{PUBLIC}/blob/no/such/file.py": 404,
        f"/{PUBLIC}/tree/src/widgets/core.py/deeper": 404,
        f"/{PUBLIC}?at=999": 404,
        f"/{PUBLIC}?at=minus": 400,
        f"/{PUBLIC}/sessions?role=robot": 400,
        f"/{PUBLIC}/sessions/notasessionid": 404,
        f"/{PUBLIC}/sessions/{'a' * 16}": 404,
        f"/{PUBLIC}/sessions/{seeded.sessions['Add a spinner widget']}?a=0&b=9": 404,
        "/a/b/c/d/e/f": 404,
        "/orgs/nobody": 404,
        "/account": 302,  # to the login page
    }
    for path, status in cases.items():
        r = get(seeded, path)
        assert r.status_code == status, (path, r.status_code)
        if status >= 400:
            assert r.headers["content-type"] == HTML, path
            assert "Traceback" not in r.text and "<h1>" in r.text, path
    r = httpx.post(seeded.forge.url + f"/{PUBLIC}", timeout=30)
    assert r.status_code == 405 and r.headers["content-type"] == HTML
    # the API keeps its CBOR errors
    r = httpx.get(seeded.forge.url + "/api/v1/repos/acme/nothing/head", timeout=30)
    assert r.status_code == 401 and r.headers["content-type"] == "application/cbor"
    r = httpx.get(seeded.forge.url + "/api/v1/nothing/here", timeout=30)
    assert r.status_code == 404 and r.headers["content-type"] == "application/cbor"
    assert "set-cookie" not in r.headers


def test_login_cookie_csrf_and_replicas(seeded: Seeded) -> None:
    c = httpx.Client(base_url=seeded.forge.url, timeout=60)
    page = c.get("/login")
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    # no token, a wrong token, or a token from another browser session: refused, nothing happens
    for data in ({"user": "ana", "password": PASSWORD},
                 {"user": "ana", "password": PASSWORD, "csrf": "forged"}):
        r = c.post("/login", data=data)
        assert r.status_code == 403 and r.headers["content-type"] == HTML
    other = httpx.Client(base_url=seeded.forge.url, timeout=60)
    r = other.post("/login", data={"user": "ana", "password": PASSWORD, "csrf": csrf_of(page.text)})
    assert r.status_code == 403
    r = c.post("/login", data={"user": "ana", "password": "nope", "csrf": csrf_of(page.text)})
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    r = c.post("/login", data={"user": "ana", "password": PASSWORD, "csrf": csrf_of(page.text),
                               "next": "//evil.example/"})
    assert r.status_code == 302 and r.headers["location"] == "/"  # no open redirect

    account = c.get("/account")
    assert account.status_code == 200 and "API tokens" in account.text
    before = len(seeded.forge.api("GET", "/api/v1/tokens", seeded.ana).data["tokens"])
    r = c.post("/account/tokens", data={"name": "no-csrf", "scope": "read"})
    assert r.status_code == 403
    assert len(seeded.forge.api("GET", "/api/v1/tokens", seeded.ana).data["tokens"]) == before

    # the cookie is signed with a key in the store: another replica accepts it
    second = seeded.forge.start_replica()
    r = httpx.get(second + "/account", cookies=c.cookies, timeout=30)
    assert r.status_code == 200 and "API tokens" in r.text
    # a tampered cookie is nobody
    name, value = next(iter(c.cookies.items()))
    r = httpx.get(seeded.forge.url + "/account", cookies={name: value[:-3] + "abc"}, timeout=30)
    assert r.status_code == 302

    token = csrf_of(c.get("/account").text)
    assert c.post("/logout", data={"csrf": token}).status_code == 302
    assert c.get("/account").status_code == 302


def test_private_repository_is_invisible(seeded: Seeded) -> None:
    stranger = logged_in(seeded, "stranger")
    open_sid = seeded.open_session
    paths = [f"/{PRIVATE}", f"/{PRIVATE}/tree/x", f"/{PRIVATE}/blob/plan.md", f"/{PRIVATE}/blame/plan.md",
             f"/{PRIVATE}/raw/plan.md", f"/{PRIVATE}/sessions", f"/{PRIVATE}/sessions/{open_sid}",
             f"/{PRIVATE}/sessions/{open_sid}/events", f"/{PRIVATE}/settings"]
    missing = [p.replace(PRIVATE, "acme/missing") for p in paths]
    for client in (None, stranger):
        for path in paths + missing:
            r = get(seeded, path, client)
            assert r.status_code == 404, (path, r.status_code)
            assert "World domination" not in r.text and "secret plan" not in r.text
        home = get(seeded, "/", client).text
        assert PRIVATE not in home and "Write the secret plan" not in home
        assert PRIVATE not in get(seeded, "/search?q=secret", client).text
    ana = logged_in(seeded)
    assert "World domination" in ana.get(f"/{PRIVATE}/blob/plan.md").text
    assert PRIVATE in ana.get("/").text
    # a reader of a public repository cannot open its settings
    assert stranger.get(f"/{PUBLIC}/settings").status_code == 403


def test_settings_and_organisation_members(seeded: Seeded) -> None:
    ana = logged_in(seeded)
    page = ana.get(f"/{PUBLIC}/settings")
    assert page.status_code == 200 and "Add a member" in page.text
    r = ana.post(f"/{PUBLIC}/settings/members", data={"user": "stranger", "role": "writer", "csrf": csrf_of(page.text)})
    assert r.status_code == 302
    r = seeded.forge.api("POST", f"/api/v1/repos/{PUBLIC}/sessions", seeded.stranger, {"goal": "now I may"})
    assert r.status_code == 201
    page = ana.get(f"/{PUBLIC}/settings")
    assert "stranger" in page.text
    r = ana.post(f"/{PUBLIC}/settings/members", data={"user": "nobody", "role": "writer", "csrf": csrf_of(page.text)})
    assert r.status_code == 400 and "no user nobody" in r.text
    r = ana.post(f"/{PUBLIC}/settings/members/stranger/remove", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 302
    r = seeded.forge.api("POST", f"/api/v1/repos/{PUBLIC}/sessions", seeded.stranger, {"goal": "not any more"})
    assert r.status_code == 403
    abandoned = seeded.forge.api("GET", f"/api/v1/repos/{PUBLIC}/sessions", seeded.ana).data["sessions"]
    for s in abandoned:
        if s["goal"] == "now I may":
            seeded.forge.api("POST", f"/api/v1/repos/{PUBLIC}/sessions/{s['id']}/abandon", seeded.ana, {})

    org = ana.get("/orgs/acme")
    assert "Add a member" in org.text and "ana" in org.text
    r = ana.post("/orgs/acme/members", data={"user": "stranger", "role": "reader", "csrf": csrf_of(org.text)})
    assert r.status_code == 302
    stranger = logged_in(seeded, "stranger")
    assert stranger.get(f"/{PRIVATE}").status_code == 200  # an org reader reads the private repository
    assert "Add a member" not in stranger.get("/orgs/acme").text
    r = stranger.post("/orgs/acme/members", data={"user": "stranger", "role": "owner",
                                                  "csrf": csrf_of(stranger.get("/account").text)})
    assert r.status_code == 404
    r = ana.post("/orgs/acme/members/stranger/remove", data={"csrf": csrf_of(org.text)})
    assert r.status_code == 302
    assert stranger.get(f"/{PRIVATE}").status_code == 404


def test_live_events_partial(seeded: Seeded) -> None:
    c = seeded.forge
    sid = c.api("POST", f"/api/v1/repos/{PUBLIC}/sessions", seeded.ana, {"goal": "Polled"}).data["id"]
    url = f"/{PUBLIC}/sessions/{sid}/events"
    htmx = {"HX-Request": "true"}
    r = get(seeded, url + "?since=0", headers=htmx)
    assert r.status_code == 204  # nothing new: htmx keeps the poller as it is
    c.api("POST", f"/api/v1/repos/{PUBLIC}/sessions/{sid}/events", seeded.ana,
          {"events": [{"type": "say", "text": "first news", "role": "human"}]})
    r = get(seeded, url + "?since=0", headers=htmx)
    assert r.status_code == 200 and "first news" in r.text and "<html" not in r.text
    assert 'hx-get="/acme/widgets/sessions/' + sid + '/events?since=1"' in r.text  # the next poller
    assert "first news" not in get(seeded, url + "?since=1", headers=htmx).text
    c.api("POST", f"/api/v1/repos/{PUBLIC}/sessions/{sid}/abandon", seeded.ana, {"reason": "done testing"})
    r = get(seeded, url + "?since=1", headers=htmx)
    assert "was abandoned" in r.text and 'id="poller"' not in r.text and "every 2s" not in r.text  # polling stops
    assert 'hx-trigger="load"' in r.text and "hx-select-oob" in r.text  # the page's parts, refreshed once
    page = get(seeded, f"/{PUBLIC}/sessions/{sid}")
    assert "Abandoned: done testing" in page.text and 'id="poller"' not in page.text


def test_sessions_list_partials_and_paging(seeded: Seeded) -> None:
    r = get(seeded, f"/{PUBLIC}/sessions?role=agent", headers={"HX-Request": "true", "HX-Target": "results"})
    assert r.status_code == 200 and r.text.lstrip().startswith('<div id="results"')
    assert "Add a spinner widget" in r.text and "<html" not in r.text
    r = get(seeded, f"/{BIG}/sessions?author=nobody")
    assert "No landed session matches" in r.text
    r = get(seeded, f"/{PUBLIC}/sessions?before=2&state=landed")
    assert "Create the widget library" in r.text and "Add a spinner widget" not in r.text


@pytest.mark.slow
def test_big_directory_and_big_file(seeded: Seeded) -> None:
    started = time.monotonic()
    r = get(seeded, f"/{BIG}/tree/many")
    assert r.status_code == 200
    assert r.text.count('class="file"') == BIG_DIR_ENTRIES
    assert "file09999.py" in r.text
    tree_seconds = time.monotonic() - started

    started = time.monotonic()
    r = get(seeded, f"/{BIG}/blob/big.py")
    assert r.status_code == 200
    assert "function_0(" in r.text and 'id="L1"' in r.text
    assert "without syntax highlighting" in r.text  # a 1 MB file is shown plain, in one request
    last_line = seeded.big_file_bytes and r.text.count('<tr id="L')
    assert last_line > 30_000
    file_seconds = time.monotonic() - started
    assert len(get(seeded, f"/{BIG}/raw/big.py").content) == seeded.big_file_bytes
    r = get(seeded, f"/{BIG}/blame/big.py")
    assert r.status_code == 200 and "Blame is shown for files up to" in r.text
    assert tree_seconds < 10 and file_seconds < 10, (tree_seconds, file_seconds)


def test_admins_import_a_git_repository_from_the_ui(seeded: Seeded, tmp_path: Path) -> None:
    src = tmp_path / "src"
    env = {"GIT_AUTHOR_NAME": "Ann", "GIT_AUTHOR_EMAIL": "ann@example.org", "GIT_COMMITTER_NAME": "Ann",
           "GIT_COMMITTER_EMAIL": "ann@example.org", "HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    subprocess.run(["git", "init", "-q", "-b", "main", str(src)], check=True, env=env)
    (src / "notes.txt").write_text("imported from git\n")
    subprocess.run(["git", "add", "-A"], cwd=src, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", "First notes\n\nBecause we needed them."], cwd=src,
                   check=True, env=env)
    assert get(seeded, "/import", logged_in(seeded)).status_code == 404  # ana is no site admin
    seeded.forge.micelio("admin", "user", "create", "root", "--admin", "--password-stdin",
                         input=PASSWORD + "\n")
    c = logged_in(seeded, "root")
    page = c.get("/import")
    assert page.status_code == 200 and "Import a git repository" in page.text
    bad = c.post("/import", data={"name": "root/imported", "source": str(tmp_path / "nothing"),
                                  "csrf": csrf_of(page.text)})
    assert bad.status_code in (400, 404) and "git" in bad.text.lower()
    r = c.post("/import", data={"name": "root/imported", "source": str(src), "csrf": csrf_of(page.text)})
    assert r.status_code == 302 and r.headers["location"] == "/root/imported", r.text
    repo = c.get("/root/imported").text
    assert "notes.txt" in repo and "First notes" in repo
    assert c.post("/import", data={"name": "x/y", "source": str(src)}).status_code == 403  # no CSRF


def test_sessions_list_rows_and_conversation_search(seeded: Seeded) -> None:
    """Each row shows goal, author, human/agent, files changed and time; the text search finds words
    said only in a conversation; the final diff is highlighted."""
    page = get(seeded, f"/{PUBLIC}/sessions?state=landed").text
    rows = re.findall(r'<li class="session-row">(.*?)</li>', page, re.S)
    spinner = next(r for r in rows if "Add a spinner widget" in r)
    assert "#2" in spinner and '<span class="author">claude</span>' in spinner
    assert "role-agent" in spinner and '<span class="files">2 files</span>' in spinner
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT', spinner)
    found = get(seeded, f"/{PUBLIC}/sessions", params={"q": "the first looks idle"}).text  # said by ana
    assert found.count('class="session-row"') == 1 and "Add a spinner widget" in found
    assert get(seeded, f"/{PUBLIC}/sessions", params={"q": "looks idle nowhere"}).text.count('class="session-row"') == 0
    sid = seeded.sessions["Add a spinner widget"]
    changes = get(seeded, f"/{PUBLIC}/sessions/{sid}").text.split('id="changes"', 1)[1]
    assert '<span class="k">class</span>' in changes  # pygments inside the diff


def test_empty_states_say_what_to_do(seeded: Seeded) -> None:
    r = seeded.forge.api("POST", "/api/v1/repos", seeded.forge.admin_token, {"name": "acme/empty", "private": False})
    assert r.status_code == 201, r.data
    page = get(seeded, "/acme/empty").text
    assert "This repository is empty" in page and f"hif clone {seeded.forge.url}/acme/empty" in page
    assert "hif land" in page
    page = get(seeded, "/acme/empty/sessions").text
    assert "Nothing has landed yet" in page and 'hif session start "goal"' in page
    page = get(seeded, "/search?q=zzzz-no-such-thing").text
    assert "No repository matches" in page and "Try fewer words" in page
    page = get(seeded, f"/{PUBLIC}/sessions?author=nobody").text
    assert "No landed session matches these filters" in page and "Clear them" in page

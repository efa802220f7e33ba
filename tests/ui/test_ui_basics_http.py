"""Issue 17's forge basics over plain HTTP: who may create, change and delete repositories, who may
read a private repository's feed, archive and comparison, and what a refused request leaves."""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import httpx
from test_ui_http import csrf_of, get, logged_in
from ui_seed import BIG, CORE_V1, CORE_V3, PRIVATE, PUBLIC, Seeded

ATOM = "{http://www.w3.org/2005/Atom}"


def post(c: httpx.Client, path: str, form_page: str, **data: str) -> httpx.Response:
    return c.post(path, data={**data, "csrf": csrf_of(c.get(form_page).text)})


def test_creating_a_repository_is_checked_like_the_api(seeded: Seeded) -> None:
    ana = logged_in(seeded)
    cases = [  # (owner, name) -> status; none of them stores anything
        (("stranger", "mine-now"), 403),  # someone else's namespace
        (("nobody-such", "x"), 403),
        (("ana", "bad name"), 400),
        (("ana", "../etc"), 400),
        (("ana", ""), 400),
        (("acme", "widgets"), 409),  # exists
        (("ACME", "Widgets"), 403),
    ]
    def names() -> list[str]:
        listed = seeded.forge.api("GET", "/api/v1/repos?limit=500", seeded.forge.admin_token).data["repos"]
        return [r["name"] for r in listed]

    before = names()
    for (owner, name), status in cases:
        r = post(ana, "/new", "/new", owner=owner, name=name, description="x")
        assert r.status_code == status, (owner, name, r.status_code, r.text[:300])
        assert 'role="alert"' in r.text
    assert names() == before
    r = post(ana, "/new", "/new", owner="ana", name="x" * 10, description="d" * 1001)
    assert r.status_code == 400 and seeded.forge.api("GET", "/api/v1/repos/ana/" + "x" * 10, seeded.ana).status_code == 404
    # no CSRF token, no log-in: refused, nothing made
    assert ana.post("/new", data={"owner": "ana", "name": "no-csrf"}).status_code == 403
    anon = httpx.Client(base_url=seeded.forge.url, timeout=60)
    r = anon.get("/new")
    assert r.status_code == 302 and r.headers["location"].startswith("/login")
    assert seeded.forge.api("GET", "/api/v1/repos/ana/no-csrf", seeded.ana).status_code == 404
    # an organisation ana maintains works, and answers with a redirect to the new repository
    r = post(ana, "/new", "/new", owner="acme", name="from-the-ui", private="1")
    assert r.status_code == 303 and r.headers["location"] == "/acme/from-the-ui"
    meta = seeded.forge.api("GET", "/api/v1/repos/acme/from-the-ui", seeded.ana).data
    assert meta["private"] is True and meta["head"] == 0


def test_settings_are_refused_to_non_owners(seeded: Seeded) -> None:
    ana, stranger = logged_in(seeded), logged_in(seeded, "stranger")
    anon = httpx.Client(base_url=seeded.forge.url, timeout=60)
    before = seeded.forge.api("GET", f"/api/v1/repos/{PUBLIC}", seeded.ana).data
    for c, repo, status in ((stranger, PUBLIC, 403), (stranger, PRIVATE, 404), (anon, PUBLIC, 403),
                            (anon, PRIVATE, 404)):
        csrf = csrf_of(c.get("/login").text)
        for action, data in (("repo", {"description": "taken over", "visibility": "private"}),
                             ("delete", {"confirm": repo}),
                             ("members", {"user": "stranger", "role": "owner"})):
            r = c.post(f"/{repo}/settings/{action}", data={**data, "csrf": csrf})
            assert r.status_code == status, (repo, action, r.status_code)
    # a maintainer changes settings but does not delete: that is for owners
    r = post(ana, f"/{PUBLIC}/settings/delete", f"/{PUBLIC}/settings", confirm=PUBLIC)
    assert r.status_code == 403
    assert 'Delete acme/widgets' not in ana.get(f"/{PUBLIC}/settings").text
    after = seeded.forge.api("GET", f"/api/v1/repos/{PUBLIC}", seeded.ana).data
    assert after == before  # nothing changed


def test_deleting_removes_everything_and_the_name_starts_afresh(seeded: Seeded) -> None:
    """A deleted repository leaves nothing that a new one of the same name would show."""
    ana = logged_in(seeded)
    r = post(ana, "/new", "/new", owner="ana", name="doomed", private="1")
    assert r.status_code == 303
    c = seeded.forge.api
    sid = c("POST", "/api/v1/repos/ana/doomed/sessions", seeded.ana, {"goal": "a secret goal"}).data["id"]
    assert c("POST", f"/api/v1/repos/ana/doomed/sessions/{sid}/land", seeded.ana, {}).status_code == 200
    assert c("GET", "/api/v1/repos/ana/doomed/head", seeded.ana).data["position"] == 1
    # a follower on another node, as the inbox records one (and one of a neighbour with a longer name)
    followers = Path(seeded.forge.store) / "data" / "_fed" / "followers" / "ana"
    assert seeded.forge.api("POST", "/api/v1/repos", seeded.ana, {"name": "ana/doomed2"}).status_code == 201
    for repo in ("doomed", "doomed2"):
        (followers / repo).mkdir(parents=True, exist_ok=True)
        (followers / repo / "f0llower").write_bytes(b"\xa0")
    for wrong in ("", "doomed", "ana/doomed2", "ANA/DOOMED"):
        r = post(ana, "/ana/doomed/settings/delete", "/ana/doomed/settings", confirm=wrong)
        assert r.status_code == 400 and 'role="alert"' in r.text, wrong
        assert c("GET", "/api/v1/repos/ana/doomed/head", seeded.ana).data["position"] == 1
    r = post(ana, "/ana/doomed/settings/delete", "/ana/doomed/settings", confirm="ana/doomed")
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert c("GET", "/api/v1/repos/ana/doomed", seeded.ana).status_code == 404
    assert not (followers / "doomed" / "f0llower").exists() and (followers / "doomed2" / "f0llower").exists()
    assert c("GET", "/api/v1/repos/ana/doomed2", seeded.ana).status_code == 200  # the neighbour is untouched
    assert 'href="/ana/doomed"' not in get(seeded, "/", ana).text.split("Deleted ana/doomed.")[1]
    r = c("POST", "/api/v1/repos", seeded.ana, {"name": "ana/doomed"})
    assert r.status_code == 201 and r.data["head"] == 0  # nothing adopted from the old one
    assert "a secret goal" not in ana.get("/ana/doomed/sessions").text


def atom(r: httpx.Response) -> list[dict[str, str]]:
    """The entries of an Atom answer (which must parse as XML)."""
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.headers["content-type"] == "application/atom+xml; charset=utf-8"
    root = ElementTree.fromstring(r.content)
    assert root.tag == f"{ATOM}feed"
    return [{"title": e.findtext(f"{ATOM}title") or "", "author": e.findtext(f"{ATOM}author/{ATOM}name") or "",
             "link": e.find(f"{ATOM}link").get("href") or "",  # type: ignore[union-attr]
             "updated": e.findtext(f"{ATOM}updated") or ""} for e in root.findall(f"{ATOM}entry")]


def test_feeds_of_landings_and_of_a_users_sessions(seeded: Seeded) -> None:
    entries = atom(get(seeded, f"/{PUBLIC}/landings.atom"))
    assert [e["title"] for e in entries] == ["Fix the spinner's off-by-one", "Add a spinner widget",
                                             "Create the widget library"]
    sid = seeded.sessions["Fix the spinner's off-by-one"]
    assert entries[0]["link"] == f"{seeded.forge.url}/{PUBLIC}/sessions/{sid}" and entries[0]["author"] == "ana"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", e["updated"]) for e in entries)
    # linked from the pages with <link rel="alternate">
    for path in (f"/{PUBLIC}", f"/{PUBLIC}/sessions"):
        assert (f'<link rel="alternate" type="application/atom+xml" title="Landings of {PUBLIC}" '
                f'href="/{PUBLIC}/landings.atom">') in get(seeded, path).text
    ana = logged_in(seeded)
    assert '<link rel="alternate" type="application/atom+xml" title="Sessions of ana" ' \
           'href="/users/ana/sessions.atom">' in ana.get("/account").text
    titles = [e["title"] for e in atom(get(seeded, "/users/ana/sessions.atom"))]
    assert "Fix the spinner's off-by-one" in titles and "Create the widget library" in titles
    assert "Add a spinner widget" not in titles  # claude's
    assert get(seeded, "/users/nobody-at-all/sessions.atom").status_code == 404


def test_a_private_repositorys_feed_only_to_its_readers(seeded: Seeded) -> None:
    f = seeded.forge
    read_token = f.user("ana", scope="read")
    other_repo = f.user("ana", scope="read", repo=PUBLIC)
    bearer = {"Authorization": f"Bearer {read_token}"}
    refused = [  # (client or headers, expected status)
        ({}, 404),  # anonymous
        ({"Authorization": f"Bearer {seeded.stranger}"}, 404),
        ({"Authorization": f"Bearer {other_repo}"}, 404),  # bound to another repository
        ({"Authorization": "Bearer mcl_not-a-token"}, 401),
        ({"Authorization": f"Basic {read_token}"}, 401),
    ]
    for headers, status in refused:
        r = get(seeded, f"/{PRIVATE}/landings.atom", headers=headers)
        assert r.status_code == status, (headers, r.status_code)
        assert "secret plan" not in r.text
    # the admin's sessions: the private one only to readers of that repository
    for headers in ({}, {"Authorization": f"Bearer {seeded.stranger}"}):
        titles = [e["title"] for e in atom(get(seeded, "/users/admin/sessions.atom", headers=headers))]
        assert "Write the secret plan" not in titles
    assert [e["title"] for e in atom(get(seeded, f"/{PRIVATE}/landings.atom", headers=bearer))] == \
        ["Write the secret plan"]
    assert atom(logged_in(seeded).get(f"/{PRIVATE}/landings.atom"))[0]["title"] == "Write the secret plan"
    stranger = logged_in(seeded, "stranger")
    assert stranger.get(f"/{PRIVATE}/landings.atom").status_code == 404
    titles = [e["title"] for e in atom(get(seeded, "/users/admin/sessions.atom", headers=bearer))]
    assert "Write the secret plan" in titles


def test_feeds_stay_well_formed_whatever_the_goals_hold(seeded: Seeded) -> None:
    ana = logged_in(seeded)
    assert post(ana, "/new", "/new", owner="ana", name="odd-goals").status_code == 303
    goals = ["<b>bold</b> & <script>x</script>", "ctl \x01\x08\x0b\x1f end", "]]> <![CDATA[", "quote \" ' é 😀"]
    for goal in goals:
        r = seeded.forge.api("POST", "/api/v1/repos/ana/odd-goals/sessions", seeded.ana, {"goal": goal})
        assert r.status_code == 201, r.data
        seeded.forge.api("POST", f"/api/v1/repos/ana/odd-goals/sessions/{r.data['id']}/land", seeded.ana, {})
    titles = [e["title"] for e in atom(get(seeded, "/ana/odd-goals/landings.atom"))]
    assert sorted(titles) == sorted([*goals[:1], "ctl \ufffd\ufffd\ufffd\ufffd end", *goals[2:]])
    atom(get(seeded, "/users/ana/sessions.atom"))


def test_archives_hold_the_tree_of_the_position(seeded: Seeded) -> None:
    r = get(seeded, f"/{PUBLIC}/archive/3.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == "attachment; filename*=UTF-8''widgets-3.zip"
    assert "content-length" not in r.headers  # streamed as it is written
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert sorted(z.namelist()) == ["widgets-3/README.md", "widgets-3/docs/guide.md",
                                        "widgets-3/src/widgets/__init__.py", "widgets-3/src/widgets/core.py"]
        assert z.read("widgets-3/src/widgets/core.py").decode() == CORE_V3
        assert z.testzip() is None
    r = get(seeded, f"/{PUBLIC}/archive/1.tar.gz")
    assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as t:
        assert sorted(t.getnames()) == ["widgets-1/README.md", "widgets-1/src/widgets/__init__.py",
                                        "widgets-1/src/widgets/core.py"]  # no docs/ yet at position 1
        f = t.extractfile("widgets-1/src/widgets/core.py")
        assert f is not None and f.read().decode() == CORE_V1
    for bad in ("99.zip", "x.zip", "3.rar", "3", "-1.zip", "3.zip.exe", "1e3.zip", "３.zip"):
        assert get(seeded, f"/{PUBLIC}/archive/{bad}").status_code == 404, bad


def test_big_archive_is_streamed(seeded: Seeded) -> None:
    """10,000 files and a 1 MB one: the answer starts before the archive is whole."""
    with httpx.stream("GET", f"{seeded.forge.url}/{BIG}/archive/1.tar.gz", timeout=120) as r:
        assert r.status_code == 200 and r.headers.get("transfer-encoding") == "chunked"
        chunks = sum(1 for _ in r.iter_raw())
        total = r.num_bytes_downloaded
    assert chunks > 1 and total > 10_000


def test_private_archive_and_compare_refused_to_outsiders(seeded: Seeded) -> None:
    stranger, ana = logged_in(seeded, "stranger"), logged_in(seeded)
    anon = httpx.Client(base_url=seeded.forge.url, timeout=60)
    paths = [f"/{PRIVATE}/archive/1.zip", f"/{PRIVATE}/archive/1.tar.gz", f"/{PRIVATE}/compare/0...1",
             f"/{PRIVATE}/compare?a=0&b=1", f"/{PRIVATE}/landings.atom", f"/{PRIVATE}/raw/plan.md"]
    for path in paths:
        for c in (anon, stranger):
            r = c.get(path)
            assert r.status_code == 404 and "World domination" not in r.text and "secret plan" not in r.text, path
        assert ana.get(path).status_code in (200, 302), path
    assert "World domination" in ana.get(f"/{PRIVATE}/compare/0...1").text


def test_a_new_token_is_shown_once_and_never_stored_readable(seeded: Seeded) -> None:
    """Post-redirect-get: the POST answers 303 (nothing secret in it or its address); the page it
    leads to shows the secret once; what waits in the store for that page is sealed by a key only
    the browser's cookie holds."""
    ana = logged_in(seeded)
    r = post(ana, "/account/tokens", "/account", name="shown-once", scope="read")
    assert r.status_code == 303 and r.headers["location"] == "/account"
    assert "mcl_" not in r.text and "mcl_" not in r.headers["location"]
    flashes = [p for p in Path(seeded.forge.store).rglob("*") if p.is_file() and "ui-flash" in str(p)]
    assert flashes, "the flash waits in the store"
    kept = b"".join(p.read_bytes() for p in flashes)
    page = ana.get("/account").text
    secret = re.search(r'id="new-token">(mcl_[^<]+)<', page)
    assert secret is not None
    assert secret.group(1).encode() not in kept and b"shown-once" not in kept
    assert 'id="new-token"' not in ana.get("/account").text  # a reload shows it no more
    assert ana.get("/account").text.count("<td>shown-once <span") == 1  # one token made
    # another browser (or a stolen store) cannot take it: the flash is gone, and without the cookie
    assert not [p for p in flashes if p.exists()]

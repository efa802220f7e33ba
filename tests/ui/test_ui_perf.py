"""The web UI at scale (issue 17): big sessions stay under 1 MB of HTML with long diffs collapsed and
loaded on demand (with and without JavaScript), generated and huge files are summarised, pages are
compressed and revalidated (ETag, 304, immutable assets), blame is cached by content and, for
imported git history, points at the commit that wrote each line rather than at the merge.

All against a real node on loopback, over HTTP or in Chromium: a node of this module's own (it
overrides ``seeded``, also for the ``page`` fixture), since its landings would change what the
shared node's home page lists for other tests."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from forge import start_forge
from playwright.sync_api import expect
from ui_seed import FED_ENV, PASSWORD, Client, Seeded, write

HEAVY = "ana/heavy"
MERGED = "ana/merged"
PAGE_MAX = 1 << 20
BIG_FILES = 40  # files of the big session whose diffs are long
BIG_LINES = 1500  # lines each of them changes
# more than a page may newly highlight (64 KiB), less than the most ever highlighted (256 KiB)
BIG_PY = "".join(f"def function_{n}(value: int) -> int:\n    return value * {n}\n\n" for n in range(2500)).encode()


def numbered(tag: str, n: int) -> bytes:
    return "".join(f"{tag} line {i}\n" for i in range(n)).encode()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A node for this module alone, with the user ``ana``."""
    forge = start_forge(tmp_path_factory.mktemp("perf-node"), env=FED_ENV)
    try:
        forge.micelio("admin", "user", "create", "ana", "--password-stdin", input=PASSWORD + "\n")
        yield Seeded(forge, forge.user("ana"), "")
    finally:
        forge.stop()


@pytest.fixture(scope="module")
def heavy(seeded: Seeded) -> dict[str, Any]:
    """``acme/heavy``: a base landing, then one big session: BIG_FILES long rewrites, a few small
    edits, lockfiles, minified and generated code, and a file of more than 20,000 lines."""
    forge = seeded.forge
    r = forge.api("POST", "/api/v1/repos", forge.admin_token, {"name": HEAVY, "private": False})
    assert r.status_code == 201, r.data
    c = Client(forge, seeded.ana, HEAVY)
    base = c.start("The base")
    c.events(base, *[write(f"src/long{i:02d}.txt", c.put(numbered("old", BIG_LINES)), "human", "ana")
                     for i in range(BIG_FILES)],
             write("src/small.py", c.put(b"a = 1\nb = 2\nc = 3\n"), "human", "ana"),
             write("src/big.py", c.put(BIG_PY), "human", "ana"))
    c.land(base)
    generated = {
        "uv.lock": b"[[package]]\nname = 'a'\n" * 400,
        "web/package-lock.json": b'{"name": "x", "lockfileVersion": 3}\n' * 400,
        "web/yarn.lock": b"a@1:\n  version 1\n" * 400,
        "Cargo.lock": b"[[package]]\n" * 400,
        "web/app.min.js": b"var a=1;" * 3000 + b"\n",
        "web/bundle.js": (b"x" * 6000 + b"\n") * 3,  # minified by its look: very long lines
        "data/huge.txt": b"".join(b"row %d\n" % i for i in range(25_000)),
    }
    sid = c.start("A big session")
    c.events(sid, *[write(f"src/long{i:02d}.txt", c.put(numbered("new", BIG_LINES)), "human", "ana")
                    for i in range(BIG_FILES)],
             write("src/small.py", c.put(b"a = 1\nb = 20\nc = 3\n"), "human", "ana"),
             *[write(path, c.put(data), "human", "ana") for path, data in generated.items()])
    c.land(sid)
    return {"sid": sid, "generated": generated}


def get(seeded: Seeded, path: str, **headers: str) -> httpx.Response:
    return httpx.get(seeded.forge.url + path, headers=headers, timeout=120)


def test_a_big_session_page_stays_under_a_megabyte_with_long_diffs_collapsed(seeded: Seeded, heavy: dict[str, Any]) -> None:
    page = get(seeded, f"/{HEAVY}/sessions/{heavy['sid']}", **{"Accept-Encoding": "identity"})
    assert page.status_code == 200
    assert len(page.content) <= PAGE_MAX, len(page.content)  # uncapped: ~40 × 3,000 rows of diff
    html = page.text
    # every long rewrite is collapsed, with a link to its own page and htmx to load it in place
    links = re.findall(r'<a class="diff-file-link" href="([^"]+)"', html)
    assert len(links) == BIG_FILES, links
    assert all(f"/{HEAVY}/sessions/{heavy['sid']}/diff/src/long" in x for x in links)
    assert html.count('hx-trigger="toggle once"') == BIG_FILES
    assert "<summary>Show this diff (" in html
    # the small edit is shown in place, counted like every diff
    small = html.split(">src/small.py</a></h3>", 1)[1].split("</section>", 1)[0]
    assert "<table" in small and '<span class="plus">+1</span>' in small and "20" in small
    assert "new line 0<" not in html
    assert html.count('<span class="plus">+1500</span>') == BIG_FILES


@pytest.mark.parametrize("path, why", [
    ("uv.lock", "a lockfile"), ("web/package-lock.json", "a lockfile"), ("web/yarn.lock", "a lockfile"),
    ("Cargo.lock", "a lockfile"), ("web/app.min.js", "minified or generated"),
    ("web/bundle.js", "minified or generated (very long lines)"), ("data/huge.txt", "too many lines to diff"),
])
def test_generated_and_huge_files_are_summarised(seeded: Seeded, heavy: dict[str, Any], path: str, why: str) -> None:
    html = get(seeded, f"/{HEAVY}/sessions/{heavy['sid']}").text
    section = html.split(f">{path}</a></h3>", 1)[1].split("</section>", 1)[0]
    assert why in section and "<table" not in section, section[:500]
    # and on the file's own page too: summarised, not rendered
    page = get(seeded, f"/{HEAVY}/sessions/{heavy['sid']}/diff/{path}")
    assert page.status_code == 200 and why in page.text and "<table" not in page.text.split("<main", 1)[1]
    assert len(page.content) < 64 * 1024


def test_a_collapsed_diff_opens_on_its_own_page_without_javascript(seeded: Seeded, heavy: dict[str, Any]) -> None:
    html = get(seeded, f"/{HEAVY}/sessions/{heavy['sid']}").text
    link = re.findall(r'<a class="diff-file-link" href="([^"]+)"', html)[3].replace("&amp;", "&")
    page = get(seeded, link)
    assert page.status_code == 200 and page.text.startswith("<!doctype html>")
    assert "src/long03.txt" in page.text and 'class="code hl unified"' in page.text
    assert "new line 1499" in page.text and "old line 1499" in page.text
    split = get(seeded, link + "?view=split")
    assert 'class="code hl split"' in split.text
    # htmx asks for the same URL: the answer is the file's section alone, to swap in place
    part = get(seeded, link, **{"HX-Request": "true"})
    assert part.status_code == 200 and "<html" not in part.text and "<header" not in part.text.split("<section", 1)[0]
    assert part.text.strip().startswith('<section class="diff">') and "new line 1499" in part.text
    # a path the session did not change, or a bad one, is a 404 page
    for bad in ("src/nothing.py", "../etc/passwd", "src/long03.txt/x"):
        r = get(seeded, f"/{HEAVY}/sessions/{heavy['sid']}/diff/{bad}")
        assert r.status_code == 404 and "Not found" in r.text, bad


def test_a_collapsed_diff_loads_in_place_with_javascript(page: Any, seeded: Seeded, heavy: dict[str, Any]) -> None:
    page.goto(f"/{HEAVY}/sessions/{heavy['sid']}")
    section = page.locator("section.diff", has=page.locator("h3", has_text="src/long07.txt"))
    expect(section.locator("table")).to_have_count(0)
    section.locator("summary").click()
    expect(page.locator("section.diff", has=page.locator("h3", has_text="src/long07.txt"))
           .locator("table.unified")).to_contain_text("new line 1499")
    expect(page).to_have_url(re.compile(f"/sessions/{heavy['sid']}$"))  # swapped in place, no navigation
    # the others stay collapsed
    other = page.locator("section.diff", has=page.locator("h3", has_text="src/long08.txt"))
    expect(other.locator("table")).to_have_count(0)


@pytest.mark.parametrize("accept, compressed", [
    ("gzip", True), ("br, gzip;q=0.8", True), ("GZIP", True), ("x-gzip", True), ("*", True),
    ("gzip;q=0", False), ("identity", False), ("br", False), ("", False),
])
def test_pages_styles_and_scripts_are_gzipped_when_the_client_accepts_it(seeded: Seeded, heavy: dict[str, Any],
                                                                         accept: str, compressed: bool) -> None:
    home = get(seeded, f"/{HEAVY}", **{"Accept-Encoding": "identity"}).text
    css = re.search(r'href="(/assets/style\.css\?v=[0-9a-f]+)"', home)
    js = re.search(r'src="(/assets/vendor/htmx\.min\.js\?v=[0-9a-f]+)"', home)
    assert css and js, "assets carry their version in the URL"
    for path in (f"/{HEAVY}/sessions/{heavy['sid']}", css.group(1), js.group(1), f"/{HEAVY}"):
        with httpx.Client(base_url=seeded.forge.url, timeout=60) as c:
            raw = c.build_request("GET", path, headers={"Accept-Encoding": accept})
            r = c.send(raw, stream=True)
            body = b"".join(r.iter_raw())
            r.close()
        plain = get(seeded, path, **{"Accept-Encoding": "identity"}).content
        assert r.status_code == 200
        assert "accept-encoding" in r.headers.get("vary", "").lower()
        if compressed:
            assert r.headers.get("content-encoding") == "gzip", (path, accept)
            assert gzip.decompress(body) == plain and len(body) < len(plain)
        else:
            assert "content-encoding" not in r.headers, (path, accept)
            assert body == plain


def test_etags_answer_304_and_versioned_assets_are_immutable(seeded: Seeded, heavy: dict[str, Any]) -> None:
    home = get(seeded, f"/{HEAVY}").text
    css = re.search(r'href="(/assets/style\.css\?v=[0-9a-f]+)"', home)
    assert css
    r = get(seeded, css.group(1))
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    for unversioned in ("/assets/style.css", "/assets/style.css?v=0000000000000000"):
        assert "immutable" not in get(seeded, unversioned).headers.get("cache-control", "")
    for path in (css.group(1), f"/{HEAVY}/sessions/{heavy['sid']}", f"/{HEAVY}/raw/src/small.py",
                 f"/{HEAVY}/blame/src/long06.txt"):
        first = get(seeded, path)
        tag = first.headers["etag"]
        for spelling in (tag, f"W/{tag}" if not tag.startswith("W/") else tag[2:], f'"other", {tag}', "*"):
            again = get(seeded, path, **{"If-None-Match": spelling})
            assert again.status_code == 304 and again.content == b"", (path, spelling)
            assert again.headers["etag"] == tag
        assert get(seeded, path, **{"If-None-Match": '"something-else"'}).status_code == 200
    # the raw file's ETag is its content id: a new version gets another one
    raw = get(seeded, f"/{HEAVY}/raw/src/small.py").headers["etag"]
    assert raw != get(seeded, f"/{HEAVY}/raw/src/small.py?at=1").headers["etag"]


def test_blame_cached_by_content_gives_what_the_cold_blame_gave(seeded: Seeded, heavy: dict[str, Any]) -> None:
    cache = Path(seeded.forge.root)
    before = set(cache.glob("cache-*/ui/blame/*/*"))
    cold = get(seeded, f"/{HEAVY}/blame/src/small.py", **{"Accept-Encoding": "identity"})
    made = set(cache.glob("cache-*/ui/blame/*/*")) - before
    assert cold.status_code == 200 and len(made) == 1, made  # the result is kept, keyed by content
    warm = get(seeded, f"/{HEAVY}/blame/src/small.py", **{"Accept-Encoding": "identity"})
    assert warm.text == cold.text
    rows = re.findall(r'<tr id="L(\d+)"( class="first")?><td(?: class=who)?>(.*?)</td>', warm.text)
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert f"/{HEAVY}/sessions/{heavy['sid']}" in rows[1][2] and "A big session" in rows[1][2]
    assert "The base" in rows[0][2] and "The base" in rows[2][2] and all(r[1] for r in rows)
    # a damaged entry is not trusted: the blame is made again, the same
    (entry,) = made
    entry.write_bytes(b"not cbor")
    assert get(seeded, f"/{HEAVY}/blame/src/small.py", **{"Accept-Encoding": "identity"}).text == cold.text


def git(cwd: Path, *args: str, env: dict[str, str]) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def test_blame_of_imported_history_points_at_the_commit_that_wrote_each_line(seeded: Seeded, tmp_path: Path) -> None:
    """A side branch of two commits (one of them merging main in) merged into main: each line is
    blamed on the commit that wrote it, not on the merge that brought it."""
    env = {"GIT_AUTHOR_NAME": "Ann", "GIT_AUTHOR_EMAIL": "ann@example.org", "GIT_COMMITTER_NAME": "Ann",
           "GIT_COMMITTER_EMAIL": "ann@example.org", "HOME": str(tmp_path), "PATH": os.environ["PATH"],
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    src = tmp_path / "src"
    git(tmp_path, "init", "-q", "-b", "main", str(src), env=env)
    f = src / "f.txt"

    def commit(text: str, message: str) -> str:
        f.write_text(text)
        git(src, "commit", "-qam", message, env=env)
        return git(src, "rev-parse", "HEAD", env=env).strip()

    (src / "other.txt").write_text("x\n")
    f.write_text("one\ntwo\nthree\n")
    git(src, "add", "-A", env=env)
    git(src, "commit", "-qm", "Start", env=env)
    git(src, "checkout", "-qb", "side", env=env)
    s1 = commit("one\nTWO from side\nthree\n", "Side rewrites two")
    git(src, "checkout", "-q", "main", env=env)
    m1 = commit("zero\none\ntwo\nthree\n", "Main adds zero")
    git(src, "checkout", "-q", "side", env=env)
    git(src, "merge", "-q", "--no-edit", "main", env=env)  # the side branch merges main in
    s2 = commit("zero\none\nTWO from side\nthree\nfour from side\n", "Side adds four")
    git(src, "checkout", "-q", "main", env=env)
    git(src, "merge", "-q", "--no-ff", "--no-edit", "side", env=env)
    merge = git(src, "rev-parse", "HEAD", env=env).strip()
    out = seeded.forge.micelio("import", MERGED, str(src), "--json").stdout
    assert '"complete": true' in out
    rows = seeded.forge.api("GET", f"/api/v1/repos/{MERGED}/blame?path=f.txt", seeded.ana).data["lines"]
    keys = ("position", "session", "goal", "author", "text", "commit", "iteration")
    lines = [dict(zip(keys, row, strict=True)) for row in rows]
    assert [x["text"] for x in lines] == ["zero", "one", "TWO from side", "three", "four from side"]
    by_text = {x["text"]: x for x in lines}
    assert by_text["zero"]["commit"] == m1 and by_text["zero"]["iteration"] == 0
    assert by_text["TWO from side"]["commit"] == s1 and by_text["TWO from side"]["goal"] == "Side rewrites two"
    assert by_text["four from side"]["commit"] == s2 and by_text["four from side"]["iteration"] > 0
    assert by_text["one"]["goal"] == "Start" and by_text["one"]["commit"] != merge
    assert merge not in {x["commit"] for x in lines}
    # the page says the same: the commit's short id and subject
    page = get(seeded, f"/{MERGED}/blame/f.txt").text
    assert f"{s1[:8]} Side rewrites two" in page and f"{s2[:8]} Side adds four" in page
    assert f"{merge[:8]}" not in page


def test_a_big_file_is_shown_plain_at_once_and_highlighted_for_the_next_view(seeded: Seeded,
                                                                             heavy: dict[str, Any]) -> None:
    """Highlighting ~130 KB would cost the page ~0.4 s: it is shown plain, highlighted in the
    background into the cache, and the next view has it (a bounded wait for the background job)."""
    first = get(seeded, f"/{HEAVY}/blob/src/big.py").text
    assert "it is being highlighted, reload in a moment" in first
    assert "function_2499" in first and '<span class="k">def</span>' not in first
    for _ in range(600):
        later = get(seeded, f"/{HEAVY}/blob/src/big.py").text
        if '<span class="k">def</span>' in later:
            break
        time.sleep(0.1)
    assert '<span class="k">def</span> <span class="nf">function_2499</span>' in later
    assert "being highlighted" not in later and "without syntax highlighting" not in later

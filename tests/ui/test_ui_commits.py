"""Git commit permalinks on a node: ``/<repo>/commit/<sha>`` redirects to the landing an imported
commit became, ``GET /api/v1/repos/<repo>/commits/<sha>`` names it, the session page links its
commit id (with a copy button, and says when ``hif export git`` gives that id back), on mirrors
too. The seeded node imported ``acme/imported`` from git with its CLI; this module adds a private
import, records with commit ids sharing a prefix, and a second node that mirrors the import."""

from __future__ import annotations

import asyncio
import html
import json
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from forge import Forge, start_forge, wait_for
from test_git_commits import A1, A2, OLD, fabricate
from test_git_interop import ENV, HIF
from test_ui_http import logged_in
from ui_seed import FED_ENV, IMPORTED, PUBLIC, Seeded, landed_session

SECRET_IMPORT = "acme/hidden-import"
MADE = "acme/made"  # records written as an import writes them: ids chosen to share a prefix


@pytest.fixture(scope="module")
def world(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """The seeded node plus a private imported repository (ana an owner) and ``acme/made``."""
    forge = seeded.forge
    src = tmp_path_factory.mktemp("hidden-src")
    env = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "Hidden",
           "GIT_AUTHOR_EMAIL": "h@example.org", "GIT_COMMITTER_NAME": "Hidden",
           "GIT_COMMITTER_EMAIL": "h@example.org", "PATH": "/usr/bin:/bin"}

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=src, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    (src / "secret.txt").write_text("hidden\n")
    git("add", "-A")
    git("commit", "-q", "-m", "A secret commit")
    seeded.commits["A secret commit"] = git("rev-parse", "HEAD")
    forge.micelio("admin", "repo", "import", SECRET_IMPORT, str(src), "--owner", "ana", "--private")
    r = forge.api("POST", "/api/v1/repos", forge.admin_token, {"name": MADE, "private": False})
    assert r.status_code == 201, r.data
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API may run an event loop in this thread
        pool.submit(asyncio.run, fabricate(Path(forge.store), MADE)).result()
    return seeded


def no_redirect(client: httpx.Client | None, seeded: Seeded, path: str) -> httpx.Response:
    if client is not None:
        return client.get(path, follow_redirects=False)
    return httpx.get(seeded.forge.url + path, timeout=60, follow_redirects=False)


def api(seeded: Seeded, path: str, token: str | None = None, **headers: str) -> httpx.Response:
    h = {**headers, **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.get(seeded.forge.url + path, headers=h, timeout=60)


def test_commit_permalinks_redirect_to_their_landings(world: Seeded) -> None:
    merge = landed_session(world, IMPORTED, 3)
    cases = {  # commit -> where it went: its own landing, or the iteration of a merge
        world.commits["Start the terminal toolkit"]: f"/{IMPORTED}/sessions/{landed_session(world, IMPORTED, 1)}",
        world.commits["Read_every_configuration_file_only_once_instead_of_twice_when_loading"]:
            f"/{IMPORTED}/sessions/{landed_session(world, IMPORTED, 2)}",
        world.commits["Merge the notes"]: f"/{IMPORTED}/sessions/{merge}",
        world.commits["Add notes"]: f"/{IMPORTED}/sessions/{merge}#iteration-1",
        world.commits["Extend the notes"]: f"/{IMPORTED}/sessions/{merge}#iteration-2",
    }
    for who, client in {"anonymous": None, "stranger": logged_in(world, "stranger"),
                        "member": logged_in(world)}.items():
        for sha, target in cases.items():
            for spelled in (sha, sha[:7], sha[:12].upper(), sha.upper()):
                r = no_redirect(client, world, f"/{IMPORTED}/commit/{spelled}")
                assert r.status_code == 303, (who, spelled, r.status_code)
                assert r.headers["location"] == target, (who, spelled)


@pytest.mark.parametrize("sha, status, says", [
    ("abc12", 400, "too short for a git commit id"),
    ("zzzzzzz", 400, "is not a git commit id"),
    ("12345678-9abc", 400, "is not a git commit id"),
    ("a" * 65, 400, "at most 64 hex digits"),
    ("%20abcdef1", 400, "is not a git commit id"),
    ("deadbee", 404, "no git commit deadbee in acme/imported"),
    ("0" * 40, 404, "no git commit"),
])
def test_bad_and_unknown_commit_ids(world: Seeded, sha: str, status: int, says: str) -> None:
    page = httpx.get(f"{world.forge.url}/{IMPORTED}/commit/{sha}", timeout=60, follow_redirects=False)
    assert page.status_code == status and page.headers["content-type"].startswith("text/html")
    assert says in html.unescape(page.text), page.text
    r = world.forge.api("GET", f"/api/v1/repos/{IMPORTED}/commits/{sha}")
    assert r.status_code == status and says in r.data["message"], r.data
    # a repository that imported nothing knows no commit; a missing one is missing
    assert httpx.get(f"{world.forge.url}/{PUBLIC}/commit/deadbee", timeout=60).status_code == 404
    assert httpx.get(f"{world.forge.url}/acme/nothing-here/commit/deadbee", timeout=60).status_code == 404


def test_the_api_names_the_landing(world: Seeded) -> None:
    sha = world.commits["Add notes"]
    want = {"commit": sha, "position": 3, "session": landed_session(world, IMPORTED, 3), "iteration": 1,
            "exact": True}
    for spelled in (sha, sha[:7], sha[:20].upper()):
        r = world.forge.api("GET", f"/api/v1/repos/{IMPORTED}/commits/{spelled}")
        assert r.status_code == 200 and r.headers["content-type"] == "application/cbor"
        assert r.data == want
    as_json = api(world, f"/api/v1/repos/{IMPORTED}/commits/{sha[:9]}", Accept="application/json")
    assert as_json.headers["content-type"] == "application/json" and as_json.json() == want
    assert json.loads(api(world, f"/api/v1/repos/{IMPORTED}/commits/{sha[:9]}?format=json").text) == want


def test_private_imports_stay_private(world: Seeded) -> None:
    sha = world.commits["A secret commit"]
    path = f"/{SECRET_IMPORT}/commit/{sha[:10]}"
    for client in (None, logged_in(world, "stranger")):  # as a missing repository does
        r = no_redirect(client, world, path)
        assert r.status_code == 404 and sha not in r.text and "secret" not in r.text.lower().replace(
            SECRET_IMPORT, ""), r.text
    r = no_redirect(logged_in(world), world, path)
    assert r.status_code == 303 and r.headers["location"].startswith(f"/{SECRET_IMPORT}/sessions/")
    route = f"/api/v1/repos/{SECRET_IMPORT}/commits/{sha}"
    assert world.forge.api("GET", route).status_code == 401  # anonymous: as for any private repository
    stranger = world.forge.api("GET", route, world.stranger)
    assert stranger.status_code == 404 and sha not in str(stranger.data)
    assert world.forge.api("GET", route, world.ana).data["position"] == 1


def test_an_ambiguous_prefix_lists_its_commits(world: Seeded) -> None:
    page = httpx.get(f"{world.forge.url}/{MADE}/commit/ABCDEF1", timeout=60, follow_redirects=False)
    assert page.status_code == 300
    links = re.findall(r'href="(/acme/made/commit/[0-9a-f]+)"', page.text)
    assert links == [f"/{MADE}/commit/{A1}", f"/{MADE}/commit/{A2}"], links
    assert "give more digits" in page.text
    r = world.forge.api("GET", f"/api/v1/repos/{MADE}/commits/abcdef1")
    assert r.status_code == 409 and r.data["error"] == "ambiguous"
    assert [(c["commit"], c["position"]) for c in r.data["candidates"]] == [(A1, 1), (A2, 2)]
    one = no_redirect(None, world, f"/{MADE}/commit/abcdef11")
    assert one.status_code == 303 and one.headers["location"] == f"/{MADE}/sessions/{landed_session(world, MADE, 2)}"


def test_the_session_page_links_its_commit_and_says_when_export_keeps_it(world: Seeded) -> None:
    sha = world.commits["Merge the notes"]
    page = httpx.get(f"{world.forge.url}/{IMPORTED}/commit/{sha[:8]}", timeout=60, follow_redirects=True)
    assert page.status_code == 200
    assert f'<a class="commit-id" href="/{IMPORTED}/commit/{sha}"' in page.text
    assert '<code id="git-commit">' + sha in page.text and 'data-copy="git-commit"' in page.text
    assert "writes this landing back as this same commit" in page.text
    for side in ("Add notes", "Extend the notes"):  # the iterations link the commits they came from
        assert f'href="/{IMPORTED}/commit/{world.commits[side]}"' in page.text
    assert 'id="iteration-1"' in page.text and 'id="iteration-2"' in page.text
    # a commit imported before the import checked ids: linked, but no claim about the export
    old = httpx.get(f"{world.forge.url}/{MADE}/commit/{OLD}", timeout=60, follow_redirects=True)
    assert old.status_code == 200 and f'href="/{MADE}/commit/{OLD}"' in old.text
    assert "same commit" not in old.text


def test_a_clone_asks_its_forge(world: Seeded, tmp_path: Path) -> None:
    """``hif show git:SHA`` in a clone: the forge's index answers (the history lives there)."""
    done = subprocess.run([HIF, "clone", f"{world.forge.url}/{IMPORTED}", str(tmp_path / "c")], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sha = world.commits["Extend the notes"]

    def show(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([HIF, "show", *args], cwd=tmp_path / "c", env=ENV, capture_output=True, text=True,
                              timeout=120)

    doc = json.loads(show("--json", f"git:{sha[:8]}").stdout)
    want = world.forge.api("GET", f"/api/v1/repos/{IMPORTED}/commits/{sha}").data
    assert doc["git"] == want and doc["position"] == 3 and doc["session"]["id"] == want["session"]
    missing = show("git:deadbee")
    assert missing.returncode == 1 and missing.stderr.strip() == "error: no git commit deadbee in acme/imported " \
        "(only history imported from git has commit ids)", missing.stderr


# -- mirrors --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mirror(world: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Forge, str]]:
    """A second node following ``acme/imported`` on the seeded node, backfilled."""
    node = start_forge(tmp_path_factory.mktemp("commit-follower"), env=FED_ENV)
    host = urlsplit(world.forge.url).netloc
    try:
        r = node.api("POST", "/api/v1/federation/follow", node.admin_token, {"url": f"{world.forge.url}/{IMPORTED}"})
        assert r.status_code == 201, r.data
        wait_for(lambda: (node.api("GET", f"/api/v1/mirrors/{host}/{IMPORTED}/head").data or {}).get("position") == 3,
                 "the mirror to backfill", timeout=60)
        yield node, host
    finally:
        node.stop()


def test_a_mirror_resolves_the_same_commits(world: Seeded, mirror: tuple[Forge, str]) -> None:
    node, host = mirror
    base = f"/mirrors/{host}/{IMPORTED}"
    for subject, (position, iteration) in {"Start the terminal toolkit": (1, 0), "Merge the notes": (3, 0),
                                           "Extend the notes": (3, 2)}.items():
        sha = world.commits[subject]
        origin: Any = world.forge.api("GET", f"/api/v1/repos/{IMPORTED}/commits/{sha}").data
        there = node.api("GET", f"/api/v1/mirrors/{host}/{IMPORTED}/commits/{sha[:10]}")
        assert there.status_code == 200 and there.data == origin, there.data
        assert (origin["position"], origin["iteration"]) == (position, iteration)
        r = httpx.get(f"{node.url}{base}/commit/{sha[:7]}", timeout=60, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"] == f"{base}/sessions/{origin['session']}" + (
            f"#iteration-{iteration}" if iteration else "")
    page = httpx.get(f"{node.url}{base}/commit/{world.commits['Merge the notes']}", timeout=60, follow_redirects=True)
    assert f'href="{base}/commit/{world.commits["Merge the notes"]}"' in page.text
    assert node.api("GET", f"/api/v1/mirrors/{host}/{IMPORTED}/commits/deadbee").status_code == 404

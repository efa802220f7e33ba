"""hif against a real forge (``micelio serve`` on loopback): login, repo create, clone, sessions that
stream to the forge, landing there, pull, sync, resumable clones and the error cases, each command a
subprocess as a user would run it."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from forge import Forge

from hif import Repository

CLONE_MARKER = ".hif/clone-incomplete.json"


class Hif:
    """Runs ``hif`` with its own config directory (so credentials never touch the real home)."""

    def __init__(self, home: Path, **env: str) -> None:
        self.env = {**os.environ, "HIF_CONFIG_DIR": str(home), "HIF_AUTHOR": "ana", "HIF_ROLE": "human",
                    **env}
        for name in ("HIF_DEBUG", "HIF_TOKEN"):
            if name not in env:
                self.env.pop(name, None)

    def run(self, cwd: Path, *args: str, ok: bool | None = True, **env: str) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "hif.cli", *args], cwd=cwd, env={**self.env, **env},
                           capture_output=True, text=True, timeout=120)
        assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
        if ok is True:
            assert p.returncode == 0, f"hif {args} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
        elif ok is False:
            assert p.returncode != 0, f"hif {args} unexpectedly succeeded\n{p.stdout}"
        return p

    def js(self, cwd: Path, *args: str, ok: bool | None = True, **env: str) -> Any:
        return json.loads(self.run(cwd, *args, "--json", ok=ok, **env).stdout)


@pytest.fixture
def hif(tmp_path: Path) -> Hif:
    return Hif(tmp_path / "config")


def setup_repo(hif: Hif, forge: Forge, tmp_path: Path, name: str = "acme/api", *more: str) -> str:
    hif.run(tmp_path, "login", forge.url, "--token", forge.admin_token)
    hif.run(tmp_path, "repo", "create", name, *more)
    return f"{forge.url}/{name}"


def land(hif: Hif, cwd: Path, goal: str, files: dict[str, str], *, ok: bool | None = True) -> Any:
    hif.run(cwd, "session", "start", goal)
    for name, text in files.items():
        (cwd / name).parent.mkdir(parents=True, exist_ok=True)
        (cwd / name).write_text(text)
    return hif.js(cwd, "land", ok=ok)


def cached_objects(clone: Path, name: str = "acme/api") -> list[Path]:
    return sorted((clone / ".hif" / "cache" / "data" / "repos" / name / "objects").iterdir())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


# -- 1. the walkthrough --------------------------------------------------------------------------


def test_walkthrough(forge: Forge, hif: Hif, tmp_path: Path) -> None:
    out = hif.run(tmp_path, "login", forge.url, "--token", forge.admin_token).stdout
    assert out.strip() == f"logged in to {forge.url} as admin"
    creds = tmp_path / "config" / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert json.loads(creds.read_text())[forge.url]["user"] == "admin"

    meta = hif.js(tmp_path, "repo", "create", "acme/api", "--description", "the API")
    assert meta["name"] == "acme/api" and meta["private"] is False and meta["head"] == 0
    assert meta["url"] == f"{forge.url}/acme/api"
    listed = hif.js(tmp_path, "repo", "list")
    assert [r["name"] for r in listed["repos"]] == ["acme/api"]

    doc = hif.js(tmp_path, "clone", f"{forge.url}/acme/api")
    api = tmp_path / "api"
    assert doc["root"] == str(api) and doc["position"] == 0 and doc["repo"] == "acme/api"
    assert json.loads((api / ".hif" / "config.json").read_text()) == {"remote": forge.url, "repo": "acme/api"}
    other = tmp_path / "other"
    hif.run(tmp_path, "clone", f"{forge.url}/acme/api", str(other))

    sid = hif.js(api, "session", "start", "Add health check")["session"]
    (api / "health.py").write_text("def health():\n    return 'ok'\n")
    hif.run(api, "say", "Should it check the database?", "--as", "agent")
    hif.run(api, "say", "Not yet", "--as", "human")
    # the events reached the forge as they happened, with the file written before them
    live = forge.api("GET", f"/api/v1/repos/acme/api/sessions/{sid}", forge.admin_token).data
    assert [e["type"] for e in live["events"]] == ["start", "write", "say", "say"]
    assert [p for p, _, _ in live["changes"]] == ["health.py"]
    hif.run(api, "decide", "Plain ok", "--why", "nothing to check yet", "--alternative", "JSON body")
    hif.run(api, "checkpoint", "first version")
    st = hif.js(api, "status")
    assert st["session"]["id"] == sid and st["position"] == 0

    landed = hif.js(api, "land")
    assert landed["position"] == 1 and landed["session"] == sid and not landed["already_landed"]
    assert hif.js(api, "status") == {"position": 1, "session": None, "changes": []}

    assert hif.js(other, "pull") == {"position": 1, "changed": ["health.py"]}
    assert (other / "health.py").read_text() == (api / "health.py").read_text()
    shown = hif.js(other, "show", "1")
    assert [c["text"] for c in shown["conversation"]] == ["Should it check the database?", "Not yet"]
    assert shown["decisions"][0]["alternatives"] == ["JSON body"]
    assert [i["note"] for i in shown["iterations"]] == ["first version"]
    assert [c["path"] for c in shown["changes"]] == ["health.py"]
    assert "+    return 'ok'" in shown["changes"][0]["diff"]
    assert "Not yet" in hif.run(other, "show", "1").stdout
    log = hif.js(other, "log")["landings"]
    assert [(x["position"], x["session"], x["goal"]) for x in log] == [(1, sid, "Add health check")]
    blame = hif.js(other, "blame", "health.py")["lines"]
    assert {b["session"] for b in blame} == {sid}
    assert hif.js(other, "cat", "health.py", "--at", "1")["content"].startswith("def health")
    assert [e["path"] for e in hif.js(other, "ls")["entries"]] == ["health.py"]
    assert hif.js(other, "session", "show", sid)["session"]["state"] == "landed"

    # the token is in the credentials file and nowhere in a working copy
    for clone in (api, other):
        for f in clone.rglob("*"):
            if f.is_file():
                assert forge.admin_token.encode() not in f.read_bytes(), f


# -- 2. several clones landing -------------------------------------------------------------------


def test_two_clones_land_and_merge(forge: Forge, hif: Hif, tmp_path: Path) -> None:
    url = setup_repo(hif, forge, tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    hif.run(tmp_path, "clone", url, str(a))
    land(hif, a, "Base file", {"notes.txt": "one\ntwo\nthree\nfour\nfive\n"})
    hif.run(tmp_path, "clone", url, str(b))
    assert hif.js(b, "status")["position"] == 1

    # non-overlapping files: the second landing goes on top of the first
    assert land(hif, a, "A's file", {"a.txt": "a\n"})["position"] == 2
    res = land(hif, b, "B's file", {"b.txt": "b\n"})
    assert res["position"] == 3 and res["merged"] == []
    assert (b / "a.txt").read_text() == "a\n"  # the working copy moved to the landed tree

    # both edit one file in different places: merged on the forge
    hif.run(a, "pull")
    land(hif, a, "Top", {"notes.txt": "ONE\ntwo\nthree\nfour\nfive\n"})
    res = land(hif, b, "Bottom", {"notes.txt": "one\ntwo\nthree\nfour\nFIVE\n"})
    assert res["position"] == 5 and res["merged"] == ["notes.txt"]
    assert (b / "notes.txt").read_text() == "ONE\ntwo\nthree\nfour\nFIVE\n"
    hif.run(a, "pull")
    assert (a / "notes.txt").read_text() == "ONE\ntwo\nthree\nfour\nFIVE\n"
    assert [x["position"] for x in hif.js(a, "log")["landings"]] == [5, 4, 3, 2, 1]


def test_conflict_exits_3_and_sync_resolves(forge: Forge, hif: Hif, tmp_path: Path) -> None:
    url = setup_repo(hif, forge, tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    hif.run(tmp_path, "clone", url, str(a))
    land(hif, a, "Base", {"f.txt": "x\n", "g.txt": "g\n"})
    hif.run(tmp_path, "clone", url, str(b))

    hif.run(b, "session", "start", "B's take")
    (b / "f.txt").write_text("from b\n")
    first = land(hif, a, "A's take", {"f.txt": "from a\n", "new.txt": "new\n"})
    p = hif.run(b, "land", ok=False)
    assert p.returncode == 3
    assert "conflict with landed sessions on: f.txt" in p.stderr
    err = hif.js(b, "land", ok=False)["error"]
    assert err["type"] == "ConflictError"
    assert err["conflicts"][0]["path"] == "f.txt"
    assert err["conflicts"][0]["sessions"] == [{"position": 2, "session": first["session"]}]

    p = hif.run(b, "sync", ok=False)
    assert p.returncode == 3 and "CONFLICT f.txt" in p.stdout
    assert (b / "new.txt").read_text() == "new\n"  # the clean part of the mainline came in
    assert "<<<<<<< session" in (b / "f.txt").read_text()
    assert "markers" in hif.run(b, "land", ok=False).stderr
    (b / "f.txt").write_text("from a and b\n")
    assert hif.js(b, "land")["position"] == 3
    hif.run(a, "pull")
    assert (a / "f.txt").read_text() == "from a and b\n"

    # a clean sync: the session is rebased and lands without merging anything
    hif.run(a, "session", "start", "More")
    (a / "h.txt").write_text("h\n")
    land(hif, b, "Meanwhile", {"g.txt": "g2\n"})
    doc = hif.js(a, "sync")
    assert doc == {"position": 4, "updated": ["g.txt"], "merged": [], "conflicts": []}
    assert (a / "g.txt").read_text() == "g2\n"
    assert hif.js(a, "land")["position"] == 5


def test_abandon_sessions_and_workspaces(forge: Forge, hif: Hif, tmp_path: Path) -> None:
    url = setup_repo(hif, forge, tmp_path)
    a = tmp_path / "a"
    hif.run(tmp_path, "clone", url, str(a))
    land(hif, a, "Base", {"keep.txt": "keep\n"})
    sid = hif.js(a, "session", "start", "Doomed")["session"]
    (a / "tmp.txt").write_text("scratch\n")
    hif.run(a, "say", "this will not work")
    assert [s["id"] for s in hif.js(a, "session", "list")["sessions"]] == [sid]
    assert hif.js(a, "session", "abandon", "--reason", "dead end") == {"session": sid, "state": "abandoned"}
    assert not (a / "tmp.txt").exists()
    shown = hif.js(a, "session", "show", sid)
    assert shown["session"]["state"] == "abandoned"
    assert shown["session"]["events"][-1]["type"] == "abandon"
    assert hif.js(a, "session", "list")["sessions"] == []

    # a workspace of a clone talks to the same forge and shares the object cache
    doc = hif.js(a, "workspace", "add", str(tmp_path / "w"))
    assert doc["position"] == 1
    w = tmp_path / "w"
    assert (w / "keep.txt").read_text() == "keep\n"
    assert not (w / ".hif" / "cache").exists()
    assert land(hif, w, "From the workspace", {"w.txt": "w\n"})["position"] == 2
    hif.run(a, "goto", "2")
    assert (a / "w.txt").exists()
    hif.run(a, "goto", "1")
    assert not (a / "w.txt").exists()


# -- 3. clones: batches, resuming, access ----------------------------------------------------------


def test_clone_resumes_fetching_only_missing_objects(forge: Forge, hif: Hif, tmp_path: Path) -> None:
    url = setup_repo(hif, forge, tmp_path)
    a = tmp_path / "a"
    hif.run(tmp_path, "clone", url, str(a))
    land(hif, a, "Tree", {f"d{i}/f{j}.txt": f"{i} {j}\n" for i in range(3) for j in range(4)})

    c = tmp_path / "c"
    first = hif.js(tmp_path, "clone", url, str(c))
    objects = cached_objects(c)
    assert first["fetched_objects"] == 1 + 3 + 12  # root, 3 directories, 12 blobs
    assert len(objects) == 1 + 3  # the trees; the working files are the blobs' local copy
    assert not (c / CLONE_MARKER).exists()

    # the state an interrupted clone leaves: the marker, part of the objects, part of the files
    for f in objects[:2]:
        f.unlink()
    for d in ("d0", "d1"):
        for f in (c / d).iterdir():
            f.unlink()
    (c / CLONE_MARKER).write_text(json.dumps({"url": url}))
    again = hif.js(tmp_path, "clone", url, str(c))
    assert again["resumed"] is True and again["fetched_objects"] == 2 + 8  # 2 trees, 8 files
    assert (c / "d1" / "f2.txt").read_text() == "1 2\n"
    assert hif.js(c, "status")["changes"] == []
    assert not (c / CLONE_MARKER).exists()

    # a blob is fetched (and cached) on first read; a damaged cached copy (the cache is not
    # fsynced) is dropped and fetched again
    assert hif.js(c, "cat", "d2/f3.txt")["content"] == "2 3\n"
    blob = next(f for f in cached_objects(c) if f.name == hif.js(c, "ls", "d2/f3.txt")["entries"][0]["id"])
    blob.write_bytes(b"\x00torn")
    assert hif.js(c, "cat", "d2/f3.txt")["content"] == "2 3\n"

    # finished clones and foreign directories are not overwritten
    p = hif.run(tmp_path, "clone", url, str(c), ok=False)
    assert "already a hif working copy" in p.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert "not empty" in hif.run(tmp_path, "clone", url, str(tmp_path / "full"), ok=False).stderr
    (c / CLONE_MARKER).write_text(json.dumps({"url": f"{forge.url}/acme/other"}))
    assert "unfinished clone" in hif.run(tmp_path, "clone", url, str(c), ok=False).stderr


def test_transfers_are_batched(forge: Forge, hif: Hif, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of files go up and come down in a handful of requests (SDK, in process)."""
    url = setup_repo(hif, forge, tmp_path)
    monkeypatch.setenv("HIF_CONFIG_DIR", str(tmp_path / "config"))
    seen: list[tuple[str, int, int]] = []
    with Repository.clone(url, tmp_path / "a") as a:
        assert a.remote is not None
        a.set_progress(lambda *x: seen.append(x))
        with a.start_session("Many files") as s:
            for i in range(2500):
                s.write(f"d{i % 5}/f{i}.txt", f"file {i}\n")
        before = a.remote.client.requests
        assert s.result is not None and s.result.position == 1
        assert a.remote.objects.sent_objects >= 2500
        assert before < 20, before
    sends = [n for d, n, _ in seen if d == "send"]
    assert sends == [1000, 1000, 500, 6]  # the blobs in 3 puts, then the session's 6 trees at landing

    seen.clear()
    with Repository.clone(url, tmp_path / "b", progress=lambda *x: seen.append(x)) as b:
        assert b.remote is not None
        assert b.remote.objects.fetched_objects == 1 + 5 + 2500
        assert b.remote.client.requests < 12, b.remote.client.requests
        assert sum(n for _, n, _ in seen) == 2506 and all(d == "fetch" for d, _, _ in seen)
        assert (tmp_path / "b" / "d3" / "f1003.txt").read_text() == "file 1003\n"
        assert b.status().changes == []


def test_private_and_anonymous(forge: Forge, hif: Hif, tmp_path: Path) -> None:
    setup_repo(hif, forge, tmp_path, "acme/open")
    hif.run(tmp_path, "repo", "create", "acme/secret", "--private")
    a = tmp_path / "a"
    hif.run(tmp_path, "clone", f"{forge.url}/acme/open", str(a))
    land(hif, a, "Readme", {"README": "hi\n"})

    anon = Hif(tmp_path / "anon-config")
    doc = anon.js(tmp_path, "clone", f"{forge.url}/acme/open", str(tmp_path / "anon"))
    assert doc["position"] == 1 and (tmp_path / "anon" / "README").read_text() == "hi\n"
    assert anon.js(tmp_path / "anon", "log")["landings"][0]["goal"] == "Readme"
    p = anon.run(tmp_path / "anon", "session", "start", "Sneak in", ok=False)
    assert p.returncode == 4 and len(p.stderr.strip().splitlines()) == 1
    p = anon.run(tmp_path, "clone", f"{forge.url}/acme/secret", ok=False)
    assert p.returncode == 4 and not (tmp_path / "secret").exists()
    # HIF_TOKEN stands in for a login
    anon.run(tmp_path, "clone", f"{forge.url}/acme/secret", HIF_TOKEN=forge.admin_token)
    assert anon.js(tmp_path / "secret", "status")["position"] == 0

    hif.run(tmp_path, "logout", forge.url)
    assert json.loads((tmp_path / "config" / "credentials.json").read_text()) == {}
    p = hif.run(tmp_path, "repo", "create", "acme/third", ok=False)
    assert "hif login" in p.stderr and "--remote" in p.stderr


def test_bad_input(forge: Forge, hif: Hif, tmp_path: Path) -> None:
    p = hif.run(tmp_path, "login", forge.url, "--token", "mcl_not-a-real-token", ok=False)
    assert p.returncode == 4 and len(p.stderr.strip().splitlines()) == 1
    assert "mcl_not-a-real-token" not in p.stderr
    assert not (tmp_path / "config" / "credentials.json").exists()
    err = hif.js(tmp_path, "login", forge.url, "--token", "mcl_nope", ok=False)["error"]
    assert err["type"] == "AuthRequired"

    url = setup_repo(hif, forge, tmp_path)
    p = hif.run(tmp_path, "repo", "list", HIF_TOKEN="mcl_wrong", ok=False)
    assert p.returncode == 4 and len(p.stderr.strip().splitlines()) == 1

    p = hif.run(tmp_path, "clone", f"{forge.url}/acme/nothing", ok=False)
    assert p.returncode == 1 and "not found" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "nothing").exists()
    assert hif.js(tmp_path, "clone", f"{forge.url}/acme/nothing", ok=False)["error"]["type"] == "NotFound"

    port = closed_port()
    p = hif.run(tmp_path, "clone", f"http://127.0.0.1:{port}/acme/api", ok=False)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
    assert f"cannot reach http://127.0.0.1:{port}" in p.stderr
    p = hif.run(tmp_path, "login", f"http://127.0.0.1:{port}", "--token", "mcl_x", ok=False)
    assert p.returncode == 1 and "cannot reach" in p.stderr

    for bad in ("ftp://host/a/b", f"{forge.url}/only-one", "http://user:pw@host/a/b"):
        p = hif.run(tmp_path, "clone", bad, ok=False)
        assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
    assert "already exists" in hif.run(tmp_path, "repo", "create", "acme/api", ok=False).stderr

    # a clone whose forge went away fails in one line, and works again when it is back
    a = tmp_path / "a"
    hif.run(tmp_path, "clone", url, str(a))
    cfg = json.loads((a / ".hif" / "config.json").read_text())
    (a / ".hif" / "config.json").write_text(json.dumps({**cfg, "remote": f"http://127.0.0.1:{port}"}))
    p = hif.run(a, "session", "start", "Offline", ok=False)
    assert p.returncode == 1 and "cannot reach" in p.stderr
    assert hif.js(a, "status")["position"] == 0  # reading the working copy needs no forge
    (a / ".hif" / "config.json").write_text(json.dumps(cfg))
    assert land(hif, a, "Online", {"x": "x\n"})["position"] == 1


def test_object_stream_parsing_and_cut_answers() -> None:
    """objects/stream answers are read as they arrive, however the bytes are split; an answer that
    stops before its closing item is a cut (the client asks again for the rest), not a success."""
    import cbor2

    from hif.forge.client import StreamCut, cbor_objects

    items = [(bytes([i]) * 32, bytes([i]) * size) for i, size in enumerate((0, 5, 23, 24, 255, 256, 70_000))]
    data = b"".join(cbor2.dumps([oid, stored]) for oid, stored in items) + cbor2.dumps({"count": len(items)})
    for step in (1, 7, 4096, len(data)):
        chunks = [data[i:i + step] for i in range(0, len(data), step)]
        assert list(cbor_objects(chunks)) == [*items, {"count": len(items)}]
    for cut in (0, 10, 40, len(data) - 3):
        with pytest.raises(StreamCut):
            list(cbor_objects([data[:cut]]))

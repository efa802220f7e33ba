"""The ``hif`` command line, exercised as a user would: a subprocess per command, in a fresh directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "HIF_AUTHOR": "tester", "HIF_ROLE": "human"}
ENV.pop("HIF_DEBUG", None)


def run(cwd: Path, *args: str, ok: bool | None = True) -> subprocess.CompletedProcess[str]:
    """Run ``hif ARGS`` in ``cwd``; ``ok=True`` asserts exit 0, ``ok=False`` a failure, ``None`` neither."""
    p = subprocess.run([sys.executable, "-m", "hif.cli", *args], cwd=cwd, env=ENV, capture_output=True,
                       text=True, timeout=60)
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
    if ok is True:
        assert p.returncode == 0, f"hif {args} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    elif ok is False:
        assert p.returncode != 0, f"hif {args} unexpectedly succeeded\n{p.stdout}"
    return p


def js(cwd: Path, *args: str, ok: bool | None = True) -> dict:
    return json.loads(run(cwd, *args, "--json", ok=ok).stdout)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under the store's data directory with its bytes."""
    data = root / ".hif" / "store" / "data"
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}


def land_session(cwd: Path, goal: str, files: dict[str, str]) -> str:
    sid = js(cwd, "session", "start", goal)["session"]
    for name, text in files.items():
        (cwd / name).parent.mkdir(parents=True, exist_ok=True)
        (cwd / name).write_text(text)
    run(cwd, "land")
    return sid


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    run(tmp_path, "init", "demo")
    return tmp_path / "demo"


# -- 1. the walkthrough --------------------------------------------------------------------------


def test_walkthrough(tmp_path: Path) -> None:
    out = run(tmp_path, "init", "demo").stdout
    assert "initialised local/demo" in out
    demo = tmp_path / "demo"
    out = run(demo, "session", "start", "Add a greeting").stdout
    m = re.search(r"started session ([a-z2-7]{16}) at position 0", out)
    assert m, out
    sid = m.group(1)
    (demo / "hello.txt").write_text("hello\n")
    run(demo, "say", "Formal or casual?", "--as", "agent")
    run(demo, "say", "Casual", "--as", "human")
    run(demo, "decide", "Casual greeting", "--why", "the human asked for it", "--alternative", "formal greeting")

    out = run(demo, "status").stdout
    assert re.search(r"^\s+A hello\.txt$", out, re.M), out
    assert sid in out and "Add a greeting" in out
    st = js(demo, "status")
    assert st["position"] == 0 and st["session"]["id"] == sid
    assert [(c["path"], c["action"]) for c in st["changes"]] == [("hello.txt", "added")]

    out = run(demo, "land").stdout
    assert f"landed session {sid} at position 1" in out

    out = run(demo, "log").stdout
    line = out.strip().splitlines()[0]
    for part in ("1", sid, "Add a greeting", "tester", "hello.txt"):
        assert part in line, line
    lg = js(demo, "log")
    row = lg["landings"][0]
    assert {"position", "session", "goal", "author", "role", "time", "files"} <= set(row)
    assert (row["position"], row["session"], row["goal"], row["author"], row["files"]) == (
        1, sid, "Add a greeting", "tester", ["hello.txt"])

    out = run(demo, "show", "1").stdout
    assert "goal: Add a greeting" in out
    i1 = out.index("[agent] tester: Formal or casual?")
    i2 = out.index("[human] tester: Casual")
    assert i1 < i2
    assert "- Casual greeting" in out
    assert "why: the human asked for it" in out
    assert "rejected: formal greeting" in out
    assert "+++ b/hello.txt" in out and re.search(r"^\+hello$", out, re.M)

    doc = js(demo, "show", "1")
    assert {"session", "position", "conversation", "decisions", "iterations", "changes"} <= set(doc)
    assert doc["position"] == 1 and doc["session"]["id"] == sid
    assert [(c["role"], c["text"]) for c in doc["conversation"]] == [("agent", "Formal or casual?"),
                                                                     ("human", "Casual")]
    assert doc["decisions"] == [{"decision": "Casual greeting", "why": "the human asked for it",
                                 "alternatives": ["formal greeting"], "author": "tester", "role": "human"}]
    assert doc["changes"][0]["path"] == "hello.txt" and doc["changes"][0]["action"] == "added"
    assert "+hello" in doc["changes"][0]["diff"]


def test_json_shapes(repo: Path) -> None:
    doc = js(repo.parent, "init", "other")
    assert {"root", "repo", "store"} <= set(doc)
    doc = js(repo, "session", "start", "g")
    assert {"session", "goal", "base"} <= set(doc) and doc["base"] == 0
    (repo / "f.txt").write_text("x\n")
    assert {"seq", "role", "author"} <= set(js(repo, "say", "hi", "--as", "agent"))
    assert "seq" in js(repo, "decide", "d", "--why", "w")
    doc = js(repo, "land")
    assert doc["position"] == 1 and doc["session"]
    assert js(repo, "ls")["entries"][0]["path"] == "f.txt"


# -- 2. the other commands -----------------------------------------------------------------------


def test_sessions_checkpoints_diff_abandon(repo: Path) -> None:
    land_session(repo, "base", {"a.txt": "one\ntwo\n"})
    sid = js(repo, "session", "start", "iterate")["session"]
    out = run(repo, "session", "list").stdout
    assert re.search(rf"^\* {sid} .*iterate$", out, re.M), out
    lst = js(repo, "session", "list")
    assert lst["current"] == sid and [s["id"] for s in lst["sessions"]] == [sid]

    (repo / "a.txt").write_text("one\nTWO\n")
    assert "iteration 1: first try" in run(repo, "checkpoint", "first try").stdout
    (repo / "a.txt").write_text("one\nTWO\nthree\n")
    (repo / "b.txt").write_text("bee\n")
    assert js(repo, "checkpoint", "second try")["iteration"] == 2

    out = run(repo, "diff").stdout
    assert "-two" in out and "+TWO" in out and "+three" in out and "+bee" in out
    out = run(repo, "diff", "--stat").stdout
    assert " a.txt | +2 -1" in out and " b.txt | +1 -0" in out and "2 file(s) changed" in out
    d = js(repo, "diff", "--stat")
    assert {(f["path"], f["added"], f["removed"]) for f in d["files"]} == {("a.txt", 2, 1), ("b.txt", 1, 0)}
    assert "diff" not in d["files"][0]

    out = run(repo, "session", "show").stdout
    assert "iterations:" in out and "1. first try" in out and "2. second try" in out
    doc = js(repo, "session", "show", sid)
    assert [(i["iteration"], i["note"]) for i in doc["iterations"]] == [(1, "first try"), (2, "second try")]
    assert doc["session"]["state"] == "open"

    assert f"abandoned session {sid}" in run(repo, "session", "abandon").stdout
    assert (repo / "a.txt").read_text() == "one\ntwo\n"
    assert not (repo / "b.txt").exists()
    assert "no open sessions" in run(repo, "session", "list").stdout
    assert "abandoned" in run(repo, "session", "show", sid).stdout
    st = js(repo, "status")
    assert st["changes"] == [] and st["session"] is None


def test_history_cat_ls_goto_pull_blame(repo: Path) -> None:
    s1 = land_session(repo, "first lines", {"f.txt": "alpha\nbeta\n", "docs/readme": "read me\n"})
    s2 = land_session(repo, "more lines", {"f.txt": "alpha\nbeta\ngamma\n"})
    s3 = land_session(repo, "other file", {"g.txt": "g\n"})

    lg = js(repo, "log", "--path", "f.txt")["landings"]
    assert [(r["position"], r["session"]) for r in lg] == [(2, s2), (1, s1)]
    assert [r["session"] for r in js(repo, "log", "--path", "docs")["landings"]] == [s1]
    out = run(repo, "log", "-n", "1").stdout.strip().splitlines()
    assert len(out) == 1 and s3 in out[0]

    out = run(repo, "show", s2).stdout
    assert "position 2" in out and "goal: more lines" in out and "+gamma" in out
    assert js(repo, "show", s1)["position"] == 1

    assert run(repo, "cat", "f.txt", "--at", "1").stdout == "alpha\nbeta\n"
    assert run(repo, "cat", "f.txt").stdout == "alpha\nbeta\ngamma\n"
    assert js(repo, "cat", "f.txt", "--at", "1")["content"] == "alpha\nbeta\n"
    out = run(repo, "ls", "--at", "1").stdout
    assert "docs/" in out and "f.txt" in out and "g.txt" not in out
    assert {e["path"] for e in js(repo, "ls", "--at", "3")["entries"]} == {"docs", "f.txt", "g.txt"}
    assert [e["path"] for e in js(repo, "ls", "-r")["entries"]] == ["docs/readme", "f.txt", "g.txt"]

    assert "at position 1" in run(repo, "goto", "1").stdout
    assert (repo / "f.txt").read_text() == "alpha\nbeta\n" and not (repo / "g.txt").exists()
    assert js(repo, "status")["position"] == 1
    assert run(repo, "cat", "f.txt").stdout == "alpha\nbeta\n"  # default: the working copy's position
    doc = js(repo, "goto", "3")
    assert doc["position"] == 3 and set(doc["changed"]) == {"f.txt", "g.txt"}
    assert (repo / "f.txt").read_text() == "alpha\nbeta\ngamma\n" and (repo / "g.txt").exists()
    run(repo, "goto", "0")
    assert not (repo / "f.txt").exists() and not (repo / "docs").exists()
    assert "at position 3" in run(repo, "pull").stdout
    assert (repo / "docs" / "readme").read_text() == "read me\n"

    bl = js(repo, "blame", "f.txt")["lines"]
    assert [(b["text"], b["position"], b["session"], b["goal"]) for b in bl] == [
        ("alpha", 1, s1, "first lines"),
        ("beta", 1, s1, "first lines"),
        ("gamma", 2, s2, "more lines"),
    ]
    out = run(repo, "blame", "f.txt").stdout.splitlines()
    assert s1[:10] in out[0] and "first lines" in out[0] and out[0].endswith("| alpha")
    assert s2[:10] in out[2] and "more lines" in out[2] and out[2].endswith("| gamma")
    assert js(repo, "blame", "f.txt", "--at", "1")["lines"][-1]["text"] == "beta"


def test_workspaces(repo: Path, tmp_path: Path) -> None:
    land_session(repo, "first", {"a.txt": "a\n"})
    doc = js(repo, "workspace", "add", str(tmp_path / "ws2"))
    ws2 = tmp_path / "ws2"
    assert doc["position"] == 1 and Path(doc["root"]) == ws2
    assert (ws2 / "a.txt").read_text() == "a\n"
    sid = land_session(ws2, "from the second copy", {"b.txt": "b\n"})
    assert not (repo / "b.txt").exists()
    assert "at position 2" in run(repo, "pull").stdout
    assert (repo / "b.txt").read_text() == "b\n"
    assert js(repo, "log", "-n", "1")["landings"][0]["session"] == sid
    # a workspace may not be made in a non-empty directory
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    p = run(repo, "workspace", "add", str(tmp_path / "full"), ok=False)
    assert p.stderr.startswith("error:") and "not empty" in p.stderr


def test_symlinks_and_executables_round_trip(repo: Path, tmp_path: Path) -> None:
    run(repo, "session", "start", "special files")
    (repo / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "target.txt").write_text("t\n")
    os.symlink("target.txt", repo / "link")
    run(repo, "land")
    kinds = {e["path"]: e["kind"] for e in js(repo, "ls")["entries"]}
    assert kinds == {"run.sh": "x", "link": "l", "target.txt": "f"}
    run(repo, "workspace", "add", str(tmp_path / "ws2"))
    ws2 = tmp_path / "ws2"
    assert os.readlink(ws2 / "link") == "target.txt"
    assert os.access(ws2 / "run.sh", os.X_OK) and not os.access(ws2 / "target.txt", os.X_OK)
    assert (ws2 / "run.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert js(ws2, "status")["changes"] == []


def test_file_becomes_directory_and_back(repo: Path, tmp_path: Path) -> None:
    land_session(repo, "dir", {"d/x": "1\n", "y": "y\n"})
    run(repo, "session", "start", "flatten")
    (repo / "d" / "x").unlink()
    (repo / "d").rmdir()
    (repo / "d").write_text("file\n")
    (repo / "y").unlink()
    st = {c["path"]: c["action"] for c in js(repo, "status")["changes"]}
    assert st == {"d": "added", "d/x": "deleted", "y": "deleted"}
    run(repo, "land")
    run(repo, "goto", "1")
    assert (repo / "d" / "x").read_text() == "1\n" and (repo / "y").exists()
    assert js(repo, "status")["changes"] == []
    run(repo, "pull")
    assert (repo / "d").read_text() == "file\n" and not (repo / "y").exists()
    doc = js(repo, "workspace", "add", "../ws2")
    assert doc["root"] == str(tmp_path / "ws2")  # shown without ".."
    assert (tmp_path / "ws2" / "d").read_text() == "file\n"


# -- 3. conflicts --------------------------------------------------------------------------------


def two_workspaces(repo: Path, tmp_path: Path, text: str) -> Path:
    land_session(repo, "base", {"f.txt": text})
    run(repo, "workspace", "add", str(tmp_path / "ws2"))
    return tmp_path / "ws2"


BASE = "".join(f"line {i}\n" for i in range(1, 11))


def test_true_conflict_refused_then_sync_and_resolve(repo: Path, tmp_path: Path) -> None:
    ws2 = two_workspaces(repo, tmp_path, BASE)
    first = land_session(repo, "mine", {"f.txt": BASE.replace("line 5\n", "line five (repo)\n")})
    run(ws2, "session", "start", "theirs")
    (ws2 / "f.txt").write_text(BASE.replace("line 5\n", "line FIVE (ws2)\n"))
    before = snapshot(repo)
    p = run(ws2, "land", ok=None)
    assert p.returncode == 3, p.stderr
    assert p.stderr.startswith("error:") and "f.txt" in p.stderr and first in p.stderr
    err = js(ws2, "land", ok=None)["error"]
    assert err["type"] == "ConflictError" and "f.txt" in err["message"]
    assert err["conflicts"][0]["path"] == "f.txt"
    assert err["conflicts"][0]["sessions"] == [{"position": 2, "session": first}]
    assert snapshot(repo).keys() >= before.keys()
    assert not any(k.split("/")[3] == "log" for k in snapshot(repo).keys() - before.keys())

    p = run(ws2, "sync", ok=None)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "CONFLICT f.txt" in p.stdout
    text = (ws2 / "f.txt").read_text()
    assert "<<<<<<< " in text and ">>>>>>> " in text
    assert "line five (repo)" in text and "line FIVE (ws2)" in text
    p = run(ws2, "land", ok=False)
    assert p.stderr.startswith("error:") and "conflict markers" in p.stderr
    resolved = BASE.replace("line 5\n", "line 5 (both)\n")
    (ws2 / "f.txt").write_text(resolved)
    assert "at position 3" in run(ws2, "land").stdout
    run(repo, "pull")
    assert (repo / "f.txt").read_text() == resolved


def test_disjoint_changes_to_one_file_merge(repo: Path, tmp_path: Path) -> None:
    ws2 = two_workspaces(repo, tmp_path, BASE)
    land_session(repo, "top", {"f.txt": BASE.replace("line 1\n", "line one\n")})
    run(ws2, "session", "start", "bottom")
    (ws2 / "f.txt").write_text(BASE.replace("line 10\n", "line ten\n"))
    out = run(ws2, "land").stdout
    assert "at position 3" in out and "merged: f.txt" in out
    merged = BASE.replace("line 1\n", "line one\n").replace("line 10\n", "line ten\n")
    assert (ws2 / "f.txt").read_text() == merged
    run(repo, "pull")
    assert (repo / "f.txt").read_text() == merged
    assert run(repo, "cat", "f.txt", "--at", "3").stdout == merged

    # hif sync without a conflict: the other side's landing arrives, then the session lands on top
    run(ws2, "session", "start", "new file")
    (ws2 / "n.txt").write_text("n\n")
    land_session(repo, "middle", {"f.txt": merged.replace("line 5\n", "line five\n")})
    doc = js(ws2, "sync")
    assert doc["position"] == 4 and doc["updated"] == ["f.txt"] and doc["conflicts"] == []
    assert "line five" in (ws2 / "f.txt").read_text()
    assert [c["path"] for c in js(ws2, "status")["changes"]] == ["n.txt"]
    out = run(ws2, "land").stdout
    assert "at position 5" in out and "merged" not in out
    assert js(ws2, "show", "5")["session"]["files"] == ["n.txt"]


# -- 4. bad input --------------------------------------------------------------------------------


def assert_error(cwd: Path, *args: str, store: Path | None = None, contains: str = "") -> str:
    """One ``error:`` line on stderr, non-zero exit, no traceback, store bytes unchanged; also --json."""
    before = snapshot(store) if store else None
    p = run(cwd, *args, ok=False)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    assert contains.lower() in lines[0].lower(), lines[0]
    assert p.stdout == ""
    pj = run(cwd, *args, "--json", ok=False)
    assert pj.returncode == p.returncode and pj.stderr == ""
    doc = json.loads(pj.stdout)
    assert doc["error"]["message"] and doc["error"]["type"]
    if store:
        assert snapshot(store) == before
    return lines[0]


def test_not_a_repository(tmp_path: Path) -> None:
    for args in (["status"], ["log"], ["say", "x"]):
        assert_error(tmp_path, *args, contains="not a hif working copy")


def test_errors_without_session_and_bad_refs(repo: Path) -> None:
    land_session(repo, "one", {"f.txt": "f\n"})
    e = lambda *a, contains="": assert_error(repo, *a, store=repo, contains=contains)  # noqa: E731
    e("say", "x", contains="no open session")
    e("land", contains="no open session")
    e("checkpoint", "n", contains="no open session")
    e("show", "99", contains="99")
    e("goto", "99", contains="no position 99")
    e("cat", "f.txt", "--at", "99", contains="no position 99")
    e("ls", "--at", "99", contains="no position 99")
    e("show", "aaaaaaaaaaaaaaaa", contains="aaaaaaaaaaaaaaaa")
    e("show", "not-a-session!", contains="not a session id")
    e("session", "show", "XYZ", contains="not a session id")
    e("cat", "../x", contains="outside the working copy")
    e("cat", "/etc/passwd", contains="outside the working copy")
    e("blame", "../x", contains="outside the working copy")
    e("cat", "nope.txt", contains="nope.txt")
    e("cat", ".", contains="not a file")
    e("show", "0", contains="no position 0")
    e("session", "start", "", contains="goal must not be empty")
    e("session", "start", "   ", contains="goal must not be empty")
    p = run(repo, "goto", "abc", ok=None)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_errors_with_open_session(repo: Path, tmp_path: Path) -> None:
    land_session(repo, "one", {"f.txt": "f\n"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "file").write_text("secret\n")
    run(repo, "session", "start", "open one")
    (repo / "out").symlink_to(outside)
    run(repo, "say", "recorded the link")  # records the symlink itself; must not follow it
    e = lambda *a, contains="": assert_error(repo, *a, store=repo, contains=contains)  # noqa: E731
    e("cat", "out/file", contains="symbolic link")
    e("blame", "out/file", contains="symbolic link")
    e("session", "start", "second", contains="already open")
    e("goto", "0", contains="session is open")
    e("say", "", contains="must not be empty")
    e("decide", "d", "--why", " ", contains="must not be empty")
    run(repo, "land")
    kinds = {e["path"]: e["kind"] for e in js(repo, "ls")["entries"]}
    assert kinds == {"f.txt": "f", "out": "l"}  # the link itself, not what it points to
    assert run(repo, "cat", "out").stdout == str(outside)
    assert not any(b"secret" in v for v in snapshot(repo).values())


def test_binary_file(repo: Path) -> None:
    run(repo, "session", "start", "binary")
    blob = bytes(range(256)) * 4
    (repo / "img.bin").write_bytes(blob)
    run(repo, "land")
    out = run(repo, "show", "1").stdout
    assert "Binary file" in out and "img.bin" in out
    assert_error(repo, "blame", "img.bin", store=repo, contains="binary")
    p = subprocess.run([sys.executable, "-m", "hif.cli", "cat", "img.bin"], cwd=repo, env=ENV,
                       capture_output=True, timeout=60)
    assert p.returncode == 0 and p.stdout == blob


def test_corrupt_object(repo: Path) -> None:
    land_session(repo, "one", {"f.txt": "hello\n", "g.txt": "fine\n"})
    oid = next(e["id"] for e in js(repo, "ls")["entries"] if e["path"] == "f.txt")
    (obj,) = (repo / ".hif" / "store" / "data" / "repos").glob(f"*/*/objects/{oid}")
    obj.write_bytes(b"garbage, not an object")
    for args in (["show", "1"], ["cat", "f.txt"]):
        assert oid in assert_error(repo, *args, store=repo, contains="corrupt")
    assert run(repo, "cat", "g.txt").stdout == "fine\n"  # the rest of the store is still readable
    obj.write_bytes(b"\x00" + b"\xa0")  # a well-formed encoding of the wrong bytes
    assert_error(repo, "cat", "f.txt", contains="corrupt")

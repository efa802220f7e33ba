"""Agent Trace: ``hif export agent-trace`` and the forge's ``landings/<pos>/agent-trace`` route write
records valid against the specification's schema (vendored in hif/agents/schema), with the right
files, line ranges, contributors and models; ``hif import agent-trace`` attaches a record to a
session and refuses what is not one."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from agentkit import ROOT, Hif
from forge import Forge

SCHEMA = json.loads((ROOT / "hif" / "agents" / "schema" / "trace-record.json").read_text())


def valid(record: dict[str, Any]) -> dict[str, Any]:
    """Checked against the published schema, its formats included (uuid, date-time, uri)."""
    jsonschema.Draft202012Validator(SCHEMA).validate(record)
    uuid.UUID(record["id"])
    datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
    for f in record["files"]:
        for c in f["conversations"]:
            for url in [c.get("url"), *(r["url"] for r in c.get("related", []))]:
                assert url is None or httpx.URL(url).scheme in ("http", "https")
    return record


def by_path(record: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {f["path"]: f["conversations"] for f in record["files"]}


def claude_write(h: Hif, path: str, content: str, call: str, model: str = "claude-sonnet-4-5") -> None:
    full = h.cwd / path
    full.parent.mkdir(parents=True, exist_ok=True)
    full.write_text(content)
    h.hook("claude-code", "SessionStart", {"session_id": "cc1", "cwd": str(h.cwd), "model": model})
    h.hook("claude-code", "PostToolUse", {"session_id": "cc1", "cwd": str(h.cwd), "tool_name": "Write",
                                          "tool_use_id": call, "tool_input": {"file_path": str(full)}})


def test_export_attributes_lines_to_agent_human_and_both(wc: Hif) -> None:
    wc.run("session", "start", "base")
    (wc.cwd / "app.py").write_text("a = 1\nb = 2\nc = 3\n")
    (wc.cwd / "logo.bin").write_bytes(b"\x00\x01binary")
    wc.run("land")
    wc.hook("claude-code", "UserPromptSubmit", {"session_id": "cc1", "cwd": str(wc.cwd), "prompt": "Improve app"})
    claude_write(wc, "app.py", "a = 1\nb = 20\nc = 3\nd = 4\n", "toolu_1")  # lines 2 and 4 by the agent
    claude_write(wc, "new.py", "x = 1\ny = 2\n", "toolu_2", model="claude-opus-4-1")
    claude_write(wc, "both.py", "one\n", "toolu_3")
    (wc.cwd / "both.py").write_text("one\ntwo\n")  # then the person edits it too
    (wc.cwd / "human.md").write_text("# notes\n")
    (wc.cwd / "logo.bin").write_bytes(b"\x00\x02binary")
    wc.run("say", "my edits")  # records the person's changes (role human)
    wc.run("land")
    rec = valid(json.loads(wc.text("export", "agent-trace", "2")))
    files = by_path(rec)
    assert set(files) == {"app.py", "new.py", "both.py", "human.md"}  # no binary, no deletion
    assert files["app.py"][0]["ranges"] == [{"start_line": 2, "end_line": 2}, {"start_line": 4, "end_line": 4}]
    assert files["app.py"][0]["contributor"] == {"type": "ai", "model_id": "anthropic/claude-sonnet-4-5"}
    assert files["new.py"][0]["contributor"] == {"type": "ai", "model_id": "anthropic/claude-opus-4-1"}
    assert files["new.py"][0]["ranges"] == [{"start_line": 1, "end_line": 2}]
    assert files["both.py"][0]["contributor"]["type"] == "mixed"
    assert files["human.md"][0]["contributor"] == {"type": "human"}
    assert "url" not in files["app.py"][0]  # a local repository has no forge page
    assert rec["version"] == "0.1.0" and rec["tool"]["name"] == "hif"
    meta = rec["metadata"]["dev.micelio"]
    assert meta["position"] == 2 and meta["sessions"][0]["goal"] == "Improve app"
    # the same landing, named by its session, gives the very same record
    sid = meta["sessions"][0]["id"]
    assert json.loads(wc.text("export", "agent-trace", sid)) == rec
    out = wc.cwd.parent / "trace.json"
    wc.run("export", "agent-trace", "2", "-o", str(out))
    assert json.loads(out.read_text()) == rec


def test_export_refuses_what_has_not_landed(wc: Hif) -> None:
    wc.run("session", "start", "open one")
    sid = wc.state()["session"]
    for ref in (sid, "7", "0"):
        p = wc.run("export", "agent-trace", ref, ok=False)
        assert p.returncode == 1 and len(p.stderr.decode().strip().splitlines()) == 1, p.stderr


def test_import_attaches_a_record_and_refuses_what_is_not_one(wc: Hif, tmp_path: Path) -> None:
    wc.run("session", "start", "first")
    (wc.cwd / "f.py").write_text("x\n")
    wc.run("land")
    record = json.loads(wc.text("export", "agent-trace", "1"))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(record))
    wc.run("session", "start", "second")
    before = wc.session()["events"]
    bad = {
        "not-json": b"{oops",
        "array": b"[]",
        "no-id": json.dumps({k: v for k, v in record.items() if k != "id"}).encode(),
        "bad-id": json.dumps({**record, "id": "nope"}).encode(),
        "two-part-version": json.dumps({**record, "version": "0.1"}).encode(),
        "files-not-list": json.dumps({**record, "files": {}}).encode(),
        "zero-line": json.dumps({**record, "files": [{"path": "a", "conversations": [
            {"ranges": [{"start_line": 0, "end_line": 1}]}]}]}).encode(),
        "bool-line": json.dumps({**record, "files": [{"path": "a", "conversations": [
            {"ranges": [{"start_line": True, "end_line": 1}]}]}]}).encode(),
        "robot": json.dumps({**record, "files": [{"path": "a", "conversations": [
            {"contributor": {"type": "robot"}, "ranges": []}]}]}).encode(),
        "long-model": json.dumps({**record, "files": [{"path": "a", "conversations": [
            {"contributor": {"type": "ai", "model_id": "m" * 251}, "ranges": []}]}]}).encode(),
        "huge": json.dumps({**record, "metadata": {"x": "y" * (1 << 20)}}).encode(),
    }
    for name, data in bad.items():
        f = tmp_path / f"{name}.json"
        f.write_bytes(data)
        p = wc.run("import", "agent-trace", str(f), ok=False)
        err = p.stderr.decode().strip().splitlines()
        assert p.returncode == 1 and len(err) == 1, (name, p.stderr)
        assert "Agent Trace record" in err[0], (name, err)
    assert wc.session()["events"] == before  # refused: nothing stored
    doc = wc.js("import", "agent-trace", str(good))
    assert doc["record"] == record["id"] and "1 line(s) human" in doc["summary"]
    e = wc.session()["events"][-1]
    assert e["type"] == "say" and e["kind"] == "agent-trace" and e["agent"] == "hif"
    assert valid(json.loads(e["text"])) == record
    wc.run("import", "agent-trace", "-", input=good.read_bytes())  # from stdin


def test_forge_serves_the_record_and_the_ui_links_it(forge: Forge, tmp_path: Path) -> None:
    home = tmp_path / "config"
    h = Hif(tmp_path, home)
    h.run("login", forge.url, "--token", forge.admin_token)
    h.run("repo", "create", "acme/trace")
    h.run("clone", f"{forge.url}/acme/trace", "wc")
    wc = Hif(tmp_path / "wc", home)
    wc.hook("claude-code", "UserPromptSubmit", {"session_id": "cc9", "cwd": str(wc.cwd), "prompt": "Add f"})
    claude_write(wc, "f.py", "print(1)\n", "toolu_9")  # a forge clone: the hook goes through the SDK
    assert wc.log() == ""
    sid = wc.state()["session"]
    events = wc.session()["events"]
    assert [(e["type"], e.get("tool_call")) for e in events[1:]] == [("say", None), ("write", "toolu_9")]
    wc.run("land")
    r = httpx.get(f"{forge.url}/api/v1/repos/acme/trace/landings/1/agent-trace",
                  headers={"Authorization": f"Bearer {forge.admin_token}"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.agent-trace.record+json"
    rec = valid(r.json())
    conv = by_path(rec)["f.py"][0]
    assert conv["url"] == f"{forge.url}/acme/trace/sessions/{sid}"
    assert conv["contributor"] == {"type": "ai", "model_id": "anthropic/claude-sonnet-4-5"}
    assert r.json() == httpx.get(r.url).json()  # public repository: anyone may read it, always the same
    assert json.loads(wc.text("export", "agent-trace", "1")) == rec  # the clone exports the same record
    for pos in (0, 2, 99, -1, "x", "1.0", "١", "9" * 40):
        assert httpx.get(f"{forge.url}/api/v1/repos/acme/trace/landings/{pos}/agent-trace").status_code == 404
    page = httpx.get(f"{forge.url}/acme/trace/sessions/{sid}").text
    assert 'href="/api/v1/repos/acme/trace/landings/1/agent-trace"' in page
    assert "via claude-code · claude-sonnet-4-5 · Write" in page


def test_an_imported_git_commit_is_an_unknown_contributor(tmp_path: Path) -> None:
    """A commit imported from git says nothing of who typed it: neither "human" nor "ai"; and
    "imported" is git import's own role, which nobody can claim by hand."""
    src = tmp_path / "src"
    src.mkdir()
    genv = {**os.environ, "GIT_AUTHOR_NAME": "Ana", "GIT_AUTHOR_EMAIL": "ana@example.org",
            "GIT_COMMITTER_NAME": "Ana", "GIT_COMMITTER_EMAIL": "ana@example.org"}
    (src / "app.py").write_text("a = 1\nb = 2\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "Add app"]):
        subprocess.run(["git", *args], cwd=src, env=genv, check=True, capture_output=True)
    h = Hif(tmp_path, tmp_path / "config")
    h.run("import", "git", "src", "w")
    w = Hif(tmp_path / "w", tmp_path / "config")
    rec = valid(json.loads(w.text("export", "agent-trace", "1")))
    (conv,) = by_path(rec)["app.py"]
    assert conv["contributor"] == {"type": "unknown"}
    w.run("session", "start", "try")
    p = w.run("say", "hello", "--as", "imported", ok=False)
    assert p.returncode != 0 and b"imported" in p.stderr

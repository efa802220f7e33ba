"""``hif agent hook``: each supported agent's hook inputs (written from the agents' documentation: Claude
Code's hooks reference, Gemini CLI's hooks reference) fed to the command as a subprocess, and the
session that results checked event by event; broken inputs never raise and never stop the agent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agentkit import Hif

CLAUDE_SESSION = "0b3e6f0e-3c4a-4d7e-9a0b-5c1e2d3f4a5b"
MODEL = "claude-sonnet-4-5-20250929"


def claude(h: Hif, event: str, transcript: Path, **fields: Any) -> dict[str, Any]:
    return {"session_id": CLAUDE_SESSION, "transcript_path": str(transcript), "cwd": str(h.cwd),
            "hook_event_name": event, "permission_mode": "default", **fields}


def append_lines(path: Path, *records: dict[str, Any]) -> None:
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def assistant(*blocks: dict[str, Any], model: str = MODEL) -> dict[str, Any]:
    return {"type": "assistant", "sessionId": CLAUDE_SESSION, "timestamp": "2026-01-05T10:00:00Z",
            "message": {"role": "assistant", "model": model, "content": list(blocks)}}


def user(text: str) -> dict[str, Any]:
    return {"type": "user", "sessionId": CLAUDE_SESSION, "message": {"role": "user", "content": text}}


def prov(e: dict[str, Any]) -> dict[str, Any]:
    return {k: e[k] for k in ("agent", "model", "agent_session", "tool", "tool_call") if k in e}


def test_claude_code_session_event_by_event(wc: Hif, tmp_path: Path) -> None:
    t = tmp_path / "transcript.jsonl"
    wc.hook("claude-code", "SessionStart", claude(wc, "SessionStart", t, source="startup", model=MODEL))
    assert wc.state()["session"] is None  # a session opens at the first prompt, not before
    prompt = "Add a greeting module\nIt should say hello. My token is ghp_" + "x" * 36
    wc.hook("claude-code", "UserPromptSubmit", claude(wc, "UserPromptSubmit", t, prompt=prompt))
    append_lines(t, user(prompt))
    (wc.cwd / "hello.py").write_text("print('hello')\n")
    append_lines(t, assistant({"type": "text", "text": "I'll write hello.py."},
                              {"type": "tool_use", "id": "toolu_01W", "name": "Write",
                               "input": {"file_path": str(wc.cwd / "hello.py"), "content": "print('hello')\n"}}))
    wc.hook("claude-code", "PostToolUse", claude(
        wc, "PostToolUse", t, tool_name="Write", tool_use_id="toolu_01W",
        tool_input={"file_path": str(wc.cwd / "hello.py"), "content": "print('hello')\n"},
        tool_response={"filePath": str(wc.cwd / "hello.py"), "success": True}))
    (wc.cwd / "hello.py").write_text("print('hello, world')\n")
    wc.hook("claude-code", "PostToolUse", claude(
        wc, "PostToolUse", t, tool_name="Edit", tool_use_id="toolu_02E",
        tool_input={"file_path": str(wc.cwd / "hello.py"), "old_string": "hello", "new_string": "hello, world"},
        tool_response={"filePath": str(wc.cwd / "hello.py")}))
    (wc.cwd / "docs").mkdir()
    (wc.cwd / "docs" / "a.md").write_text("# A\n")
    wc.hook("claude-code", "PostToolUse", claude(  # a relative path, relative to cwd
        wc, "PostToolUse", t, tool_name="MultiEdit", tool_use_id="toolu_03M",
        tool_input={"file_path": "docs/a.md", "edits": [{"old_string": "a", "new_string": "A"}]}))
    (wc.cwd / "nb.ipynb").write_text("{}\n")
    wc.hook("claude-code", "PostToolUse", claude(
        wc, "PostToolUse", t, tool_name="NotebookEdit", tool_use_id="toolu_04N",
        tool_input={"notebook_path": str(wc.cwd / "nb.ipynb"), "new_source": "x", "cell_id": "c1"}))
    wc.hook("claude-code", "PostToolUse", claude(
        wc, "PostToolUse", t, tool_name="TodoWrite", tool_use_id="toolu_05T",
        tool_input={"todos": [{"content": "write hello.py", "status": "completed", "activeForm": "Writing"},
                              {"content": "add docs", "status": "in_progress", "activeForm": "Adding"},
                              {"content": "tests", "status": "pending", "activeForm": "Testing"}]}))
    wc.hook("claude-code", "PostToolUse", claude(
        wc, "PostToolUse", t, tool_name="ExitPlanMode", tool_use_id="toolu_06P",
        tool_input={"plan": "1. greet\n2. document"}))
    wc.hook("claude-code", "PostToolUse", claude(  # not a tool hif records
        wc, "PostToolUse", t, tool_name="Bash", tool_use_id="toolu_07B", tool_input={"command": "ls"},
        tool_response={"stdout": "hello.py"}))
    append_lines(t, {"type": "user", "message": {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01W", "content": "ok"}]}},
        assistant({"type": "text", "text": "Done: hello.py greets. password=hunter2"}))
    wc.hook("claude-code", "Stop", claude(wc, "Stop", t, stop_hook_active=False))
    # a second turn: only the transcript's new tail is read
    wc.hook("claude-code", "UserPromptSubmit", claude(wc, "UserPromptSubmit", t, prompt="Thanks!"))
    append_lines(t, user("Thanks!"), assistant({"type": "text", "text": "You're welcome."}, model="claude-opus-4-1"))
    wc.hook("claude-code", "Stop", claude(wc, "Stop", t, stop_hook_active=False))
    wc.hook("claude-code", "SessionEnd", claude(wc, "SessionEnd", t, reason="exit"))

    assert wc.log() == ""
    s = wc.session()
    ev = s["events"]
    assert s["goal"] == "Add a greeting module" and s["role"] == "human" and s["author"] == "ana"
    got = [(e["type"], e["role"], e["author"], e.get("path") or e.get("text"), e.get("kind") if e["type"] == "say" else None)
           for e in ev[1:]]
    assert got == [
        ("say", "human", "ana", "Add a greeting module\nIt should say hello. My token is [redacted:github-token]", None),
        ("write", "agent", "claude-code", "hello.py", None),
        ("write", "agent", "claude-code", "hello.py", None),
        ("write", "agent", "claude-code", "docs/a.md", None),
        ("write", "agent", "claude-code", "nb.ipynb", None),
        ("say", "agent", "claude-code", "[x] write hello.py\n[>] add docs\n[ ] tests", "todo"),
        ("say", "agent", "claude-code", "1. greet\n2. document", "plan"),
        ("say", "agent", "claude-code", "I'll write hello.py.\n\nDone: hello.py greets. password=[redacted:password]", None),
        ("say", "human", "ana", "Thanks!", None),
        ("say", "agent", "claude-code", "You're welcome.", None),
    ]
    base = {"agent": "claude-code", "agent_session": CLAUDE_SESSION}
    assert prov(ev[1]) == base  # the person's prompt: where it was typed, no model
    assert prov(ev[2]) == {**base, "model": MODEL, "tool": "Write", "tool_call": "toolu_01W"}
    assert [prov(e).get("tool_call") for e in ev[3:8]] == ["toolu_02E", "toolu_03M", "toolu_04N", "toolu_05T", "toolu_06P"]
    assert prov(ev[8]) == {**base, "model": MODEL} and prov(ev[10]) == {**base, "model": "claude-opus-4-1"}
    assert s["files"] == ["docs/a.md", "hello.py", "nb.ipynb"]
    # the writes name the files as they were when the tool ran: the first write is the first version
    assert ev[2]["kind"] == "f" and ev[2]["blob"] != ev[3]["blob"]
    # the session lands with all of it, and hif show tells who did what
    wc.run("land")
    out = wc.text("show", "1")
    assert "claude-code (via claude-code, model claude-sonnet-4-5-20250929): I'll write hello.py." in out
    assert "write hello.py (via claude-code, model claude-sonnet-4-5-20250929, tool Write, tool call toolu_01W)" in out
    assert json.loads((wc.cwd / ".hif" / "agent-hooks.json").read_text()) == {}  # SessionEnd forgot it


def gemini(h: Hif, event: str, **fields: Any) -> dict[str, Any]:
    return {"session_id": "gem-42", "transcript_path": str(h.cwd.parent / "gemini.json"), "cwd": str(h.cwd),
            "hook_event_name": event, "timestamp": "2026-01-05T10:00:00.000Z", **fields}


def test_gemini_cli_session_event_by_event(wc: Hif) -> None:
    wc.hook("gemini-cli", "SessionStart", gemini(wc, "SessionStart", source="startup"))
    wc.hook("gemini-cli", "BeforeAgent", gemini(wc, "BeforeAgent", prompt="  \n Make a README with AKIAIOSFODNN7EXAMPLE"))
    (wc.cwd / "README.md").write_text("# hi\n")
    wc.hook("gemini-cli", "AfterTool", gemini(
        wc, "AfterTool", tool_name="write_file", tool_input={"file_path": str(wc.cwd / "README.md"), "content": "# hi\n"},
        tool_response={"llmContent": "ok", "returnDisplay": "ok"}))
    (wc.cwd / "README.md").write_text("# hello\n")
    wc.hook("gemini-cli", "AfterTool", gemini(
        wc, "AfterTool", tool_name="replace",
        tool_input={"file_path": str(wc.cwd / "README.md"), "old_string": "hi", "new_string": "hello"},
        tool_response={"llmContent": "ok"}))
    wc.hook("gemini-cli", "AfterTool", gemini(
        wc, "AfterTool", tool_name="write_todos",
        tool_input={"todos": [{"description": "readme", "status": "completed"},
                              {"description": "license", "status": "blocked"}]}, tool_response={}))
    wc.hook("gemini-cli", "AfterTool", gemini(
        wc, "AfterTool", tool_name="run_shell_command", tool_input={"command": "ls"}, tool_response={}))
    wc.hook("gemini-cli", "AfterAgent", gemini(
        wc, "AfterAgent", prompt="Make a README", prompt_response="Wrote README.md.", stop_hook_active=False))
    wc.hook("gemini-cli", "SessionEnd", gemini(wc, "SessionEnd", reason="exit"))
    assert wc.log() == ""
    s = wc.session()
    assert s["goal"] == "Make a README with [redacted:aws-key]"
    got = [(e["type"], e["role"], e.get("path") or e.get("text"), e.get("kind") if e["type"] == "say" else None,
            e.get("tool")) for e in s["events"][1:]]
    assert got == [
        ("say", "human", "  \n Make a README with [redacted:aws-key]", None, None),
        ("write", "agent", "README.md", None, "write_file"),
        ("write", "agent", "README.md", None, "replace"),
        ("say", "agent", "[x] readme\n[!] license", "todo", "write_todos"),
        ("say", "agent", "Wrote README.md.", None, None),
    ]
    assert all(e["agent"] == "gemini-cli" and e["agent_session"] == "gem-42" for e in s["events"][1:])
    assert "tool_call" not in s["events"][2]  # Gemini CLI's hook input names no call id


HUGE = b'{"prompt": "' + b"a" * (17 << 20) + b'"}'
BROKEN: list[tuple[str, str, Any]] = [
    ("claude-code", "UserPromptSubmit", b"not json at all"),
    ("claude-code", "UserPromptSubmit", b"\xff\xfe\x00garbage"),
    ("claude-code", "UserPromptSubmit", b""),
    ("claude-code", "UserPromptSubmit", b"[1, 2, 3]"),
    ("claude-code", "UserPromptSubmit", b'"a string"'),
    ("claude-code", "UserPromptSubmit", {"prompt": 5}),
    ("claude-code", "UserPromptSubmit", {"prompt": ["a"], "cwd": 7, "session_id": {"x": 1}}),
    ("claude-code", "UserPromptSubmit", {"prompt": "   \n "}),
    ("claude-code", "PostToolUse", {"tool_name": "Write", "tool_input": "x"}),
    ("claude-code", "PostToolUse", {"tool_name": 3, "tool_input": {"file_path": 7}}),
    ("claude-code", "Stop", {"transcript_path": 12}),
    ("claude-code", "UserPromptSubmit", HUGE),
    ("gemini-cli", "BeforeAgent", b"{"),
    ("gemini-cli", "AfterTool", {"tool_name": "write_file", "tool_input": None}),
    ("no-such-agent", "UserPromptSubmit", {"prompt": "hi"}),
]


@pytest.mark.parametrize(("agent", "event", "payload"), BROKEN,
                         ids=[f"{a}-{e}-{i}" for i, (a, e, _) in enumerate(BROKEN)])
def test_broken_input_records_nothing_and_exits_0(wc: Hif, agent: str, event: str, payload: Any) -> None:
    wc.run("session", "start", "existing")
    before = wc.session()["events"]
    wc.hook(agent, event, payload)  # exit 0, clean stdout and stderr
    assert wc.session()["events"] == before


def test_broken_input_without_a_session_opens_none_and_logs(wc: Hif) -> None:
    for payload in (b"nope", HUGE, [1]):
        wc.hook("claude-code", "UserPromptSubmit", payload)
    assert wc.state()["session"] is None
    log = wc.log().splitlines()
    assert len(log) == 3 and "not JSON" in log[0] and "over" in log[1] and "not a JSON object" in log[2]
    wc.run("agent", "hook", "claude-code", input=b"{}")  # no event named: logged, exit 0
    assert "usage" in wc.log().splitlines()[-1]


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.txt", ".hif/state.json", ".git/config",
                                  "sub/../../outside.txt", "a\x00b"])
def test_a_write_outside_the_working_copy_is_not_recorded(wc: Hif, tmp_path: Path, path: str) -> None:
    (tmp_path / "outside.txt").write_text("secret\n")
    (wc.cwd / ".git").mkdir(exist_ok=True)
    (wc.cwd / ".git" / "config").write_text("[core]\n")
    wc.run("session", "start", "s")
    before = wc.session()["events"]
    wc.hook("claude-code", "PostToolUse", {"cwd": str(wc.cwd), "tool_name": "Write", "tool_use_id": "t",
                                           "tool_input": {"file_path": path}})
    assert wc.session()["events"] == before
    assert wc.log()  # the refusal is logged


def test_hook_outside_a_working_copy_says_nothing(tmp_path: Path) -> None:
    h = Hif(tmp_path, tmp_path / "config")
    h.hook("claude-code", "UserPromptSubmit", {"prompt": "hi", "cwd": str(tmp_path)})
    h.hook("gemini-cli", "BeforeAgent", {"prompt": "hi", "cwd": str(tmp_path)})
    assert not (tmp_path / ".hif").exists()


def test_a_missing_or_strange_transcript_is_logged(wc: Hif, tmp_path: Path) -> None:
    wc.hook("claude-code", "UserPromptSubmit", {"prompt": "go", "cwd": str(wc.cwd), "session_id": "s1",
                                                "transcript_path": str(tmp_path / "none.jsonl")})
    for path in (tmp_path / "none.jsonl", tmp_path):  # missing, a directory
        wc.hook("claude-code", "Stop", {"cwd": str(wc.cwd), "session_id": "s1", "transcript_path": str(path)})
    t = tmp_path / "odd.jsonl"
    t.write_bytes(b'not json\n[1]\n{"type": "assistant", "message": {"content": 5}}\n'
                  b'{"type": "assistant", "message": {"content": [{"type": "text", "text": 7}]}}\n'
                  b'{"type": "assistant", "message": {"content": [{"type": "text", "text": "ok"}]}}\n{"partial')
    wc.hook("claude-code", "Stop", {"cwd": str(wc.cwd), "session_id": "s2", "transcript_path": str(t)})
    texts = [e.get("text") for e in wc.session()["events"][1:]]
    assert texts == ["go", "ok"]  # the odd lines skipped, the line still being written left for later
    assert len(wc.log().splitlines()) == 2


def test_log_stays_bounded(wc: Hif) -> None:
    log = wc.cwd / ".hif" / "agent-hook.log"
    log.write_text("old line\n" * 150_000)  # over 1 MiB
    wc.hook("claude-code", "UserPromptSubmit", b"junk")
    assert log.stat().st_size < 600_000 and log.read_text().splitlines()[-1].endswith("is not JSON (Expecting value: line 1 column 1 (char 0))")


def test_the_hook_imports_neither_click_nor_the_sdk(wc: Hif) -> None:
    """What keeps a hook call short (its time is measured in bench/agent_hook.py): over a local working
    copy it runs on the plumbing, without click, the SDK or the mainline."""
    wc.run("session", "start", "s")
    (wc.cwd / "a.txt").write_text("a\n")
    for event, payload in (("UserPromptSubmit", {"prompt": "hi"}),
                           ("PostToolUse", {"tool_name": "Write", "tool_use_id": "t", "tool_input": {"file_path": "a.txt"}})):
        p = subprocess.run([sys.executable, "-X", "importtime", "-m", "hif", "agent", "hook", "claude-code", event],
                           cwd=wc.cwd, env=wc.env, input=json.dumps({"cwd": str(wc.cwd), **payload}).encode(),
                           capture_output=True, timeout=60)
        assert p.returncode == 0 and p.stdout == b""
        imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.decode().splitlines()}
        assert "hif.session" in imported  # the report is read right
        for heavy in ("click", "hif.porcelain", "hif.cli.main", "hif.repo", "hif.mainline", "hif.landing", "asyncio"):
            assert heavy not in imported, heavy
    assert [e["type"] for e in wc.session()["events"]] == ["start", "say", "write"]

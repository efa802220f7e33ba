"""``hif import transcript``: a Claude Code JSONL transcript and a Codex CLI rollout turned into a
session's conversation, their odd records kept as notes, malformed lines skipped and counted, secrets
redacted, files written whole recorded as writes; bounds on line length and file size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agentkit import Hif

from hif import Repository
from hif.agents import formats
from hif.errors import TooLarge


def write_jsonl(path: Path, *lines: Any) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines))
    return path


def claude_lines(cwd: Path) -> list[Any]:
    return [
        {"type": "summary", "summary": "Greeting feature", "leafUuid": "u0"},
        {"type": "user", "timestamp": "2026-01-05T10:00:00Z", "message": {"role": "user", "content": "Add hello.txt, my AWS key is AKIAIOSFODNN7EXAMPLE"}},
        {"type": "user", "isMeta": True, "message": {"role": "user", "content": "<system-reminder>x</system-reminder>"}},
        b"this line is not JSON",
        b"[1, 2]",
        {"type": "assistant", "timestamp": "2026-01-05T10:00:05Z", "message": {
            "role": "assistant", "model": "claude-opus-4-1", "content": [
                {"type": "thinking", "thinking": "private"},
                {"type": "text", "text": "Writing it."},
                {"type": "tool_use", "id": "toolu_W", "name": "Write",
                 "input": {"file_path": str(cwd / "hello.txt"), "content": "hello\n"}},
                {"type": "tool_use", "id": "toolu_E", "name": "Edit",
                 "input": {"file_path": str(cwd / "hello.txt"), "old_string": "hello", "new_string": "hi"}},
                {"type": "tool_use", "id": "toolu_O", "name": "Write",
                 "input": {"file_path": "/etc/outside.txt", "content": "x"}},
                {"type": "tool_use", "id": "toolu_T", "name": "TodoWrite",
                 "input": {"todos": [{"content": "hello", "status": "completed"}]}},
                {"type": "tool_use", "id": "toolu_B", "name": "Bash", "input": {"command": "ls"}},
                {"type": "tool_use", "id": 5, "name": None, "input": "junk"},
            ]}},
        {"type": "user", "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_W"}]}},
        {"type": "assistant", "message": {"role": "assistant", "content": "a plain string reply"}},
        {"type": "assistant", "message": "not a map"},
        {"type": "file-history-snapshot", "snapshot": {}},
        {"type": "brand-new-kind", "data": {"token": "ghp_" + "z" * 36}},
        {"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": "thanks"}]}},
    ]


def test_claude_code_transcript(wc: Hif, tmp_path: Path) -> None:
    t = write_jsonl(tmp_path / "t.jsonl", *claude_lines(wc.cwd))
    doc = wc.js("import", "transcript", "claude-code", str(t))
    assert doc["malformed"] == 2 and doc["skipped_writes"] == 1 and doc["lines"] == 12
    s = wc.session()
    assert s["goal"] == "Add hello.txt, my AWS key is [redacted:aws-key]" and s["author"] == "ana"
    got = [(e["type"], e["role"], e.get("kind") if e["type"] == "say" else None, e.get("text") or e.get("path"),
            e.get("tool")) for e in s["events"][1:]]
    assert got == [
        ("say", "agent", "note", "Greeting feature", None),
        ("say", "human", None, "Add hello.txt, my AWS key is [redacted:aws-key]", None),
        ("say", "agent", None, "Writing it.", None),
        ("write", "agent", None, "hello.txt", "Write"),
        ("say", "agent", "note", f"Edit {wc.cwd / 'hello.txt'}", "Edit"),
        ("say", "agent", "todo", "[x] hello", "TodoWrite"),
        ("say", "agent", None, "a plain string reply", None),
        ("say", "agent", "note", got[7][3], None),
        ("say", "human", None, "thanks", None),
    ]
    unknown = got[7][3]
    assert unknown.startswith("brand-new-kind: ") and "[redacted:github-token]" in unknown and "ghp_" not in unknown
    ev = s["events"]
    assert ev[3]["model"] == "claude-opus-4-1" and ev[3]["agent"] == "claude-code" and ev[4]["tool_call"] == "toolu_W"
    assert ev[2]["time"] == 1767607200.0  # the transcript's own times are kept
    # the write names the content the transcript holds
    r = Repository.open(wc.cwd)
    try:
        assert r.repo.objects is not None
        sess = r.load_session(s["id"])
        assert sess.changes["hello.txt"].oid.hex() == ev[4]["blob"]
    finally:
        r.close()


def test_import_into_an_open_session_appends(wc: Hif, tmp_path: Path) -> None:
    wc.run("session", "start", "my goal")
    t = write_jsonl(tmp_path / "t.jsonl", {"type": "user", "message": {"role": "user", "content": "hi"}},
                    {"type": "assistant", "message": {"role": "assistant", "content": [{"type": "text", "text": "yo"}]}})
    wc.run("import", "transcript", "claude-code", str(t))
    s = wc.session()
    assert s["goal"] == "my goal" and [e.get("text") for e in s["events"][1:]] == ["hi", "yo"]


def test_codex_rollout(wc: Hif, tmp_path: Path) -> None:
    t = write_jsonl(
        tmp_path / "rollout-2026-01-05T10-00-00-abc.jsonl",
        {"timestamp": "2026-01-05T10:00:00Z", "type": "session_meta", "payload": {"id": "abc", "cwd": str(wc.cwd)}},
        {"timestamp": "2026-01-05T10:00:00Z", "type": "response_item", "payload": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>x</environment_context>"}]}},
        {"timestamp": "2026-01-05T10:00:01Z", "type": "response_item", "payload": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Fix the bug; password=swordfish"}]}},
        {"timestamp": "2026-01-05T10:00:01Z", "type": "event_msg", "payload": {"type": "user_message", "message": "Fix the bug"}},
        {"timestamp": "2026-01-05T10:00:02Z", "type": "turn_context", "payload": {"model": "gpt-5-codex", "cwd": str(wc.cwd)}},
        {"timestamp": "2026-01-05T10:00:03Z", "type": "response_item", "payload": {"type": "reasoning", "summary": []}},
        {"timestamp": "2026-01-05T10:00:04Z", "type": "response_item", "payload": {
            "type": "function_call", "name": "shell", "arguments": "{\"command\":[\"ls\"]}", "call_id": "call_1"}},
        {"timestamp": "2026-01-05T10:00:05Z", "type": "response_item", "payload": {
            "type": "function_call_output", "call_id": "call_1", "output": "a.py"}},
        {"timestamp": "2026-01-05T10:00:06Z", "type": "response_item", "payload": {
            "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Fixed it."}]}},
        {"timestamp": "2026-01-05T10:00:07Z", "type": "response_item", "payload": {"type": "web_search_call", "q": 1}},
        b'{"timestamp": "2026-01-05T10:00:08Z", "type": "response_item", "payload": {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "cut',
        {"type": "response_item", "payload": "not a map"},
    )
    doc = wc.js("import", "transcript", "codex", str(t))
    assert doc["malformed"] == 1
    ev = wc.session()["events"]
    got = [(e["role"], e.get("kind"), e["text"], e.get("model"), e.get("tool_call")) for e in ev[1:]]
    assert got == [
        ("human", None, "Fix the bug; password=[redacted:password]", None, None),
        ("agent", "note", 'shell: {"command":["ls"]}', "gpt-5-codex", "call_1"),
        ("agent", None, "Fixed it.", "gpt-5-codex", None),
        ("agent", "note", got[3][2], None, None),
        ("agent", "note", got[4][2], None, None),
    ]
    assert got[3][2].startswith("web_search_call: ") and got[4][2].startswith("response_item: ")
    assert all(e["agent"] == "codex" for e in ev[2:])


@pytest.mark.parametrize("content", [b"", b"\n\n", b"not json\n", b'{"type": "summary", "summary": "only a note"}\n',
                                     b"\xff\xfe\xfa\n", b'{"a": 1}\n' * 3])
def test_a_file_with_no_conversation_is_refused_and_nothing_is_stored(wc: Hif, tmp_path: Path, content: bytes) -> None:
    t = tmp_path / "t.jsonl"
    t.write_bytes(content)
    for fmt in ("claude-code", "codex"):
        p = wc.run("import", "transcript", fmt, str(t), ok=False)
        err = p.stderr.decode().strip().splitlines()
        assert p.returncode == 1 and len(err) == 1 and "holds no conversation" in err[0]
    assert wc.state()["session"] is None


def test_missing_file_and_unknown_format(wc: Hif, tmp_path: Path) -> None:
    p = wc.run("import", "transcript", "claude-code", str(tmp_path / "none.jsonl"), ok=False)
    assert p.returncode == 1 and len(p.stderr.decode().strip().splitlines()) == 1
    p = wc.run("import", "transcript", "aider", str(tmp_path / "none.jsonl"), ok=False)
    assert p.returncode == 2


def test_an_over_long_line_is_skipped_without_being_kept(wc: Hif, tmp_path: Path) -> None:
    big = {"type": "user", "message": {"role": "user", "content": "x" * (formats.MAX_LINE + 10)}}
    t = write_jsonl(tmp_path / "t.jsonl", big, {"type": "user", "message": {"role": "user", "content": "short"}},
                    big, {"type": "assistant", "message": {"role": "assistant", "content": "ok"}})
    doc = wc.js("import", "transcript", "claude-code", str(t))
    assert doc["too_long"] == 2 and doc["lines"] == 4
    assert [e.get("text") for e in wc.session()["events"][1:]] == ["short", "ok"]


def test_a_file_over_the_size_bound_is_refused_while_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "MAX_TRANSCRIPT", 1000)
    t = write_jsonl(tmp_path / "t.jsonl", *[{"type": "user", "message": {"content": "y" * 50}}] * 100)
    counts = formats.Counts()
    lines = formats.read_lines(str(t), counts)
    got = 0
    with pytest.raises(TooLarge):
        for _ in lines:
            got += 1
    assert got < 20  # refused as soon as the bound is passed, not after reading it all
    r = Repository.init(tmp_path / "wc2")
    try:
        with pytest.raises(TooLarge):
            r.import_transcript("claude-code", str(t))
        assert r.session_id is None  # nothing stored
    finally:
        r.close()

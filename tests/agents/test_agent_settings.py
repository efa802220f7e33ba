"""``hif agent install|uninstall``: hif's hook entries written into an agent's project settings,
idempotently, merged with what is there (never clobbering), shown as a diff, and taken out again; and
the redaction every recorded text goes through."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agentkit import Hif

from hif.agents.redact import redact

OTHERS: dict[str, Any] = {
    "model": "opus",
    "permissions": {"allow": ["Bash(ls)"]},
    "hooks": {
        "PostToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "./lint.sh"}]}],
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
        "PreToolUse": [{"matcher": "*", "hooks": [{"type": "command", "command": "guard"}]}],
    },
}


@pytest.mark.parametrize(("agent", "rel", "events"), [
    ("claude-code", ".claude/settings.json", ["SessionStart", "UserPromptSubmit", "PostToolUse", "Stop", "SessionEnd"]),
    ("gemini-cli", ".gemini/settings.json", ["SessionStart", "BeforeAgent", "AfterTool", "AfterAgent", "SessionEnd"]),
])
def test_install_merges_is_idempotent_and_uninstall_restores(wc: Hif, agent: str, rel: str, events: list[str]) -> None:
    path = wc.cwd / rel
    path.parent.mkdir()
    original = json.dumps(OTHERS, indent=4)
    path.write_text(original)
    out = wc.text("agent", "install", agent)
    assert out.startswith(f"--- a/{rel}\n+++ b/{rel}\n") and f"+            \"command\": \"hif agent hook {agent} " in out
    got = json.loads(path.read_text())
    for event in events:
        mine = [h["command"] for g in got["hooks"][event] for h in g["hooks"] if "hif agent hook" in h["command"]]
        assert mine == [f"hif agent hook {agent} {event}"]
    # everything that was there is still there, in its place
    assert got["model"] == "opus" and got["permissions"] == OTHERS["permissions"]
    assert got["hooks"]["PreToolUse"] == OTHERS["hooks"]["PreToolUse"]
    assert got["hooks"]["Stop" if agent == "claude-code" else "PostToolUse"][0] == \
        OTHERS["hooks"]["Stop" if agent == "claude-code" else "PostToolUse"][0]
    tool_event = "PostToolUse" if agent == "claude-code" else "AfterTool"
    assert [g.get("matcher") for g in got["hooks"][tool_event] if "hif" in g["hooks"][0]["command"]][0]
    text = path.read_text()
    assert "nothing changed" in wc.text("agent", "install", agent)  # idempotent
    assert path.read_text() == text
    doc = wc.js("agent", "install", agent)
    assert doc["changed"] is False and doc["diff"] == ""
    out = wc.text("agent", "uninstall", agent)
    assert "-            \"command\": \"hif agent hook" in out
    assert json.loads(path.read_text()) == OTHERS  # exactly what was there before
    assert "nothing changed" in wc.text("agent", "uninstall", agent)


def test_install_into_a_new_file_and_uninstall_leaves_no_hooks_key(wc: Hif) -> None:
    wc.run("agent", "install", "claude-code")
    path = wc.cwd / ".claude" / "settings.json"
    assert set(json.loads(path.read_text())["hooks"]) == {"SessionStart", "UserPromptSubmit", "PostToolUse", "Stop",
                                                          "SessionEnd"}
    wc.run("agent", "uninstall", "claude-code")
    assert json.loads(path.read_text()) == {}


def test_install_updates_an_old_entry_in_place_and_leaves_a_shared_group(wc: Hif) -> None:
    path = wc.cwd / ".claude" / "settings.json"
    path.parent.mkdir()
    old = {"hooks": {
        "Stop": [{"hooks": [{"type": "command", "command": "/old/bin/hif agent hook claude-code Stop", "timeout": 99}]},
                 {"hooks": [{"type": "command", "command": "after"}]}],
        "UserPromptSubmit": [{"hooks": [{"type": "command", "command": "mine"},
                                        {"type": "command", "command": "hif agent hook claude-code UserPromptSubmit"}]}],
        "SessionEnd": [{"hooks": [{"type": "command", "command": "hif agent hook claude-code SessionEnd"}]},
                       {"hooks": [{"type": "command", "command": "hif agent hook claude-code SessionEnd"}]}],
    }}
    path.write_text(json.dumps(old))
    wc.run("agent", "install", "claude-code", "--program", "/usr/local/bin/hif")
    got = json.loads(path.read_text())["hooks"]
    assert got["Stop"][0]["hooks"] == [{"type": "command", "command": "/usr/local/bin/hif agent hook claude-code Stop",
                                        "timeout": 10}]
    assert got["Stop"][1] == {"hooks": [{"type": "command", "command": "after"}]}
    assert got["UserPromptSubmit"][0] == {"hooks": [{"type": "command", "command": "mine"}]}
    assert got["UserPromptSubmit"][1]["hooks"][0]["command"].endswith("agent hook claude-code UserPromptSubmit")
    assert len(got["SessionEnd"]) == 1  # a duplicate entry is dropped
    before = path.read_text()
    wc.run("agent", "install", "claude-code", "--program", "/usr/local/bin/hif")
    assert path.read_text() == before


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"hooks": []}', '"text"'])
def test_a_settings_file_hif_cannot_read_is_left_alone(wc: Hif, content: str) -> None:
    path = wc.cwd / ".claude" / "settings.json"
    path.parent.mkdir()
    path.write_text(content)
    for cmd in ("install", "uninstall"):
        p = wc.run("agent", cmd, "claude-code", ok=False)
        assert p.returncode == 1
        err = p.stderr.decode().strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: .claude/settings.json is not")
        assert path.read_text() == content


def test_unknown_agent_is_a_usage_error(wc: Hif) -> None:
    p = wc.run("agent", "install", "cursor", ok=False)
    assert p.returncode == 2 and b"claude-code" in p.stderr


SECRETS = [
    ("sk-ant-api03-" + "Ab1_" * 10, "anthropic-key"),
    ("sk-" + "a" * 48, "api-key"),
    ("sk-proj-" + "Zz9-" * 8, "api-key"),
    ("ghp_" + "A1b2" * 9, "github-token"),
    ("gho_" + "x" * 36, "github-token"),
    ("github_pat_" + "11AB" * 6, "github-token"),
    ("glpat-" + "q" * 20, "gitlab-token"),
    ("AKIAIOSFODNN7EXAMPLE", "aws-key"),
    ("ASIAY34FZKBOKMUTVV7A", "aws-key"),
    ("xoxb-123456789012-abcdefghij", "slack-token"),
    ("AIza" + "S" * 35, "google-key"),
    ("sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "stripe-key"),
    ("mcl_" + "k" * 32, "micelio-token"),
    ("mcw_" + "w" * 32, "micelio-token"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "jwt"),
]


@pytest.mark.parametrize(("secret", "kind"), SECRETS, ids=[k + str(i) for i, (_, k) in enumerate(SECRETS)])
def test_redact_token_shapes(secret: str, kind: str) -> None:
    for text in (secret, f"use {secret} now", f"KEY='{secret}'\n", f"({secret})"):
        out = redact(text)
        assert secret not in out and f"[redacted:{kind}]" in out, (text, out)


@pytest.mark.parametrize(("text", "expected"), [
    ("Authorization: Bearer abc.DEF-123_xyz", "Authorization: Bearer [redacted:bearer]"),
    ("curl -H 'authorization: bearer Zm9vYmFyYmF6cXV4'", "curl -H 'authorization: bearer [redacted:bearer]'"),
    ("password=hunter2", "password=[redacted:password]"),
    ('{"password": "p@ss w"}', '{"password": "[redacted:password] w"}'),
    ("PASSWD: s3cret!", "PASSWD: [redacted:password]"),
    ("client_secret=abc123;", "client_secret=[redacted:password];"),
    ("API_KEY = 'k-1234'", "API_KEY = '[redacted:password]'"),
    ("postgres://app:pa55word@db:5432/x", "postgres://app:[redacted:url-password]@db:5432/x"),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     "aws_secret_access_key=[redacted:aws-secret]"),
    ("a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n-----END RSA PRIVATE KEY-----\nb",
     "a\n[redacted:private-key]\nb"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n(cut off)", "[redacted:private-key]"),
    ("-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQ\n-----END PGP PRIVATE KEY BLOCK-----", "[redacted:private-key]"),
])
def test_redact_assignments_and_blocks(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "nothing secret here", "the password field is validated", "sk-short", "use a Bearer token",
    "git sha 3f2a9c1e0b7d4a6f8e5c2b1a0d9e8f7c6b5a4d3e", "ghp_ is the GitHub prefix", "AKIA is AWS's prefix",
])
def test_redact_leaves_ordinary_text(text: str) -> None:
    assert redact(text) == text

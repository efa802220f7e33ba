"""Provenance on events (docs/agents.md): which agent, model and agent session produced an event, and
for a tool's edit the tool and call id; checked where events are made, kept through landing inside the
signed landing envelope, served by the API and shown by ``hif show``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from agentkit import Hif
from forge import Forge

from federation.envelope import check_landing, check_signature, landing_envelope, seal, unseal
from federation.identity import NodeKey
from hif.errors import CorruptObject, InvalidInput
from hif.objects import FILE, blob_bytes, decode, digest, pack
from hif.repo import Repo
from hif.session import MAX_PROVENANCE, make_event
from hif.store import EmbeddedStore

PROV = {"agent": "claude-code", "model": "claude-sonnet-4-5", "agent_session": "5f0c-11",
        "tool": "Edit", "tool_call": "toolu_01ABC"}

BAD = [
    {"agent": ""},  # empty
    {"agent": "   "},  # blank
    {"model": 7},  # not a string
    {"model": ["a"]},
    {"tool": "x" * (MAX_PROVENANCE + 1)},  # too long
    {"agent_session": "a\nb"},  # control characters: a forged line in `hif show`
    {"tool_call": "a\x00b"},
    {"agent": "a\x1b[31mred"},  # a terminal escape
    {"agent": "a\x85b"},  # C1 control
]


@pytest.mark.parametrize("bad", BAD)
def test_make_event_refuses_bad_provenance(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        make_event("say", "ana", "agent", 1.0, text="hi", **bad)


def test_make_event_keeps_provenance_and_drops_absent() -> None:
    e = make_event("say", "ana", "agent", 1.0, text="hi", kind="plan", model=None, **{
        k: v for k, v in PROV.items() if k != "model"})
    assert e["agent"] == "claude-code" and e["tool_call"] == "toolu_01ABC" and "model" not in e
    assert e["kind"] == "plan"
    with pytest.raises(InvalidInput):
        make_event("say", "ana", "agent", 1.0, text="hi", kind="shout")
    assert "kind" not in make_event("say", "ana", "agent", 1.0, text="hi", kind=None)


def test_a_hook_driven_landing_is_signed_with_its_provenance(wc: Hif) -> None:
    """A follower verifies the envelope's signature over the snapshot, whose events (recorded by the
    agent's hooks) carry provenance: rewriting who said it breaks the signature."""
    base = {"session_id": "cc-1", "cwd": str(wc.cwd), "model": "claude-sonnet-4-5"}
    wc.hook("claude-code", "SessionStart", {**base, "hook_event_name": "SessionStart"})
    wc.hook("claude-code", "UserPromptSubmit", {**base, "prompt": "write f"})
    (wc.cwd / "f").write_text("x\n")
    wc.hook("claude-code", "PostToolUse", {**base, "tool_name": "Write", "tool_use_id": "toolu_1",
                                           "tool_input": {"file_path": "f"}})
    wc.run("land")
    cfg = json.loads((wc.cwd / ".hif" / "config.json").read_text())

    async def go() -> None:
        store = EmbeddedStore(cfg["store"])
        repo = Repo(store, cfg["repo"])
        key = NodeKey(b"\x01" * 32, "http://a.example")
        sealed = unseal(await landing_envelope(repo, key, 1))
        check_signature(sealed, key.public)
        got = check_landing(sealed, origin="http://a.example", repo=cfg["repo"], position=1)
        (snap,) = got.snapshots.values()
        events = decode(snap)[1]["events"]
        assert {k: events[2].get(k) for k in PROV} == {
            "agent": "claude-code", "model": "claude-sonnet-4-5", "agent_session": "cc-1", "tool": "Write",
            "tool_call": "toolu_1"}
        # a relay that rewrites the agent must re-sign: with another key it does not verify
        body = dict(sealed.body)
        body["snapshots"] = [snap.replace(b"claude-code", b"gemini-cli!")]
        forged = unseal(seal(NodeKey(b"\x02" * 32, "http://a.example"), body))
        with pytest.raises(CorruptObject):
            check_signature(forged, key.public)
        await store.close()

    asyncio.run(go())


def test_api_takes_serves_and_refuses_provenance(forge: Forge) -> None:
    t = forge.admin_token
    assert forge.api("POST", "/api/v1/repos", t, {"name": "acme/prov"}).status_code == 201
    sid = forge.api("POST", "/api/v1/repos/acme/prov/sessions", t, {"goal": "g"}).data["id"]
    canonical = blob_bytes(b"hi\n")
    forge.api("POST", "/api/v1/repos/acme/prov/objects/put", t, {"objects": [pack(canonical)]})
    events = [{"type": "say", "text": "plan: 1. x", "kind": "plan", "role": "agent", **PROV},
              {"type": "write", "path": "a.txt", "kind": FILE, "blob": digest(canonical), "role": "agent", **PROV}]
    r = forge.api("POST", f"/api/v1/repos/acme/prov/sessions/{sid}/events", t, {"events": events})
    assert r.status_code == 200, r.data
    for bad in BAD + [{"kind": "shout"}]:
        ev = {"type": "say", "text": "x", "role": "agent", **PROV, **bad}
        r = forge.api("POST", f"/api/v1/repos/acme/prov/sessions/{sid}/events", t, {"events": [ev]})
        assert 400 <= r.status_code < 500, (bad, r.status_code)
    got = forge.api("GET", f"/api/v1/repos/acme/prov/sessions/{sid}", t).data
    assert len(got["events"]) == 3  # refused requests stored nothing
    assert {k: got["events"][1].get(k) for k in PROV} == PROV and got["events"][1]["kind"] == "plan"
    assert got["events"][2]["tool"] == "Edit"


def test_hif_show_prints_provenance_and_old_events_still_read(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "HIF_AUTHOR": "ana"}

    def hif(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "hif", *args], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    hif("init")
    hif("session", "start", "old style")
    hif("say", "an event without provenance")
    cfg = json.loads((tmp_path / ".hif" / "config.json").read_text())
    sid = json.loads((tmp_path / ".hif" / "state.json").read_text())["session"]

    async def add() -> None:
        store = EmbeddedStore(cfg["store"])
        repo = Repo(store, cfg["repo"])
        await repo.sessions.append(sid, make_event("say", "claude", "agent", 2.0, text="I will", **PROV))
        await store.close()

    asyncio.run(add())
    out = hif("show", sid)
    assert "ana: an event without provenance\n" in out
    assert "claude (via claude-code, model claude-sonnet-4-5, tool Edit, tool call toolu_01ABC): I will" in out
    doc = json.loads(hif("show", sid, "--json"))
    assert doc["conversation"][1]["agent"] == "claude-code" and "agent" not in doc["conversation"][0]

"""hif as an MCP server, driven by the MCP SDK's own clients: ``hif mcp`` spawned over stdio in a
working copy, and a real node's ``/mcp`` over streamable HTTP behind its tokens. A whole session
each (start, say, decide, write, checkpoint, land, read back) and a conflict returned as data."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
from forge import Forge
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import Implementation

from hif import Repository
from hif.history import NO_DECISION
from hif.session import MAX_PROVENANCE

ENV = {**os.environ, "HIF_AUTHOR": "tester", "HIF_ROLE": "human"}
ENV.pop("HIF_DEBUG", None)


def hif(cwd: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "hif", *args], cwd=cwd, env={**ENV, **os.environ},
                       capture_output=True, text=True, timeout=60)
    assert "Traceback" not in p.stdout + p.stderr, p.stderr
    assert (p.returncode == 0) == ok, f"hif {args} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


async def call(c: ClientSession, tool: str, **args: Any) -> dict[str, Any]:
    r = await c.call_tool(tool, args)
    assert not r.is_error, f"{tool}: {r.content[0].text}"  # type: ignore[union-attr]
    assert r.structured_content is not None
    return r.structured_content


async def refused(c: ClientSession, tool: str, **args: Any) -> str:
    """The one line of a tool error (``isError``), checked to carry no traceback."""
    r = await c.call_tool(tool, args)
    assert r.is_error, f"{tool} unexpectedly succeeded: {r.structured_content}"
    text = r.content[0].text  # type: ignore[union-attr]
    assert "Traceback" not in text and "\n" not in text, text
    return text


@asynccontextmanager
async def stdio(cwd: Path, client: str = "claude-code", **env: str) -> AsyncIterator[ClientSession]:
    """An MCP client named ``client`` (its clientInfo) talking to ``hif mcp`` in ``cwd``."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "hif", "mcp"], cwd=str(cwd),
                                   env={k: v for k, v in {**os.environ, **ENV, **env}.items() if isinstance(v, str)})
    with open(os.devnull, "w") as quiet:
        async with stdio_client(params, errlog=quiet) as (r, w), \
                ClientSession(r, w, client_info=Implementation(name=client, version="1.0")) as c:
            await c.initialize()
            yield c


# clientInfo names a client may send: control characters (a terminal escape, a forged second line),
# 10 KB, nothing printable, only spaces; each -> the agent recorded (cleaned and cut) or none
HOSTILE_CLIENTS = [
    ("claude\x00code\x1b[31m\r\nInjected: yes\x9b", "claude code [31m Injected: yes"),
    ("x" * 10240, "x" * MAX_PROVENANCE),
    ("\x07\x08\x7f\x85", None),
    ("   \t ", None),
]
# model ids a model may pass: refused with one line, nothing recorded
HOSTILE_MODELS = [("m\x00odel", "control characters"), ("claude\x1b]0;owned\x07", "control characters"),
                  ("m" * 10240, "too long"), (" ", "non-empty")]


def events_of(root: Path, sid: str) -> list[dict[str, Any]]:
    """The session's events as stored (read with the SDK, beside the server)."""
    with Repository.open(root) as r:
        return r.load_session(sid).events


def check_origin(events: list[dict[str, Any]], tools: list[tuple[str, str]], agent: str | None,
                 models: dict[int, str]) -> None:
    """Each event made by the MCP tool named, with the client's name as agent (or none) and the model
    where the model named it (``models``: event index -> model), and no other provenance."""
    assert [(e["type"], e.get("tool")) for e in events] == tools
    for i, e in enumerate(events):
        assert e.get("agent") == agent and e.get("model") == models.get(i), (i, e)
        assert "agent_session" not in e and "tool_call" not in e


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with anyio.fail_after(120):
            await main()

    anyio.run(bounded)


# -- stdio: a working copy -----------------------------------------------------------------------


def test_stdio_whole_session_conflict_and_errors(tmp_path: Path) -> None:
    hif(tmp_path, "init", "a")
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "notes.txt").write_text("one\ntwo\nthree\n")
    hif(a, "session", "start", "notes")
    hif(a, "land")
    hif(a, "workspace", "add", str(b))
    # the CLI's one line for the same mistake
    cli_line = hif(a, "say", "hello", ok=False).stderr.strip().removeprefix("error: ")

    async def main() -> None:
        async with stdio(a) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert {"status", "session_start", "session_show", "session_list", "session_abandon", "say",
                    "decide", "write", "checkpoint", "diff", "land", "sync", "log", "show", "blame",
                    "cat", "ls"} <= names
            assert await refused(c, "say", text="hello") == cli_line
            assert await refused(c, "write", path="x.txt", content="x") == cli_line
            assert not (a / "x.txt").exists()  # refused: nothing written
            sid = (await call(c, "session_start", goal="count to four", model="claude-sonnet-4-5"))["session"]
            assert (await call(c, "status"))["session"]["id"] == sid
            await call(c, "say", text="please count to four", role="human", author="ann")
            await call(c, "say", text="I will add a line and a counter file")
            await call(c, "decide", decision="one word per line", why="diffs stay readable",
                       alternatives=["a comma-separated line: every change rewrites it",
                                     "numbers instead of words: the file is for people"], model="claude-opus-4-1")
            await call(c, "write", path="count/four.txt", content="four\n", model="claude-sonnet-4-5")
            (a / "notes.txt").write_text("one\ntwo\nthree\nfour\n")  # an edit on disk, as an editor makes
            cp = await call(c, "checkpoint", note="four is there")
            assert cp["iteration"] == 1
            changed = {f["path"]: f for f in (await call(c, "diff"))["files"]}
            assert set(changed) == {"count/four.txt", "notes.txt"} and "+four" in changed["notes.txt"]["diff"]
            bad = await refused(c, "write", path="../escape.txt", content="x")
            assert bad and not (tmp_path / "escape.txt").exists()
            landed = await call(c, "land")
            assert landed["landed"] and landed["decided"] and "note" not in landed
            pos = landed["position"]
            # every event says it came from this client through which tool, and the model where told
            check_origin(events_of(a, sid), [
                ("start", "mcp:session_start"), ("say", "mcp:say"), ("say", "mcp:say"), ("decide", "mcp:decide"),
                ("write", "mcp:write"), ("write", "mcp:checkpoint"), ("checkpoint", "mcp:checkpoint")],
                "claude-code", {0: "claude-sonnet-4-5", 3: "claude-opus-4-1", 4: "claude-sonnet-4-5"})

            # read back: show, log, cat, blame, ls and the resources
            doc = await call(c, "show", ref=str(pos))
            assert [(m["role"], m["author"], m["text"]) for m in doc["conversation"]] == [
                ("human", "ann", "please count to four"), ("agent", "tester", "I will add a line and a counter file")]
            assert doc["decisions"][0]["alternatives"][1].startswith("numbers instead")
            assert doc["decisions"][0]["model"] == "claude-opus-4-1" and doc["decisions"][0]["agent"] == "claude-code"
            assert [i["note"] for i in doc["iterations"]] == ["four is there"]
            assert {ch["path"] for ch in doc["changes"]} == {"count/four.txt", "notes.txt"}
            assert (await call(c, "log", limit=1))["landings"][0]["session"] == sid
            assert (await call(c, "cat", path="count/four.txt"))["content"] == "four\n"
            assert (await call(c, "blame", path="notes.txt"))["lines"][3]["session"] == sid
            assert "count" in {e["path"] for e in (await call(c, "ls"))["entries"]}
            text = (await c.read_resource(f"hif://landing/{pos}")).contents[0].text  # type: ignore[union-attr]
            assert "goal: count to four" in text and "rejected: a comma-separated line" in text
            text = (await c.read_resource(f"hif://session/{sid}")).contents[0].text  # type: ignore[union-attr]
            assert "[human] ann (via claude-code, tool mcp:say): please count to four" in text
            text = (await c.read_resource("hif://sessions")).contents[0].text  # type: ignore[union-attr]
            assert f"hif://landing/{pos}" in text
            assert "no position 99" in await refused(c, "cat", path="notes.txt", at=99)

            # a conflict: another working copy changes the same line and lands first
            mine = (await call(c, "session_start", goal="say 2"))["session"]
            await call(c, "write", path="notes.txt", content="one\n2\nthree\nfour\n")
            hif(b, "pull")
            theirs = json.loads(hif(b, "session", "start", "say TWO", "--json").stdout)["session"]
            (b / "notes.txt").write_text("one\nTWO\nthree\nfour\n")
            out = hif(b, "land").stdout
            assert f"note: {NO_DECISION}" in out  # the CLI says so too
            refusal = await call(c, "land")
            assert refusal["landed"] is False and "notes.txt" in refusal["error"]
            [conflict] = refusal["conflicts"]
            assert conflict["path"] == "notes.txt" and conflict["sessions"][0]["session"] == theirs
            assert (await call(c, "status"))["session"]["id"] == mine  # still open, nothing lost
            synced = await call(c, "sync")
            assert [x["path"] for x in synced["conflicts"]] == ["notes.txt"]
            assert "<<<<<<<" in (a / "notes.txt").read_text()
            assert "notes.txt still has conflict markers" in await refused(c, "land")
            await call(c, "write", path="notes.txt", content="one\n2 (TWO)\nthree\nfour\n")
            landed = await call(c, "land", model="claude-sonnet-4-5")
            assert landed["landed"] and landed["decided"] is False and landed["note"] == NO_DECISION
            synced_events = [e for e in events_of(a, mine) if e["type"] == "sync"]
            assert [(e["tool"], e["agent"]) for e in synced_events] == [("mcp:sync", "claude-code")]

    run(main)


def test_stdio_hostile_client_names_and_models(tmp_path: Path) -> None:
    """A client's name is cleaned (control characters out, cut to the limit) or left out, never a
    failed call or a crash; a bad model id is refused with one line and records nothing."""
    hif(tmp_path, "init", "a")
    a = tmp_path / "a"

    async def main() -> None:
        for name, agent in HOSTILE_CLIENTS:
            async with stdio(a, name) as c:
                sid = (await call(c, "session_start", goal="hostile names"))["session"]
                await call(c, "say", text="hello", model="gpt-5-codex")
                for model, why in HOSTILE_MODELS if agent == HOSTILE_CLIENTS[0][1] else ():
                    assert why in await refused(c, "say", text="x", model=model)
                    assert why in await refused(c, "write", path="bad.txt", content="x", model=model)
                    assert why in await refused(c, "checkpoint", note="x", model=model)
                assert not (a / "bad.txt").exists()
                await call(c, "session_abandon", reason="only a test")
            check_origin(events_of(a, sid), [("start", "mcp:session_start"), ("say", "mcp:say"),
                                             ("abandon", "mcp:session_abandon")], agent, {1: "gpt-5-codex"})

    run(main)


def test_hif_mcp_outside_a_working_copy_is_one_line(tmp_path: Path) -> None:
    p = hif(tmp_path, "mcp", ok=False)
    assert p.stderr.startswith("error: ") and len(p.stderr.strip().splitlines()) == 1


# -- streamable HTTP: a node -----------------------------------------------------------------------


@asynccontextmanager
async def remote(url: str, token: str, client: str | None = None, *, modern: bool = False) -> AsyncIterator[ClientSession]:
    """An MCP client (named ``client``: its clientInfo) of the node at ``url``: with the handshake
    (``initialize``), or ``modern``: the protocol without one, its clientInfo on every request."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    info = Implementation(name=client, version="1.0") if client is not None else None
    async with http, streamable_http_client(url + "/api/v1/mcp", http_client=http) as (r, w), \
            ClientSession(r, w, client_info=info) as c:
        await (c.discover() if modern else c.initialize())
        yield c


def test_node_mcp_whole_session_conflict_and_refusals(forge: Forge) -> None:
    alice = forge.user("alice")
    assert forge.api("POST", "/api/v1/repos", alice, {"name": "alice/demo"}).status_code == 201
    reader = forge.user("alice", scope="read")
    stranger = forge.user("bob")
    other = forge.user("alice", repo="alice/other")
    ids: list[str] = []

    async def main() -> None:
        async with remote(forge.url, alice) as c:
            sid = (await call(c, "session_start", repo="alice/demo", goal="a greeting"))["session"]
            await call(c, "say", repo="alice/demo", session=sid, text="greet the world", role="human")
            await call(c, "decide", repo="alice/demo", session=sid, decision="plain text",
                       why="no build step", alternatives=["markdown: nothing renders it here"])
            await call(c, "write", repo="alice/demo", session=sid, path="hello.txt", content="hello\nworld\n")
            assert (await call(c, "checkpoint", repo="alice/demo", session=sid, note="draft"))["iteration"] == 1
            assert "+world" in (await call(c, "diff", repo="alice/demo", session=sid))["files"][0]["diff"]
            landed = await call(c, "land", repo="alice/demo", session=sid)
            assert landed["landed"] and landed["decided"] and landed["position"] == 1
            doc = await call(c, "show", repo="alice/demo", ref="1")
            assert doc["conversation"][0]["text"] == "greet the world"
            assert doc["decisions"][0]["alternatives"] == ["markdown: nothing renders it here"]
            assert doc["iterations"][0]["note"] == "draft"
            assert (await call(c, "log", repo="alice/demo"))["landings"][0]["session"] == sid
            assert (await call(c, "cat", repo="alice/demo", path="hello.txt"))["content"] == "hello\nworld\n"
            assert (await call(c, "blame", repo="alice/demo", path="hello.txt"))["lines"][1]["session"] == sid
            text = (await c.read_resource("hif://alice/demo/landing/1")).contents[0].text  # type: ignore[union-attr]
            assert "rejected: markdown" in text and "+world" in text
            # a conflict: two sessions change the same line, one lands first
            mine = (await call(c, "session_start", repo="alice/demo", goal="shout"))["session"]
            theirs = (await call(c, "session_start", repo="alice/demo", goal="whisper"))["session"]
            await call(c, "write", repo="alice/demo", session=mine, path="hello.txt", content="HELLO\nworld\n")
            await call(c, "write", repo="alice/demo", session=theirs, path="hello.txt", content="hi\nworld\n")
            assert (await call(c, "land", repo="alice/demo", session=theirs))["note"] == NO_DECISION
            ids.extend([sid, theirs])
            refusal = await call(c, "land", repo="alice/demo", session=mine)
            assert refusal["landed"] is False and refusal["conflicts"][0]["path"] == "hello.txt"
            assert refusal["conflicts"][0]["sessions"] == [{"position": 2, "session": theirs}]
            synced = await call(c, "sync", repo="alice/demo", session=mine)
            assert [x["path"] for x in synced["conflicts"]] == ["hello.txt"]
            assert "hello.txt still has conflict markers" in await refused(c, "land", repo="alice/demo", session=mine)
            await call(c, "write", repo="alice/demo", session=mine, path="hello.txt", content="HI\nworld\n")
            assert (await call(c, "land", repo="alice/demo", session=mine))["position"] == 3
            assert await refused(c, "say", repo="alice/demo", session=mine, text="late") == f"session {mine} was landed"

        # an agent token: its repository and its session are the defaults, and the only ones
        agent_sid = forge.api("POST", "/api/v1/repos/alice/demo/sessions", alice, {"goal": "by agent"}).data["id"]
        agent = forge.api("POST", f"/api/v1/repos/alice/demo/sessions/{agent_sid}/tokens", alice, {}).data["token"]
        other_sid = forge.api("POST", "/api/v1/repos/alice/demo/sessions", alice, {"goal": "not yours"}).data["id"]
        async with remote(forge.url, agent) as c:
            assert (await call(c, "status"))["session"]["id"] == agent_sid
            await call(c, "say", text="bound to one session")
            for tool, args in [("session_start", {"goal": "x"}), ("say", {"session": other_sid, "text": "x"}),
                               ("land", {"session": other_sid})]:
                assert "only works on its own session" in await refused(c, tool, **args)
            assert (await call(c, "land"))["position"] == 4
            assert "has ended" in await refused(c, "status")  # the token died with its session
        forge.api("POST", f"/api/v1/repos/alice/demo/sessions/{other_sid}/abandon", alice, {})
        writes = [("session_start", {"goal": "x"}), ("say", {"session": mine, "text": "x"}),
                  ("write", {"session": mine, "path": "x.txt", "content": "x"}), ("land", {"session": mine}),
                  ("session_abandon", {"session": mine})]
        for token in (reader, stranger):  # a read-only token, a user without a role: reads only
            async with remote(forge.url, token) as c:
                assert (await call(c, "cat", repo="alice/demo", path="hello.txt"))["content"] == "HI\nworld\n"
                for tool, args in writes:
                    assert "needs the writer role and a write token" in await refused(c, tool, repo="alice/demo", **args)
        async with remote(forge.url, other) as c:  # a token bound to another repository: nothing here
            for tool, args in [("cat", {"path": "hello.txt"}), ("log", {}), *writes]:
                line = await refused(c, tool, repo="alice/demo", **args)
                assert "access to alice/demo needs" in line and "HI" not in line, line

    run(main)
    # no token, or a bad one: 401 before the body is read, nothing stored
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "session_start", "arguments": {"repo": "alice/demo", "goal": "sneak"}}}
    for headers in ({}, {"Authorization": "Bearer mcl_not-a-token"}, {"Authorization": "Basic YTpi"}):
        r = httpx.post(forge.url + "/api/v1/mcp", json=body, timeout=30,
                       headers={**headers, "Accept": "application/json, text/event-stream"})
        assert r.status_code == 401 and "HI" not in r.text and r.headers["www-authenticate"].startswith("Bearer")
    assert forge.api("GET", "/api/v1/repos/alice/demo/sessions", alice).data["sessions"] == []
    # a body over the limit: 413 while it arrives, nothing recorded
    open_sid = forge.api("POST", "/api/v1/repos/alice/demo/sessions", alice, {"goal": "big"}).data["id"]
    big = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "write", "arguments": {
        "repo": "alice/demo", "session": open_sid, "path": "big.txt", "content": "x" * (5 << 20)}}}
    r = httpx.post(forge.url + "/api/v1/mcp", json=big, timeout=30, headers={
        "Authorization": f"Bearer {alice}", "Accept": "application/json, text/event-stream"})
    assert r.status_code == 413
    assert len(forge.api("GET", f"/api/v1/repos/alice/demo/sessions/{open_sid}", alice).data["events"]) == 1
    assert forge.api("GET", "/api/v1/repos/alice/demo/head", alice).data["position"] == 4
    # the web UI says which landed sessions record no decision (and only those)
    pages = {n: httpx.get(f"{forge.url}/alice/demo/sessions/{s}", timeout=30).text for n, s in
             [("decided", ids[0]), ("undecided", ids[1])]}
    assert NO_DECISION in pages["undecided"] and NO_DECISION not in pages["decided"]


def test_node_mcp_records_the_client_and_model(forge: Forge) -> None:
    """Over HTTP the node is stateless, so a handshake client's name rides in the session id the
    node gives it at initialize (and a modern client's in every request): every event a tool records
    carries it, the tool, and the model when told; hostile names and session ids are cleaned or
    dropped, a bad model refused with nothing stored."""
    alice = forge.user("alice")
    assert forge.api("POST", "/api/v1/repos", alice, {"name": "alice/prov"}).status_code == 201
    on = {"repo": "alice/prov"}

    def events(sid: str) -> list[dict[str, Any]]:
        return forge.api("GET", f"/api/v1/repos/alice/prov/sessions/{sid}", alice).data["events"]

    async def main() -> None:
        async with remote(forge.url, alice, "claude-code") as c:
            sid = (await call(c, "session_start", **on, goal="provenance", model="claude-sonnet-4-5"))["session"]
            await call(c, "say", **on, session=sid, text="plain", role="human")
            await call(c, "decide", **on, session=sid, decision="d", why="w", model="claude-opus-4-1")
            await call(c, "write", **on, session=sid, path="a.txt", content="a\n", model="claude-sonnet-4-5")
            await call(c, "checkpoint", **on, session=sid, note="one")
            before = len(events(sid))
            for model, why in HOSTILE_MODELS:
                for tool, args in [("say", {"text": "x"}), ("write", {"path": "bad.txt", "content": "x"}),
                                   ("checkpoint", {"note": "x"}), ("session_abandon", {})]:
                    assert why in await refused(c, tool, **on, session=sid, model=model, **args)
                assert why in await refused(c, "session_start", **on, goal="x", model=model)
            assert len(events(sid)) == before
            await call(c, "session_abandon", **on, session=sid, model="claude-sonnet-4-5")
        check_origin(events(sid), [("start", "mcp:session_start"), ("say", "mcp:say"), ("decide", "mcp:decide"),
                                   ("write", "mcp:write"), ("checkpoint", "mcp:checkpoint"),
                                   ("abandon", "mcp:session_abandon")], "claude-code",
                     {0: "claude-sonnet-4-5", 2: "claude-opus-4-1", 3: "claude-sonnet-4-5", 5: "claude-sonnet-4-5"})
        assert forge.api("GET", "/api/v1/repos/alice/prov/sessions", alice).data["sessions"] == []
        for modern in (False, True):
            for name, agent in [("codex-cli", "codex-cli"), *HOSTILE_CLIENTS]:
                async with remote(forge.url, alice, name, modern=modern) as c:
                    sid = (await call(c, "session_start", **on, goal="hostile"))["session"]
                    await call(c, "say", **on, session=sid, text="hi", model="gpt-5-codex")
                    await call(c, "session_abandon", **on, session=sid)
                check_origin(events(sid), [("start", "mcp:session_start"), ("say", "mcp:say"),
                                           ("abandon", "mcp:session_abandon")], agent, {1: "gpt-5-codex"})

    run(main)
    # session ids the node did not give (forged, broken, huge): the call is served, the agent cleaned or none
    sid = forge.api("POST", "/api/v1/repos/alice/prov/sessions", alice, {"goal": "forged"}).data["id"]
    forged = [("client.!!not-base64!!", None), ("client." + "A" * 5000, None), ("another-server-id", None),
              ("client." + base64.urlsafe_b64encode(("evil\x1b[2J\x00" * 300).encode()).decode()[:1400],
               "evil [2J " * 22 + "evil [2J"[:2])]
    for i, (header, _) in enumerate(forged):
        body = {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                "params": {"name": "say", "arguments": {**on, "session": sid, "text": f"forged {i}"}}}
        r = httpx.post(forge.url + "/api/v1/mcp", json=body, timeout=30, headers={
            "Authorization": f"Bearer {alice}", "Mcp-Session-Id": header,
            "Accept": "application/json, text/event-stream"})
        assert r.status_code == 200 and not r.json()["result"].get("isError"), r.text
    says = events(sid)[1:]
    assert [e["text"] for e in says] == [f"forged {i}" for i in range(len(forged))]
    for e, (_, agent) in zip(says, forged, strict=True):
        assert e.get("agent") == (agent[:MAX_PROVENANCE].strip() if agent else None), e.get("agent")


def test_stdio_in_a_clone_records_provenance_on_the_forge(forge: Forge, tmp_path: Path) -> None:
    """A working copy cloned from a forge: the events (start and abandon included) travel to the
    forge with the client's name, the tool and the model."""
    home = {"HIF_CONFIG_DIR": str(tmp_path / "config")}

    def cli(cwd: Path, *args: str) -> None:
        p = subprocess.run([sys.executable, "-m", "hif", *args], cwd=cwd, env={**os.environ, **ENV, **home},
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr

    cli(tmp_path, "login", forge.url, "--token", forge.admin_token)
    cli(tmp_path, "repo", "create", "acme/mcp")
    cli(tmp_path, "clone", f"{forge.url}/acme/mcp", str(tmp_path / "a"))
    sids: list[str] = []

    async def main() -> None:
        async with stdio(tmp_path / "a", "cursor", **home) as c:
            sids.append((await call(c, "session_start", goal="from a clone", model="gpt-5"))["session"])
            await call(c, "say", text="over the forge")
            await call(c, "write", path="f.txt", content="f\n", model="gpt-5")
            await call(c, "checkpoint", note="one")
            await call(c, "session_abandon", reason="only a test")

    run(main)
    events = forge.api("GET", f"/api/v1/repos/acme/mcp/sessions/{sids[0]}", forge.admin_token).data["events"]
    check_origin(events, [("start", "mcp:session_start"), ("say", "mcp:say"), ("write", "mcp:write"),
                          ("checkpoint", "mcp:checkpoint"), ("abandon", "mcp:session_abandon")],
                 "cursor", {0: "gpt-5", 2: "gpt-5"})


# -- search: earlier decisions and rejected alternatives, before deciding ----------------------------


def test_stdio_search_finds_decisions_and_rejected_alternatives(tmp_path: Path) -> None:
    hif(tmp_path, "init", "a")
    a = tmp_path / "a"

    async def main() -> None:
        async with stdio(a) as c:
            assert "search" in {t.name for t in (await c.list_tools()).tools}
            sid = (await call(c, "session_start", goal="retry the uploads"))["session"]
            await call(c, "decide", decision="exponential backoff", why="the server sheds load",
                       alternatives=["a fixed one-second delay: it hammers a struggling server"])
            await call(c, "write", path="retry.txt", content="backoff\n")
            pos = (await call(c, "land"))["position"]
            other = (await call(c, "session_start", goal="colour of the logo"))["session"]
            await call(c, "say", text="we keep the logo green")
            found = await call(c, "search", query="hammers")
            assert [(h["session"], h["position"], h["kind"]) for h in found["results"]] == [(sid, pos, "rejected")]
            assert "[hammers]" in found["results"][0]["text"]
            assert [h["session"] for h in (await call(c, "search", query="backoff", kinds=["decision"]))["results"]] == [sid]
            assert (await call(c, "search", query="hammers", kinds=["goal"]))["results"] == []
            assert [h["session"] for h in (await call(c, "search", query="green", state="open"))["results"]] == [other]
            assert (await call(c, "search", query="green", state="landed"))["total"] == 0
            for bad in ('"unclosed', "***", "x" * 300):
                assert await refused(c, "search", query=bad)

    run(main)


def test_node_search_confined_to_what_the_token_may_read(forge: Forge) -> None:
    """The node's search tool answers as GET /api/v1/search does: a private repository's sessions
    (goals, conversation, decisions, rejected alternatives) never reach a token that may not read it:
    not in results, totals or text; one that may read it finds them."""
    alice = forge.user("alice")
    for name, private in (("alice/open", False), ("alice/secret", True)):
        assert forge.api("POST", "/api/v1/repos", alice, {"name": name, "private": private}).status_code == 201
    bob = forge.user("bob")
    bound = forge.user("alice", scope="read", repo="alice/open")  # alice's, but bound to alice/open

    async def main() -> None:
        async with remote(forge.url, alice) as c:
            for repo, goal, alt in (("alice/open", "public zephyr notes", "a zephyr queue: too slow"),
                                    ("alice/secret", "zephyr vault plan", "a zephyr mallory cipher: broken")):
                sid = (await call(c, "session_start", repo=repo, goal=goal))["session"]
                await call(c, "say", repo=repo, session=sid, text=f"the zephyr codeword for {repo}")
                await call(c, "decide", repo=repo, session=sid, decision="go", why="it fits", alternatives=[alt])
                assert (await call(c, "land", repo=repo, session=sid))["landed"]
            mine = await call(c, "search", query="zephyr")
            assert sorted(h["repo"] for h in mine["results"]) == ["alice/open", "alice/secret"]
            only = await call(c, "search", query="mallory", kinds=["rejected"])
            assert [h["repo"] for h in only["results"]] == ["alice/secret"]
        for token in (bob, bound):
            async with remote(forge.url, token) as c:
                for args in ({"query": "zephyr"}, {"query": "vault"}, {"query": "mallory", "kinds": ["rejected"]},
                             {"query": "zephyr", "repo": "alice/secret"}, {"query": "codeword", "state": "landed"}):
                    doc = await call(c, "search", **args)
                    flat = json.dumps({k: v for k, v in doc.items() if k != "query"})
                    assert "secret" not in flat and "vault" not in flat and "mallory" not in flat, (args, flat)
                    assert all(h["repo"] == "alice/open" for h in doc["results"]) and doc["total"] == len(doc["results"])
                assert [h["repo"] for h in (await call(c, "search", query="zephyr"))["results"]] == ["alice/open"]

    run(main)

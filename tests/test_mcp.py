"""hif as an MCP server, driven by the MCP SDK's own clients: ``hif mcp`` spawned over stdio in a
working copy, and a real node's ``/mcp`` over streamable HTTP behind its tokens. A whole session
each (start, say, decide, write, checkpoint, land, read back) and a conflict returned as data."""

from __future__ import annotations

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

from hif.history import NO_DECISION

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
async def stdio(cwd: Path) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "hif", "mcp"], cwd=str(cwd),
                                   env={k: v for k, v in {**os.environ, **ENV}.items() if isinstance(v, str)})
    with open(os.devnull, "w") as quiet:
        async with stdio_client(params, errlog=quiet) as (r, w), ClientSession(r, w) as c:
            await c.initialize()
            yield c


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
            sid = (await call(c, "session_start", goal="count to four"))["session"]
            assert (await call(c, "status"))["session"]["id"] == sid
            await call(c, "say", text="please count to four", role="human", author="ann")
            await call(c, "say", text="I will add a line and a counter file")
            await call(c, "decide", decision="one word per line", why="diffs stay readable",
                       alternatives=["a comma-separated line: every change rewrites it",
                                     "numbers instead of words: the file is for people"])
            await call(c, "write", path="count/four.txt", content="four\n")
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

            # read back: show, log, cat, blame, ls and the resources
            doc = await call(c, "show", ref=str(pos))
            assert [(m["role"], m["author"], m["text"]) for m in doc["conversation"]] == [
                ("human", "ann", "please count to four"), ("agent", "tester", "I will add a line and a counter file")]
            assert doc["decisions"][0]["alternatives"][1].startswith("numbers instead")
            assert [i["note"] for i in doc["iterations"]] == ["four is there"]
            assert {ch["path"] for ch in doc["changes"]} == {"count/four.txt", "notes.txt"}
            assert (await call(c, "log", limit=1))["landings"][0]["session"] == sid
            assert (await call(c, "cat", path="count/four.txt"))["content"] == "four\n"
            assert (await call(c, "blame", path="notes.txt"))["lines"][3]["session"] == sid
            assert "count" in {e["path"] for e in (await call(c, "ls"))["entries"]}
            text = (await c.read_resource(f"hif://landing/{pos}")).contents[0].text  # type: ignore[union-attr]
            assert "goal: count to four" in text and "rejected: a comma-separated line" in text
            text = (await c.read_resource(f"hif://session/{sid}")).contents[0].text  # type: ignore[union-attr]
            assert "[human] ann: please count to four" in text
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
            landed = await call(c, "land")
            assert landed["landed"] and landed["decided"] is False and landed["note"] == NO_DECISION

    run(main)


def test_hif_mcp_outside_a_working_copy_is_one_line(tmp_path: Path) -> None:
    p = hif(tmp_path, "mcp", ok=False)
    assert p.stderr.startswith("error: ") and len(p.stderr.strip().splitlines()) == 1


# -- streamable HTTP: a node -----------------------------------------------------------------------


@asynccontextmanager
async def remote(url: str, token: str) -> AsyncIterator[ClientSession]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    async with http, streamable_http_client(url + "/api/v1/mcp", http_client=http) as (r, w), \
            ClientSession(r, w) as c:
        await c.initialize()
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

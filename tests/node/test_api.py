"""Every route of docs/api.md doing its job, over HTTP against ``micelio serve`` on loopback."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
from forge import Forge, micelio, start_forge

from hif.mainline import LandingRecord
from hif.objects import DIR, FILE, blob_bytes, digest, encode, pack, tree_bytes
from hif.objects import Entry as E

ROOT = Path(__file__).resolve().parents[2]


def blob(content: bytes) -> tuple[bytes, bytes]:
    canonical = blob_bytes(content)
    return digest(canonical), pack(canonical)


def put(forge: Forge, token: str, repo: str, *stored: bytes) -> list[bytes]:
    r = forge.api("POST", f"/api/v1/repos/{repo}/objects/put", token, {"objects": list(stored)})
    assert r.status_code == 200, r.data
    return r.data["ids"]


def start(forge: Forge, token: str, repo: str, goal: str, **extra: object) -> str:
    r = forge.api("POST", f"/api/v1/repos/{repo}/sessions", token, {"goal": goal, "role": "human", **extra})
    assert r.status_code == 201, r.data
    return r.data["id"]


def write_event(path: str, oid: bytes, **extra: object) -> dict[str, object]:
    return {"type": "write", "path": path, "kind": FILE, "blob": oid, "role": "agent", **extra}


def test_healthz_and_whoami(forge: Forge) -> None:
    r = httpx.get(forge.url + "/healthz")
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["store"] == "embedded"
    r = forge.api("GET", "/api/v1/whoami", forge.admin_token)
    assert r.status_code == 200
    assert r.data["user"] == "admin" and r.data["admin"] is True and r.data["scope"] == "admin"


def test_repository_objects_sessions_and_mainline(forge: Forge) -> None:
    t = forge.admin_token
    r = forge.api("POST", "/api/v1/repos", t, {"name": "acme/api", "description": "the API"})
    assert r.status_code == 201 and r.data["head"] == 0 and r.data["private"] is False
    assert forge.api("POST", "/api/v1/repos", t, {"name": "acme/api"}).data["error"] == "exists"
    names = [m["name"] for m in forge.api("GET", "/api/v1/repos").data["repos"]]
    assert names == ["acme/api"]  # anonymous callers list public repositories
    assert forge.api("GET", "/api/v1/repos/acme/api", t).data["description"] == "the API"

    # objects: put, have, get — in their stored form
    hello_id, hello = blob(b"hello\n")
    missing = digest(b"nothing")
    assert put(forge, t, "acme/api", hello) == [hello_id]
    assert forge.api("POST", "/api/v1/repos/acme/api/objects/have", t,
                     {"ids": [hello_id, missing]}).data["missing"] == [missing]
    got = forge.api("POST", "/api/v1/repos/acme/api/objects/get", t, {"ids": [hello_id]}).data
    assert got["objects"] == [[hello_id, hello]]

    # a session streamed event by event, then landed
    sid = start(forge, t, "acme/api", "Add a greeting")
    assert forge.api("GET", "/api/v1/repos/acme/api/sessions", t).data["sessions"][0]["id"] == sid
    tree_canon = tree_bytes({"hello.txt": E(FILE, hello_id)})
    (tree_id,) = put(forge, t, "acme/api", pack(tree_canon))
    events = [
        {"type": "say", "text": "Formal or casual?", "role": "agent", "author": "claude"},
        {"type": "say", "text": "Casual", "role": "human"},
        write_event("hello.txt", hello_id),
        {"type": "checkpoint", "note": "first", "tree": tree_id, "iteration": 1},
        {"type": "decide", "decision": "Casual", "why": "asked for", "alternatives": ["formal"]},
    ]
    r = forge.api("POST", f"/api/v1/repos/acme/api/sessions/{sid}/events", t, {"events": events})
    assert r.status_code == 200, r.data
    assert [e["seq"] for e in r.data["events"]] == [1, 2, 3, 4, 5]
    assert all(e["user"] == "admin" for e in r.data["events"])
    assert r.data["events"][0]["author"] == "claude" and r.data["events"][1]["author"] == "admin"
    s = forge.api("GET", f"/api/v1/repos/acme/api/sessions/{sid}?since=3", t).data
    assert [e["type"] for e in s["events"]] == ["checkpoint", "decide"]
    assert s["state"] == "open" and s["changes"] == [["hello.txt", FILE, hello_id]]

    r = forge.api("POST", f"/api/v1/repos/acme/api/sessions/{sid}/land", t, {})
    assert r.status_code == 200 and r.data["position"] == 1 and r.data["already_landed"] is False
    again = forge.api("POST", f"/api/v1/repos/acme/api/sessions/{sid}/land", t, {})
    assert again.data["position"] == 1 and again.data["already_landed"] is True
    assert forge.api("GET", f"/api/v1/repos/acme/api/sessions/{sid}", t).data["state"] == "landed"
    assert forge.api("GET", "/api/v1/repos/acme/api/sessions", t).data["sessions"] == []

    # the mainline: head, log both ways, tree, blame, scan
    assert forge.api("GET", "/api/v1/repos/acme/api/head", t).data["position"] == 1
    sid2 = start(forge, t, "acme/api", "Add a second line")
    second_id, second = blob(b"hello\nworld\n")
    put(forge, t, "acme/api", second)
    forge.api("POST", f"/api/v1/repos/acme/api/sessions/{sid2}/events", t,
              {"events": [write_event("hello.txt", second_id)]})
    assert forge.api("POST", f"/api/v1/repos/acme/api/sessions/{sid2}/land", t, {}).data["position"] == 2
    log = forge.api("GET", "/api/v1/repos/acme/api/log", t).data
    assert log["head"] == 2 and [p for p, _ in log["records"]] == [1, 2] and log["next"] is None
    rec = LandingRecord.from_bytes(log["records"][0][1], 1)
    assert rec.sessions[0].session == sid and rec.sessions[0].goal == "Add a greeting"
    desc = forge.api("GET", "/api/v1/repos/acme/api/log?order=desc&limit=1", t).data
    assert [p for p, _ in desc["records"]] == [2] and desc["next"] == 1
    tree = forge.api("GET", "/api/v1/repos/acme/api/tree?at=1", t).data
    assert tree["kind"] == DIR and tree["entries"] == [["hello.txt", FILE, hello_id]]
    f = forge.api("GET", "/api/v1/repos/acme/api/tree?path=hello.txt", t).data
    assert f["kind"] == FILE and f["id"] == second_id and "entries" not in f
    lines = forge.api("GET", "/api/v1/repos/acme/api/blame?path=hello.txt", t).data["lines"]
    assert [(ln[0], ln[1], ln[4]) for ln in lines] == [(1, sid, "hello"), (2, sid2, "world")]
    scan = forge.api("POST", "/api/v1/repos/acme/api/scan", t,
                     {"since": 0, "until": 2, "session": "x" * 16, "paths": ["hello.txt"]}).data
    assert scan["positions"] == [1, 2]
    scan = forge.api("POST", "/api/v1/repos/acme/api/scan", t,
                     {"since": 0, "until": 2, "session": "x" * 16, "paths": ["other.txt"]}).data
    assert scan["positions"] == []  # the rollup over positions 1-2 rules both out


def test_conflict_abandon_and_closed_sessions(forge: Forge) -> None:
    t = forge.admin_token
    forge.api("POST", "/api/v1/repos", t, {"name": "acme/c"})
    a, b = start(forge, t, "acme/c", "A"), start(forge, t, "acme/c", "B")
    ida, sa = blob(b"a\n")
    idb, sb = blob(b"b\n")
    put(forge, t, "acme/c", sa, sb)
    forge.api("POST", f"/api/v1/repos/acme/c/sessions/{a}/events", t, {"events": [write_event("f", ida)]})
    forge.api("POST", f"/api/v1/repos/acme/c/sessions/{b}/events", t, {"events": [write_event("f", idb)]})
    assert forge.api("POST", f"/api/v1/repos/acme/c/sessions/{a}/land", t, {}).status_code == 200
    r = forge.api("POST", f"/api/v1/repos/acme/c/sessions/{b}/land", t, {})
    assert r.status_code == 409 and r.data["error"] == "conflict"
    assert r.data["conflicts"][0]["path"] == "f"
    assert r.data["conflicts"][0]["sessions"] == [{"position": 1, "session": a}]

    r = forge.api("POST", f"/api/v1/repos/acme/c/sessions/{b}/abandon", t, {"reason": "superseded"})
    assert r.status_code == 200 and r.data["state"] == "abandoned"
    s = forge.api("GET", f"/api/v1/repos/acme/c/sessions/{b}", t).data
    assert s["state"] == "abandoned" and s["events"][-1]["type"] == "abandon"
    r = forge.api("POST", f"/api/v1/repos/acme/c/sessions/{b}/events", t,
                  {"events": [{"type": "say", "text": "late"}]})
    assert r.status_code == 409 and r.data["error"] == "session_closed"
    assert forge.api("POST", f"/api/v1/repos/acme/c/sessions/{b}/abandon", t, {}).status_code == 409
    assert forge.api("POST", f"/api/v1/repos/acme/c/sessions/{b}/land", t, {}).status_code == 409
    assert forge.api("GET", "/api/v1/repos/acme/c/head", t).data["position"] == 1


def test_a_whole_session_lands_in_one_request(forge: Forge) -> None:
    t = forge.admin_token
    forge.api("POST", "/api/v1/repos", t, {"name": "acme/one"})
    base = "/api/v1/repos/acme/one"
    ida, sa = blob(b"a\n")
    idb, sb = blob(b"b\n")
    r = forge.api("POST", f"{base}/land", t, {
        "goal": "Add a", "role": "agent", "objects": [sa],
        "events": [{"type": "say", "text": "adding a"}, write_event("a.txt", ida),
                   {"type": "decide", "decision": "plain text", "why": "simplest"}]})
    assert r.status_code == 200, r.data
    assert r.data["position"] == 1 and r.data["already_landed"] is False
    sid = r.data["session"]
    s = forge.api("GET", f"{base}/sessions/{sid}", t).data
    assert s["state"] == "landed" and s["goal"] == "Add a" and s["role"] == "agent"
    assert [e["type"] for e in s["events"]] == ["start", "say", "write", "decide"]
    assert all(e["user"] == "admin" for e in s["events"][1:])
    tree = forge.api("GET", f"{base}/tree?path=a.txt", t).data
    assert tree["id"] == ida

    # bad input is refused before anything starts: no session is left behind
    for body, status in (({"goal": "", "events": []}, 400),
                         ({"goal": "g", "events": [write_event("b.txt", idb)]}, 422),  # object not sent
                         ({"goal": "g", "events": [{"type": "delete", "path": "../x"}]}, 422),
                         ({"goal": "g", "objects": [sb[:1] + b"\xff\xfe"]}, 422),  # undecodable
                         ({"goal": "g", "base": 7}, 400)):
        r = forge.api("POST", f"{base}/land", t, body)
        assert r.status_code == status, (body, r.data)
        assert "session" not in r.data
    assert forge.api("GET", f"{base}/sessions?state=open", t).data["sessions"] == []

    # a conflict leaves the session open and names it, for a sync or an abandon
    r = forge.api("POST", f"{base}/land", t, {"goal": "Other a", "base": 0, "objects": [sb],
                                                "events": [write_event("a.txt", idb)]})
    assert r.status_code == 409 and r.data["error"] == "conflict", r.data
    assert r.data["conflicts"][0]["sessions"] == [{"position": 1, "session": sid}]
    open_ = forge.api("GET", f"{base}/sessions?state=open", t).data["sessions"]
    assert [o["id"] for o in open_] == [r.data["session"]]
    assert forge.api("GET", f"{base}/head", t).data["position"] == 1


def test_agent_tokens_end_with_their_session(forge: Forge) -> None:
    t = forge.admin_token
    forge.api("POST", "/api/v1/repos", t, {"name": "acme/agents", "private": True})
    sid, other = start(forge, t, "acme/agents", "Agent work"), start(forge, t, "acme/agents", "Other")
    r = forge.api("POST", f"/api/v1/repos/acme/agents/sessions/{sid}/tokens", t, {})
    assert r.status_code == 201 and r.data["session"] == sid
    agent = r.data["token"]
    assert forge.api("GET", "/api/v1/whoami", agent).data["session"] == sid
    r = forge.api("POST", f"/api/v1/repos/acme/agents/sessions/{sid}/events", agent,
                  {"events": [{"type": "say", "text": "on it", "role": "human"}]})
    assert r.status_code == 200 and r.data["events"][0]["role"] == "agent"  # it speaks as an agent
    assert forge.api("POST", f"/api/v1/repos/acme/agents/sessions/{other}/events", agent,
                     {"events": [{"type": "say", "text": "x"}]}).status_code == 403
    assert forge.api("POST", "/api/v1/repos/acme/agents/sessions", agent, {"goal": "more"}).status_code == 403
    assert forge.api("POST", "/api/v1/tokens", agent, {"scope": "read"}).status_code == 403
    assert forge.api("GET", "/api/v1/repos/acme/agents/head", agent).status_code == 200
    oid, stored = blob(b"agent\n")
    assert put(forge, agent, "acme/agents", stored) == [oid]
    forge.api("POST", f"/api/v1/repos/acme/agents/sessions/{sid}/events", agent,
              {"events": [write_event("a.txt", oid)]})
    assert forge.api("POST", f"/api/v1/repos/acme/agents/sessions/{sid}/land", agent, {}).status_code == 200
    r = forge.api("GET", "/api/v1/repos/acme/agents/head", agent)
    assert r.status_code == 401 and "ended" in r.data["message"]  # landed: the token is dead


def test_tokens_orgs_members_and_login(forge: Forge) -> None:
    t = forge.admin_token
    # API tokens: create, list, use, revoke
    r = forge.api("POST", "/api/v1/tokens", t, {"scope": "read", "name": "ci", "expires_days": 1})
    assert r.status_code == 201 and r.data["token"].startswith("mcl_")
    ci, ci_id = r.data["token"], r.data["id"]
    listed = forge.api("GET", "/api/v1/tokens", t).data["tokens"]
    assert any(x["id"] == ci_id and x["name"] == "ci" for x in listed)
    assert all("hash" not in x and "token" not in x for x in listed)
    assert forge.api("GET", "/api/v1/whoami", ci).data["scope"] == "read"
    assert forge.api("POST", "/api/v1/tokens", ci, {"scope": "write"}).status_code == 403
    assert forge.api("DELETE", f"/api/v1/tokens/{ci_id}", t).data == {"revoked": ci_id}
    assert forge.api("GET", "/api/v1/whoami", ci).status_code == 401

    # organisations and members decide who reads a private repository
    bob = forge.user("bob")
    assert forge.api("POST", "/api/v1/orgs", t, {"name": "widgets"}).status_code == 201
    forge.api("POST", "/api/v1/repos", t, {"name": "widgets/secret", "private": True})
    assert forge.api("GET", "/api/v1/repos/widgets/secret", bob).status_code == 404
    r = forge.api("PUT", "/api/v1/orgs/widgets/members/bob", t, {"role": "reader"})
    assert r.status_code == 200 and r.data["role"] == "reader"
    assert forge.api("GET", "/api/v1/repos/widgets/secret", bob).status_code == 200
    assert forge.api("POST", "/api/v1/repos/widgets/secret/sessions", bob, {"goal": "x"}).status_code == 403
    assert forge.api("DELETE", "/api/v1/orgs/widgets/members/bob", t).data == {"removed": "bob"}
    assert forge.api("GET", "/api/v1/repos/widgets/secret", bob).status_code == 404
    r = forge.api("PUT", "/api/v1/repos/widgets/secret/members/bob", t, {"role": "writer"})
    assert r.status_code == 200
    assert forge.api("POST", "/api/v1/repos/widgets/secret/sessions", bob, {"goal": "x"}).status_code == 201
    assert forge.api("DELETE", "/api/v1/repos/widgets/secret/members/bob", t).status_code == 200
    assert forge.api("GET", "/api/v1/repos/widgets/secret", bob).status_code == 404
    # bob may create repositories under his own name only
    assert forge.api("POST", "/api/v1/repos", bob, {"name": "bob/tools"}).status_code == 201
    assert forge.api("POST", "/api/v1/repos", bob, {"name": "widgets/bobs"}).status_code == 403

    # password login, and its brute-force limit
    forge.micelio("admin", "user", "create", "carol", "--password-stdin", input="correct horse\n")
    r = forge.api("POST", "/api/v1/login", None, {"user": "carol", "password": "correct horse"})
    assert r.status_code == 200 and forge.api("GET", "/api/v1/whoami", r.data["token"]).data["user"] == "carol"
    # five free failures from one address, then an exponential back-off (docs/architecture.md)
    codes = [forge.api("POST", "/api/v1/login", None, {"user": "carol", "password": "guess"}).status_code
             for _ in range(5)]
    assert codes == [401] * 5
    for _ in range(100):  # wrong passwords until the wait is over a second: 429s do not count
        r = forge.api("POST", "/api/v1/login", None, {"user": "carol", "password": "guess"})
        assert r.status_code in (401, 429)
        if r.status_code == 429 and int(r.headers["Retry-After"]) >= 2:
            break
        time.sleep(0.2 if r.status_code == 429 else 0)
    assert r.status_code == 429
    r = forge.api("POST", "/api/v1/login", None, {"user": "carol", "password": "correct horse"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0  # even the right one waits


def test_tokens_never_reach_the_log(forge: Forge) -> None:
    forge.api("GET", "/api/v1/whoami", forge.admin_token)
    forge.api("GET", "/api/v1/repos?token=" + forge.admin_token, forge.admin_token)
    forge.api("POST", "/api/v1/login", None, {"user": "admin", "password": "not-it"})
    log = (forge.root / "node-0.log").read_text()
    assert '"path": "/api/v1/whoami"' in log and '"user": "admin"' in log
    assert forge.admin_token not in log and "not-it" not in log


def test_docs_list_exactly_the_routes() -> None:
    from node.api import ROUTES
    from node.mcp import PATH as MCP_PATH

    doc = (ROOT / "docs/api.md").read_text()
    documented = set(re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`?]*)`", doc, re.M))
    declared = {(r.method, re.sub(r"<owner>/<name>", "<repo>", r.rule)) for r in ROUTES}
    declared |= {("GET", "/healthz"), ("POST", MCP_PATH)}  # MCP: beside the route table (node.mcp)
    assert documented == declared


def test_objects_are_checked_on_put(forge: Forge) -> None:
    t = forge.admin_token
    forge.api("POST", "/api/v1/repos", t, {"name": "acme/o"})
    good_id, good = blob(b"fine")
    bad_tree = pack(encode(["tree", [["..", FILE, good_id]]]))
    for objects in ([good, bad_tree], [good, b"\x00not cbor"], [good, b"\x07???"]):
        r = forge.api("POST", "/api/v1/repos/acme/o/objects/put", t, {"objects": objects})
        assert r.status_code == 422, r.data
    # nothing of a refused batch is kept
    assert forge.api("POST", "/api/v1/repos/acme/o/objects/have", t, {"ids": [good_id]}).data["missing"] == [good_id]


def test_objects_stream(forge: Forge) -> None:
    """Many objects in one streamed CBOR sequence, in the order asked, closed by a count; a missing
    object is a 404 while the status can still say so, and the closing item afterwards."""
    from hif.forge.client import cbor_objects

    t = forge.admin_token
    forge.api("POST", "/api/v1/repos", t, {"name": "acme/s", "private": True})
    pairs = [blob(f"file {i}\n".encode() * (i % 7 + 1)) for i in range(700)]  # several read batches
    put(forge, t, "acme/s", *(stored for _, stored in pairs))
    ids = [oid for oid, _ in reversed(pairs)]
    url = forge.url + "/api/v1/repos/acme/s/objects/stream"
    headers = {"Authorization": f"Bearer {t}", "Content-Type": "application/cbor"}
    with httpx.stream("POST", url, headers=headers, content=encode({"ids": ids}), timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/cbor-seq"
        items = list(cbor_objects(r.iter_bytes()))
    assert items[:-1] == [(oid, stored) for oid, stored in reversed(pairs)]
    assert items[-1] == {"count": 700}

    missing = digest(b"nothing")
    r = forge.api("POST", "/api/v1/repos/acme/s/objects/stream", t, {"ids": [ids[0], missing]})
    assert r.status_code == 404 and missing.hex() in r.data["message"]
    late = httpx.post(url, headers=headers, content=encode({"ids": [*ids, missing]}), timeout=60)
    assert late.status_code == 200
    items = list(cbor_objects([late.content]))
    assert len(items) < 702 and items[-1]["error"] == "not_found" and missing.hex() in items[-1]["message"]
    # a private repository's objects stream only to its readers
    assert forge.api("POST", "/api/v1/repos/acme/s/objects/stream", None, {"ids": ids[:1]}).status_code == 401
    too_many = forge.api("POST", "/api/v1/repos/acme/s/objects/stream", t, {"ids": [missing] * 100_001})
    assert too_many.status_code == 400


def test_only_tokens_made_by_login_are_marked_for_the_login_cap(forge: Forge) -> None:
    """POST /api/v1/login marks its token (capped per user, node/accounts.py MAX_LOGIN_TOKENS);
    tokens made through POST /api/v1/tokens or `micelio admin token create` are not marked, even
    when named "login", so the cap never ends them."""
    import asyncio
    import sqlite3

    from hif.store import open_store
    from node.authdb import AuthDB

    forge.micelio("admin", "user", "create", "dana", "--password-stdin", input="correct horse\n")
    r = forge.api("POST", "/api/v1/login", None, {"user": "dana", "password": "correct horse"})
    assert r.status_code == 200
    by_login = r.data["id"]
    made = forge.api("POST", "/api/v1/tokens", r.data["token"], {"name": "login", "scope": "read"})
    assert made.status_code == 201
    forge.micelio("admin", "token", "create", "dana", "--scope", "read", "--name", "login")

    async def image() -> bytes:  # what the store holds, as a new replica reads it
        store = open_store(forge.store)
        db = AuthDB(store, forge.root / "check-cache")
        try:
            return (await db.read()).conn.serialize()
        finally:
            db.close()
            await store.close()

    conn = sqlite3.connect(":memory:")
    conn.deserialize(asyncio.run(image()))
    rows = dict(conn.execute("select id, login from tokens where user = 'dana'").fetchall())
    assert len(rows) == 3 and rows.pop(by_login) == 1 and set(rows.values()) == {0}


def test_a_bomb_at_the_auth_database_key_is_a_clear_503(forge: Forge, tmp_path: Path) -> None:
    """Whoever can write the bucket may put a zstd bomb where the auth database lives: the node
    refuses it while expanding and answers 503 naming the limit, rather than expanding it."""
    import asyncio

    import zstandard

    from hif.store import open_store
    from node.authdb import KEY, MAX_IMAGE

    out = zstandard.ZstdCompressor(level=1).compressobj()
    bomb = out.compress(b"SQLite format 3\x00") + out.compress(bytes(MAX_IMAGE)) + out.flush()

    async def plant() -> None:
        store = open_store(forge.store)
        try:
            await store.put(KEY, bomb)
        finally:
            await store.close()

    asyncio.run(plant())
    # the running replica follows the log and never reads the checkpoint again; a new replica (a fresh
    # cache directory) starts from it: as a node it answers 503, as the admin CLI one line, exit 1
    r = forge.api("GET", "/api/v1/whoami", "mcl_" + "x" * 32, url=forge.start_replica())
    assert r.status_code == 503 and f"{MAX_IMAGE >> 20} MiB limit" in r.data["message"], r.data
    p = micelio("admin", "user", "list", store=forge.store, cache_dir=tmp_path / "fresh", check=False)
    assert p.returncode == 1 and f"{MAX_IMAGE >> 20} MiB limit" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_api_blame_shares_the_web_uis_result_cache_which_stays_under_its_cap(tmp_path: Path) -> None:
    """The API's blame goes through the node's blame cache, the one the web UI fills: a blame is
    kept once, asked again (by the API or the page) it is read back, a refused blame keeps nothing,
    and however many files are blamed the cache directory stays under ``MICELIO_RESULTS_MAX``."""
    forge = start_forge(tmp_path / "f", env={"MICELIO_RESULTS_MAX": "4000"})
    try:
        t = forge.admin_token
        forge.api("POST", "/api/v1/repos", t, {"name": "acme/cap"})
        base = "/api/v1/repos/acme/cap"
        names = [f"f{n}.txt" for n in range(40)]
        for goal, text in (("Write", b"line %d of %d\n"), ("Edit", b"LINE %d of %d\n")):
            stored = {name: blob(b"".join(text % (k, n) if goal == "Write" or k % 2 else b"line %d of %d\n" % (k, n)
                                          for k in range(30))) for n, name in enumerate(names)}
            r = forge.api("POST", f"{base}/land", t, {"goal": goal, "objects": [s for _, s in stored.values()],
                                                      "events": [write_event(p, i) for p, (i, _) in stored.items()]})
            assert r.status_code == 200, r.data
        results = forge.root / "cache-0" / "ui"

        def kept() -> list[Path]:
            return sorted(p for p in (results / "blame").rglob("*") if p.is_file()) if results.exists() else []

        def owners(path: str) -> list[tuple[int, str]]:
            r = forge.api("GET", f"{base}/blame?path={path}", t)
            assert r.status_code == 200, r.data
            return [(ln[0], ln[4]) for ln in r.data["lines"]]

        first = owners("f0.txt")
        assert first == [(2 if k % 2 else 1, f"{'LINE' if k % 2 else 'line'} {k} of 0") for k in range(30)]
        assert len(kept()) == 1
        entry = kept()[0]
        assert owners("f0.txt") == first and kept() == [entry]
        page = httpx.get(f"{forge.url}/acme/cap/blame/f0.txt", timeout=60)
        assert page.status_code == 200 and "LINE 1 of 0" in page.text and kept() == [entry]
        for bad in ("nothing.txt", "f0.txt/x", "../f0.txt"):
            assert forge.api("GET", f"{base}/blame?path={bad}", t).status_code in (400, 404, 422)
        assert kept() == [entry]
        for n, name in enumerate(names):
            assert owners(name) == [(2 if k % 2 else 1, f"{'LINE' if k % 2 else 'line'} {k} of {n}") for k in range(30)]
            assert sum(p.stat().st_size for p in results.rglob("*") if p.is_file()) <= 4000
        assert 1 < len(kept()) < len(names)  # some were dropped to keep under the cap
    finally:
        forge.stop()


def test_repository_settings_and_deletion(forge: Forge) -> None:
    """``PATCH`` and ``DELETE /api/v1/repos/<repo>``: the web UI's settings through the API, with the
    same rules (node.repos): maintainers change, owners delete, and only with the name typed again."""
    dana = forge.user("dana", scope="admin")  # the owner: it is her namespace
    mia = forge.user("mia", scope="admin")  # a maintainer
    dave = forge.user("dave")  # a maintainer too, with a write-scope token
    wes = forge.user("wes")
    assert forge.api("POST", "/api/v1/repos", dana, {"name": "dana/tools", "description": "old"}).status_code == 201
    forge.api("PUT", "/api/v1/repos/dana/tools/members/mia", dana, {"role": "maintainer"})
    forge.api("PUT", "/api/v1/repos/dana/tools/members/dave", dana, {"role": "maintainer"})
    forge.api("PUT", "/api/v1/repos/dana/tools/members/wes", dana, {"role": "writer"})
    repo = "/api/v1/repos/dana/tools"
    r = forge.api("PATCH", repo, dana, {"description": "  Sharp tools  ", "private": True})
    assert r.status_code == 200 and (r.data["description"], r.data["private"]) == ("Sharp tools", True)
    assert forge.api("GET", repo, forge.user("stranger")).status_code == 404  # private now
    assert forge.api("PATCH", repo, mia, {"private": False}).data["private"] is False  # a maintainer may
    for token, body, status in (
        (wes, {"description": "x"}, 403),  # a writer may not
        (dave, {"description": "x"}, 403),  # a maintainer with a write-scope token may not
        (None, {"description": "x"}, 401),
        (dana, {}, 400),  # nothing to change
        (dana, {"private": "yes"}, 400),
        (dana, {"description": 7}, 400),
        (dana, {"description": "d" * 1001}, 400),
    ):
        assert forge.api("PATCH", repo, token, body).status_code == status, (body, status)
    assert forge.api("GET", repo, dana).data["description"] == "Sharp tools"  # refused: nothing changed
    # deleting: owners only, with the full name typed again
    assert forge.api("DELETE", repo + "?confirm=dana/tools", mia).status_code == 403
    assert forge.api("DELETE", repo + "?confirm=dana/tools", wes).status_code == 403
    for confirm in ("", "?confirm=tools", "?confirm=dana/tool", "?confirm=DANA/TOOLS"):
        r = forge.api("DELETE", repo + confirm, dana)
        assert r.status_code == 400 and "type the repository's full name" in r.data["message"], confirm
    assert forge.api("GET", repo, dana).status_code == 200
    r = forge.api("DELETE", repo + "?confirm=dana/tools", dana)
    assert r.status_code == 200 and r.data["deleted"] == "dana/tools" and r.data["keys"] >= 1
    assert forge.api("GET", repo, dana).status_code == 404
    assert forge.api("DELETE", repo + "?confirm=dana/tools", dana).status_code == 404
    # the name is free again, and the new repository starts empty
    assert forge.api("POST", "/api/v1/repos", dana, {"name": "dana/tools"}).data["description"] == ""

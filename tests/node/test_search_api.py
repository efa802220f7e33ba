"""``GET /api/v1/search`` on real nodes: the access matrix (a private repository never shows in
results, totals, facets or snippets to those who may not read it), open sessions, a landing
searchable at once on its replica and soon on another that started empty, an index damaged or
deleted under a running node, and bad query arguments answered 400."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest
from forge import Forge, start_forge, wait_for

SECRET_WORDS = ("vault", "mallory", "zebra", "Vault")


def land(forge: Forge, repo: str, goal: str, token: str | None = None, *, says: tuple[str, ...] = (),
         alternatives: tuple[str, ...] = (), author: str | None = None) -> str:
    events: list[dict[str, Any]] = [{"type": "say", "text": t, **({"author": author} if author else {})} for t in says]
    if alternatives:
        events.append({"type": "decide", "decision": f"decided on {goal}", "why": "it fits",
                       "alternatives": list(alternatives)})
    r = forge.api("POST", f"/api/v1/repos/{repo}/land", token or forge.admin_token,
                  {"goal": goal, "events": events})
    assert r.status_code == 200, r.data
    return str(r.data["session"])


def search(forge: Forge, token: str | None = None, url: str | None = None, **params: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get((url or forge.url) + "/api/v1/search", params=params, headers=headers, timeout=60)
    assert r.status_code == 200, r.content[:300]
    if params.get("format") == "json":
        assert r.headers["content-type"].startswith("application/json")
        return r.json()  # type: ignore[no-any-return]
    return cbor2.loads(r.content)  # type: ignore[no-any-return]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    forge = start_forge(tmp_path / "forge")
    try:
        t = forge.admin_token
        for name, private in (("acme/pub", False), ("acme/vault", True)):
            assert forge.api("POST", "/api/v1/repos", t, {"name": name, "private": private}).status_code == 201
        land(forge, "acme/pub", "Public retry notes", says=("retry the upload",), alternatives=("sqlite",))
        for i in range(3):
            land(forge, "acme/vault", f"Vault retry plan {i}", says=("the zebra codeword decides retry",),
                 alternatives=("sqlite vault",), author="mallory")
        alice = forge.user("alice")
        assert forge.api("PUT", "/api/v1/repos/acme/vault/members/alice", t, {"role": "reader"}).status_code == 200
        eve = forge.user("eve")
        alice_pub = forge.user("alice", scope="read", repo="acme/pub")  # alice, but bound to acme/pub
        r = forge.api("POST", "/api/v1/repos/acme/pub/sessions", t, {"goal": "agent at work"})
        agent = forge.api("POST", f"/api/v1/repos/acme/pub/sessions/{r.data['id']}/tokens", t, {}).data["token"]
        yield {"forge": forge, "alice": alice, "eve": eve, "alice_pub": alice_pub, "agent": agent}
    finally:
        forge.stop()


OUTSIDERS = ["anonymous", "eve", "alice_pub", "agent"]


@pytest.mark.parametrize("who", OUTSIDERS)
def test_private_repository_never_leaks_to_outsiders(world: dict[str, Any], who: str) -> None:
    forge, token = world["forge"], world.get(who)
    for params in ({"q": "retry"}, {"q": "retry", "kind": "conversation"}, {"q": "sqlite", "kind": "rejected"},
                   {"q": "retr*", "author": "mallory"}, {"q": "zebra"}, {"q": "retry", "repo": "acme/vault"},
                   {"q": "retry", "origin": "local"}, {"q": '"retry plan"'}):
        doc = search(forge, token, **params)
        flat = json.dumps({k: v for k, v in doc.items() if k != "query"}, default=str)  # not our own words
        assert not any(w in flat for w in SECRET_WORDS), (params, flat)
        assert all(h["repo"] == "acme/pub" for h in doc["results"])
        assert doc["total"] == len(doc["results"]) <= 1
        for values in doc["facets"].values():
            assert all(n <= 1 for _, n in values)  # one public session: no facet counts more
    doc = search(forge, token, q="retry")
    assert doc["total"] == 1 and dict(doc["facets"]["repository"]) == {"acme/pub": 1}


@pytest.mark.parametrize("who", ["alice", "admin"])
def test_members_find_the_private_sessions(world: dict[str, Any], who: str) -> None:
    forge = world["forge"]
    token = forge.admin_token if who == "admin" else world[who]
    doc = search(forge, token, q="retry")
    assert doc["total"] == 4
    assert dict(doc["facets"]["repository"]) == {"acme/vault": 3, "acme/pub": 1}
    zebra = search(forge, token, q="zebra")
    assert zebra["total"] == 3 and all(h["kind"] == "conversation" for h in zebra["results"])
    assert any(text == "zebra" and hit for h in zebra["results"] for text, hit in h["snippet"])
    rejected = search(forge, token, q="sqlite", kind="rejected", format="json")
    assert rejected["total"] == 4
    assert search(forge, token, q="retry", author="ADMIN")["total"] == 4  # the sessions' author, any case


def test_json_and_cbor_answers_and_paging(world: dict[str, Any]) -> None:
    forge, alice = world["forge"], world["alice"]
    r = httpx.get(forge.url + "/api/v1/search", params={"q": "retry", "limit": 2},
                  headers={"Authorization": f"Bearer {alice}", "Accept": "application/json"}, timeout=60)
    assert r.headers["content-type"].startswith("application/json")
    first = r.json()
    assert len(first["results"]) == 2 and first["next"] == 2 and first["total"] == 4
    second = search(forge, alice, q="retry", limit=2, offset=2)
    assert second["next"] is None
    seen = [h["session"] for h in first["results"] + second["results"]]
    assert len(set(seen)) == 4


BAD = [{}, {"q": ""}, {"q": '"unclosed'}, {"q": "*"}, {"q": "re*try"}, {"q": "x" * 300},
       {"q": "retry", "kind": "bogus"}, {"q": "retry", "role": "robot"}, {"q": "retry", "state": "closed"},
       {"q": "retry", "limit": "0"}, {"q": "retry", "limit": "101"}, {"q": "retry", "offset": "-1"},
       {"q": "retry", "offset": "ten"}, {"q": "retry", "since": "2026-13-01"}, {"q": "retry", "until": "yesterday"},
       {"q": "retry", "from": "x"}]


def test_bad_queries_are_400_with_a_message(world: dict[str, Any]) -> None:
    forge = world["forge"]
    for params in BAD:
        r = httpx.get(forge.url + "/api/v1/search", params=params, timeout=60)
        assert r.status_code == 400, (params, r.status_code, r.content[:200])
        body = cbor2.loads(r.content)
        assert body["error"] == "bad_request" and body["message"] and "\n" not in body["message"]


def test_open_sessions_are_searchable_and_marked(world: dict[str, Any]) -> None:
    forge, t = world["forge"], world["forge"].admin_token
    sid = forge.api("POST", "/api/v1/repos/acme/pub/sessions", t, {"goal": "Try a kiwi parser"}).data["id"]
    (hit,) = search(forge, q="kiwi")["results"]  # at once: this replica catches up before answering
    assert (hit["session"], hit["state"], hit["position"]) == (sid, "open", None)
    r = forge.api("POST", f"/api/v1/repos/acme/pub/sessions/{sid}/events", t,
                  {"events": [{"type": "say", "text": "mango tokens too"}]})
    assert r.status_code == 200
    (hit,) = search(forge, q="mango")["results"]
    assert hit["kind"] == "conversation" and hit["seq"] == 1
    assert forge.api("POST", f"/api/v1/repos/acme/pub/sessions/{sid}/land", t, {}).status_code == 200
    (hit,) = search(forge, q="kiwi mango")["results"]
    assert (hit["state"], hit["position"]) == ("landed", 2)
    assert search(forge, q="kiwi", state="open")["total"] == 0


def test_replica_starting_empty_catches_up(world: dict[str, Any]) -> None:
    forge, alice = world["forge"], world["alice"]
    second = forge.start_replica()  # its own, empty cache directory
    wait_for(lambda: search(forge, alice, url=second, q="retry")["total"] == 4, "the new replica to catch up")
    land(forge, "acme/pub", "Landed through the first replica: papaya")
    assert search(forge, q="papaya")["total"] == 1  # its own landing: at once
    wait_for(lambda: search(forge, url=second, q="papaya")["total"] == 1, "the other replica's poll")
    r = httpx.post(second + "/api/v1/repos/acme/pub/land", headers={"Authorization": f"Bearer {forge.admin_token}",
                   "Content-Type": "application/cbor"}, content=cbor2.dumps({"goal": "quince through two"}), timeout=60)
    assert r.status_code == 200
    assert search(forge, url=second, q="quince")["total"] == 1
    wait_for(lambda: search(forge, q="quince")["total"] == 1, "the first replica's poll")


def _garble(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(os.urandom(100))


@pytest.mark.parametrize("damage", ["deleted", "garbled", "wal-deleted-and-garbled"])
def test_index_damaged_under_a_running_node_is_rebuilt(world: dict[str, Any], damage: str) -> None:
    forge, alice = world["forge"], world["alice"]
    assert search(forge, alice, q="retry")["total"] == 4
    path = forge.root / "cache-0" / "search.sqlite"
    assert path.exists()
    if damage == "deleted":
        path.unlink()
    else:
        if damage == "wal-deleted-and-garbled":
            Path(f"{path}-wal").unlink(missing_ok=True)
        _garble(path)
    doc = search(forge, alice, q="retry")
    assert doc["total"] == 4 and dict(doc["facets"]["repository"]) == {"acme/vault": 3, "acme/pub": 1}
    assert search(forge, q="retry")["total"] == 1  # access still applies to the rebuilt index
    assert "Traceback" not in (forge.root / "node-0.log").read_text()


def hif_cli(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HIF_CONFIG_DIR": str(home), "HIF_AUTHOR": "alice"}
    env.pop("HIF_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "hif.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_remote_and_all_ask_the_forge(world: dict[str, Any], tmp_path: Path) -> None:
    """In a clone, ``--remote`` is this repository as the forge's index has it; ``--all`` every
    repository the user may read; what the token may not read stays out."""
    forge = world["forge"]
    home = tmp_path / "config"
    for token, who in ((world["alice"], "alice"), (world["eve"], "eve")):
        tmp = tmp_path / who
        tmp.mkdir()
        assert hif_cli(home / who, tmp, "login", forge.url, "--token", token).returncode == 0
        assert hif_cli(home / who, tmp, "clone", f"{forge.url}/acme/pub", str(tmp / "pub")).returncode == 0
        here = json.loads(hif_cli(home / who, tmp / "pub", "search", "retry", "--remote", "--json").stdout)
        assert [r["repo"] for r in here["results"]] == ["acme/pub"]
        plain = json.loads(hif_cli(home / who, tmp / "pub", "search", "retry", "--json").stdout)
        assert plain["results"] == here["results"]  # a clone's history lives on the forge: asked there
        everywhere = json.loads(hif_cli(home / who, tmp / "pub", "search", "retry", "--all", "--json").stdout)
        repos = sorted({r["repo"] for r in everywhere["results"]})
        assert repos == (["acme/pub", "acme/vault"] if who == "alice" else ["acme/pub"])
        out = hif_cli(home / who, tmp / "pub", "search", "sqlite", "--all", "--rejected")
        assert out.returncode == 0 and ("[sqlite] vault" in out.stdout) == (who == "alice")
        bad = hif_cli(home / who, tmp / "pub", "search", '"unclosed', "--remote")
        assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr

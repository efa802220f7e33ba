"""Two real nodes on loopback with the periodic resync off (an hour), so what heals a mirror here is
the Push itself: a delivery past the mirror's head backfills the gap from the origin's signed log
first. B runs in allowlist mode (only 127.0.0.1), refusing anyone else before fetching a key."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fedkit import (
    TwoNodes,
    follow,
    host,
    land,
    log_records,
    make_repo,
    mirror_head,
    node_key,
    push_of,
    signed_post,
    two_nodes,
    wait_for,
)

from federation.identity import NodeKey
from hif.mainline import LandingRecord

REPO = "acme/gaps"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    root = tmp_path_factory.mktemp("gaps")
    slow = {"MICELIO_FEDERATION_RESYNC": "3600"}
    with two_nodes(root, a_env=slow, b_env={**slow, "MICELIO_FEDERATION_ALLOW": "127.0.0.1"}) as nodes:
        yield nodes


def test_a_push_past_the_head_backfills_the_gap_first(pair: TwoNodes) -> None:
    a, b = pair.a, pair.b
    make_repo(a, REPO)
    land(a, REPO, {"one.txt": "1\n"}, "one")
    follow(b, a, REPO)
    wait_for(lambda: mirror_head(b, a, REPO) == 1, "B's mirror after the Follow")
    # B's follow is withdrawn at A (an Undo signed with B's key), so A's next landings miss B
    actor = f"{b.url}/ap/node"
    undo = {
        "id": f"{b.url}/ap/undo/{time.time_ns()}",
        "type": "Undo",
        "actor": actor,
        "object": {"type": "Follow", "actor": actor, "object": f"{a.url}/ap/repos/{REPO}"},
    }
    r = signed_post(node_key(b), f"{a.url}/ap/repos/{REPO}/inbox", undo)
    assert r.status_code == 202, r.text
    for i in (2, 3, 4):
        land(a, REPO, {f"f{i}.txt": f"{i}\n"}, f"missed {i}")
    time.sleep(1.0)
    assert mirror_head(b, a, REPO) == 1  # nothing arrived: no delivery, no periodic resync
    # then only position 4 is delivered: B fetches 2..3 from A's signed log, then applies 4
    push = push_of(a, REPO, 4, "4-4")
    r = signed_post(node_key(a), f"{b.url}/ap/inbox", push)
    assert r.status_code == 202 and r.json() == {"applied": 1, "head": 4}, r.text
    path = f"/api/v1/mirrors/{host(a)}/{REPO}"
    records = log_records(b, path)
    assert records == log_records(a, f"/api/v1/repos/{REPO}")
    goals = []
    for p, raw in records:
        sid = LandingRecord.from_bytes(raw, p).sessions[0].session
        goals.append(b.api("GET", f"{path}/sessions/{sid}").data["goal"])
    assert goals == ["one", "missed 2", "missed 3", "missed 4"]
    rows = b.api("GET", f"{path}/verify").data["positions"]
    assert [r["position"] for r in rows] == [1, 2, 3, 4] and all(r["verified"] for r in rows)


def _follow(actor_base: str, target: str) -> dict[str, str]:
    return {
        "id": f"{actor_base}/ap/follows/{time.time_ns()}",
        "type": "Follow",
        "actor": f"{actor_base}/ap/node",
        "object": target,
    }


def test_allowlist_mode_refuses_other_domains_before_any_key_fetch(pair: TwoNodes) -> None:
    b, p = pair.b, pair.peer
    make_repo(b, "acme/local")
    target = f"{b.url}/ap/repos/acme/local"
    fetches = p.key_fetches
    # the same peer under a name that is not on B's allowlist: 403, its key never fetched
    elsewhere = NodeKey(p.key.seed, f"http://localhost:{p.port}")
    r = signed_post(elsewhere, f"{target}/inbox", _follow(elsewhere.url, target))
    assert r.status_code == 403 and "allowlist" in r.json()["message"], r.text
    assert p.key_fetches == fetches
    followers = b.micelio("federation", "followers", "acme/local", "--json").stdout
    assert "localhost" not in followers
    # and B does not follow anyone off its allowlist either
    r = b.api(
        "POST",
        "/api/v1/federation/follow",
        b.admin_token,
        {"url": f"http://localhost:{p.port}/acme/x"},
    )
    assert r.status_code == 403 and "allowlist" in r.data["message"]
    # under its allowed name the peer is heard: key fetched, Follow stored, Accept delivered
    r = signed_post(p.key, f"{target}/inbox", _follow(p.url, target))
    assert r.status_code == 202, r.text
    assert p.key_fetches == fetches + 1
    assert f"{p.url}/ap/node" in b.micelio("federation", "followers", "acme/local", "--json").stdout
    wait_for(lambda: [m for m in p.received if b'"Accept"' in m.body], "B's Accept at the peer")

"""Three real nodes on loopback (separate processes and stores; C on the S3 API server): discovery,
A→B and A→C replication, read-only mirrors and their clones, catching up after downtime (backfill),
following while the origin is down, and the offer flow from B to A and back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cbor2
import httpx
import pytest
from fedkit import (
    FED_ENV,
    follow,
    host,
    land,
    log_records,
    make_repo,
    mirror_head,
    node_key,
    push_of,
    restart,
    signed_post,
    start_node,
    stop,
    ui_admin,
    wait_for,
)
from forge import Forge, start_forge

from federation.envelope import unseal
from federation.identity import public_from_pem
from hif.mainline import LandingRecord

REPO = "acme/api"


@dataclass
class Trio:
    a: Forge
    b: Forge
    c: Forge


def s3_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> Iterator[Trio]:
    root = tmp_path_factory.mktemp("fed")
    a = start_node(root / "a")
    b = start_node(root / "b")
    c = start_node(
        root / "c", store=f"s3://fed-{uuid.uuid4().hex[:12]}/node", env=s3_env(s3_server)
    )
    try:
        make_repo(a, REPO)
        make_repo(a, "acme/secret", private=True)
        yield Trio(a, b, c)
    finally:
        for n in (a, b, c):
            n.stop()


def test_discovery_documents(trio: Trio) -> None:
    a = trio.a
    h = host(a)
    jrd = httpx.get(f"{a.url}/.well-known/webfinger", params={"resource": f"acct:node@{h}"}).json()
    assert jrd["links"][0]["href"] == f"{a.url}/ap/node"
    jrd = httpx.get(f"{a.url}/.well-known/webfinger", params={"resource": f"{a.url}/{REPO}"}).json()
    repo_actor = jrd["links"][0]["href"]
    assert repo_actor == f"{a.url}/ap/repos/{REPO}"
    node = httpx.get(f"{a.url}/ap/node").json()
    assert node["type"] == "Application" and node["inbox"] == f"{a.url}/ap/inbox"
    assert public_from_pem(node["publicKey"]["publicKeyPem"]) == node_key(a).public
    repo = httpx.get(repo_actor).json()
    assert repo["type"] == "Repository" and repo["publicKey"]["id"] == node["publicKey"]["id"]
    for k in ("inbox", "outbox", "followers"):
        assert repo[k].startswith(repo_actor)
    links = httpx.get(f"{a.url}/.well-known/nodeinfo").json()["links"]
    info = httpx.get(links[0]["href"]).json()
    assert info["version"] == "2.1" and info["software"]["name"] == "micelio"
    # private and missing repositories are not discoverable
    assert httpx.get(f"{a.url}/ap/repos/acme/secret").status_code == 404
    assert (
        httpx.get(
            f"{a.url}/.well-known/webfinger", params={"resource": f"{a.url}/acme/secret"}
        ).status_code
        == 404
    )


def test_node_key_is_stable_and_shared_by_replicas(tmp_path: Path) -> None:
    node = start_forge(tmp_path / "n", env=dict(FED_ENV))  # no MICELIO_NODE_KEY: the store keeps it
    try:
        first = httpx.get(f"{node.url}/ap/node").json()["publicKey"]["publicKeyPem"]
        second_url = node.start_replica()
        pem = httpx.get(f"{second_url}/ap/node").json()["publicKey"]["publicKeyPem"]
        assert pem == first
        node.stop()
        node.procs.clear()
        node.urls.clear()
        node.url = node.start_replica()
        assert httpx.get(f"{node.url}/ap/node").json()["publicKey"]["publicKeyPem"] == first
    finally:
        node.stop()


def test_replication_from_a_to_b_and_c(trio: Trio) -> None:
    a, b, c = trio.a, trio.b, trio.c
    land(a, REPO, {"README.md": "hello\n"}, "first")
    land(a, REPO, {"src/app.py": "print('hi')\n"}, "second")
    follow(b, a, REPO)
    follow(c, a, REPO)
    for n in (b, c):  # existing history arrives by backfill once the Follow is accepted
        wait_for(lambda n=n: mirror_head(n, a, REPO) == 2, f"{n.url} to backfill")
    followers = a.micelio("federation", "followers", REPO, "--json")
    assert {f["host"] for f in json.loads(followers.stdout)["followers"]} == {host(b), host(c)}
    # new landings arrive by delivery
    for i in range(3):
        land(a, REPO, {f"src/mod{i}.py": f"x = {i}\n", "README.md": f"hello {i}\n"}, f"change {i}")
    for n in (b, c):
        wait_for(lambda n=n: mirror_head(n, a, REPO) == 5, f"{n.url} to receive deliveries")
    origin = log_records(a, f"/api/v1/repos/{REPO}")
    for n in (b, c):  # same positions, same bytes
        path = f"/api/v1/mirrors/{host(a)}/{REPO}"
        assert log_records(n, path) == origin
        rows = n.api("GET", f"{path}/verify").data["positions"]
        assert [r["position"] for r in rows] == [1, 2, 3, 4, 5] and all(r["verified"] for r in rows)
        assert {r["key_id"] for r in rows} == {node_key(a).key_id}
        meta = n.api("GET", path).data
        assert meta["mirror"] and meta["origin"] == a.url and meta["state"] == "accepted"
        assert meta["last_sync"] > time.time() - 120
        rec = LandingRecord.from_bytes(origin[-1][1], 5)
        s = n.api("GET", f"{path}/sessions/{rec.sessions[0].session}").data
        assert s["goal"] == "change 2" and [e["type"] for e in s["events"]][:2] == ["start", "say"]
        tree = n.api("GET", f"{path}/tree?path=src").data
        assert sorted(e[0] for e in tree["entries"]) == ["app.py", "mod0.py", "mod1.py", "mod2.py"]

    # redelivery is a no-op: the same landing, signed by A again, changes nothing
    push = push_of(a, REPO, 4, "again")
    r = signed_post(node_key(a), f"{b.url}/ap/inbox", push)
    assert r.status_code == 202 and r.json()["applied"] == 0, r.text
    assert log_records(b, f"/api/v1/mirrors/{host(a)}/{REPO}") == origin

    # a mirror lists in the node's mirrors (and on its home page, with its origin), and writing to
    # it is refused
    assert any(m["name"] == REPO for m in b.api("GET", "/api/v1/mirrors").data["mirrors"])
    page = httpx.get(b.url + "/").text
    assert "Mirrored from other nodes" in page and f"mirror of {host(a)}" in page
    assert f"/mirrors/{host(a)}/{REPO}" in page and "signatures verified" in page
    # and its pages browse like a local repository's, read-only, each landing's signature checked
    ui = f"{b.url}/mirrors/{host(a)}/{REPO}"
    tree_page = httpx.get(ui)
    assert tree_page.status_code == 200 and "mod2.py" not in tree_page.text and "src" in tree_page.text
    blob_page = httpx.get(f"{ui}/blob/src/app.py")
    assert blob_page.status_code == 200 and f"/mirrors/{host(a)}/{REPO}/blame/src/app.py" in blob_page.text
    assert httpx.get(f"{ui}/raw/src/app.py").content == b"print('hi')\n"
    listing = httpx.get(f"{ui}/sessions").text
    assert "change 2" in listing and f"/mirrors/{host(a)}/{REPO}/sessions/" in listing
    session_page = httpx.get(f"{ui}/sessions/{rec.sessions[0].session}").text
    assert "verified" in session_page and f"signed by {node_key(a).key_id}" in session_page
    assert httpx.get(f"{ui}/settings").status_code == 404
    assert httpx.get(f"{b.url}/mirrors/{host(a)}/acme/nothing").status_code == 404
    r = b.api("POST", f"/api/v1/mirrors/{host(a)}/{REPO}/sessions", b.admin_token, {"goal": "x"})
    assert r.status_code == 403 and "read-only" in r.data["message"]


def hif(
    cwd: Path, *args: str, token: str | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HIF_CONFIG_DIR": str(cwd / ".hif-config"),
        "HIF_AUTHOR": "bob",
        "HIF_ROLE": "human",
    }
    env.pop("HIF_TOKEN", None)
    if token:
        env["HIF_TOKEN"] = token
    p = subprocess.run(
        [sys.executable, "-m", "hif.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if ok:
        assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p


def test_clone_of_a_mirror_is_read_only(trio: Trio, tmp_path: Path) -> None:
    a, b = trio.a, trio.b
    follow(b, a, REPO)
    if a.api("GET", f"/api/v1/repos/{REPO}/head").data["position"] == 0:
        land(a, REPO, {"README.md": "hello 2\n", "src/mod1.py": "x = 1\n"}, "content")
    wait_for(
        lambda: (
            mirror_head(b, a, REPO) == a.api("GET", f"/api/v1/repos/{REPO}/head").data["position"]
        ),
        "the mirror",
    )
    url = f"{b.url}/mirrors/{host(a)}/{REPO}"
    hif(tmp_path, "clone", url, "m")
    work = tmp_path / "m"
    assert (work / "README.md").read_text() == "hello 2\n"
    assert (work / "src" / "mod1.py").read_text() == "x = 1\n"
    log = json.loads(hif(work, "log", "--json").stdout)
    assert log["landings"][0]["position"] == mirror_head(b, a, REPO)
    p = hif(work, "session", "start", "try", ok=False)
    assert p.returncode != 0 and "read-only mirror" in p.stderr


def test_c_catches_up_after_downtime_by_backfill(trio: Trio) -> None:
    a, c = trio.a, trio.c
    follow(c, a, REPO)  # (already following when the module runs in order: then a no-op)
    start = a.api("GET", f"/api/v1/repos/{REPO}/head").data["position"]
    wait_for(lambda: mirror_head(c, a, REPO) == start, "C's mirror before the test")
    stop(c)
    for i in range(50):
        land(a, REPO, {f"batch/{i:02d}.txt": f"{i}\n"}, f"batch {i}")
    head = start + 50
    # A keeps what it could not deliver in its outbox, visibly
    status = json.loads(a.micelio("federation", "status", "--json").stdout)
    pending = [d for d in status["outbox"] if d["peer"] == host(c)]
    assert pending and all(d["error"] for d in pending), status["outbox"]
    # every failed try counted against C: its circuit opened (5 in a row) and the operator sees it
    tripped = {p["peer"]: p for p in status["peers"]}[host(c)]
    assert tripped["consecutive"] >= 5 and "cannot reach" in tripped["last_error"], tripped
    page = ui_admin(a).get("/federation")
    assert page.status_code == 200 and f"{host(c)}: circuit" in page.text
    assert "cannot reach" in page.text and f"Push {REPO}" in page.text
    restart(c)
    wait_for(lambda: mirror_head(c, a, REPO) == head, "C to catch up", timeout=60)
    path = f"/api/v1/mirrors/{host(a)}/{REPO}"
    records = log_records(c, path)
    assert records == log_records(a, f"/api/v1/repos/{REPO}")
    assert [p for p, _ in records] == list(range(1, head + 1))  # nothing lost, nothing twice
    sessions = [s.session for p, raw in records for s in LandingRecord.from_bytes(raw, p).sessions]
    assert len(sessions) == len(set(sessions))
    rows = c.api("GET", f"{path}/verify?start={max(1, start)}&limit=100").data["positions"]
    assert all(r["verified"] for r in rows), rows
    # A's queued deliveries drain (they are no-ops at C now)
    wait_for(
        lambda: (
            not [
                d
                for d in json.loads(a.micelio("federation", "status", "--json").stdout)["outbox"]
                if d["peer"] == host(c)
            ]
        ),
        "A's outbox to drain",
        timeout=60,
    )
    healed = {p["peer"]: p for p in json.loads(a.micelio("federation", "status", "--json").stdout)["peers"]}
    assert healed[host(c)]["circuit"] == "closed" and healed[host(c)]["consecutive"] == 0
    assert not [d for d in json.loads(a.micelio("federation", "status", "--json").stdout)["failed"]
                if d["peer"] == host(c)]  # nothing given up on


def test_follow_while_the_origin_is_down(tmp_path: Path) -> None:
    a = start_node(tmp_path / "a")
    b = start_node(tmp_path / "b")
    try:
        make_repo(a, REPO)
        land(a, REPO, {"one.txt": "1\n"}, "one")
        land(a, REPO, {"two.txt": "2\n"}, "two")
        stop(a)
        follow(b, a, REPO, wait=False)
        wait_for(
            lambda: [
                d
                for d in b.api("GET", "/api/v1/federation", b.admin_token).data["outbox"]
                if d["error"]
            ],
            "B's Follow to fail visibly",
        )
        status = b.micelio("federation", "status").stdout
        assert "Follow" in status and "cannot reach" in status
        restart(a)
        wait_for(lambda: mirror_head(b, a, REPO) == 2, "B's mirror after A came back", timeout=60)
        land(a, REPO, {"three.txt": "3\n"}, "three")
        wait_for(lambda: mirror_head(b, a, REPO) == 3, "the next landing")
        assert log_records(b, f"/api/v1/mirrors/{host(a)}/{REPO}") == log_records(
            a, f"/api/v1/repos/{REPO}"
        )
    finally:
        a.stop()
        b.stop()


def test_offer_from_b_to_a_and_back(trio: Trio, tmp_path: Path) -> None:
    a, b = trio.a, trio.b
    if a.api("GET", f"/api/v1/repos/{REPO}/head").data["position"] == 0:  # run alone
        follow(b, a, REPO)
        land(a, REPO, {"README.md": "hello 2\n", "src/mod1.py": "x = 1\n"}, "content")
    bob = b.user("bob")
    make_repo(b, "bob/api")
    land(b, "bob/api", {"README.md": "hello 2\n"}, "start from the same file")
    hif(tmp_path, "clone", f"{b.url}/bob/api", "w", token=bob)
    work = tmp_path / "w"
    hif(work, "session", "start", "add a contributing guide", token=bob)
    (work / "CONTRIBUTING.md").write_text("be kind\n")
    (work / "README.md").write_text("hello 2\nsee CONTRIBUTING.md\n")
    hif(work, "say", "the guide explains reviews", token=bob)
    hif(work, "decide", "one file", "--why", "short is better", token=bob)
    out = json.loads(hif(work, "offer", f"{a.url}/{REPO}", "--json", token=bob).stdout)
    assert out["state"] == "sent" and out["target"] == f"{a.url}/{REPO}"
    sid = out["session"]

    offers = wait_for(
        lambda: a.api("GET", f"/api/v1/repos/{REPO}/offers").data["offers"], "the offer at A"
    )
    o = offers[0]
    assert (
        o["state"] == "offered" and o["goal"] == "add a contributing guide" and o["origin"] == b.url
    )
    assert o["id"] == out["id"]  # one id for the offer on both nodes
    detail = a.api("GET", f"/api/v1/repos/{REPO}/offers/{o['id']}").data
    texts = [e.get("text") for e in detail["events"] if e["type"] == "say"]
    assert "the guide explains reviews" in texts
    assert any(e["type"] == "decide" and e["why"] == "short is better" for e in detail["events"])
    diff = {d["path"]: d for d in detail["diff"]}
    assert (
        diff["CONTRIBUTING.md"]["action"] == "add" and "+be kind" in diff["CONTRIBUTING.md"]["diff"]
    )
    assert "+see CONTRIBUTING.md" in diff["README.md"]["diff"]

    # a reader of A cannot land it; a maintainer can
    rita = a.user("rita")
    a.api("PUT", f"/api/v1/repos/{REPO}/members/rita", a.admin_token, {"role": "writer"})
    r = a.api("POST", f"/api/v1/repos/{REPO}/offers/{o['id']}/land", rita, {})
    assert r.status_code == 403
    before = a.api("GET", f"/api/v1/repos/{REPO}/head").data["position"]
    r = a.api("POST", f"/api/v1/repos/{REPO}/offers/{o['id']}/land", a.admin_token, {})
    assert r.status_code == 200 and r.data["state"] == "landed", r.data
    assert r.data["position"] == before + 1
    landed = a.api("GET", f"/api/v1/repos/{REPO}/sessions/{r.data['landed_session']}").data
    assert landed["author"] == f"bob@{host(b)}"
    assert any(e.get("offered_from", {}).get("session") == sid for e in landed["events"])
    tree = a.api("GET", f"/api/v1/repos/{REPO}/tree").data
    assert "CONTRIBUTING.md" in [e[0] for e in tree["entries"]]

    # the outcome reaches B, next to the session
    done = wait_for(
        lambda: [
            x
            for x in b.api("GET", f"/api/v1/repos/bob/api/sessions/{sid}/offers", bob).data[
                "offers"
            ]
            if x["state"] == "landed"
        ],
        "the outcome at B",
    )
    assert done[0]["position"] == before + 1
    # and B's mirror of A shows the landing like any other
    wait_for(lambda: mirror_head(b, a, REPO) == before + 1, "the landed offer in B's mirror")

    # a second offer, rejected
    (work / "NOTES.md").write_text("maybe\n")
    hif(work, "offer", f"{a.url}/{REPO}", token=bob)
    second = wait_for(
        lambda: [
            x
            for x in a.api("GET", f"/api/v1/repos/{REPO}/offers").data["offers"]
            if x["state"] == "offered"
        ],
        "the second offer",
    )
    listed = json.loads(a.micelio("federation", "offers", REPO, "--json").stdout)["offers"]
    assert {o["id"] for o in listed} >= {o["id"], second[0]["id"]}
    out = json.loads(
        a.micelio(
            "federation",
            "reject-offer",
            REPO,
            second[0]["id"],
            "--as",
            "admin",
            "--reason",
            "not now",
            "--json",
        ).stdout
    )  # the operator's CLI
    assert out["state"] == "rejected"
    wait_for(
        lambda: [
            x
            for x in b.api("GET", f"/api/v1/repos/bob/api/sessions/{sid}/offers", bob).data[
                "offers"
            ]
            if x["state"] == "rejected" and x["reason"] == "not now"
        ],
        "the rejection at B",
    )


def test_envelope_page_is_signed_cbor(trio: Trio) -> None:
    a = trio.a
    page = cbor2.loads(httpx.get(f"{a.url}/ap/repos/{REPO}/envelopes?start=1&limit=2").content)
    assert len(page["envelopes"]) == 2 and page["next"] == 3
    sealed = unseal(page["envelopes"][0])
    assert sealed.key_id == node_key(a).key_id and sealed.body["repo"] == REPO
    assert sealed.body["origin"] == a.url and sealed.body["position"] == 1


def test_unfollow_stops_deliveries_and_keeps_the_mirror(trio: Trio) -> None:
    a, c = trio.a, trio.c
    follow(c, a, REPO)
    head = a.api("GET", f"/api/v1/repos/{REPO}/head").data["position"]
    wait_for(lambda: mirror_head(c, a, REPO) == head, "C's mirror")
    r = c.api("POST", "/api/v1/federation/unfollow", c.admin_token, {"url": f"{a.url}/{REPO}"})
    assert r.status_code == 200 and r.data["state"] == "unfollowed"

    def c_follows() -> bool:
        rows = json.loads(a.micelio("federation", "followers", REPO, "--json").stdout)["followers"]
        return any(f["host"] == host(c) for f in rows)

    wait_for(lambda: not c_follows(), "A to drop C")
    land(a, REPO, {"after.txt": "after\n"}, "after unfollowing")
    time.sleep(1)
    assert mirror_head(c, a, REPO) == head  # frozen, still readable


def test_admins_follow_and_watch_federation_from_the_ui(trio: Trio) -> None:
    import re

    a, b = trio.a, trio.b
    make_repo(a, "acme/ui-followed")
    land(a, "acme/ui-followed", {"notes.md": "from the UI\n"}, "seed")
    b.micelio("admin", "user", "create", "plain", "--password-stdin", input="long-password-1\n")
    plain = httpx.Client(base_url=b.url, timeout=60)
    csrf = re.search(r'name="csrf" value="([^"]+)"', plain.get("/login").text).group(1)  # type: ignore[union-attr]
    r = plain.post("/login", data={"user": "plain", "password": "long-password-1", "csrf": csrf, "next": "/"})
    assert r.status_code == 302, r.text
    assert plain.get("/federation").status_code == 404  # site admins only
    c = ui_admin(b)
    page = c.get("/federation")
    assert page.status_code == 200 and "Followed repositories" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = c.post("/federation/follow", data={"url": f"{a.url}/acme/ui-followed", "csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/federation"  # post-redirect-get
    r = c.get("/federation")
    assert r.status_code == 200 and "Following" in r.text, r.text
    assert "Following" not in c.get("/federation").text  # shown once: a reload does not repeat it
    wait_for(lambda: mirror_head(b, a, "acme/ui-followed") == 1, "the UI follow to backfill")
    page = c.get("/federation").text
    assert "acme/ui-followed" in page and "accepted" in page and "verified" in page
    r = c.post("/federation/follow", data={"url": "not a url", "csrf": csrf})
    assert r.status_code == 400 and 'role="alert"' in r.text
    r = c.post("/federation/unfollow", data={"url": f"{a.url}/acme/ui-followed", "csrf": csrf},
               follow_redirects=True)
    assert r.status_code == 200 and "Stopped following" in r.text

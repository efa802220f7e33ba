"""Offers from hostile peers (issue 15, item 4): a stranger may not use a node as free storage.

A real node A on loopback and small hostile peers of our own: each serves actors that publish its
key, and correctly signed offer bundles crafted by the test (too large, stuffed with objects no
change refers to, many of them). What must hold: a bundle over 32 MiB is refused while it is read
and nothing is stored; only objects the offered changes (and checkpoint trees) refer to are kept;
pending offers are capped per remote actor and per remote host and rate-limited per host, each
refusal saying why; an offer nobody reviews expires and its objects go with it; maintainers see
what offers cost (API, CLI, UI).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fedkit import (
    QuietHandler,
    api,
    land,
    make_repo,
    serve,
    signed_post,
    start_node,
    ui_login,
    wait_for,
)
from forge import Forge
from s3server import free_port

from federation.envelope import seal
from federation.identity import NodeKey
from hif.objects import DIR, FILE, Entry, blob_bytes, digest, encode, tree_bytes

REPO = "acme/hostile"
MiB = 1 << 20
CAPS = {
    "MICELIO_FEDERATION_OFFERS_PER_ACTOR": "3",
    "MICELIO_FEDERATION_OFFERS_PER_HOST": "5",
    "MICELIO_FEDERATION_OFFERS_PER_HOUR": "8",
}


# -- a hostile peer: actors with its key, crafted bundles, an inbox that records ------------------


@dataclass
class Hostile:
    port: int
    key: NodeKey
    server: ThreadingHTTPServer
    bundles: dict[str, bytes] = field(default_factory=dict)
    unsized: set[str] = field(default_factory=set)  # served without Content-Length
    received: list[dict[str, Any]] = field(default_factory=list)
    bundle_fetches: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def actor(self, name: str) -> str:
        return f"{self.url}/ap/users/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_hostile() -> Hostile:
    port = free_port()
    key = NodeKey(os.urandom(32), f"http://127.0.0.1:{port}")
    peer: Hostile

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?")[0]
            if path == "/ap/node" or path.startswith("/ap/users/"):
                doc = {
                    "@context": "https://www.w3.org/ns/activitystreams",
                    "id": f"{key.url}{path}",
                    "type": "Person" if path.startswith("/ap/users/") else "Application",
                    "inbox": f"{key.url}/ap/inbox",
                    "publicKey": {"id": key.key_id, "owner": key.actor,
                                  "publicKeyPem": key.public_pem()},
                }
                self._send(200, json.dumps(doc).encode(), "application/activity+json")
            elif path in peer.bundles:
                peer.bundle_fetches += 1
                body = peer.bundles[path]
                self.send_response(200)
                self.send_header("Content-Type", "application/cbor")
                if path not in peer.unsized:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()  # without a length, the body ends when the connection closes
                try:
                    for i in range(0, len(body), 1 << 16):
                        self.wfile.write(body[i : i + (1 << 16)])
                except OSError:
                    pass  # the node stopped reading
                self.close_connection = True
            else:
                self._send(404, b"{}", "application/json")

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            peer.received.append(json.loads(body))
            self._send(202, b"{}", "application/json")

    peer = Hostile(port, key, serve(Handler, port))
    return peer


def blob(size: int) -> bytes:
    """The canonical bytes of a blob of ``size`` random (incompressible) bytes."""
    return blob_bytes(os.urandom(size))


def offer(
    peer: Hostile,
    node: Forge,
    actor: str = "mallory",
    *,
    files: dict[str, bytes] | None = None,
    extra: list[bytes] | None = None,
    checkpoint: bytes | None = None,
    unsized: bool = False,
) -> tuple[httpx.Response, str]:
    """Craft a correctly signed bundle offering ``files`` (canonical blobs by path) plus ``extra``
    objects, serve it, and POST the signed ``Offer`` to ``node``'s repository inbox; (answer, the
    offer's URL)."""
    files = files if files is not None else {"NOTES.md": blob_bytes(b"notes\n")}
    oid = os.urandom(8).hex()
    sid = os.urandom(10).hex()
    events: list[dict[str, Any]] = [{"type": "say", "seq": 1, "author": actor, "text": "please"}]
    for path, b in files.items():
        events.append({"type": "write", "seq": len(events) + 1, "author": actor, "path": path,
                       "kind": FILE, "blob": digest(b)})
    if checkpoint is not None:
        events.append({"type": "checkpoint", "seq": len(events) + 1, "author": actor,
                       "tree": digest(checkpoint)})
    snapshot = encode(["snapshot", {"id": sid, "goal": "hostile", "events": events}])
    body = {
        "v": 1,
        "kind": "offer",
        "origin": peer.url,
        "repo": "mallory/stuff",
        "session": sid,
        "offer": oid,
        "target": f"{node.url}/{REPO}",
        "goal": f"offer {oid}",
        "author": actor,
        "role": "human",
        "snapshot": snapshot,
        "changes": [[p, None, None, FILE, digest(b)] for p, b in files.items()],
        "objects": [*files.values(), *(extra or [])],
    }
    path = f"/ap/offers/{oid}/bundle"
    peer.bundles[path] = seal(peer.key, body)
    if unsized:
        peer.unsized.add(path)
    obj = f"{peer.url}/ap/offers/{oid}"
    activity = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{obj}#offer",
        "type": "Offer",
        "actor": peer.actor(actor),
        "target": f"{node.url}/ap/repos/{REPO}",
        "object": {"id": obj, "type": "Patch", "bundle": peer.url + path},
    }
    r = signed_post(peer.key, f"{node.url}/ap/repos/{REPO}/inbox", activity)
    peer.bundles.pop(path, None)  # read once at most: keep the test's memory small
    return r, obj


def stored(node: Forge) -> set[str]:
    """Every key the node's store holds for repositories and offers (files); the delivery queue
    (retries of earlier answers come and go on their own) is left out."""
    root = Path(node.store) / "data"
    bases = ("repos", "_fed/offers-in", "_fed/offer-rate")
    return {str(p.relative_to(root)) for base in bases if (root / base).exists()
            for p in (root / base).rglob("*") if p.is_file()}


def offers_of(node: Forge) -> list[dict[str, Any]]:
    status, data = api(node, "GET", f"/api/v1/repos/{REPO}/offers")
    assert status == 200, data
    return data["offers"]


@dataclass
class World:
    a: Forge


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("hostile-offers")
    a = start_node(root / "a", env=CAPS)
    try:
        make_repo(a, REPO)
        land(a, REPO, {"README.md": "hello\n"}, "start")
        yield World(a)
    finally:
        a.stop()


def test_a_bundle_over_32_mib_is_refused_while_read_and_nothing_is_stored(world: World) -> None:
    a = world.a
    for unsized in (False, True):  # announced by its length, and not (only reading can tell)
        peer = start_hostile()
        try:
            before = stored(a)
            chunks = [blob(MiB) for _ in range(41)]  # 41 MiB of objects, every one referenced
            files = {f"big/{i}.bin": c for i, c in enumerate(chunks)}
            r, _ = offer(peer, a, files=files, unsized=unsized)
            assert r.status_code == 413, (r.status_code, r.text)
            assert "larger than 33554432 bytes" in r.json()["message"]
            assert "nothing was stored" in r.json()["message"]
            after = stored(a)
            new = {k for k in after - before if not k.startswith("_fed/offer-rate/")}
            assert new == set(), sorted(new)[:5]  # no record, no object, no pending entry
            assert not any(digest(c).hex() in k for c in chunks for k in after)
            assert offers_of(a) == [] or all(o["goal"] != "hostile" for o in offers_of(a))
        finally:
            peer.close()
    # just under the limit is fine: the limit is the documented one, not a smaller one
    peer = start_hostile()
    try:
        r, _ = offer(peer, a, files={f"f{i}.bin": blob(MiB) for i in range(30)})
        assert r.status_code == 202, r.text
    finally:
        peer.close()


def test_objects_no_change_refers_to_are_not_stored(world: World) -> None:
    a = world.a
    peer = start_hostile()
    try:
        wanted = blob_bytes(b"a useful change\n")
        # a checkpoint tree (referenced from the snapshot) and what it names are kept
        inner = blob_bytes(b"checkpointed\n")
        sub = tree_bytes({"x.txt": Entry(FILE, digest(inner))})
        checkpoint = tree_bytes({"d": Entry(DIR, digest(sub)), "w.txt": Entry(FILE, digest(wanted))})
        # unreferenced: a loose blob, a tree with its own blob, a large blob
        loose = blob(4096)
        hidden = blob_bytes(b"hidden under an unreferenced tree\n")
        orphan_tree = tree_bytes({"h": Entry(FILE, digest(hidden))})
        bulk = blob(2 * MiB)
        junk = [loose, hidden, orphan_tree, bulk]
        r, obj = offer(peer, a, files={"CHANGE.md": wanted},
                       extra=[inner, sub, checkpoint, *junk], checkpoint=checkpoint)
        assert r.status_code == 202, r.text
        keys = stored(a)
        for j in junk:
            assert not any(digest(j).hex() in k for k in keys), "an unreferenced object was kept"
        for w in (wanted, inner, sub, checkpoint):
            assert any(digest(w).hex() in k for k in keys), "a referenced object is missing"
        lid = r.json()["offer"]
        row = next(o for o in offers_of(a) if o["id"] == lid)
        kept = sum(len(x) for x in (wanted, inner, sub, checkpoint))
        assert kept < row["size"] < kept + 4096  # the objects kept and the snapshot, no junk
        detail = api(a, "GET", f"/api/v1/repos/{REPO}/offers/{lid}")[1]
        assert "a useful change" in detail["diff"][0]["diff"]
        # landing it brings exactly the referenced objects into the repository
        status, landed = api(a, "POST", f"/api/v1/repos/{REPO}/offers/{lid}/land", a.admin_token, {})
        assert status == 200 and landed["state"] == "landed", landed
        ids = [digest(x) for x in (wanted, inner, sub, checkpoint, *junk)]
        status, have = api(a, "POST", f"/api/v1/repos/{REPO}/objects/have", None, {"ids": ids})
        assert set(have["missing"]) == {digest(j) for j in junk}
        assert not any(f"/offer-objects/{lid}/" in k for k in stored(a))  # staging went with it
        tree = api(a, "GET", f"/api/v1/repos/{REPO}/tree")[1]
        assert "CHANGE.md" in json.dumps(tree, default=str)
    finally:
        peer.close()


def test_pending_offers_are_capped_per_actor_and_per_host_and_rate_limited(world: World) -> None:
    a = world.a
    peer = start_hostile()  # one host: caps 3 per actor, 5 per host, 8 per hour (CAPS)
    try:
        def listed() -> int:
            return sum(1 for o in offers_of(a) if o["from"].startswith(peer.url))

        for _ in range(3):
            assert offer(peer, a, "u1")[0].status_code == 202
        before = stored(a)
        for spelling in ("u1", "u1"):  # again and again: each is refused
            r, _ = offer(peer, a, spelling)
            assert r.status_code == 429, r.text
            assert "offers waiting for review" in r.json()["message"]
            assert "at most 3 per actor" in r.json()["message"]
        assert stored(a) == before and listed() == 3  # nothing stored for a refused offer
        for _ in range(2):  # another actor of the same host, up to the host's cap
            assert offer(peer, a, "u2")[0].status_code == 202
        for who in ("u3", "u2", "u1"):
            r, _ = offer(peer, a, who)
            assert r.status_code == 429, r.text
            assert "at most 5 per host" in r.json()["message"] or "per actor" in r.json()["message"]
        r, _ = offer(peer, a, "u9")
        assert r.status_code == 429 and "at most 5 per host" in r.json()["message"]
        assert listed() == 5
        # another host is not held back by this one
        other = start_hostile()
        try:
            assert offer(other, a, "u1")[0].status_code == 202
        finally:
            other.close()
        # reviewing frees a place; the hourly rate still counts every offer received
        rows = [o for o in offers_of(a) if o["from"].startswith(peer.url)]
        for o in rows[:4]:
            status, data = api(a, "POST", f"/api/v1/repos/{REPO}/offers/{o['id']}/reject",
                               a.admin_token, {"reason": "no"})
            assert status == 200, data
        for who in ("u1", "u2", "u4"):  # 6, 7, 8 offers from this host in the hour
            r, _ = offer(peer, a, who)
            assert r.status_code == 202, r.text
        r, _ = offer(peer, a, "u5")
        assert r.status_code == 429, r.text
        assert "offers in the last hour" in r.json()["message"]
        assert "at most 8 per host and hour" in r.json()["message"]
    finally:
        peer.close()


def test_an_unreviewed_offer_expires_with_its_objects(tmp_path: Path) -> None:
    e = start_node(tmp_path / "e", env={"MICELIO_FEDERATION_OFFER_EXPIRY": "8",
                                        "MICELIO_FEDERATION_OFFERS_PER_ACTOR": "1"})
    peer = start_hostile()
    try:
        make_repo(e, REPO)
        content = blob(64 * 1024)
        r, obj = offer(peer, e, "u1", files={"DATA.bin": content})
        assert r.status_code == 202, r.text
        lid = r.json()["offer"]
        assert [o["id"] for o in offers_of(e)] == [lid]
        assert any(digest(content).hex() in k for k in stored(e))
        # a second offer from the same actor waits for the first one's review (cap 1) ...
        assert offer(peer, e, "u1")[0].status_code == 429
        # ... or its expiry: the record, its objects and its place in the cap go; the peer is told
        wait_for(lambda: not offers_of(e), "the offer to expire", timeout=30)
        wait_for(lambda: not any(digest(content).hex() in k for k in stored(e)),
                 "its objects to be removed", timeout=30)
        assert api(e, "GET", f"/api/v1/repos/{REPO}/offers/{lid}")[0] == 404
        assert not any(k.startswith("_fed/offers-in/") for k in stored(e))  # its place is free
        told = wait_for(lambda: [x for x in peer.received if x.get("type") == "Reject"
                                 and x.get("object") == obj], "the Reject", timeout=30)
        assert "expired" in told[0]["summary"]
        assert offer(peer, e, "u1")[0].status_code == 202
    finally:
        peer.close()
        e.stop()


def test_maintainers_see_each_offer_size_and_the_total(world: World) -> None:
    a = world.a
    peer = start_hostile()
    try:
        sizes = []
        for n in (100_000, 300_000):
            r, _ = offer(peer, a, "sizer", files={"s.bin": blob(n)})
            assert r.status_code == 202, r.text
            sizes.append(r.json()["size"])
        status, data = api(a, "GET", f"/api/v1/repos/{REPO}/offers")
        assert status == 200
        rows = {o["id"]: o for o in data["offers"]}
        assert all(isinstance(o["size"], int) and o["size"] > 0 for o in rows.values())
        assert sorted(o["size"] for o in rows.values() if o["from"].endswith("/sizer"))[-2:] == sorted(sizes)
        assert data["total_size"] == sum(o["size"] for o in rows.values())
        assert all(100_000 < s < 400_000 for s in sizes)
        # the CLI on the store: each size and the total
        out = json.loads(a.micelio("federation", "offers", REPO, "--json").stdout)
        assert out["total_size"] == data["total_size"]
        text = a.micelio("federation", "offers", REPO).stdout
        assert re.search(r"total: \d+ offer\(s\), [\d.,]+ [KMG]?B", text), text
        assert "KB" in text
        # the UI: a maintainer sees sizes and the total; a reader does not get the column
        admin = ui_login(a, "rootie", admin=True)
        page = admin.get(f"/{REPO}/offers").text
        assert "offers-total" in page and ">Size<" in page
        anon = httpx.get(f"{a.url}/{REPO}/offers").text
        assert "offers-total" not in anon
    finally:
        peer.close()


def test_caps_refuse_before_the_bundle_is_fetched(world: World) -> None:
    """A refused offer costs the node no fetch: the peer never sees its bundle requested."""
    a = world.a
    peer = start_hostile()
    try:
        for _ in range(3):
            assert offer(peer, a, "fetchless")[0].status_code == 202
        fetches = peer.bundle_fetches
        for _ in range(3):
            r, _ = offer(peer, a, "fetchless")
            assert r.status_code == 429, r.text
        assert peer.bundle_fetches == fetches
    finally:
        peer.close()

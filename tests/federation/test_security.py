"""Every guard rail of federation, each one a test, through real nodes on loopback.

A is an origin, B follows A; P is a fake peer with its own key. Nodes have known seeds, so the tests
can sign as A exactly as whoever holds A's key could.
"""

from __future__ import annotations

import base64
import datetime
import json
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import httpx
import nacl.signing
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
    signed_post,
    two_nodes,
    wait_for,
)
from forge import Forge
from http_message_signatures import HTTPMessageVerifier, MappingKeyResolver
from http_message_signatures.algorithms import ED25519

from federation.envelope import DOMAIN, seal, unseal
from federation.identity import NodeKey, public_from_pem
from hif.objects import blob_bytes, decode, digest, encode, pack

REPO = "acme/sec"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    root = tmp_path_factory.mktemp("sec")
    with two_nodes(root, b_env={"MICELIO_FEDERATION_BLOCK": "localhost"}) as nodes:
        a, b = nodes.a, nodes.b
        make_repo(a, REPO)
        make_repo(a, "acme/hidden", private=True)
        land(a, REPO, {"a.txt": "one\n"}, "one")
        land(a, REPO, {"b.txt": "two\n"}, "two")
        follow(b, a, REPO)
        wait_for(lambda: mirror_head(b, a, REPO) == 2, "B's mirror")
        yield nodes


def followers(node: Forge, repo: str = REPO) -> set[str]:
    out = json.loads(node.micelio("federation", "followers", repo, "--json").stdout)
    return {f["actor"] for f in out["followers"]}


def follow_activity(actor_node: str, target: str, ident: str | None = None) -> dict:
    return {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": ident or f"{actor_node}/ap/follows/{time.time_ns()}",
        "type": "Follow",
        "actor": f"{actor_node}/ap/node",
        "object": target,
    }


def push_activity(a: Forge, wires: list[tuple[int, bytes]]) -> dict:
    actor = f"{a.url}/ap/repos/{REPO}"
    return {
        "id": f"{actor}/pushes/{time.time_ns()}",
        "type": "Push",
        "actor": actor,
        "object": {
            "type": "OrderedCollection",
            "orderedItems": [
                {
                    "type": "Landing",
                    "id": f"{actor}/envelopes/{p}",
                    "position": p,
                    "envelope": base64.urlsafe_b64encode(w).decode().rstrip("="),
                }
                for p, w in wires
            ],
        },
    }


def test_unsigned_request_is_401_and_nothing_is_stored(world: TwoNodes) -> None:
    a, p = world.a, world.peer
    before = followers(a)
    body = json.dumps(follow_activity(p.url, f"{a.url}/ap/repos/{REPO}")).encode()
    r = httpx.post(
        f"{a.url}/ap/repos/{REPO}/inbox",
        content=body,
        headers={"Content-Type": "application/activity+json"},
    )
    assert r.status_code == 401 and "not signed" in r.json()["message"]
    assert followers(a) == before


def test_badly_signed_request_is_401_and_nothing_is_stored(world: TwoNodes) -> None:
    a, p = world.a, world.peer
    before = followers(a)
    url = f"{a.url}/ap/repos/{REPO}/inbox"
    body = json.dumps(follow_activity(p.url, f"{a.url}/ap/repos/{REPO}")).encode()
    from federation.httpsig import sign_headers

    headers = sign_headers(p.key, "POST", url, body, {"Content-Type": "application/activity+json"})
    # the body changed after signing: the recomputed digest does not match
    r = httpx.post(url, content=body.replace(b"Follow", b"Folloe"), headers=headers)
    assert r.status_code == 401
    # a signature made by another key than the one named
    other = NodeKey(b"\x07" * 32, p.url)
    forged = sign_headers(other, "POST", url, body, {"Content-Type": "application/activity+json"})
    r = httpx.post(url, content=body, headers=forged)
    assert r.status_code == 401 and "does not verify" in r.json()["message"]
    # signed for another target URI
    elsewhere = sign_headers(
        p.key, "POST", f"{a.url}/ap/inbox", body, {"Content-Type": "application/activity+json"}
    )
    assert httpx.post(url, content=body, headers=elsewhere).status_code == 401
    assert followers(a) == before


def test_key_of_another_host_than_the_actor_is_rejected(world: TwoNodes) -> None:
    a, b, p = world.a, world.b, world.peer
    before = followers(a)
    # P's key, but the activity claims B's node as its actor
    activity = follow_activity(b.url, f"{a.url}/ap/repos/{REPO}")
    r = signed_post(p.key, f"{a.url}/ap/repos/{REPO}/inbox", activity)
    assert r.status_code == 401 and "does not belong" in r.json()["message"]
    # P's key and actor, but an activity id on B's host
    activity = follow_activity(p.url, f"{a.url}/ap/repos/{REPO}", ident=f"{b.url}/ap/follows/x")
    r = signed_post(p.key, f"{a.url}/ap/repos/{REPO}/inbox", activity)
    assert r.status_code == 403
    assert followers(a) == before


def test_object_of_another_host_than_the_key_is_rejected(world: TwoNodes) -> None:
    a, b, p = world.a, world.b, world.peer
    path = f"/api/v1/mirrors/{host(a)}/{REPO}"
    before = log_records(b, path)
    land(a, REPO, {"c.txt": "three\n"}, "three")  # position 3, which B will receive anyway
    real = unseal(httpx.get(f"{a.url}/ap/repos/{REPO}/envelopes/3").content)
    # the same landing claims origin A but is sealed with P's key; the request is A's
    foreign = seal(NodeKey(p.key.seed, p.url), real.body)
    r = signed_post(node_key(a), f"{b.url}/ap/inbox", push_activity(a, [(3, foreign)]))
    assert r.status_code == 400 and "not of its origin" in r.json()["message"]
    # an Offer whose bundle lives on another host than its actor
    offer = {
        "id": f"{p.url}/ap/offers/x#offer",
        "type": "Offer",
        "actor": f"{p.url}/ap/node",
        "target": f"{a.url}/ap/repos/{REPO}",
        "object": {"id": f"{p.url}/ap/offers/x", "bundle": f"{b.url}/ap/offers/x/bundle"},
    }
    r = signed_post(p.key, f"{a.url}/ap/repos/{REPO}/inbox", offer)
    assert r.status_code == 403
    assert httpx.get(f"{a.url}/api/v1/repos/{REPO}/offers").status_code in (200, 401)
    wait_for(lambda: mirror_head(b, a, REPO) == 3, "the genuine position 3")
    assert log_records(b, path)[:2] == before


def test_signature_outside_five_minutes_is_rejected(world: TwoNodes) -> None:
    a, p = world.a, world.peer
    before = followers(a)
    # 20 s past the window on either side: `created` is whole seconds and the request takes time,
    # so a 1 s margin would make the test depend on how fast the machine is
    for skew in (-320, 320):
        activity = follow_activity(p.url, f"{a.url}/ap/repos/{REPO}")
        r = signed_post(
            p.key, f"{a.url}/ap/repos/{REPO}/inbox", activity, created=time.time() + skew
        )
        assert r.status_code == 401, (skew, r.text)
    assert followers(a) == before


def test_replayed_request_is_rejected(world: TwoNodes) -> None:
    a, p = world.a, world.peer
    url = f"{a.url}/ap/repos/{REPO}/inbox"
    body = json.dumps(
        {
            "id": f"{p.url}/undo/{time.time_ns()}",
            "type": "Undo",
            "actor": f"{p.url}/ap/node",
            "object": {
                "type": "Follow",
                "actor": f"{p.url}/ap/node",
                "object": f"{a.url}/ap/repos/{REPO}",
            },
        }
    ).encode()
    from federation.httpsig import sign_headers

    headers = sign_headers(p.key, "POST", url, body, {"Content-Type": "application/activity+json"})
    assert httpx.post(url, content=body, headers=headers).status_code == 202
    r = httpx.post(url, content=body, headers=headers)
    assert r.status_code == 401 and "replayed" in r.json()["message"]


def test_tampered_envelope_is_rejected(world: TwoNodes) -> None:
    a, b = world.a, world.b
    n = land(a, REPO, {"d.txt": "four\n"}, "four")
    wait_for(lambda: mirror_head(b, a, REPO) == n, "the genuine landing")
    outer = decode(httpx.get(f"{a.url}/ap/repos/{REPO}/envelopes/{n}").content)
    payload = bytearray(outer["payload"])
    payload[-3] ^= 0x01  # one bit of the signed bytes
    tampered = encode({**outer, "payload": bytes(payload)})
    r = signed_post(node_key(a), f"{b.url}/ap/inbox", push_activity(a, [(n, tampered)]))
    assert r.status_code == 422 and "signature does not verify" in r.json()["message"], r.text
    # and a re-signed envelope whose snapshot does not hash to the record's
    body = decode(outer["payload"])
    body["snapshots"] = [encode(["snapshot", {"id": "x", "events": []}])]
    r = signed_post(
        node_key(a), f"{b.url}/ap/inbox", push_activity(a, [(n, seal(node_key(a), body))])
    )
    assert r.status_code == 422 and "hash mismatch" in r.json()["message"]
    assert mirror_head(b, a, REPO) == n


def test_tampered_object_is_rejected(world: TwoNodes) -> None:
    a, b = world.a, world.b
    make_repo(a, "acme/tamper")
    land(a, "acme/tamper", {"x.txt": "genuine\n"}, "genuine")
    # the origin's store serves other bytes under the blob's id (a disk or a proxy went bad)
    oid = digest(blob_bytes(b"genuine\n")).hex()
    obj = Path(a.store) / "data" / "repos" / "acme" / "tamper" / "objects" / oid
    obj.write_bytes(pack(blob_bytes(b"evil\n")))
    follow(b, a, "acme/tamper")
    path = f"/api/v1/mirrors/{host(a)}/acme/tamper"
    meta = wait_for(lambda: (m := b.api("GET", path).data) and m.get("error") and m, "the refusal")
    assert "hash mismatch" in meta["error"] and meta["head"] == 0


def test_conflicting_position_is_rejected_reported_and_not_overwritten(world: TwoNodes) -> None:
    a, b = world.a, world.b
    path = f"/api/v1/mirrors/{host(a)}/{REPO}"
    held = log_records(b, path)[0]
    outer = decode(httpx.get(f"{a.url}/ap/repos/{REPO}/envelopes/1").content)
    body = decode(outer["payload"])
    record = decode(body["record"])
    record["time"] = record["time"] + 1  # a different record for the same position, signed by A
    body["record"] = encode(record)
    r = signed_post(
        node_key(a), f"{b.url}/ap/inbox", push_activity(a, [(1, seal(node_key(a), body))])
    )
    assert r.status_code == 409 and "not overwritten" in r.json()["message"]
    assert log_records(b, path)[0] == held
    mirrors = {m["name"]: m for m in b.api("GET", "/api/v1/mirrors").data["mirrors"]}
    assert mirrors[REPO]["conflicts"] >= 1
    status = b.micelio("federation", "status").stdout
    assert "conflicts:" in status


def test_body_over_the_limit_is_413(world: TwoNodes) -> None:
    a = world.a
    for path in ("/ap/inbox", f"/ap/repos/{REPO}/inbox"):
        r = httpx.post(
            f"{a.url}{path}",
            content=b"{" + b" " * (1 << 20) + b"}",
            headers={"Content-Type": "application/activity+json"},
        )
        assert r.status_code == 413


def test_key_fetch_to_a_forbidden_address_is_refused(world: TwoNodes) -> None:
    a, p = world.a, world.peer
    for bad in ("http://0.0.0.0:9", "http://169.254.169.254", "http://10.1.2.3", "http://[::1]:9"):
        key = NodeKey(p.key.seed, bad)
        activity = follow_activity(bad, f"{a.url}/ap/repos/{REPO}")
        r = signed_post(key, f"{a.url}/ap/repos/{REPO}/inbox", activity)
        assert r.status_code == 403 and "private or reserved" in r.json()["message"], (bad, r.text)


def test_object_fetch_to_a_forbidden_address_is_refused(world: TwoNodes) -> None:
    b = world.b
    r = b.api("POST", "/api/v1/federation/follow", b.admin_token, {"url": "http://10.9.8.7/acme/x"})
    assert r.status_code == 201
    failed = wait_for(
        lambda: [
            d
            for d in b.api("GET", "/api/v1/federation", b.admin_token).data["failed"]
            if d["peer"] == "10.9.8.7"
        ],
        "the refused Follow",
    )
    assert "private or reserved" in failed[0]["error"]


def test_blocked_domain_is_403_before_any_key_fetch(world: TwoNodes) -> None:
    b, p = world.b, world.peer
    fetches = p.key_fetches
    blocked = NodeKey(p.key.seed, f"http://localhost:{p.port}")
    r = signed_post(blocked, f"{b.url}/ap/inbox", follow_activity(blocked.url, "x"))
    assert r.status_code == 403 and "blocked" in r.json()["message"]
    assert p.key_fetches == fetches
    # the same peer under an allowed name is fetched (so the refusal above was the blocklist)
    r = signed_post(p.key, f"{b.url}/ap/inbox", follow_activity(p.url, "x"))
    assert r.status_code != 403 and p.key_fetches == fetches + 1


def test_private_repositories_cannot_be_followed(world: TwoNodes) -> None:
    a, p = world.a, world.peer
    r = signed_post(
        p.key,
        f"{a.url}/ap/repos/acme/hidden/inbox",
        follow_activity(p.url, f"{a.url}/ap/repos/acme/hidden"),
    )
    assert r.status_code == 404
    assert followers(a, "acme/hidden") == set()


def test_outgoing_signatures_verify_with_the_library(world: TwoNodes) -> None:
    """Our deliveries verify with an independent RFC 9421 implementation, and our envelopes with
    plain Ed25519 over the documented bytes."""
    a, p = world.a, world.peer
    r = signed_post(
        p.key, f"{a.url}/ap/repos/{REPO}/inbox", follow_activity(p.url, f"{a.url}/ap/repos/{REPO}")
    )
    assert r.status_code == 202, r.text
    accept = wait_for(lambda: [m for m in p.received if b'"Accept"' in m.body], "A's Accept at P")[
        0
    ]
    n = land(a, REPO, {"e.txt": "five\n"}, "five")
    push = wait_for(lambda: [m for m in p.received if b'"Push"' in m.body], "A's Push at P")[-1]
    actor = httpx.get(f"{a.url}/ap/node").json()
    public = public_from_pem(actor["publicKey"]["publicKeyPem"])
    from cryptography.hazmat.primitives.asymmetric import ed25519

    resolver = MappingKeyResolver(
        public_keys={actor["publicKey"]["id"]: ed25519.Ed25519PublicKey.from_public_bytes(public)},
        private_keys={},
    )
    verifier = HTTPMessageVerifier(signature_algorithm=ED25519, key_resolver=resolver)
    verifier.max_clock_skew = datetime.timedelta(seconds=300)

    class Message:
        def __init__(self, path: str, headers: list[tuple[str, str]]) -> None:
            self.method, self.url = "POST", f"{p.url}{path}"
            self.headers = dict(headers)

    for m in (accept, push):
        results = verifier.verify(
            Message(m.path, m.headers),
            body=m.body,
            require_components=("@method", "@target-uri", "content-digest"),
        )
        assert results[0].parameters["keyid"] == f"{a.url}/ap/node#main-key"
        assert results[0].parameters["alg"] == "ed25519"
    item = json.loads(push.body)["object"]["orderedItems"][-1]
    assert item["position"] == n
    wire = cbor2.loads(
        base64.urlsafe_b64decode(item["envelope"] + "=" * (-len(item["envelope"]) % 4))
    )
    nacl.signing.VerifyKey(public).verify(DOMAIN + wire["payload"], wire["sig"])  # raises if bad
    body = cbor2.loads(wire["payload"])
    assert body["origin"] == a.url and body["repo"] == REPO and body["position"] == n

"""Hostile peers against a node's inbound side (issue 15, items 1 and 8-12), through real nodes on
loopback and small hostile servers (``hostile.py``).

A is an origin, B follows A's repository. The attacks: a flood of requests naming keys on a key
server that drips its answer (availability), addresses that are not globally routable (SSRF),
re-spelled hosts (policy), re-spelled signature headers (replay), hostile JSON (depth, size), and
the standards details (WebFinger, draft-cavage signatures, our JSON-LD terms).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fedkit import (
    TwoNodes,
    follow,
    land,
    make_repo,
    mirror_head,
    signed_post,
    start_peer,
    two_nodes,
    wait_for,
)
from forge import Forge
from hostile import DripServer, forged_request, start_flood

from federation import actors, net
from federation.actors import Directory, node_actor
from federation.errors import Busy, PoolFull, Refused
from federation.httpsig import sign_headers
from federation.identity import NodeKey
from federation.net import Fetcher
from federation.settings import FedSettings, authority
from hif.errors import HifError, InvalidInput, RemoteError

REPO = "acme/hostile"
KEY_DEADLINE = 5.0  # the node's default overall deadline for a key fetch
KEY_PER_HOST = 4  # the node's default key fetches in flight per host
KEY_PER_ADDRESS = 8  # ... per resolved address (all ports and names of one machine)
KEY_IN_FLIGHT = 16  # ... in all
DRIP = 0.5  # seconds per byte from the drip server


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    root = tmp_path_factory.mktemp("hostile")
    with two_nodes(root, b_env={"MICELIO_FEDERATION_BLOCK": "localhost"}) as nodes:
        a, b = nodes.a, nodes.b
        make_repo(a, REPO)
        land(a, REPO, {"a.txt": "one\n"}, "one")
        follow(b, a, REPO)
        wait_for(lambda: mirror_head(b, a, REPO) == 1, "B's mirror")
        yield nodes


def followers(node: Forge, repo: str = REPO) -> set[str]:
    out = json.loads(node.micelio("federation", "followers", repo, "--json").stdout)
    return {f["actor"] for f in out["followers"]}


def follow_activity(actor_base: str, target: str) -> dict[str, Any]:
    return {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{actor_base}/ap/follows/{time.time_ns()}",
        "type": "Follow",
        "actor": f"{actor_base}/ap/node",
        "object": target,
    }


# -- 1. key fetches: cheap checks first, then a deadline, per-host slots, caches, own pool ---------


def test_a_drip_fed_key_flood_does_not_stall_replication_or_a_follow(world: TwoNodes) -> None:
    """70 forged requests to each node name keys on a key server that sends one byte every half
    second. Replication A -> B and a stranger's genuine Follow still go through while they are
    in flight; each node holds at most its per-host number of connections to the drip server, and
    closes each within the key deadline (counted in bytes dripped, not in seconds)."""
    a, b = world.a, world.b
    drip_a, drip_b = DripServer(DRIP), DripServer(DRIP)
    peer = start_peer()  # a stranger whose key neither node has seen
    try:
        flood_a = start_flood(
            [(f"{a.url}/ap/repos/{REPO}/inbox", f"{a.url}/ap/repos/{REPO}")], drip_a, 70
        )
        flood_b = start_flood([(f"{b.url}/ap/inbox", f"{b.url}/ap/repos/{REPO}")], drip_b, 70)
        for d in (drip_a, drip_b):  # the nodes are fetching from the drip servers
            wait_for(lambda d=d: d.stats.open >= KEY_PER_HOST, "key fetches to the drip server")
        n = land(a, REPO, {"flood.txt": "during the flood\n"}, "during the flood")
        r = signed_post(
            peer.key,
            f"{a.url}/ap/repos/{REPO}/inbox",
            follow_activity(peer.url, f"{a.url}/ap/repos/{REPO}"),
        )
        assert r.status_code == 202, r.text
        wait_for(lambda: mirror_head(b, a, REPO) == n, "replication during the flood")
        assert peer.url + "/ap/node" in followers(a)
        for f in (flood_a, flood_b):
            statuses = f.join()
            assert len(statuses) == 70
            assert {s for s, _ in statuses} <= {401, 503}, statuses
            busy = [ra for s, ra in statuses if s == 503]
            assert busy and all(ra is not None and ra.isdigit() for ra in busy), statuses
        for d in (drip_a, drip_b):
            wait_for(lambda d=d: d.stats.open == 0, "the node to close every drip connection")
            assert 1 <= d.stats.max_open <= KEY_PER_HOST, d.stats
            assert d.stats.connections < 70
            assert max(d.stats.dripped) <= KEY_DEADLINE / DRIP + 2, d.stats.dripped
    finally:
        drip_a.close()
        drip_b.close()
        peer.close()


def test_one_fetch_per_key_url_and_its_failure_is_cached(world: TwoNodes) -> None:
    """Forty requests naming one slow key URL cost one fetch; asking again soon after it failed
    costs none (the failure is cached)."""
    a = world.a
    inbox, target = f"{a.url}/ap/repos/{REPO}/inbox", f"{a.url}/ap/repos/{REPO}"
    with DripServer(DRIP) as drip:
        flood = start_flood([(inbox, target)], drip, 40, distinct=False)
        statuses = flood.join()
        assert {s for s, _ in statuses} == {401}, statuses
        assert drip.stats.connections == 1, drip.stats
        body, headers = forged_request(drip.signer(0), inbox, target)
        r = httpx.post(inbox, content=body, headers=headers, timeout=30)
        assert r.status_code == 401 and "cannot use the signing key" in r.json()["message"]
        assert drip.stats.connections == 1, drip.stats


class _Sampler:
    """Samples how many connections a set of drip servers hold open at once (the most seen)."""

    def __init__(self, drips: list[DripServer]) -> None:
        self.drips = drips
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> int:
        return sum(d.stats.open for d in self.drips)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, self.now())
            time.sleep(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.most


def test_many_ports_of_one_address_share_its_key_lookup_slots(world: TwoNodes) -> None:
    """Nine key servers on nine ports of one address, eight forged requests naming keys on each:
    the per-host cap alone let 36 fetches (more than the keys pool's 32 connections) hang there
    at once, and a stranger's first-time key lookup timed out, its failure cached. Now the
    address has at most KEY_PER_ADDRESS in flight; the stranger is told 503 + Retry-After (or
    served), and asking again once the flood is over works: our saturation was not cached as the
    stranger's failure."""
    a = world.a
    inbox, target = f"{a.url}/ap/repos/{REPO}/inbox", f"{a.url}/ap/repos/{REPO}"
    drips = [DripServer(DRIP) for _ in range(9)]
    peer = start_peer()
    sampler = _Sampler(drips)
    try:
        floods = [start_flood([(inbox, target)], d, 8) for d in drips]
        wait_for(lambda: sampler.now() >= KEY_PER_ADDRESS, "key fetches to the drip servers")
        first = signed_post(peer.key, inbox, follow_activity(peer.url, target))
        assert first.status_code in (202, 503), first.text
        if first.status_code == 503:
            assert (first.headers.get("retry-after") or "").isdigit(), first.headers
        for f in floods:
            statuses = f.join()
            assert {s for s, _ in statuses} <= {401, 503}, statuses
        wait_for(lambda: sampler.now() == 0, "the node to close every drip connection")
        assert 1 <= sampler.stop() <= KEY_PER_ADDRESS, [d.stats for d in drips]
        again = signed_post(peer.key, inbox, follow_activity(peer.url, target))
        assert again.status_code == 202, again.text
        assert peer.url + "/ap/node" in followers(a)
    finally:
        sampler.stop()
        for d in drips:
            d.close()
        peer.close()


def test_key_lookups_in_flight_are_capped_in_all() -> None:
    """Key servers on six loopback addresses (six hosts, four slots each: 24 fetches the per-host
    cap allows): at most KEY_IN_FLIGHT are in flight at once, so half the keys pool stays free,
    and the lookups past it are told Busy (503), which is not cached as the peer's failure."""
    drips = [DripServer(DRIP, host=f"127.0.0.{i}") for i in range(2, 8)]
    sampler = _Sampler(drips)

    async def go() -> list[BaseException | Any]:
        f = Fetcher(FedSettings(allow_private=("127.0.0.0/8",)))
        d = Directory(f, NodeKey(os.urandom(32), "http://own.test"))
        try:
            urls = [drip.key(i) for drip in drips for i in range(6)]
            out = await asyncio.gather(*(d.key(u) for u in urls), return_exceptions=True)
            busy = [u for u, r in zip(urls, out, strict=True) if isinstance(r, Busy)]
            assert busy, out
            assert not any(u.split("#")[0] in d._failed for u in busy)  # asked again later
            return out
        finally:
            await f.close()

    try:
        out = asyncio.run(go())
        assert all(isinstance(r, (Busy, RemoteError)) for r in out), out
        assert 1 <= sampler.stop() <= KEY_IN_FLIGHT, [d.stats for d in drips]
    finally:
        sampler.stop()
        for drip in drips:
            drip.close()


class _KeyServer:
    """Serves a valid actor with its key at ``/k<i>/ap/node`` for any ``i`` (a peer with endless
    valid keys) and 404 under ``/gone/``; counts the requests per path."""

    def __init__(self) -> None:
        self.seed = os.urandom(32)
        self.hits: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                if self.path.startswith("/gone/"):
                    body, status = b"{}", 404
                else:
                    k = NodeKey(outer.seed, f"{outer.url}{self.path.removesuffix('/ap/node')}")
                    body, status = json.dumps(node_actor(k)).encode(), 200
                self.send_response(status)
                self.send_header("Content-Type", "application/activity+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def key(self, i: int) -> str:
        return NodeKey(self.seed, f"{self.url}/k{i}").key_id

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_full_key_caches_drop_the_least_recently_used_not_everyone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer with endless valid keys (and endless failing ones) fills the key, document and
    failure caches (shrunk to 8 entries here): entries in use stay cached, only the least recently
    used go, one at a time. The caches were emptied when full, so one peer evicted everyone's."""
    monkeypatch.setattr(actors, "CACHE_MAX", 8)
    ks = _KeyServer()

    async def go() -> None:
        f = Fetcher(FedSettings(allow_private=("127.0.0.1",)))
        d = Directory(f, NodeKey(os.urandom(32), "http://own.test"))
        try:
            mine, gone = ks.key(0), f"{ks.url}/gone/ap/node"
            await d.key(mine)
            with pytest.raises(HifError):
                await d.actor(gone)
            for i in range(1, 40):
                await d.key(ks.key(i))  # the flood: a new valid key ...
                with pytest.raises(HifError):  # ... and a new failing actor
                    await d.actor(f"{ks.url}/gone/{i}")
                await d.key(mine)  # in use: stays cached
                with pytest.raises(HifError, match="cached failure"):
                    await d.actor(gone)
            assert max(len(d._keys), len(d._actors), len(d._failed)) <= 8
        finally:
            await f.close()

    try:
        asyncio.run(go())
        assert ks.hits["/k0/ap/node"] == 1, ks.hits
        assert ks.hits["/gone/ap/node"] == 1, ks.hits
        assert ks.hits["/k1/ap/node"] == 1 and ks.hits["/gone/1"] == 1, ks.hits
    finally:
        ks.close()


def test_a_full_connection_pool_is_not_cached_as_the_peers_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the keys pool full (shrunk to one connection, held by a key server that drips), a
    lookup of a good key fails with PoolFull (503): our saturation. Asked again once the pool has
    room, it is fetched: the failure was not cached as the good peer's (it was, for 30 s)."""
    monkeypatch.setitem(net.POOLS, "keys", 1)
    ks = _KeyServer()
    drip = DripServer(DRIP)

    async def go() -> None:
        f = Fetcher(FedSettings(allow_private=("127.0.0.1",), timeout=1.0, key_deadline=3.0))
        d = Directory(f, NodeKey(os.urandom(32), "http://own.test"))
        try:
            slow = asyncio.ensure_future(d.key(drip.key(0)))
            while drip.stats.open < 1:
                await asyncio.sleep(0.01)
            with pytest.raises(PoolFull):
                await d.key(ks.key(0))
            with pytest.raises(RemoteError):
                await slow
            found = await d.key(ks.key(0))
            assert found.key_id == ks.key(0)
        finally:
            await f.close()

    try:
        asyncio.run(go())
        assert ks.hits == {"/k0/ap/node": 1}, ks.hits
    finally:
        drip.close()
        ks.close()


def signed_headers_for(key: NodeKey, url: str, body: bytes, **kw: Any) -> dict[str, str]:
    return sign_headers(key, "POST", url, body, {"Content-Type": "application/activity+json"}, **kw)


def test_requests_that_fail_cheap_checks_fetch_no_key(world: TwoNodes) -> None:
    """Stale or future ``created``, a malformed signature, a missing component, another algorithm,
    an actor on another host than the key, or a body that is not JSON: refused before any
    outgoing request, so the key server named never hears of it."""
    a = world.a
    inbox, target = f"{a.url}/ap/repos/{REPO}/inbox", f"{a.url}/ap/repos/{REPO}"
    with DripServer(DRIP) as drip:
        key = drip.signer(1)
        good = json.dumps(follow_activity(key.url, target)).encode()
        cases: list[tuple[bytes, dict[str, str]]] = []
        for skew in (-400, 400):
            cases.append((good, signed_headers_for(key, inbox, good, created=time.time() + skew)))
        h = signed_headers_for(key, inbox, good)
        cases.append((good, {**h, "Signature": "sig1=:AAAA:"}))  # not 64 bytes
        cases.append((good, {**h, "Signature": "sig1=("}))  # not a structured field
        cases.append((good, {**h, "Signature": h["Signature"].replace("sig1", "other")}))
        no_digest = h["Signature-Input"].replace(' "content-digest"', "")
        cases.append((good, {**h, "Signature-Input": no_digest}))
        rsa = h["Signature-Input"].replace('alg="ed25519"', 'alg="rsa-v1_5-sha256"')
        cases.append((good, {**h, "Signature-Input": rsa}))
        elsewhere = json.dumps(follow_activity("http://127.0.0.1:9", target)).encode()
        cases.append((elsewhere, signed_headers_for(key, inbox, elsewhere)))
        cases.append((b"not json", signed_headers_for(key, inbox, b"not json")))
        for body, headers in cases:
            r = httpx.post(inbox, content=body, headers=headers, timeout=30)
            assert r.status_code in (400, 401), (headers, r.text)
        assert drip.stats.connections == 0, drip.stats


# -- 8. SSRF: only globally routable addresses, unless the operator allows one -------------------

REFUSED = [
    "0.0.0.0", "127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "100.64.1.2", "100.127.255.254",  # CGNAT
    "192.0.0.8", "192.0.2.10", "198.18.0.1", "198.51.100.7", "203.0.113.9",  # IETF, docs, bench
    "224.0.0.1", "240.0.0.1", "255.255.255.255",
    "::", "::1", "fe80::1", "fc00::1", "fd12::1", "ff0e::1",
    "fec0::1",  # site-local
    "2002:a00:1::1", "2002:7f00:1::1", "2002:c0a8:101::1",  # 6to4 of private IPv4
    "64:ff9b::a00:1", "64:ff9b::7f00:1", "64:ff9b::6440:1", "64:ff9b:1::a00:1",  # NAT64
    "::ffff:10.0.0.1", "::ffff:100.64.0.1", "::ffff:127.0.0.1",  # IPv4-mapped
    "::10.0.0.1", "::8.8.8.8",  # IPv4-compatible (deprecated)
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2001:db8::1", "3fff::1",  # documentation
    "192.88.99.1", "192.88.99.254", "::ffff:192.88.99.1", "64:ff9b::c058:6301",  # 6to4 relay
    "2002:c058:6301::1",  # (deprecated anycast, RFC 7526), and 6to4 of it
    "2606:4700::5efe:a00:1", "2606:4700::200:5efe:a00:1",  # ISATAP of private IPv4
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2002:808:808::1", "64:ff9b::808:808",
           "::ffff:8.8.8.8", "2a00:1450:4001::1"]


def _literal_url(address: str) -> str:
    return f"http://[{address}]/" if ":" in address else f"http://{address}/"


def test_addresses_that_are_not_globally_routable_are_refused() -> None:
    """The address check over literal addresses (no DNS, no connection): every form that is not
    globally routable is refused, a global one is allowed, and the operator's allow list lets a
    private one through."""

    async def go() -> None:
        f = Fetcher(FedSettings())
        allowing = Fetcher(FedSettings(allow_private=("100.64.0.0/10", "fec0::1")))
        try:
            for address in REFUSED:
                with pytest.raises(Refused):
                    await f.resolve(_literal_url(address))
            for address in ALLOWED:
                assert await f.resolve(_literal_url(address)) == str(ipaddress.ip_address(address))
            assert await allowing.resolve("http://100.64.1.2/") == "100.64.1.2"
            assert await allowing.resolve("http://[fec0::1]/") == "fec0::1"
            with pytest.raises(Refused):
                await allowing.resolve("http://10.0.0.1/")
        finally:
            await f.close()
            await allowing.close()

    asyncio.run(go())


_UNSHARED = r"""
import json, subprocess, sys
from pathlib import Path
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
from fedkit import node_key, signed_post, start_node
from federation.identity import NodeKey
node = start_node(Path(sys.argv[1]), env={"MICELIO_FEDERATION_ALLOW_PRIVATE": ""})
try:
    seed = node_key(node).seed
    out = {}
    for host in json.loads(sys.argv[2]):
        base = f"http://{host}"
        key = NodeKey(bytes(reversed(seed)), base)
        activity = {"id": f"{base}/f/1", "type": "Follow", "actor": key.actor, "object": "x"}
        r = signed_post(key, f"{node.url}/ap/inbox", activity)
        out[host] = [r.status_code, r.json().get("message", "")]
    print(json.dumps(out))
finally:
    node.stop()
"""


def test_key_fetch_to_a_non_global_address_is_refused_end_to_end(tmp_path: Path) -> None:
    """A node in a network namespace of its own (only loopback: a guard that failed could send no
    packet anywhere) refuses to fetch keys from CGNAT, site-local, 6to4 and NAT64 forms of private
    IPv4, IPv4-mapped CGNAT, documentation and Teredo addresses: 403, and the message does not
    echo anything fetched."""
    hosts = ["100.64.1.2", "[fec0::1]", "[2002:a00:1::1]", "[64:ff9b::a00:1]",
             "[::ffff:100.64.0.1]", "192.0.0.8", "[2001:db8::1]",
             "[2001:0:4136:e378:8000:63bf:3fff:fdd2]", "[2606:4700::5efe:a00:1]"]
    script = tmp_path / "unshared.py"
    script.write_text(_UNSHARED)
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(here), str(here.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}
    p = subprocess.run(
        ["unshare", "-n", sys.executable, str(script), str(tmp_path / "node"), json.dumps(hosts)],
        capture_output=True, text=True, env=env, timeout=180,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads(p.stdout.strip().splitlines()[-1])
    for host in hosts:
        status, message = results[host]
        assert status == 403 and "private or reserved" in message, (host, status, message)


_SILENT_DNS = r"""
import json, os, socket, subprocess, sys, threading, time
from pathlib import Path
import cbor2, httpx
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
work = Path(sys.argv[1])
work.mkdir(parents=True)
(work / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:4 attempts:1\n")
subprocess.run(["mount", "--bind", str(work / "resolv.conf"), "/etc/resolv.conf"], check=True)
dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dns.bind(("127.0.0.1", 53))
queries = []
def listen():  # a name server that never answers
    while True:
        dns.recvfrom(4096)
        queries.append(1)
threading.Thread(target=listen, daemon=True).start()
from fedkit import signed_post, start_node
from federation.identity import NodeKey
node = start_node(work / "node", env={"MICELIO_FEDERATION_ALLOW_PRIVATE": ""})
events = []
try:
    node.micelio("admin", "user", "create", "ann", "--password-stdin", input="pw-ann-123456\n")
    def one(i):
        key = NodeKey(os.urandom(32), f"http://k{i}.silent.test")
        activity = {"id": f"{key.actor}#f", "type": "Follow", "actor": key.actor, "object": "x"}
        r = signed_post(key, f"{node.url}/ap/inbox", activity)
        events.append(["flood", r.status_code])
    flood = [threading.Thread(target=one, args=(i,)) for i in range(int(sys.argv[2]))]
    for t in flood:
        t.start()
    deadline = time.monotonic() + 60
    while len(queries) < 6 and time.monotonic() < deadline:  # the lookups hang in the node
        time.sleep(0.05)
    r = httpx.post(f"{node.url}/api/v1/login", content=cbor2.dumps({"user": "ann", "password": "pw-ann-123456"}),
                   headers={"Content-Type": "application/cbor"}, timeout=120)
    events.append(["login", r.status_code])
    for t in flood:
        t.join()
    print(json.dumps({"events": events, "queries": len(queries)}))
finally:
    node.stop()
"""


def test_host_names_that_never_resolve_do_not_stall_the_node(tmp_path: Path) -> None:
    """Key ids on 30 host names whose name server never answers, sent at once: the lookups hang
    in the node (in a network and mount namespace of its own, with a silent name server on its
    loopback), and a log-in (argon2 runs in a worker thread) still answers at once, before any of
    the flood's requests. The lookups once ran on asyncio's default executor, shared with argon2
    and every other worker-thread call: a handful of unanswered names stopped them all."""
    script = tmp_path / "silent_dns.py"
    script.write_text(_SILENT_DNS)
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(here), str(here.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}
    p = subprocess.run(
        ["unshare", "-n", "-m", sys.executable, str(script), str(tmp_path / "work"), "30"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["queries"] >= 6, out  # the node did ask the silent name server
    events = out["events"]
    assert events[0] == ["login", 200], events
    assert len(events) == 31 and all(e[0] == "flood" and e[1] in (401, 503) for e in events[1:]), events


def test_errors_do_not_echo_what_a_named_url_holds(world: TwoNodes) -> None:
    """A key URL that answers an error page with a secret: the requester learns the status, not
    the page."""
    a = world.a
    secret = b"internal-secret-4711"
    inbox, target = f"{a.url}/ap/repos/{REPO}/inbox", f"{a.url}/ap/repos/{REPO}"
    bodies = [secret, b'{"error": "' + secret + b'"}']
    for body in bodies:
        for ctype in ("text/plain", "application/activity+json"):
            for status in (500, 403, 410):
                with DripServer(body=body, content_type=ctype, status=status) as server:
                    body_req, headers = forged_request(server.signer(0), inbox, target)
                    r = httpx.post(inbox, content=body_req, headers=headers, timeout=30)
                    assert r.status_code == 401 and f"HTTP {status}" in r.text, r.text
                    assert secret.decode() not in r.text, r.text


# -- 9. one host spelling for every policy check --------------------------------------------------


def test_host_spellings_are_normalised_for_policy_checks() -> None:
    same = ["http://evil.example/x", "http://evil.example./x", "http://EVIL.Example.:80/x",
            "http://Evil.Example:80/y"]
    assert {authority(u) for u in same} == {"evil.example"}
    assert authority("https://bücher.example./") == authority("https://xn--bcher-kva.example:443/")
    assert authority("http://[::FFFF:A00:1]:8/") == authority("http://[::ffff:10.0.0.1]:8/")
    s = FedSettings.from_env({"MICELIO_FEDERATION_BLOCK": "Evil.Example.,Bücher.example"})
    for u in [*same, "http://sub.evil.example./", "http://BÜCHER.example./",
              "http://xn--bcher-kva.example:8080/", "sub.EVIL.example.:443"]:
        assert s.refuses(u), u
    assert s.refuses("http://good.example./") is None
    allow = FedSettings.from_env({"MICELIO_FEDERATION_ALLOW": "good.example"})
    assert allow.refuses("http://GOOD.example.:443/") is None
    assert allow.refuses("http://good.example.evil.example/")
    private = FedSettings.from_env({"MICELIO_FEDERATION_ALLOW_PRIVATE": "Internal.Example."})
    assert private.private_allowed("INTERNAL.example", "10.0.0.5")
    assert not private.private_allowed("other.example", "10.0.0.5")
    for bad in ("http://0x7f.1/", "http://2130706433/", "http://a..b/", "http://xn--zz--.x/",
                "http://[fe80::1%25eth0]/"):
        with pytest.raises(InvalidInput):
            authority(bad)


def test_blocked_host_in_any_spelling_is_refused_before_a_key_fetch(world: TwoNodes) -> None:
    """B blocks ``localhost``: a key id on ``localhost.``, ``LOCALHOST``, ``LocalHost.`` is the
    same host; 403 and the key server is never asked."""
    b = world.b
    with DripServer(DRIP) as drip:
        for spelling in ("localhost.", "LOCALHOST", "LocalHost.", "localhost.:80"):
            host = spelling if ":" in spelling else f"{spelling}:{drip.port}"
            key = NodeKey(os.urandom(32), f"http://{host}")
            r = signed_post(key, f"{b.url}/ap/inbox", follow_activity(key.url, "x"))
            assert r.status_code == 403 and "blocked" in r.json()["message"], (spelling, r.text)
        assert drip.stats.connections == 0


def test_key_owner_and_actor_are_compared_by_normalised_host(world: TwoNodes) -> None:
    """The actor written ``127.0.0.1.`` and the key on ``127.0.0.1`` are one host (the Follow is
    accepted); ``0x7f.1`` (an address in disguise) is refused."""
    a = world.a
    peer = start_peer()
    try:
        target = f"{a.url}/ap/repos/{REPO}"
        activity = follow_activity(peer.url, target)
        activity["id"] = activity["id"].replace("127.0.0.1", "127.0.0.1.")
        r = signed_post(peer.key, f"{target}/inbox", activity)
        assert r.status_code == 202, r.text
        disguised = follow_activity(f"http://0x7f.1:{peer.port}", target)
        r = signed_post(peer.key, f"{target}/inbox", disguised)
        assert r.status_code in (400, 401), r.text
    finally:
        peer.close()


# -- 10. replay: the cache is keyed on what was signed ----------------------------------------------


def test_replay_with_respelled_signature_headers_is_rejected(world: TwoNodes) -> None:
    a, p = world.a, world.peer
    url = f"{a.url}/ap/repos/{REPO}/inbox"
    body = json.dumps({
        "id": f"{p.url}/undo/{time.time_ns()}",
        "type": "Undo",
        "actor": f"{p.url}/ap/node",
        "object": {"type": "Follow", "actor": f"{p.url}/ap/node",
                   "object": f"{a.url}/ap/repos/{REPO}"},
    }).encode()
    h = signed_headers_for(p.key, url, body)
    assert httpx.post(url, content=body, headers=h).status_code == 202
    sig, inp = h["Signature"], h["Signature-Input"]
    variants = [
        {**h, "Signature": sig + ";p=1"},
        {**h, "Signature": sig + ';p="x";q'},
        {**h, "Signature": sig + ";p=1;q=2"},
        {**h, "Signature": sig.replace("sig1=", "again="),
         "Signature-Input": inp.replace("sig1=", "again=")},
        {**h, "Signature": sig.replace("sig1=", "b=") + ";x=1",
         "Signature-Input": inp.replace("sig1=", "b=")},
    ]
    for v in variants:
        r = httpx.post(url, content=body, headers=v)
        assert r.status_code == 401 and "replayed" in r.json()["message"], (v, r.text)
    # the same signature next to another one, in a second header line
    lines = [(k, v) for k, v in h.items()] + [("Signature", "extra=:" + "A" * 86 + "==:")]
    r = httpx.post(url, content=body, headers=lines)
    assert r.status_code == 401, r.text


# -- 11. hostile JSON: 400, never a 500 ----------------------------------------------------------


def test_deep_or_huge_json_in_a_signed_activity_is_400_and_stores_nothing(
    world: TwoNodes,
) -> None:
    a, p = world.a, world.peer
    target = f"{a.url}/ap/repos/{REPO}"
    before = followers(a)
    follow_doc = follow_activity(p.url, target)
    head = json.dumps(follow_doc)[:-1]
    bodies = [
        (head + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}").encode(),
        (head + ', "x": ' + "{\"a\":" * 50_000 + "1" + "}" * 50_000 + "}").encode(),
        (head + ', "to": [' + ",".join(["0"] * 300_000) + "]}").encode(),
        (head + ', "x": {' + ",".join(f'"k{i}":0' for i in range(60_000)) + "}}").encode(),
        (head + ', "x": NaN}').encode(),
    ]
    for body in bodies:
        assert len(body) < 1 << 20
        h = signed_headers_for(p.key, f"{target}/inbox", body)
        r = httpx.post(f"{target}/inbox", content=body, headers=h, timeout=60)
        assert r.status_code == 400, r.text[:300]
        assert r.json()["error"] == "bad_request"
    assert followers(a) == before


def test_unterminated_strings_are_refused_at_once_before_any_key_fetch(world: TwoNodes) -> None:
    """A body of 1 MiB that opens a string and never closes it, spelled so that every quote in it
    could start another string (escaped quotes, doubled backslashes, an unterminated string per
    array item): a 400 at once, before the key it names is fetched, and the node answers others.
    The depth pre-scan once restarted at each such quote (quadratic: half an hour of the node's
    CPU per request, the event loop blocked throughout, and no signature needed)."""
    a = world.a
    inbox = f"{a.url}/ap/repos/{REPO}/inbox"
    size = (1 << 20) - 64
    bodies = [
        b'{"x": "' + b'\\"' * (size // 2),
        b'{"x": "' + b'\\\\\\"' * (size // 4),
        b"[" + b'"a\\",' * (size // 5),
        b'{"x": "' + b'\\"[{' * (size // 4) + b"\\",
    ]
    with DripServer(DRIP) as drip:
        key = drip.signer(3)
        for body in bodies:
            assert len(body) < 1 << 20
            r = httpx.post(inbox, content=body, headers=signed_headers_for(key, inbox, body),
                           timeout=60)
            assert r.status_code == 400 and r.json()["error"] == "bad_request", r.text[:300]
            assert httpx.get(f"{a.url}/healthz", timeout=30).status_code == 200
        assert drip.stats.connections == 0, drip.stats


def test_deep_json_from_a_key_server_is_refused_cleanly(world: TwoNodes) -> None:
    a = world.a
    inbox, target = f"{a.url}/ap/repos/{REPO}/inbox", f"{a.url}/ap/repos/{REPO}"
    for doc in (b"[" * 100_000 + b"]" * 100_000, b'{"id": [' + b"0," * 200_000 + b"0]}"):
        with DripServer(body=doc) as server:
            body, headers = forged_request(server.signer(0), inbox, target)
            r = httpx.post(inbox, content=body, headers=headers, timeout=30)
            assert r.status_code == 401 and "malformed JSON" in r.json()["message"], r.text


# -- 12. standards: WebFinger, draft-cavage, JSON-LD terms -----------------------------------------


def test_webfinger_needs_a_resource_and_always_allows_any_origin(world: TwoNodes) -> None:
    a = world.a
    host = authority(a.url)
    cases = [
        ("", 400), ("?resource=", 400), ("?rel=self", 400),
        (f"?resource=acct:node@{host}", 200),
        (f"?resource={a.url}/{REPO}", 200),
        (f"?resource={a.url}/acme/none", 404),
        ("?resource=acct:nobody@elsewhere.example", 404),
    ]
    for query, status in cases:
        r = httpx.get(f"{a.url}/.well-known/webfinger{query}")
        assert r.status_code == status, (query, r.text)
        assert r.headers.get("access-control-allow-origin") == "*", (query, dict(r.headers))
        if status == 400:
            assert "resource" in r.json()["message"]


def test_draft_cavage_signature_is_401_naming_the_supported_scheme(world: TwoNodes) -> None:
    a, p = world.a, world.peer
    url = f"{a.url}/ap/repos/{REPO}/inbox"
    body = json.dumps(follow_activity(p.url, f"{a.url}/ap/repos/{REPO}")).encode()
    sig = base64.b64encode(os.urandom(256)).decode()
    key = p.key.key_id
    before = p.key_fetches
    for header in (
        f'keyId="{key}",algorithm="rsa-sha256",headers="(request-target) host date digest",'
        f'signature="{sig}"',
        f'keyId="{key}", algorithm="hs2019", headers="(request-target) (created)", '
        f'signature="{sig}"',
        f'KeyId="{key}",signature="{sig}"',
    ):
        r = httpx.post(url, content=body, headers={
            "Content-Type": "application/activity+json", "Signature": header,
            "Date": "Mon, 07 Dec 2026 21:00:00 GMT",
        })
        assert r.status_code == 401, r.text
        message = r.json()["message"]
        assert "draft-cavage" in message and "RFC 9421" in message, message
    assert p.key_fetches == before


# Terms of the contexts our documents name (AS2 with its ActivityPub extensions, Security v1 and
# ForgeFed), as far as anything we emit could use them: a key outside these and ours is a term
# that would expand to nothing.
AS2_TERMS = {
    "id", "type", "actor", "object", "target", "result", "origin", "instrument", "to", "cc",
    "bto", "bcc", "audience", "attributedTo", "name", "summary", "content", "url", "mediaType",
    "published", "updated", "inbox", "outbox", "followers", "following", "liked", "endpoints",
    "sharedInbox", "preferredUsername", "totalItems", "orderedItems", "items", "first", "last",
    "next", "prev", "partOf", "current", "Application", "Service", "Person", "Group",
    "Organization", "Follow", "Accept", "Reject", "Undo", "Offer", "Create", "Note",
    "OrderedCollection", "OrderedCollectionPage", "Collection", "CollectionPage", "Link", "href",
    "rel",
}
SEC_TERMS = {"publicKey", "owner", "publicKeyPem"}
FORGEFED_TERMS = {"Repository", "Push", "Patch", "Commit", "Branch", "Ticket", "hashBefore",
                  "hashAfter", "context"}


def _keys_and_types(doc: Any, out: set[str]) -> None:
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "@context":
                continue
            out.add(k)
            if k == "type" and isinstance(v, str):
                out.add(v)
            _keys_and_types(v, out)
    elif isinstance(doc, list):
        for v in doc:
            _keys_and_types(v, out)


def test_our_json_ld_terms_are_defined_in_a_published_context(world: TwoNodes) -> None:
    """Every key and type in what the node serves and delivers is an AS2, Security or ForgeFed
    term, or one of ours, defined in the context the node publishes (at the IRI each document
    names in its ``@context``) as an IRI."""
    a = world.a
    peer = start_peer()
    try:
        target = f"{a.url}/ap/repos/{REPO}"
        assert signed_post(peer.key, f"{target}/inbox",
                           follow_activity(peer.url, target)).status_code == 202
        land(a, REPO, {"ctx.txt": "context\n"}, "context")
        pushed = wait_for(lambda: [m for m in peer.received if b'"Push"' in m.body], "a Push")
        accepted = [m for m in peer.received if b'"Accept"' in m.body]
        docs = [
            httpx.get(f"{a.url}/ap/node").json(),
            httpx.get(target).json(),
            httpx.get(f"{target}/outbox?page=1").json(),
            json.loads(pushed[0].body),
            json.loads(accepted[0].body),
        ]
        for doc in docs:
            ctx = doc["@context"]
            ctx = ctx if isinstance(ctx, list) else [ctx]
            ours = [c for c in ctx if isinstance(c, str) and c.startswith(a.url)]
            assert len(ours) == 1, ctx
            published = httpx.get(ours[0])
            assert published.status_code == 200
            defined = published.json()["@context"]
            prefix = defined["mic"]
            assert prefix.startswith(a.url) and prefix.endswith("#")
            mine = {k for k in defined if k not in ("mic", "xsd")}
            for term in mine:
                iri = defined[term] if isinstance(defined[term], str) else defined[term]["@id"]
                assert iri.startswith("mic:"), (term, iri)
            used: set[str] = set()
            _keys_and_types(doc, used)
            unknown = used - AS2_TERMS - SEC_TERMS - FORGEFED_TERMS - mine
            assert not unknown, (doc.get("type"), unknown)
            assert {"position", "Landing"} & used or doc.get("type") != "Push"
    finally:
        peer.close()


def test_bounded_json_counts_nesting_outside_strings_only() -> None:
    """The pre-scan ignores brackets inside strings (escaped quotes included) and refuses one level
    past the limit; a container one item past its limit is refused, one at it is not."""
    from federation import boundedjson

    deep = boundedjson.MAX_DEPTH
    assert boundedjson.loads("[" * deep + "]" * deep) is not None
    with pytest.raises(InvalidInput):
        boundedjson.loads("[" * (deep + 1) + "]" * (deep + 1))
    tricky = json.dumps({"s": "[[[[{{{{" * 100, "t": 'a\\"[[[["' * 50, "n": [[1]]})
    assert boundedjson.depth(tricky.encode()) == 3
    assert boundedjson.loads(tricky)["n"] == [[1]]
    items = boundedjson.MAX_ITEMS
    assert len(boundedjson.loads(json.dumps([0] * items))) == items
    for too_many in (json.dumps([0] * (items + 1)), json.dumps({f"k{i}": 0 for i in range(items + 1)}),
                     json.dumps({"a": [{"b": [0] * (items + 1)}]})):
        with pytest.raises(InvalidInput):
            boundedjson.loads(too_many)
    for bad in ('{"a": NaN}', '{"a": Infinity}', "[1,]", b"\xff\xfe", '"unterminated'):
        with pytest.raises(InvalidInput):
            boundedjson.loads(bad)


def test_bounded_json_refuses_many_small_containers_before_parsing() -> None:
    """Each container under its own limit, but hundreds of thousands of objects in all (1 MiB of
    ``{}`` parses into ~20 MiB of dicts; many requests at once, before any signature is checked):
    refused as a whole, in every shape; a document near the total still parses."""
    from federation import boundedjson

    per = boundedjson.MAX_ITEMS - 1
    shapes = [
        [[{}] * per for _ in range(30)],
        [[[]] * per for _ in range(30)],
        {f"k{i}": [0] * per for i in range(30)},
        [[{"a": [{}]}] * per for _ in range(8)],
    ]
    for doc in shapes:
        text = json.dumps(doc, separators=(",", ":"))
        assert len(text) < 1 << 20
        with pytest.raises(InvalidInput):
            boundedjson.loads(text)
    fine = [[0] * per for _ in range(4)]
    assert boundedjson.loads(json.dumps(fine)) == fine

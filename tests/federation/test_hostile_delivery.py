"""Deliveries under hostile or broken followers, with real nodes on loopback and small peers of our
own: a follower that answers slowly must not delay anyone else; a crowd of actors behind one inbox
costs one request per landing and is capped per host; the followers collection does not list remote
actors; two replicas deliver each landing once; a Follow that can never succeed ends as ``failed``
with its reason (UI, API and ``micelio federation status``) instead of staying pending forever.

Ordering, not wall-clock time, is asserted: every peer event and every observation of the test goes
into one numbered journal, and the test compares the numbers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fedkit import (
    adopt,
    follow,
    host,
    land,
    make_repo,
    mirror_head,
    signed_post,
    start_node,
    stop,
    ui_admin,
    wait_for,
)
from forge import BIN, Forge
from s3server import free_port

from federation.identity import NodeKey
from federation.service import Federation
from federation.settings import FedSettings
from hif.repo import Repo
from hif.store import EmbeddedStore

SLOW = 8.0  # seconds the slow follower takes to answer a Push (the nodes' deadline is 5 s)


class Journal:
    """One numbered log of what happened, shared by the peers (their threads) and the test."""

    def __init__(self) -> None:
        self._n = itertools.count(1)
        self._lock = threading.Lock()
        self.events: list[tuple[int, str]] = []

    def note(self, what: str) -> int:
        with self._lock:
            n = next(self._n)
            self.events.append((n, what))
            return n

    def first(self, what: str) -> int:
        with self._lock:
            return next((n for n, w in self.events if w == what), 0)


@dataclass
class Post:
    path: str
    activity: dict[str, Any]


@dataclass
class Crowd:
    """A fake node on loopback: one signing key, ``actors`` actors at ``/ap/users/<n>`` that all
    publish it; by default they share ``/ap/inbox`` (``endpoints.sharedInbox``); with
    ``shared=False`` they name no shared inbox but all give ``/ap/box`` as their own inbox. Records
    every POST; ``delay`` seconds before answering a Push (a slow follower)."""

    port: int
    key: NodeKey
    server: ThreadingHTTPServer
    journal: Journal
    posts: list[Post] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def actor(self, n: int) -> str:
        return f"{self.url}/ap/users/{n}"

    def pushes(self) -> list[Post]:
        return [p for p in list(self.posts) if p.activity.get("type") == "Push"]

    def positions(self) -> list[int]:
        """Every position delivered, once per Push that carried it."""
        return [
            item["position"]
            for p in self.pushes()
            for item in p.activity["object"]["orderedItems"]
        ]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [p.activity for p in list(self.posts) if p.activity.get("type") == kind]

    def follow(self, origin: Forge, repo: str, n: int) -> httpx.Response:
        actor = self.actor(n)
        return signed_post(
            self.key,
            f"{origin.url}/ap/repos/{repo}/inbox",
            {
                "@context": "https://www.w3.org/ns/activitystreams",
                "id": f"{actor}#follow-{repo}-{time.time_ns()}",
                "type": "Follow",
                "actor": actor,
                "object": f"{origin.url}/ap/repos/{repo}",
            },
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_crowd(
    journal: Journal,
    name: str,
    *,
    shared: bool = True,
    delay: float = 0.0,
    slow: tuple[str, ...] = ("Push",),
) -> Crowd:
    port = free_port()
    seed = os.urandom(32)
    base = f"http://127.0.0.1:{port}"
    key = NodeKey(seed, base)
    crowd: Crowd

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            public = {"id": key.key_id, "owner": key.actor, "publicKeyPem": key.public_pem()}
            if self.path.startswith("/ap/node"):
                doc: dict[str, Any] = {
                    "id": key.actor,
                    "type": "Application",
                    "inbox": f"{base}/ap/inbox",
                    "publicKey": public,
                }
            elif m := re.fullmatch(r"/ap/users/(\d+)", self.path):
                doc = {
                    "id": f"{base}/ap/users/{m.group(1)}",
                    "type": "Person",
                    "inbox": f"{base}/ap/users/{m.group(1)}/inbox" if shared else f"{base}/ap/box",
                    "publicKey": public,
                }
                if shared:
                    doc["endpoints"] = {"sharedInbox": f"{base}/ap/inbox"}
            else:
                self._send(404, b"{}")
                return
            self._send(200, json.dumps(doc).encode(), "application/activity+json")

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                activity = json.loads(body)
            except ValueError:
                activity = {}
            kind = activity.get("type")
            n = len(crowd.posts)
            crowd.posts.append(Post(self.path, activity))
            journal.note(f"{name} got {kind} #{n}")
            if kind in slow and delay:
                time.sleep(delay)
                journal.note(f"{name} answered {kind} #{n}")
            self._send(202, b"{}")

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            with contextlib.suppress(OSError):  # the node gave up waiting: nobody to answer
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    crowd = Crowd(port, key, server, journal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return crowd


def outbox_empty(node: Forge) -> bool:
    return node.api("GET", "/api/v1/federation", node.admin_token).data["outbox"] == []


@pytest.fixture
def journal() -> Journal:
    return Journal()


@pytest.fixture
def crowds(journal: Journal) -> Iterator[list[Crowd]]:
    made: list[Crowd] = []
    yield made
    for c in made:
        c.close()


# -- 2. one slow follower delays nobody else -------------------------------------------------------


def test_a_slow_follower_delays_neither_other_followers_nor_other_repositories(
    tmp_path: Path, journal: Journal, crowds: list[Crowd]
) -> None:
    """The slow follower holds every Push for 8 s (longer than the 5 s deadline); an honest node
    following the same repository and another one gets later landings of both before the slow
    follower has answered even the first Push."""
    a = start_node(tmp_path / "a")
    b = start_node(tmp_path / "b", env={"MICELIO_FEDERATION_RESYNC": "600"})  # only Pushes count
    try:
        make_repo(a, "acme/busy")
        make_repo(a, "acme/other")
        slow = start_crowd(journal, "slow", delay=SLOW)
        crowds.append(slow)
        assert slow.follow(a, "acme/busy", 1).status_code == 202
        follow(b, a, "acme/busy")
        follow(b, a, "acme/other")
        wait_for(lambda: slow.of_type("Accept"), "the slow follower's Accept")

        land(a, "acme/busy", {"one.txt": "1\n"}, "one")
        wait_for(lambda: journal.first("slow got Push #1") or journal.first("slow got Push #2"),
                 "the first Push to reach the slow follower")
        # while the slow follower sits on that Push: more landings, in both repositories
        p2 = land(a, "acme/busy", {"two.txt": "2\n"}, "two")
        q1 = land(a, "acme/other", {"x.txt": "x\n"}, "other one")
        wait_for(lambda: mirror_head(b, a, "acme/busy") >= p2, "B's mirror of acme/busy", 60)
        got_busy = journal.note("B has acme/busy 2")
        wait_for(lambda: mirror_head(b, a, "acme/other") >= q1, "B's mirror of acme/other", 60)
        got_other = journal.note("B has acme/other 1")
        wait_for(lambda: [e for e in journal.events if "slow answered" in e[1]],
                 "the slow follower to answer", 60)
        answered = min(n for n, w in journal.events if "slow answered" in w)
        assert got_busy < answered and got_other < answered, journal.events
        # and the slow follower still gets everything, in the end (at least once)
        wait_for(lambda: set(slow.positions()) >= {1, 2}, "the slow follower's landings", 120)
    finally:
        a.stop()
        b.stop()


def test_the_outbox_sends_to_other_hosts_while_one_host_sits_on_a_request(
    tmp_path: Path, journal: Journal, crowds: list[Crowd]
) -> None:
    """Queued deliveries (retries, Accepts, Follows) go out per host: while one host holds a
    request, an item for another host queued after it is delivered at once."""
    slow = start_crowd(journal, "slow", delay=SLOW, slow=("Note",))
    fast = start_crowd(journal, "fast")
    crowds += [slow, fast]

    async def go() -> None:
        store = EmbeddedStore(tmp_path / "s", create=True)
        fed = _federation(store)
        await fed.start()
        try:
            await fed.enqueue_activity(_note("slow"), inbox=f"{slow.url}/ap/inbox")
            while not journal.first("slow got Note #0"):
                await asyncio.sleep(0.05)
            for n in range(3):
                await fed.enqueue_activity(_note(f"fast {n}"), inbox=f"{fast.url}/ap/inbox")
            while len(fast.of_type("Note")) < 3 and not journal.first("slow answered Note #0"):
                await asyncio.sleep(0.05)
            journal.note("fast has all three")
        finally:
            await fed.stop()
            await store.close()

    asyncio.run(go())
    answered = journal.first("slow answered Note #0")  # 0: not yet, even now
    assert len(fast.of_type("Note")) == 3
    assert answered == 0 or journal.first("fast has all three") < answered, journal.events


def _note(text: str) -> dict[str, Any]:
    return {"id": f"$node/ap/notes/{text.replace(' ', '-')}", "type": "Note",
            "actor": "$node/ap/node", "content": text}


def _federation(store: EmbeddedStore) -> Federation:
    async def repo_info(name: str) -> dict[str, Any] | None:
        return None

    settings = FedSettings(allow_private=("127.0.0.1",), poll=0.05, retry_scale=0.002, timeout=5.0)
    return Federation(store, "http://127.0.0.1:1", settings, repo_info=repo_info,
                      local_repo=lambda name: Repo(store, name),
                      node_key=base64.b64encode(os.urandom(32)).decode())


# -- 3. many followers behind one inbox; per-host cap; the followers collection ------------------


CAP = 6


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[Forge]:
    a = start_node(tmp_path / "a", env={"MICELIO_FEDERATION_MAX_FOLLOWERS_PER_HOST": str(CAP)})
    try:
        make_repo(a, "acme/popular")
        yield a
    finally:
        a.stop()


def test_one_push_per_inbox_however_many_actors_follow_behind_it(
    capped: Forge, journal: Journal, crowds: list[Crowd]
) -> None:
    """Six actors behind a shared inbox, and four with no shared inbox but one inbox URL: each
    landing costs one Push per inbox, never one per actor."""
    a = capped
    shared = start_crowd(journal, "shared")
    same_box = start_crowd(journal, "box", shared=False)
    crowds += [shared, same_box]
    for n in range(CAP):
        assert shared.follow(a, "acme/popular", n).json()["accepted"] is True
    for n in range(4):
        assert same_box.follow(a, "acme/popular", n).json()["accepted"] is True
    for n in (1, 2, 3):
        p = land(a, "acme/popular", {f"f{n}.txt": f"{n}\n"}, f"landing {n}")
        for c in (shared, same_box):
            wait_for(lambda c=c, p=p: p in c.positions(), f"position {p} at {c.url}")
        wait_for(lambda: outbox_empty(a), "A's deliveries to finish")
    for c in (shared, same_box):
        counts = {p: c.positions().count(p) for p in set(c.positions())}
        assert counts == {1: 1, 2: 1, 3: 1}, (c.url, counts)
        assert {p.path for p in c.pushes()} == {"/ap/inbox" if c is shared else "/ap/box"}


def test_followers_per_host_are_capped_with_a_reject_that_says_why(
    capped: Forge, journal: Journal, crowds: list[Crowd]
) -> None:
    a = capped
    flood = start_crowd(journal, "flood")
    other = start_crowd(journal, "other")
    crowds += [flood, other]
    for n in range(CAP):
        assert flood.follow(a, "acme/popular", n).json()["accepted"] is True
    # beyond the cap: refused (a Reject with the reason), whichever actor of that host asks
    for n in (CAP, CAP + 1, 99):
        r = flood.follow(a, "acme/popular", n)
        assert r.status_code == 202 and r.json()["accepted"] is False
        assert f"at most {CAP} per host" in r.json()["reason"]
    # an actor that already follows may say so again; another host has its own count
    assert flood.follow(a, "acme/popular", 0).json()["accepted"] is True
    assert other.follow(a, "acme/popular", 0).json()["accepted"] is True
    rows = json.loads(a.micelio("federation", "followers", "acme/popular", "--json").stdout)
    hosts = [f["host"] for f in rows["followers"]]
    assert hosts.count(f"127.0.0.1:{flood.port}") == CAP
    assert hosts.count(f"127.0.0.1:{other.port}") == 1
    wait_for(lambda: len(flood.of_type("Reject")) == 3, "the three Rejects")
    for rej in flood.of_type("Reject"):
        assert f"at most {CAP} per host" in rej["summary"]
        assert rej["object"]["actor"] in {flood.actor(n) for n in (CAP, CAP + 1, 99)}


def test_the_followers_collection_does_not_list_remote_actors(
    capped: Forge, journal: Journal, crowds: list[Crowd]
) -> None:
    a = capped
    c = start_crowd(journal, "listed")
    crowds.append(c)
    for n in range(3):
        assert c.follow(a, "acme/popular", n).json()["accepted"] is True
    url = f"{a.url}/ap/repos/acme/popular/followers"
    for params, headers in (
        ({}, {}),
        ({}, {"Accept": "application/activity+json"}),
        ({"page": "1"}, {"Accept": "application/ld+json"}),
        ({"page": "true"}, {}),
    ):
        r = httpx.get(url, params=params, headers=headers)
        assert r.status_code == 200
        assert r.json()["totalItems"] == 3
        assert c.url not in r.text and "/ap/users/" not in r.text, r.text


# -- 6. two replicas deliver each landing once ----------------------------------------------------


def test_two_replicas_deliver_each_position_once(
    tmp_path: Path, journal: Journal, crowds: list[Crowd]
) -> None:
    a = start_node(tmp_path / "a")
    try:
        second = a.start_replica()
        make_repo(a, "acme/twice")
        counter = start_crowd(journal, "counter")
        crowds.append(counter)
        assert counter.follow(a, "acme/twice", 1).json()["accepted"] is True
        token = a.admin_token
        positions = []
        for n in range(24):  # landings through both replicas in turn: both announce loops run
            via = a.urls[0] if n % 2 == 0 else second
            positions.append(_land_via(a, via, token, n))
        head = max(positions)
        wait_for(lambda: set(counter.positions()) >= set(range(1, head + 1)),
                 "every position at the follower", 60)
        wait_for(lambda: outbox_empty(a), "A's deliveries to finish")
        got = counter.positions()
        twice = sorted({p for p in got if got.count(p) > 1})
        assert twice == [], f"positions delivered more than once: {twice}"
    finally:
        a.stop()


def _land_via(node: Forge, url: str, token: str, n: int) -> int:
    from fedkit import open_session

    old = node.url
    sid = open_session(node, "acme/twice", {f"f{n}.txt": f"{n}\n"}, f"session {n}", token)
    r = node.api("POST", f"/api/v1/repos/acme/twice/sessions/{sid}/land", token, {}, url=url)
    assert r.status_code == 200, (old, r.data)
    return int(r.data["position"])


# -- 7. a Follow that can never succeed ends as failed ---------------------------------------------


def _state(node: Forge, origin_host: str, name: str) -> dict[str, Any]:
    r = node.api("GET", f"/api/v1/mirrors/{origin_host}/{name}")
    return r.data if r.status_code == 200 else {}


def test_a_follow_that_cannot_succeed_fails_with_its_reason_and_a_new_follow_retries(
    tmp_path: Path, journal: Journal, crowds: list[Crowd]
) -> None:
    a = start_node(tmp_path / "a")
    b = start_node(tmp_path / "b")
    try:
        make_repo(a, "acme/api")
        make_repo(a, "acme/hidden", private=True)
        land(a, "acme/api", {"one.txt": "1\n"}, "one")
        follow(b, a, "acme/api")
        wait_for(lambda: mirror_head(b, a, "acme/api") == 1, "B's mirror")
        refusing = start_crowd(journal, "refusing")  # answers 404 to WebFinger: no such repository
        crowds.append(refusing)
        # (follower, URL, the origin's host and the name its state is kept under)
        targets = [
            # B's mirror of A's repository, followed by A: a mirror is not followable
            (a, f"{b.url}/mirrors/{host(a)}/acme/api", host(b), "acme/api"),
            (b, f"{a.url}/acme/later", host(a), "acme/later"),  # no such repository (yet)
            (b, f"{a.url}/acme/hidden", host(a), "acme/hidden"),  # private: not followable
            (b, f"{refusing.url}/acme/api", f"127.0.0.1:{refusing.port}", "acme/api"),
        ]
        for node, url, _, _ in targets:
            r = node.api("POST", "/api/v1/federation/follow", node.admin_token, {"url": url})
            assert r.status_code == 201, r.data
        for node, url, h, name in targets:
            wait_for(lambda node=node, h=h, name=name: _state(node, h, name).get("state") == "failed",
                     f"the Follow of {url} to fail", 60)
            reason = _state(node, h, name)["reason"]
            assert "404" in reason or "no " in reason, reason
        for node, h, n in ((a, 1, 1), (b, 3, 3)):
            status = node.micelio("federation", "status").stdout
            failed = [x for x in status.splitlines() if " failed " in x and "reason:" in x]
            assert len(failed) == n, status
            ui = ui_admin(node)
            page = ui.get("/federation").text
            assert page.count('class="badge failed">failed</span>') == h and 'class="reason"' in page
            assert ui.get("/").text.count("follow failed") == h
            # nothing is tried again by itself: no pending delivery is left for these Follows
            outbox = node.api("GET", "/api/v1/federation", node.admin_token).data["outbox"]
            assert [d for d in outbox if d["what"] == "Follow"] == []
        page = ui_admin(b).get(f"/mirrors/{host(a)}/acme/hidden").text
        assert "follow failed: " in page and "404" in page
        # the cause goes away (the repository is created); a new explicit follow succeeds
        make_repo(a, "acme/later")
        land(a, "acme/later", {"now.txt": "now\n"}, "now")
        follow(b, a, "acme/later")
        wait_for(lambda: mirror_head(b, a, "acme/later") == 1, "the new follow's backfill")
    finally:
        a.stop()
        b.stop()


def test_a_follow_of_a_host_that_is_down_stays_pending_with_its_error_and_is_retried(
    tmp_path: Path,
) -> None:
    """Connection refused can change: the Follow shows its last error and keeps its retries."""
    b = start_node(tmp_path / "b")
    try:
        port = free_port()  # nothing listens there
        url = f"http://127.0.0.1:{port}/acme/api"
        r = b.api("POST", "/api/v1/federation/follow", b.admin_token, {"url": url})
        assert r.status_code == 201, r.data
        wait_for(lambda: "cannot reach" in (_state(b, f"127.0.0.1:{port}", "acme/api").get("reason") or ""),
                 "the error to show", 60)
        st = _state(b, f"127.0.0.1:{port}", "acme/api")
        assert st["state"] == "pending"
        outbox = b.api("GET", "/api/v1/federation", b.admin_token).data["outbox"]
        assert [d for d in outbox if d["what"] == "Follow" and d["tries"] >= 1]
        assert "last error" in b.micelio("federation", "status").stdout
    finally:
        b.stop()


def _serve_without_dns(node: Forge) -> None:
    """Run ``node`` again (same store, port and key) in a mount namespace whose nsswitch.conf
    resolves names from /etc/hosts only: a name not there is "no such host" at once, and no DNS
    packet ever leaves the machine."""
    stop(node)
    nss = node.root / "nsswitch.conf"
    nss.write_text("hosts: files\n")
    port = int(node.url.rsplit(":", 1)[1])
    log = open(node.root / "node-nodns.log", "wb")  # noqa: SIM115 - the process keeps it
    serve = [str(BIN / "micelio"), "serve", "--store", node.store, "--host", "127.0.0.1",
             "--port", str(port), "--cache-dir", str(node.root / "cache-0")]
    proc = subprocess.Popen(
        ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/nsswitch.conf && exec "$@"',
         str(nss), *serve],
        env={**os.environ, "MICELIO_AUTH_MAX_AGE": "0.2", **node.env},
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        adopt(node, proc, "did not start without DNS")
    except RuntimeError as e:
        raise RuntimeError(f"{e}: {(node.root / 'node-nodns.log').read_text()}") from None


def test_a_follow_of_a_host_that_does_not_exist_fails_at_once(tmp_path: Path) -> None:
    """NXDOMAIN cannot change by retrying: the Follow ends as failed with the reason, and nothing is
    left to retry. (Names resolve from /etc/hosts alone here, so no DNS query leaves the machine.)"""
    b = start_node(tmp_path / "b")
    try:
        _serve_without_dns(b)
        names = ["no-such-host.invalid", "NoSuch-Host.invalid.", "nowhere.example.invalid"]
        for name in names:
            r = b.api("POST", "/api/v1/federation/follow", b.admin_token,
                      {"url": f"http://{name}/acme/api"})
            assert r.status_code == 201, r.data

        def rows() -> list[dict[str, Any]]:
            return b.api("GET", "/api/v1/mirrors").data["mirrors"]

        wait_for(lambda: len(rows()) == len(names) and all(m["state"] == "failed" for m in rows()),
                 "the Follows to fail", 60)
        for m in rows():
            assert "does not exist" in m["reason"], m
        outbox = b.api("GET", "/api/v1/federation", b.admin_token).data["outbox"]
        assert [d for d in outbox if d["what"] == "Follow"] == []
        status = b.micelio("federation", "status").stdout
        assert status.count("does not exist") >= len(names), status
    finally:
        b.stop()

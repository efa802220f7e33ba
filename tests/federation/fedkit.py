"""Helpers for federation tests: real nodes on loopback, landings through the API, a fake peer.

Nodes get a known seed (``MICELIO_NODE_KEY``) so a test can sign as a node, exactly as an attacker
holding a key would; everything else goes through HTTP and the CLIs.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import cbor2
import httpx
from forge import BIN, START_TIMEOUT, Forge, start_forge, wait_for
from s3server import free_port

from federation.httpsig import sign_headers
from federation.identity import NodeKey
from hif.objects import FILE, blob_bytes, digest, pack

FED_ENV = {
    "MICELIO_FEDERATION_ALLOW_PRIVATE": "127.0.0.1",
    "MICELIO_FEDERATION_POLL": "0.1",
    "MICELIO_FEDERATION_RETRY_SCALE": "0.002",
    "MICELIO_FEDERATION_RESYNC": "1",
    "MICELIO_FEDERATION_TIMEOUT": "5",
}


def new_seed() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def start_node(root: Path, *, store: str | None = None, env: dict[str, str] | None = None) -> Forge:
    seed = new_seed()
    node = start_forge(root, store=store, env={**FED_ENV, "MICELIO_NODE_KEY": seed, **(env or {})})
    return node


def node_key(node: Forge) -> NodeKey:
    return NodeKey(base64.b64decode(node.env["MICELIO_NODE_KEY"]), node.url)


def host(node: Forge) -> str:
    return urlsplit(node.url).netloc


def stop(node: Forge) -> None:
    node.stop()
    node.procs.clear()
    node.urls.clear()


def restart(node: Forge) -> None:
    """The same node again: same store, same port (its identity), same key."""
    stop(node)
    port = urlsplit(node.url).port
    log = open(node.root / f"node-restart-{time.time_ns()}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(BIN / "micelio"),
            "serve",
            "--store",
            node.store,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--cache-dir",
            str(node.root / "cache-0"),
        ],
        env={**os.environ, "MICELIO_AUTH_MAX_AGE": "0.2", **node.env},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    adopt(node, proc, "did not come back")


def adopt(node: Forge, proc: subprocess.Popen[bytes], failure: str) -> None:
    """Wait for a node process started on ``node``'s URL to answer, then count it among the node's."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(node.url + "/healthz", timeout=2).status_code == 200:
                node.procs.append(proc)
                node.urls.append(node.url)
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{node.url} {failure}")


def ui_admin(node: Forge, user: str = "fedroot") -> httpx.Client:
    """A browser-like client logged in to ``node``'s web UI as a site admin (created if new)."""
    return ui_login(node, user, admin=True)


def ui_login(node: Forge, user: str, *, admin: bool = False) -> httpx.Client:
    """A browser-like client logged in to ``node``'s web UI as ``user`` (created if new, with a
    password)."""
    import re

    if f'"{user}"' not in node.micelio("admin", "user", "list", "--json").stdout:
        node.micelio(
            "admin",
            "user",
            "create",
            user,
            *(["--admin"] if admin else []),
            "--password-stdin",
            input="long-password-1\n",
        )
    c = httpx.Client(base_url=node.url, timeout=60)
    csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)
    assert csrf is not None
    r = c.post(
        "/login",
        data={"user": user, "password": "long-password-1", "csrf": csrf.group(1), "next": "/"},
    )
    assert r.status_code == 302, r.text
    return c


def make_repo(node: Forge, name: str, *, private: bool = False) -> None:
    r = node.api("POST", "/api/v1/repos", node.admin_token, {"name": name, "private": private})
    assert r.status_code == 201, r.data


_CLIENT = httpx.Client(timeout=60)  # one client: a new one per request costs an SSL context


def api(node: Forge, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
    """One CBOR request over the shared client; returns (status, decoded body)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    content = cbor2.dumps(body) if body is not None else None
    if content is not None:
        headers["Content-Type"] = "application/cbor"
    r = _CLIENT.request(method, node.url + path, headers=headers, content=content)
    data = (
        cbor2.loads(r.content)
        if r.headers.get("content-type", "").startswith("application/cbor")
        else None
    )
    return r.status_code, data


def open_session(
    node: Forge,
    repo: str,
    files: dict[str, str],
    goal: str = "change",
    token: str | None = None,
    *,
    say: str | None = None,
    decide: dict[str, Any] | None = None,
) -> str:
    """Start a session through the API with a message, the files written and a decision; its id."""
    t = token or node.admin_token
    base = f"/api/v1/repos/{repo}"
    status, data = api(node, "POST", f"{base}/sessions", t, {"goal": goal})
    assert status == 201, data
    sid = data["id"]
    events: list[dict[str, Any]] = [{"type": "say", "text": say or f"working on {goal}"}]
    stored = []
    for path, text in files.items():
        content = text.encode()
        stored.append(pack(blob_bytes(content)))
        events.append(
            {"type": "write", "path": path, "kind": FILE, "blob": digest(blob_bytes(content))}
        )
    events.append(
        {"type": "decide", **(decide or {"decision": "do it", "why": "because", "alternatives": []})}
    )
    assert api(node, "POST", f"{base}/objects/put", t, {"objects": stored})[0] == 200
    assert api(node, "POST", f"{base}/sessions/{sid}/events", t, {"events": events})[0] == 200
    return sid


def land(
    node: Forge, repo: str, files: dict[str, str], goal: str = "change", token: str | None = None
) -> int:
    """One session through the API: upload, write, a message and a decision, land."""
    t = token or node.admin_token
    sid = open_session(node, repo, files, goal, t)
    status, data = api(node, "POST", f"/api/v1/repos/{repo}/sessions/{sid}/land", t, {})
    assert status == 200, data
    return data["position"]


def mirror_head(node: Forge, origin: Forge, repo: str) -> int:
    status, data = api(node, "GET", f"/api/v1/mirrors/{host(origin)}/{repo}/head")
    return data["position"] if status == 200 else -1


def log_records(node: Forge, path: str) -> list[list[Any]]:
    out: list[list[Any]] = []
    start = 1
    while True:
        r = node.api("GET", f"{path}/log?start={start}&limit=500")
        assert r.status_code == 200, r.data
        out += r.data["records"]
        if r.data["next"] is None:
            return out
        start = r.data["next"]


def follow(follower: Forge, origin: Forge, repo: str, *, wait: bool = True) -> None:
    """Follow through the admin API and (by default) wait until the origin accepted."""
    r = follower.api(
        "POST", "/api/v1/federation/follow", follower.admin_token, {"url": f"{origin.url}/{repo}"}
    )
    assert r.status_code == 201, r.data
    if wait:
        path = f"/api/v1/mirrors/{host(origin)}/{repo}"
        wait_for(
            lambda: follower.api("GET", path).data.get("state") == "accepted",
            f"{origin.url} to accept {follower.url}'s Follow",
        )


class TwoNodes(NamedTuple):
    """Nodes A and B, and a peer that signs requests as a third host."""

    a: Forge
    b: Forge
    peer: Peer


@contextlib.contextmanager
def two_nodes(root: Path, *, a_env: dict[str, str] | None = None,
              b_env: dict[str, str] | None = None) -> Iterator[TwoNodes]:
    """Nodes A and B on loopback and a peer for requests from a third host, all stopped after."""
    a = start_node(root / "a", env=a_env)
    b = start_node(root / "b", env=b_env)
    peer = start_peer()
    try:
        yield TwoNodes(a, b, peer)
    finally:
        peer.close()
        a.stop()
        b.stop()


def push_of(origin: Forge, repo: str, position: int, name: str) -> dict[str, Any]:
    """A Push activity from ``origin``'s repository carrying its signed envelope at ``position``, as
    the origin's delivery sends it (fetched from its envelope page)."""
    import base64

    actor = f"{origin.url}/ap/repos/{repo}"
    wire = httpx.get(f"{actor}/envelopes/{position}").content
    return {
        "id": f"{actor}/pushes/{name}",
        "type": "Push",
        "actor": actor,
        "object": {
            "type": "OrderedCollection",
            "orderedItems": [{
                "type": "Landing",
                "id": f"{actor}/envelopes/{position}",
                "position": position,
                "envelope": base64.urlsafe_b64encode(wire).decode().rstrip("="),
            }],
        },
    }


def signed_post(
    key: NodeKey,
    url: str,
    activity: dict[str, Any] | bytes,
    *,
    created: float | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST an activity signed with ``key`` (as the node that owns it would)."""
    body = activity if isinstance(activity, bytes) else json.dumps(activity).encode()
    hdrs = sign_headers(
        key,
        "POST",
        url,
        body,
        {"Content-Type": "application/activity+json", **(headers or {})},
        created=created,
    )
    return httpx.post(url, content=body, headers=hdrs, timeout=30)


# -- a fake peer: serves an actor with its own key, records what is delivered to it ---------------


@dataclass
class Received:
    path: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Peer:
    """A minimal ActivityPub node on loopback: ``/ap/node`` (its key), ``/ap/inbox`` (recorded)."""

    port: int
    key: NodeKey
    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    key_fetches: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler for the small servers of these tests: logs nothing, sends whole bodies."""

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(handler: type[BaseHTTPRequestHandler], port: int) -> ThreadingHTTPServer:
    """``handler`` served on 127.0.0.1:``port`` by a daemon thread (``shutdown`` it after)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def node_actor(k: NodeKey) -> bytes:
    """The actor document of a node whose key is ``k`` (what ``/ap/node`` serves)."""
    doc = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": k.actor,
        "type": "Application",
        "inbox": f"{k.url}/ap/inbox",
        "publicKey": {"id": k.key_id, "owner": k.actor, "publicKeyPem": k.public_pem()},
    }
    return json.dumps(doc).encode()


def start_peer(host_name: str = "127.0.0.1", port: int | None = None) -> Peer:
    """A fake peer on ``port`` (a free one by default)."""
    port = port or free_port()
    seed = os.urandom(32)
    peer: Peer

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/ap/node"):
                peer.key_fetches += 1
                self._send(200, node_actor(NodeKey(seed, f"http://{self.headers['Host']}")),
                           "application/activity+json")
            else:
                self._send(404, b"{}", "application/json")

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            peer.received.append(Received(self.path, list(self.headers.items()), body))
            self._send(202, b"{}", "application/json")

    server = serve(Handler, port)
    peer = Peer(port, NodeKey(seed, f"http://{host_name}:{port}"), server)
    return peer

"""Federation: land-to-visible latency on followers, and the backfill rate of an empty follower.

Three ``micelio serve`` nodes on loopback (A, B, C; separate processes and embedded stores). B and
C follow A's public repository; then C clients land N sessions on A through the API (start,
objects/put, events, land: one new small file each). A monitor thread per follower polls its
mirror's head (``GET /api/v1/mirrors/<A>/<repo>/head``, keep-alive, every 2 ms) and notes when each
position first shows. Latency = that moment minus the moment A answered the landing. Concurrent
landings may share a position (group landing puts them in one record): a session's latency is
measured on the position it landed at, and the followers are waited for up to A's head.

Then a fourth node D, empty, follows the same repository: the backfill rate is N divided by the
time from D's Follow being accepted to D's mirror reaching A's head (the Follow's own round trip is
reported apart). For comparison, ``git clone --mirror --no-local`` of the same history as N commits
(one per session, through ``git fast-import``) is timed too: git copies a packfile; a follower
verifies every envelope's signature and every object's hash and writes each record separately.

Run: ``.venv/bin/python bench/federation.py [--sessions 1000] [--clients 2]``.
Targets (loopback): latency p50 < 500 ms, p95 < 2 s; backfill >= 200 sessions/s.

``--hostile`` runs the hostile section instead: A and an honest follower B (another node), and the
land-to-visible latency at B of ``--hostile-sessions`` landings, one at a time, measured three ways:
quiet; while (a) ``--unsigned`` requests to A's inbox carry a signature naming a key on a
drip-feeding server (it sends its answer one byte a second, so a key fetch never finishes by
itself); and while (b) a follower of the same repository answers every Push after ``--slow`` seconds
(60). Printed: p50/p95 quiet and hostile, and their ratio. Target: p95 < 2 s in both. The hostile
peers are small loopback servers in this file; every count and wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the project's root first: this file is named like the ``federation`` package it uses
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cbor2  # noqa: E402
import httpx  # noqa: E402
from _util import ROOT, git_env, machine, ratio, run, secs, table, workdir  # noqa: E402

MICELIO = str(ROOT / ".venv" / "bin" / "micelio")
MICELIO = os.environ.get("MICELIO_BENCH_BIN", MICELIO)
REPO = "bench/fed"
START_TIMEOUT = 30.0
FED_ENV = {
    "MICELIO_FEDERATION_ALLOW_PRIVATE": "127.0.0.1",
    "MICELIO_FEDERATION_POLL": "0.2",
    "MICELIO_ACCESS_LOG": "0",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    name: str
    root: Path
    url: str = ""
    token: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def store(self) -> str:
        return str(self.root / "store")

    @property
    def host(self) -> str:
        return self.url.split("//", 1)[1]

    def admin(self, *args: str) -> str:
        p = subprocess.run(
            [MICELIO, "admin", "--store", self.store, *args],
            capture_output=True,
            text=True,
            env={**os.environ, **FED_ENV},
            timeout=120,
        )
        if p.returncode != 0:
            raise SystemExit(f"micelio admin {' '.join(args)} failed: {p.stderr}")
        return p.stdout.strip()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.admin("user", "create", "benchadmin", "--admin")
        self.token = self.admin("token", "create", "benchadmin", "--scope", "admin")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = open(self.root / "node.log", "wb")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen(
            [
                MICELIO,
                "serve",
                "--store",
                self.store,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--cache-dir",
                str(self.root / "cache"),
            ],
            env={**os.environ, **FED_ENV},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit(
            f"node {self.name} did not start: {(self.root / 'node.log').read_text()[-2000:]}"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Api:
    """CBOR requests over one keep-alive client."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.http = httpx.Client(
            base_url=node.url, timeout=60, headers={"Authorization": f"Bearer {node.token}"}
        )

    def call(self, method: str, path: str, body: object = None) -> dict:
        content = cbor2.dumps(body) if body is not None else None
        r = self.http.request(
            method,
            path,
            content=content,
            headers={"Content-Type": "application/cbor"} if content else {},
        )
        if r.status_code >= 300:
            raise SystemExit(f"{method} {path}: HTTP {r.status_code} {r.content[:300]!r}")
        return cbor2.loads(r.content)


def wait(check: Callable[[], bool], what: str, timeout: float = 300.0, every: float = 0.005) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)
    return time.monotonic()


def mirror_head(api: Api, origin: Node) -> int:
    r = api.http.get(f"/api/v1/mirrors/{origin.host}/{REPO}/head")
    return cbor2.loads(r.content)["position"] if r.status_code == 200 else -1


def follow(api: Api, origin: Node) -> tuple[float, float]:
    """Follow A's repository; returns (when asked, when accepted) in monotonic seconds."""
    asked = time.monotonic()
    api.call("POST", "/api/v1/federation/follow", {"url": f"{origin.url}/{REPO}"})
    accepted = wait(
        lambda: api.call("GET", f"/api/v1/mirrors/{origin.host}/{REPO}").get("state") == "accepted",
        "the Follow to be accepted",
        60,
    )
    return asked, accepted


@dataclass
class Monitor:
    """Polls one follower's mirror head and notes when each position first shows."""

    api: Api
    origin: Node
    seen: dict[int, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    last: int = 0

    def run(self) -> None:
        while not self.stop.is_set():
            head = mirror_head(self.api, self.origin)
            now = time.monotonic()
            for p in range(self.last + 1, head + 1):
                self.seen[p] = now
            self.last = max(self.last, head)
            time.sleep(0.002)


def land_one(api: Api, n: int) -> tuple[int, float]:
    content = f"session {n}\n".encode()
    stored = b"\x00" + cbor2.dumps(["blob", content], canonical=True)
    import hashlib

    oid = hashlib.sha256(stored[1:]).digest()
    base = f"/api/v1/repos/{REPO}"
    sid = api.call("POST", f"{base}/sessions", {"goal": f"bench session {n}"})["id"]
    api.call("POST", f"{base}/objects/put", {"objects": [stored]})
    api.call(
        "POST",
        f"{base}/sessions/{sid}/events",
        {
            "events": [
                {"type": "say", "text": f"landing {n}"},
                {
                    "type": "write",
                    "path": f"files/{n // 100:03d}/{n}.txt",
                    "kind": "f",
                    "blob": oid,
                },
            ]
        },
    )
    pos = api.call("POST", f"{base}/sessions/{sid}/land", {})["position"]
    return pos, time.monotonic()


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))] if s else float("nan")


def git_mirror(root: Path, sessions: int) -> float:
    """Seconds for ``git clone --mirror --no-local`` of ``sessions`` one-file commits."""
    env = git_env(root)
    bare = root / "git-origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], cwd=root, env=env)
    chunks = []
    for n in range(1, sessions + 1):
        msg = f"bench session {n}\n".encode()
        data = f"session {n}\n".encode()
        chunks.append(
            b"commit refs/heads/main\ncommitter bench <b@localhost> %d +0000\ndata %d\n%s"
            % (1_700_000_000 + n, len(msg), msg)
        )
        chunks.append(
            b"M 100644 inline files/%03d/%d.txt\ndata %d\n%s\n\n" % (n // 100, n, len(data), data)
        )
    subprocess.run(
        ["git", "fast-import", "--quiet"],
        cwd=bare,
        env=env,
        input=b"".join(chunks),
        check=True,
        capture_output=True,
    )
    t0 = time.perf_counter()
    run(
        ["git", "clone", "-q", "--mirror", "--no-local", str(bare), str(root / "git-mirror.git")],
        cwd=root,
        env=env,
    )
    return time.perf_counter() - t0


# -- the hostile section -----------------------------------------------------------------------


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # take every connection of the flood (the default backlog is 5)


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = _Server(("127.0.0.1", free_port()), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def drip_key_server(stop: threading.Event, seconds: float) -> ThreadingHTTPServer:
    """Answers every GET with a promise of 4 KiB and then one byte a second, up to ``seconds``."""

    class Drip(_Quiet):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/activity+json")
            self.send_header("Content-Length", "4096")
            self.end_headers()
            t0 = time.monotonic()
            try:
                while not stop.is_set() and time.monotonic() - t0 < seconds:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    stop.wait(1.0)
            except OSError:
                pass
            self.close_connection = True

    return _serve(Drip)


def slow_follower(stop: threading.Event, seconds: float) -> tuple[ThreadingHTTPServer, object]:
    """An ActivityPub actor whose inbox answers a Push after ``seconds`` (other activities at once)."""
    from federation.identity import NodeKey

    seed = os.urandom(32)
    holder: dict[str, object] = {}

    class Slow(_Quiet):
        def do_GET(self) -> None:  # noqa: N802
            base = f"http://{self.headers['Host']}"
            k = NodeKey(seed, base)
            doc = {
                "id": k.actor,
                "type": "Application",
                "inbox": f"{base}/ap/inbox",
                "publicKey": {"id": k.key_id, "owner": k.actor, "publicKeyPem": k.public_pem()},
            }
            self._send(json.dumps(doc).encode())

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if b'"type":"Push"' in body:
                stop.wait(seconds)
            self._send(b"{}")

        def _send(self, body: bytes) -> None:
            with contextlib.suppress(OSError):  # the node gave up waiting: nobody to answer
                self.send_response(202 if self.command == "POST" else 200)
                self.send_header("Content-Type", "application/activity+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

    server = _serve(Slow)
    holder["key"] = NodeKey(seed, f"http://127.0.0.1:{server.server_address[1]}")
    return server, holder["key"]


def signed_follow(key: object, origin: Node) -> None:
    from federation.httpsig import sign_headers

    actor = key.actor  # type: ignore[attr-defined]
    url = f"{origin.url}/ap/repos/{REPO}/inbox"
    body = json.dumps(
        {
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": f"{actor}#follow",
            "type": "Follow",
            "actor": actor,
            "object": f"{origin.url}/ap/repos/{REPO}",
        }
    ).encode()
    hdrs = sign_headers(key, "POST", url, body, {"Content-Type": "application/activity+json"})  # type: ignore[arg-type]
    r = httpx.post(url, content=body, headers=hdrs, timeout=60)
    if r.status_code != 202:
        raise SystemExit(f"the slow follower's Follow failed: HTTP {r.status_code} {r.text[:200]}")


def unsigned_flood(origin: Node, drip: ThreadingHTTPServer, count: int, stop: threading.Event) -> list[threading.Thread]:
    """``count`` requests whose signature names a key on the drip server (so the node must fetch the
    key before it can tell anything), each on its own thread; the client gives up after 90 s."""
    from federation.httpsig import sign_headers
    from federation.identity import NodeKey

    url = f"{origin.url}/ap/inbox"
    bad = NodeKey(os.urandom(32), f"http://127.0.0.1:{drip.server_address[1]}")

    def one(n: int) -> None:
        body = json.dumps({"id": f"{bad.actor}#x{n}", "type": "Follow", "actor": bad.actor}).encode()
        hdrs = sign_headers(bad, "POST", url, body, {"Content-Type": "application/activity+json"})
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(url, content=body, headers=hdrs, timeout=90)

    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in range(count)]
    for t in threads:
        t.start()
    return threads


def latencies(origin: Api, follower: Api, a: Node, sessions: int, first: int) -> list[float]:
    """Land ``sessions`` one at a time on A; seconds until each shows on the follower."""
    out = []
    for n in range(first, first + sessions):
        pos, when = land_one(origin, n)
        seen = wait(lambda pos=pos: mirror_head(follower, a) >= pos, f"position {pos} at B", 120)
        out.append(seen - when)
    return out


def hostile(args: argparse.Namespace) -> None:
    print(
        f"federation hostile bench: {args.hostile_sessions} landings per phase, {args.unsigned} "
        f"unsigned requests, a follower answering after {args.slow:g} s; {machine()}",
        flush=True,
    )
    stop = threading.Event()
    servers: list[ThreadingHTTPServer] = []
    with workdir("micelio-fed-hostile-", args.keep) as root:
        nodes = {n: Node(n, root / n) for n in "AB"}
        try:
            for n in nodes.values():
                n.start()
            a, b = Api(nodes["A"]), Api(nodes["B"])
            a.call("POST", "/api/v1/repos", {"name": REPO})
            follow(b, nodes["A"])
            k = args.hostile_sessions
            latencies(a, b, nodes["A"], 3, 1)  # warm up
            quiet = latencies(a, b, nodes["A"], k, 10)
            print(f"  quiet: p50 {secs(pct(quiet, 0.5))}, p95 {secs(pct(quiet, 0.95))}", flush=True)

            drip = drip_key_server(stop, 90.0)
            servers.append(drip)
            flood = unsigned_flood(nodes["A"], drip, args.unsigned, stop)
            time.sleep(2.0)  # let the requests reach A and start their key fetches
            keyflood = latencies(a, b, nodes["A"], k, 1000)
            alive = sum(t.is_alive() for t in flood)
            print(f"  (a): p50 {secs(pct(keyflood, 0.5))}, p95 {secs(pct(keyflood, 0.95))}", flush=True)

            slow, key = slow_follower(stop, args.slow)
            servers.append(slow)
            signed_follow(key, nodes["A"])
            slowed = latencies(a, b, nodes["A"], k, 2000)
        finally:
            stop.set()
            for s in servers:
                s.shutdown()
                s.server_close()
            for n in nodes.values():
                n.stop()

    def row(name: str, xs: list[float]) -> list[str]:
        p95 = pct(xs, 0.95)
        return [
            name,
            f"{secs(pct(xs, 0.5))} / {secs(p95)}",
            f"{ratio(pct(xs, 0.5), pct(quiet, 0.5))} / {ratio(p95, pct(quiet, 0.95))}",
            "ok" if p95 < 2 else "MISSED",
        ]

    print(
        table(
            ["land-to-visible at B", "p50 / p95", "hostile/quiet", "p95 < 2 s"],
            [
                row("quiet", quiet),
                row(f"(a) {args.unsigned} unsigned, drip-fed key URL", keyflood),
                row(f"(b) a follower answering after {args.slow:g} s", slowed),
            ],
        )
    )
    print(f"(a): {alive} of {args.unsigned} unsigned requests were still unanswered after the phase")


async def prefill(store_path: str, sessions: int) -> None:
    """A's history written with the plumbing before A starts (no fsync: set-up, not timed): the
    repository, ``sessions`` landings of one new small file each, its registration (public)."""
    from hif.landing import land
    from hif.objects import FILE
    from hif.repo import Repo
    from hif.session import fold, make_event
    from hif.store import EmbeddedStore
    from node.accounts import Accounts
    from node.authdb import AuthDB

    store = EmbeddedStore(store_path, create=True, fsync=False)
    try:
        repo = Repo(store, REPO)
        await repo.create(description="bench/federation.py backfill")
        for n in range(1, sessions + 1):
            s = await repo.sessions.start(f"bench session {n}", "bench", "agent", n - 1)
            oid = await repo.objects.put_blob(f"session {n}\n".encode())
            ev = make_event("write", "bench", "agent", repo.clock(), path=f"files/{n // 100:03d}/{n}.txt",
                            kind=FILE, blob=oid)
            stamped = await repo.sessions.append(s.id, ev, s.next_seq)
            result = await land(repo, fold(s.id, [*s.events, stamped]))
            assert result.position == n, (result.position, n)
        db = AuthDB(store, Path(store_path).parent / "prefill-cache")
        accounts = Accounts(db)
        await accounts.create_user("bench")
        await accounts.register_repo(REPO, private=False, owner_user="bench", description="backfill")
        db.close()
    finally:
        await store.close()


def proc_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backfill_only(args: argparse.Namespace) -> None:
    """Backfill alone: A's history prefilled, then ``--repeat`` empty followers, one after the
    other, each timed from its Follow being accepted until its mirror holds A's head."""
    import asyncio

    print(f"federation backfill: {args.sessions} sessions, {args.repeat} follower(s); {machine()}", flush=True)
    rows = []
    rates: list[float] = []
    with workdir("micelio-fed-backfill-", args.keep) as root:
        a_node = Node("A", root / "A")
        a_node.root.mkdir(parents=True)
        t0 = time.monotonic()
        asyncio.run(prefill(a_node.store, args.sessions))
        print(f"  prefill: {args.sessions} landings in {secs(time.monotonic() - t0)}", flush=True)
        followers: list[Node] = []
        try:
            a_node.start()
            assert a_node.proc is not None
            for i in range(args.repeat):
                d_node = Node(f"D{i}", root / f"D{i}")
                followers.append(d_node)
                d_node.start()
                assert d_node.proc is not None
                d = Api(d_node)
                idle = proc_kib(d_node.proc.pid, "VmRSS")
                cpu_a, cpu_d = proc_cpu(a_node.proc.pid), proc_cpu(d_node.proc.pid)
                asked, accepted = follow(d, a_node)
                # polled every 50 ms: the follower answers each poll, which is not backfill work
                done = wait(lambda d=d: mirror_head(d, a_node) >= args.sessions, "the backfill", 900, every=0.05)
                took = done - accepted
                rates.append(args.sessions / took)
                spent = proc_cpu(d_node.proc.pid) - cpu_d
                rows.append([d_node.name, f"{args.sessions / took:,.0f}", secs(took), secs(accepted - asked),
                             f"{spent:.1f} s", f"{1000 * spent / args.sessions:.2f} ms",
                             f"{proc_cpu(a_node.proc.pid) - cpu_a:.1f} s",
                             f"{idle / 1024:.0f} MiB", f"{proc_kib(d_node.proc.pid, 'VmHWM') / 1024:.0f} MiB"])
                d_node.stop()
        finally:
            a_node.stop()
            for f in followers:
                f.stop()
    print(table(["follower", "sessions/s", "backfill", "Follow accepted after", "follower CPU", "per session",
                 "origin CPU", "follower RSS idle", "follower peak RSS"], rows))
    rates.sort()
    print(f"best {rates[-1]:,.0f} sessions/s, median {rates[len(rates) // 2]:,.0f}; target >= 1,000 sessions/s; "
          f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=2, help="concurrent landing clients on A")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--hostile", action="store_true", help="run the hostile section instead")
    ap.add_argument("--hostile-sessions", type=int, default=40)
    ap.add_argument("--unsigned", type=int, default=100)
    ap.add_argument("--slow", type=float, default=60.0)
    ap.add_argument("--backfill", action="store_true",
                    help="only the backfill: A's history prefilled with the plumbing, --repeat empty followers")
    ap.add_argument("--repeat", type=int, default=3, help="followers backfilled one after the other (--backfill)")
    args = ap.parse_args()
    if args.backfill:
        backfill_only(args)
        return
    if args.hostile:
        hostile(args)
        return
    print(
        f"federation bench: {args.sessions} sessions, {args.clients} client(s); {machine()}",
        flush=True,
    )
    with workdir("micelio-fed-bench-", args.keep) as root:
        nodes = {n: Node(n, root / n) for n in "ABCD"}
        try:
            for n in "ABC":
                nodes[n].start()
            a, b, c = (Api(nodes[n]) for n in "ABC")
            a.call("POST", "/api/v1/repos", {"name": REPO})
            for follower in (b, c):
                follow(follower, nodes["A"])
            monitors = [Monitor(follower, nodes["A"]) for follower in (b, c)]
            threads = [threading.Thread(target=m.run, daemon=True) for m in monitors]
            for t in threads:
                t.start()
            landed: list[tuple[int, float]] = []  # (position, when A answered) per session
            t0 = time.monotonic()
            clients = [Api(nodes["A"]) for _ in range(args.clients)]
            with ThreadPoolExecutor(args.clients) as pool:
                for pos, when in pool.map(
                    lambda n: land_one(clients[n % args.clients], n), range(1, args.sessions + 1)
                ):
                    landed.append((pos, when))
            land_time = time.monotonic() - t0
            # group landing may put concurrent sessions in one record: wait for A's head, not N
            head = max(pos for pos, _ in landed)
            for m in monitors:
                wait(lambda m=m: m.last >= head, "followers to catch up", 300)
                m.stop.set()
            per = [[m.seen[p] - when for p, when in landed] for m in monitors]
            latencies = [x for xs in per for x in xs]

            d = Api(nodes["D"]) if nodes["D"].start() is None else None
            assert d is not None
            asked, accepted = follow(d, nodes["A"])
            done = wait(lambda: mirror_head(d, nodes["A"]) >= head, "D's backfill", 600)
            backfill = done - accepted
            git_secs = git_mirror(root, args.sessions)
        finally:
            for n in nodes.values():
                n.stop()
    rows = [
        [
            f"landing on A (API, {args.clients} clients)",
            f"{args.sessions / land_time:.0f} sessions/s ({head} positions)",
            "",
            "",
        ],
        [
            "land-to-visible p50 (B and C)",
            secs(pct(latencies, 0.5)),
            "< 500 ms",
            "ok" if pct(latencies, 0.5) < 0.5 else "MISSED",
        ],
        [
            "land-to-visible p95 (B and C)",
            secs(pct(latencies, 0.95)),
            "< 2 s",
            "ok" if pct(latencies, 0.95) < 2 else "MISSED",
        ],
        [
            "  B p50 / p95 / max",
            f"{secs(pct(per[0], 0.5))} / {secs(pct(per[0], 0.95))} / {secs(max(per[0]))}",
            "",
            "",
        ],
        [
            "  C p50 / p95 / max",
            f"{secs(pct(per[1], 0.5))} / {secs(pct(per[1], 0.95))} / {secs(max(per[1]))}",
            "",
            "",
        ],
        [
            "backfill of an empty follower D",
            f"{args.sessions / backfill:.0f} sessions/s ({head} positions, {secs(backfill)})",
            ">= 200/s",
            "ok" if args.sessions / backfill >= 200 else "MISSED",
        ],
        ["  D's Follow until accepted", secs(accepted - asked), "", ""],
        [
            "git clone --mirror --no-local (same history)",
            f"{args.sessions / git_secs:.0f} commits/s ({secs(git_secs)})",
            "",
            f"hif/git {ratio(git_secs, backfill)}",
        ],
    ]
    print(table(["measure", "value", "target", ""], rows))


if __name__ == "__main__":
    main()

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
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

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


def wait(check: Callable[[], bool], what: str, timeout: float = 300.0) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.005)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=2, help="concurrent landing clients on A")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
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

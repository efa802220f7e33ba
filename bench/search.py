"""Why-search (``hif search``, ``GET /api/v1/search``) on a large generated history and on a real one.

Set-up (timed, only reported): N landed sessions with conversations (a goal, 3-9 messages, 1-3
decisions with 0-3 rejected alternatives each, 1-4 files written), written straight into an
embedded store the way ``hif import git`` writes (snapshots and records in batches, no fsync), and the
repository registered so that ``micelio serve`` serves it.

Measured:

- **index build**: a ``micelio serve`` started on the store with an empty cache directory indexes
  every session in its background catch-up; sessions/s from its start until a word of the last
  session is found, and the node's peak RSS (``VmHWM``) meanwhile;
- **query latency, warm**: a mix of queries (common and rare words, phrases, prefixes, rejected
  alternatives, author filters) asked ``--rounds`` times each over HTTP (``GET /api/v1/search``, JSON,
  facets included): p50 and p95; and the same queries on the index file in-process (no HTTP);
- **landing to searchable**: a session landed through the API, then searched at once through the
  same replica, and polled on a second replica (its own index, caught up by its background poll);
- **index size** against the store's size;
- **a real history**: ``/work/.mirror/pallets+click/repo`` (or ``--git``) imported with
  ``hif import git``; ``hif search WORD`` (index built on the first call, then warm) against
  ``git log --all -i --grep=WORD`` on the same bare repository, per query: the ratio.

Run: ``.venv/bin/python bench/search.py [--sessions 100000]``; ``--quick``: 5,000 sessions.
Targets (issue 19): build >= 2,000 sessions/s, p95 <= 50 ms warm, landing searchable <= 1 s,
node < 512 MB while indexing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import HIF, git_env, hif_env, machine, median, mib, ratio, run, secs, table, workdir  # noqa: E402
from api import MICELIO, proc_cpu, proc_status_kib, serve_node  # noqa: E402

REPO = "bench/why"
USER = "bench"
CLICK = Path("/work/.mirror/pallets+click/repo")
T0 = 1_700_000_000.0

NOUNS = ("retry", "backoff", "cache", "queue", "parser", "uploader", "scheduler", "index", "token", "session",
         "config", "logger", "socket", "buffer", "worker", "pool", "lock", "schema", "migration", "widget",
         "router", "handler", "timeout", "limit", "budget", "snapshot", "checkpoint", "mirror", "replica")
TECH = ("sqlite", "postgres", "redis", "kafka", "zstd", "brotli", "msgpack", "cbor", "json", "grpc", "http2",
        "asyncio", "threads", "epoll", "mmap", "inotify", "rust", "cython", "numpy", "protobuf")
VERBS = ("add", "drop", "rewrite", "cache", "split", "merge", "bound", "stream", "batch", "retry", "log",
         "measure", "profile", "simplify", "document", "test", "rename", "inline", "shard", "compress")
REASONS = ("it keeps memory bounded", "the tests were flaky", "users asked for it", "it halves the latency",
           "the old code leaked file handles", "it is simpler to reason about", "we measured it",
           "the spec says so", "it survives a crash", "it avoids a thundering herd")


def words(rng: random.Random, n: int) -> str:
    """Filler in the shape of a conversation: a long tail of rare words around common ones."""
    out = []
    for _ in range(n):
        r = rng.random()
        out.append(rng.choice(NOUNS) if r < 0.03 else rng.choice(TECH) if r < 0.04 else
                   f"w{int(rng.paretovariate(1.1)) % 20000}")
    return " ".join(out)


def session_events(rng: random.Random, n: int, author: str, role: str, t: float) -> tuple[str, list[dict[str, Any]]]:
    noun, tech, verb = rng.choice(NOUNS), rng.choice(TECH), rng.choice(VERBS)
    goal = f"{verb.capitalize()} the {noun} with {tech} (task {n})"
    events: list[dict[str, Any]] = [{"type": "start", "author": author, "role": role, "time": t, "goal": goal,
                                     "base": n - 1}]
    people = [(author, role), ("claude", "agent"), ("ana", "human")]
    for _ in range(rng.randint(3, 9)):
        who, r = rng.choice(people)
        events.append({"type": "say", "author": who, "role": r, "time": t,
                       "text": f"Should we {rng.choice(VERBS)} the {rng.choice(NOUNS)}? {words(rng, rng.randint(8, 40))}"})
    for _ in range(rng.randint(1, 3)):
        who, r = rng.choice(people)
        events.append({"type": "decide", "author": who, "role": r, "time": t,
                       "decision": f"{rng.choice(VERBS)} the {rng.choice(NOUNS)} using {rng.choice(TECH)}",
                       "why": f"{rng.choice(REASONS)}; {words(rng, rng.randint(4, 16))}",
                       "alternatives": [f"{rng.choice(VERBS)} with {rng.choice(TECH)}"
                                        for _ in range(rng.randint(0, 3))]})
    return goal, events


async def generate(store_path: Path, cache: Path, n: int, seed: int) -> None:
    """N landed sessions written straight into the store (snapshots and records, as the git importer
    writes them), then the repository and its owner registered."""
    from hif.mainline import LandedSession, LandingRecord, log_key
    from hif.objects import EMPTY_TREE, FILE, Entry, blob_bytes, digest
    from hif.repo import Repo
    from hif.session import Session, new_session_id
    from hif.store import EmbeddedStore
    from node.accounts import Accounts
    from node.authdb import AuthDB

    rng = random.Random(seed)
    store = EmbeddedStore(store_path, create=True, fsync=False)
    try:
        repo = Repo(store, REPO)
        await repo.create(description="bench/search.py")
        blob = digest(blob_bytes(b"x\n"))
        batch: list[tuple[str, bytes]] = []
        for pos in range(1, n + 1):
            t = T0 + pos * 60
            author, role = rng.choice((("ana", "human"), ("bob", "human"), ("claude", "agent")))
            goal, events = session_events(rng, pos, author, role, t)
            if pos == n:
                goal = events[0]["goal"] = f"{goal} lastmarker"
            changes: dict[str, Entry | None] = {
                f"src/{rng.choice(NOUNS)}/{rng.choice(NOUNS)}_{pos % 997}.py": Entry(FILE, blob)
                for _ in range(rng.randint(1, 4))}
            for path, e in changes.items():
                assert e is not None
                events.append({"type": "write", "author": author, "role": role, "time": t, "path": path,
                               "kind": FILE, "blob": e.oid})
            for seq, e in enumerate(events):
                e["seq"] = seq
            sid = new_session_id(t)
            s = Session(sid, goal, pos - 1, author, role, t, events)
            snap = await repo.sessions.write_snapshot(s, changes)
            rec = LandingRecord(pos, EMPTY_TREE, EMPTY_TREE, t,
                                [LandedSession(sid, snap, goal, author, role, pos - 1, changes)])
            batch.append((log_key(repo.prefix, pos), rec.to_bytes()))
            if len(batch) >= 2000:
                await store.create_all(batch)
                batch = []
        await store.create_all(batch)
        await repo.mainline.advance_hint(n)
        accounts = Accounts(AuthDB(store, cache))
        await accounts.create_user(USER, admin=True)
        await accounts.register_repo(REPO, private=False, owner_user=USER, description="bench/search.py")
    finally:
        await store.close()


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


QUERIES = ["retry", "sqlite", "backoff jitter", '"thundering herd"', "retr*", "w1", "w17 w3", "w1999",
           "kafka brotli", '"memory bounded"', "schema migration postgres", "compr*", "lastmarker",
           "nosuchwordanywhere"]


def http_query(url: str, params: dict[str, Any], token: str) -> tuple[float, dict[str, Any]]:
    import httpx

    t = time.perf_counter()
    r = httpx.get(url + "/api/v1/search", params={**params, "format": "json"},
                  headers={"Authorization": f"Bearer {token}"}, timeout=60)
    took = time.perf_counter() - t
    if r.status_code != 200:
        raise SystemExit(f"search answered {r.status_code}: {r.text[:300]}")
    return took, r.json()


def until_found(url: str, word: str, token: str) -> float:
    """Ask for ``word`` until the node finds it; the moment it did."""
    while http_query(url, {"q": word}, token)[1]["total"] < 1:
        time.sleep(0.01)
    return time.perf_counter()


def make_token(store: Path, cache: Path, scope: str) -> str:
    return subprocess.run([MICELIO, "admin", "--store", str(store), "--cache-dir", str(cache), "token", "create",
                           USER, "--scope", scope], capture_output=True, text=True, env=hif_env(),
                          check=True).stdout.strip()


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * 0.95))] if s else float("nan")


def generated(args: argparse.Namespace, root: Path) -> list[list[str]]:
    from hif.search import Query, SearchIndex

    store, setup = root / "store", root / "setup-cache"
    t = time.perf_counter()
    asyncio.run(generate(store, setup, args.sessions, args.seed))
    print(f"generated {args.sessions} sessions in {secs(time.perf_counter() - t)}", file=sys.stderr)
    token = make_token(store, setup, "read")
    rows: list[list[str]] = []
    started = time.perf_counter()
    node = serve_node(store, root / "cache-0", root / "node-0.log")
    try:
        up = time.perf_counter()
        until_found(node.url, "lastmarker", token)
        built = time.perf_counter() - up
        rss = proc_status_kib(node.proc.pid, "VmHWM")
        cpu = proc_cpu(node.proc.pid)
        rows.append(["index build (node, background catch-up)", f"{args.sessions / built:,.0f} sessions/s",
                     f"{secs(built)} for {args.sessions:,} (start-up {secs(up - started)})", ">= 2,000"])
        rows.append(["index build, per CPU-second of the node", f"{args.sessions / cpu:,.0f} sessions/s",
                     f"{cpu:.1f} s CPU (start-up included)", ""])
        rows.append(["node peak RSS while indexing", mib(rss), "VmHWM of micelio serve", "< 512 MiB"])
        index_file = root / "cache-0" / "search.sqlite"
        size = sum(p.stat().st_size for p in (root / "cache-0").glob("search.sqlite*"))
        store_size = du(store)
        rows.append(["index size / store size", f"{size / store_size:.2f}", f"{mib(size // 1024)} / {mib(store_size // 1024)}", ""])
        # warm queries over HTTP, then in-process on the same file
        cases = [{"q": q} for q in QUERIES] + [{"q": "sqlite", "kind": "rejected"}, {"q": "retry", "author": "ana"}]
        for c in cases:
            http_query(node.url, c, token)  # warm
        lat: list[float] = []
        for _ in range(args.rounds):
            for c in cases:
                lat.append(http_query(node.url, c, token)[0])
        rows.append(["query over HTTP, warm (facets on)", f"p95 {secs(p95(lat))}", f"p50 {secs(median(lat))}, "
                     f"{len(lat)} queries", "p95 <= 50 ms"])
        index = SearchIndex(index_file)
        try:
            inproc: list[float] = []
            cpu_q: list[float] = []
            for _ in range(args.rounds):
                for c in cases:
                    q = Query(c["q"], kinds=(c["kind"],) if "kind" in c else (), author=c.get("author", ""))
                    t, c0 = time.perf_counter(), time.process_time()
                    index.query(q)
                    inproc.append(time.perf_counter() - t)
                    cpu_q.append(time.process_time() - c0)
            rows.append(["query in-process, warm (facets on)", f"p95 {secs(p95(inproc))}",
                         f"p50 {secs(median(inproc))}", ""])
            rows.append(["query in-process, CPU time", f"p95 {secs(p95(cpu_q))}",
                         f"p50 {secs(median(cpu_q))} (what a quiet CPU takes)", "p95 <= 50 ms"])
        finally:
            index.close()
        # landing to searchable: on this replica at once, on another by its poll
        second = serve_node(store, root / "cache-1", root / "node-1.log")
        try:
            until_found(second.url, "lastmarker", token)
            here, there = [], []
            admin = make_token(store, setup, "write")
            import cbor2
            import httpx
            for i in range(args.landings):
                word = f"fresh{i}x{random.randrange(10**9)}"
                r = httpx.post(node.url + f"/api/v1/repos/{REPO}/land", headers={
                    "Authorization": f"Bearer {admin}", "Content-Type": "application/cbor"},
                    content=cbor2.dumps({"goal": f"Landed now: {word}"}), timeout=60)
                landed = time.perf_counter()
                assert r.status_code == 200, r.content[:200]
                here.append(until_found(node.url, word, token) - landed)
                there.append(until_found(second.url, word, token) - landed)
            rows.append(["landing -> searchable, same replica", f"max {secs(max(here))}",
                         f"median {secs(median(here))} of {len(here)}", "<= 1 s"])
            rows.append(["landing -> searchable, other replica", f"max {secs(max(there))}",
                         f"median {secs(median(there))} (poll 0.5 s)", "<= 1 s"])
        finally:
            second.proc.terminate()
            second.proc.wait()
    finally:
        node.proc.terminate()
        node.proc.wait()
    return rows


def real_history(args: argparse.Namespace, root: Path) -> list[list[str]]:
    src = Path(args.git)
    if not src.exists():
        return [["real history", "skipped", f"{src} is missing", ""]]
    env, genv = hif_env(), git_env(root)
    work = root / "click"
    t = time.perf_counter()
    run([HIF, "import", "git", str(src), str(work), "--no-checkout"], cwd=root, env=env)
    imported = time.perf_counter() - t
    n = int(subprocess.run(["git", "rev-list", "--count", "--first-parent", "HEAD"], cwd=src, env=genv,
                           capture_output=True, text=True).stdout.strip() or 0)
    first = run([HIF, "search", "test", "--json"], cwd=work, env=env)
    rows = [["click: hif import git (set-up)", secs(imported), f"{n:,} first-parent commits", ""],
            ["click: first hif search (builds the index)", secs(first.seconds),
             f"{n / first.seconds:,.0f} sessions/s incl. start-up", ""]]
    words_ = ["option", "decorator", "windows", "\"shell completion\"", "pars*", "unicode", "typing", "prompt"]
    hif_t, git_t = [], []
    for _ in range(args.rounds):
        for w in words_:
            hif_t.append(run([HIF, "search", w, "--json", "-n", "20"], cwd=work, env=env).seconds)
            pattern = w.strip('"').rstrip("*")
            git_t.append(run(["git", "log", "--all", "-i", f"--grep={pattern}", "--format=%H %s"], cwd=src,
                             env=genv).seconds)
    rows.append(["click: hif search WORD (warm, whole command)", f"p95 {secs(p95(hif_t))}",
                 f"median {secs(median(hif_t))}", ""])
    rows.append(["click: git log --all -i --grep=WORD", f"p95 {secs(p95(git_t))}", f"median {secs(median(git_t))}",
                 f"hif/git {ratio(median(hif_t), median(git_t))}"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="5,000 sessions, fewer rounds")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--landings", type=int, default=10)
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--git", default=str(CLICK), help="a git repository to import and search (real history)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.sessions, args.rounds, args.landings = 5000, 3, 5
    load = os.getloadavg()
    with workdir("hif-bench-search-") as root:
        rows = generated(args, root) + real_history(args, root)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"bench/search.py: {args.sessions:,} generated sessions; {machine()}; load {load[0]:.2f}")
    print(table(["measure", "figure", "detail", "target"], rows))


if __name__ == "__main__":
    main()

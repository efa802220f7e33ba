"""Landing at scale: N in-process agents landing onto one mainline, with and without group landing.

Each agent is an asyncio task landing S sessions back to back, each the issue's disjoint 3-file
session: start a session with its three ``write`` events (one round trip; at the current head for the
first, then where the agent's last session landed) while ``put_blob`` stores the three new small files
``agent/<i>/session-<j>/<k>.txt``, then ``land``. Stores: ``embedded`` (on disk, fsync), ``s3``
(moto's S3 server on loopback, over HTTP), ``model`` (the embedded store, no fsync, on tmpfs, behind
``FaultyStore`` with the ``s3_latency`` model: ~60 ms per call, no faults). Group landing on
(``group=128``, the default) and off (``group=1``). On the model store with group landing, the agents
either each hold their own ``Repo`` (``--repos agent``: own caches, as separate processes would) or
share one per worker process (``process``: how the in-process SDK is used); ``--virtual`` also runs
those rows on ``hif.testing.sim``'s virtual-time loop, where CPU costs nothing. Each configuration runs in its
own worker processes, so peak RSS is their own (``VmHWM``); on the model store the agents are shared
out between ``--procs`` processes (default: one per CPU), since 128 agents are not one thread in real life.

Baseline: git, N agents each pushing S commits from its own clone to one bare repository, rejected
pushes rebased and retried (``land_concurrent.bench_git``), at 8 and 32 agents only.

Run: ``.venv/bin/python bench/land_contention.py [--agents 8,32,128] [--sessions 4] [--procs N]``. The s3 store
runs up to 32 agents unless ``--s3-max-agents 128``: moto on loopback is CPU-bound, and 128 agents
take over 15 minutes per configuration on a 2-CPU machine.
Targets (model store, group landing, 128 agents): >= 100 landings/s sustained and p99 < 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import ROOT, machine, mib, parse_ints, ratio, secs, table, workdir  # noqa: E402

if TYPE_CHECKING:
    from hif.store.base import ObjectInfo, ObjectStore

TARGET_RATE = 100.0  # landings/s
TARGET_P99 = 2.0  # seconds
TARGET_AGENTS = (128,)  # the figure; 32 agents are reported beside it
GIT_AGENTS = (8, 32)  # 128 clones pushing to one bare repo take many minutes on a small machine
TICK = os.sysconf("SC_CLK_TCK")
REPO = "bench/contention"


# -- worker (one configuration, in its own process) --------------------------------------------


def _counting(inner: ObjectStore, counts: Counter[str]) -> ObjectStore:
    """Wrap ``inner`` to count store calls and writes of log records (won and lost), so contention
    shows as log writes per landing whatever ``land()`` reports for grouped sessions."""
    from hif.store.base import ObjectStore

    class Counting(ObjectStore):
        def __init__(self) -> None:
            self.url = inner.url
            self.hedge_reads = inner.hedge_reads  # a latency model stands for S3: Repo hedges its reads

        async def get(self, key: str) -> bytes:
            counts["calls"] += 1
            return await inner.get(key)

        async def get_with_etag(self, key: str) -> tuple[bytes, str]:
            counts["calls"] += 1
            return await inner.get_with_etag(key)

        async def head(self, key: str) -> ObjectInfo | None:
            counts["calls"] += 1
            return await inner.head(key)

        async def put(self, key: str, data: bytes, *, if_none_match: bool = False,
                      if_match: str | None = None) -> str:
            counts["calls"] += 1
            if if_none_match and "/log/" in key:
                counts["log_writes"] += 1
            return await inner.put(key, data, if_none_match=if_none_match, if_match=if_match)

        async def delete(self, key: str) -> None:
            counts["calls"] += 1
            await inner.delete(key)

        async def list_page(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> list[str]:
            counts["calls"] += 1
            return await inner.list_page(prefix, start_after=start_after, limit=limit)

        async def list_children(self, prefix: str) -> list[str]:
            counts["calls"] += 1
            return await inner.list_children(prefix)

    return Counting()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


FILES = 3  # files per session: the "disjoint 3-file sessions"


def _path(i: int, j: int, k: int) -> str:
    return f"agent/{i}/session-{j}/{k}.txt"


def _content(i: int, j: int, k: int) -> bytes:
    return f"agent {i} session {j} file {k}\n".encode() * 4


async def _run_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration; check the mainline afterwards (every session exactly once, every file)."""
    from hif.aio import together
    from hif.errors import HifError, PreconditionFailed
    from hif.landing import land
    from hif.objects import FILE, blob_id
    from hif.repo import Repo
    from hif.session import make_event
    from hif.store import EmbeddedStore
    from hif.testing.faults import Faults, FaultyStore, s3_latency

    kind, n, sessions, group = cfg["store"], cfg["agents"], cfg["sessions"], cfg["group"]
    raw: ObjectStore
    if kind == "s3":
        from hif.store.s3 import S3Store

        raw = S3Store.from_url(cfg["url"], create=True, endpoint_url=cfg["endpoint"], access_key="test",
                               secret_key="test", region="us-east-1")
    else:
        raw = EmbeddedStore(cfg["url"], create=True, fsync=kind == "embedded")
    counts: Counter[str] = Counter()

    # the modelled S3 server's own work (files, in memory by default: --model-dir) runs inline: tens
    # of microseconds a call, less than a hop to a worker thread and back costs on a small machine
    def agent_store(i: int) -> ObjectStore:
        if kind == "model":  # one latency wrapper per agent, as each process has its own connection
            return _counting(FaultyStore(raw, Faults(latency=s3_latency), rng=random.Random(f"model-{i}")), counts)
        return _counting(raw, counts)

    with contextlib.suppress(PreconditionFailed):  # every worker process ensures it; one creates it
        await Repo(raw, REPO).ensure(description="land_contention")
    # on virtual time (--virtual: hif.testing.sim's loop, where only the modelled latency passes and CPU
    # costs nothing) every clock is the loop's
    loop = asyncio.get_running_loop()
    virtual = bool(cfg.get("virtual"))
    clock = loop.time if virtual else time.time
    timer = loop.time if virtual else time.perf_counter
    first, count = cfg.get("first", 0), cfg.get("count", n)
    rss_start = _status_kib("VmRSS")
    lat: list[float] = []
    done: list[float] = []  # wall-clock time of each landing's completion
    attempts: list[int] = []
    grouped = [0]
    failures: list[str] = []
    ids: dict[str, list[str]] = {}  # session id -> paths
    # "process": the agents of this worker share one Repo (the in-process SDK's handle on the
    # repository: one cache, one decoding of each record); "agent": each its own, as separate
    # processes would have
    shared = Repo(agent_store(first), REPO, clock=clock) if cfg.get("repos") == "process" else None

    async def agent(i: int) -> None:
        repo = shared or Repo(agent_store(i), REPO, clock=clock)
        who = f"agent{i}"
        base: int | None = None  # as a working copy: the next session starts where the last one landed
        for j in range(sessions):
            paths = [_path(i, j, k) for k in range(FILES)]
            contents = [_content(i, j, k) for k in range(FILES)]
            writes = [make_event("write", who, "agent", repo.clock(), path=p, kind=FILE, blob=blob_id(c))
                      for p, c in zip(paths, contents, strict=True)]
            # the session starts with its writes while their blobs are stored: one round trip
            s, *stored = await together([
                repo.sessions.start(f"agent {i}: task {j}", who, "agent",
                                    base if base is not None else await repo.mainline.head(), writes),
                *(repo.objects.put_blob(c) for c in contents)])
            bad = [x for x in (s, *stored) if isinstance(x, BaseException)]
            if bad or isinstance(s, BaseException):
                failures.append(f"{who}/{j}: could not start: {bad[0]}")
                continue
            ids[s.id] = paths
            t0 = timer()
            try:
                r = await land(repo, s, group=group)
            except HifError as e:  # counted and reported; the run goes on
                failures.append(f"{who}/{j}: {type(e).__name__}: {e}")
                continue
            lat.append(timer() - t0)
            base = r.position
            done.append(clock())
            attempts.append(r.attempts)
            grouped[0] += r.grouped

    if cfg.get("start_at"):  # worker processes start their agents together
        await asyncio.sleep(max(0.0, cfg["start_at"] - time.time()))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0, wall0 = timer(), clock()
    await asyncio.gather(*(agent(i) for i in range(first, first + count)))
    took = timer() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    calls, log_writes = counts["calls"], counts["log_writes"]
    part = {
        "landings": len(lat), "time": took, "start": wall0, "end": wall0 + took, "lat": lat, "done": done,
        "attempts": attempts, "grouped": grouped[0], "failures": failures, "calls": calls,
        "log_writes": log_writes, "ids": ids,
        "cpu": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "rss_start": rss_start, "rss_peak": _status_kib("VmHWM"),
    }
    if cfg.get("parts", 1) > 1:
        await raw.close()
        return part
    return {**part, **await _check(raw, ids, failures)}


async def _check(raw: ObjectStore, ids: dict[str, list[str]], failures: list[str]) -> dict[str, Any]:
    """The mainline after a run: every session exactly once, every file in the head tree."""
    from hif.repo import Repo
    from hif.tree import lookup_file

    check = Repo(raw, REPO)  # fresh caches, no latency wrapper
    head = await check.mainline.head()
    seen: Counter[str] = Counter()
    sizes: list[int] = []
    for pos in range(1, head + 1):
        rec = await check.mainline.record(pos)
        sizes.append(len(rec.sessions))
        seen.update(m.session for m in rec.sessions)
    problems = [f"session {sid} in {k} records" for sid, k in seen.items() if k != 1]
    problems += [f"session {sid} not in the log" for sid in ids if sid not in seen and not failures]
    tree = await check.mainline.tree_at(head)
    for sid, paths in ids.items():
        for path in paths if sid in seen else []:
            if await lookup_file(check.objects, tree, path) is None:
                problems.append(f"{path} missing from the head tree")
    await raw.close()
    return {"records": head, "max_group": max(sizes, default=0), "problems": problems[:10]}


def worker(spec: str) -> None:
    """``land_contention.py --worker JSON``: one configuration (or one process's share of its agents);
    its result as JSON on stdout. With ``"check"`` in the spec: verify the mainline of a finished run."""
    cfg = json.loads(spec)
    if "check" in cfg:
        from hif.store import EmbeddedStore

        raw = EmbeddedStore(cfg["url"])
        result = asyncio.run(_check(raw, json.loads(Path(cfg["check"]).read_text()), cfg["failures"]))
    elif cfg.get("virtual"):
        from hif.testing.sim import run_virtual

        result = run_virtual(_run_config(cfg))
    else:
        result = asyncio.run(_run_config(cfg))
    print(json.dumps(result))


# -- driver ------------------------------------------------------------------------------------


def _label(cfg: dict[str, Any]) -> str:
    return f"{cfg['store']} (virtual time)" if cfg.get("virtual") else cfg["store"]


def _memory_dir() -> Path | None:
    """tmpfs for the model store: its files stand for S3's storage, which is not on the agents'
    machine; on disk, the kernel's file-system work would be billed to the agents' CPUs."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None



def sustained(done: list[float]) -> float:
    """Landings per second between the 10th and the 90th percentile of completion times: the steady
    state, without the ramp (every agent starting its first session at once) and the drain (the
    last agents landing alone)."""
    if len(done) < 10:
        return float("nan")
    t = sorted(done)
    lo, hi = len(t) // 10, len(t) * 9 // 10
    return (hi - lo) / (t[hi] - t[lo]) if t[hi] > t[lo] else float("nan")


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def proc_cpu(pid: int) -> float:
    """User + system seconds of a running process (the moto server), from ``/proc``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICK


def _spawn(cfg: dict[str, Any]) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def _collect(p: subprocess.Popen[str], deadline: float) -> dict[str, Any]:
    try:
        out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return {"error": "timed out"}
    if p.returncode != 0:
        tail = (err or out).strip().splitlines()[-5:]
        return {"error": f"worker exited {p.returncode}: " + " | ".join(tail)}
    return json.loads(out.strip().splitlines()[-1])


def run_config(cfg: dict[str, Any], timeout: float, procs: int = 1) -> dict[str, Any]:
    """One configuration in fresh worker processes (bounded by ``timeout``). With ``procs`` > 1 the
    agents are shared out between that many processes, started together: agents are separate
    processes in real life, and one Python event loop running all of them would measure its own CPU
    (every agent reads and replays every record) rather than the landing protocol."""
    deadline = time.monotonic() + timeout
    n = cfg["agents"]
    procs = max(1, min(procs, n)) if cfg["store"] != "s3" and not cfg.get("virtual") else 1
    if procs == 1:
        return _collect(_spawn(cfg), deadline)
    start_at = time.time() + 2.0 + 0.2 * procs  # after every worker has imported and set up
    shares = [(k * n // procs, (k + 1) * n // procs - k * n // procs) for k in range(procs)]
    workers = [_spawn({**cfg, "first": f, "count": c, "parts": procs, "start_at": start_at}) for f, c in shares]
    parts = [_collect(w, deadline) for w in workers]
    bad = [p["error"] for p in parts if "error" in p]
    if bad:
        return {"error": bad[0]}
    ids = {k: v for p in parts for k, v in p["ids"].items()}
    failures = [f for p in parts for f in p["failures"]]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(ids, f)
    try:
        check = _collect(_spawn({"url": cfg["url"], "check": f.name, "failures": failures}), deadline)
    finally:
        os.unlink(f.name)
    if "error" in check:
        return check
    start, end = min(p["start"] for p in parts), max(p["end"] for p in parts)
    return {
        "landings": sum(p["landings"] for p in parts), "time": end - start,
        "lat": [x for p in parts for x in p["lat"]], "done": [x for p in parts for x in p["done"]],
        "attempts": [x for p in parts for x in p["attempts"]],
        "grouped": sum(p["grouped"] for p in parts), "failures": failures,
        "calls": sum(p["calls"] for p in parts), "log_writes": sum(p["log_writes"] for p in parts),
        "cpu": sum(p["cpu"] for p in parts), "rss_start": max(p["rss_start"] for p in parts),
        "rss_peak": max(p["rss_peak"] for p in parts), **check,
    }


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=parse_ints, default=[8, 32, 128], help="comma-separated agent counts")
    ap.add_argument("--sessions", type=int, default=4, help="sessions landed per agent")
    ap.add_argument("--stores", default="embedded,s3,model", help="comma-separated: embedded,s3,model")
    ap.add_argument("--group", type=parse_ints, default=[1, 128], help="group sizes (1 = group landing off)")
    ap.add_argument("--no-git", action="store_true", help="skip the git baseline")
    ap.add_argument("--git-retries", type=int, default=1000, help="max rejected pushes per git commit")
    ap.add_argument("--s3-max-agents", type=int, default=32,
                    help="largest agent count run on the s3 store (moto is CPU-bound)")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1,
                    help="worker processes sharing the agents (model store; default: one per CPU)")
    ap.add_argument("--repos", default="agent,process",
                    help="model store: each agent its own Repo (agent), or one per worker process (process)")
    ap.add_argument("--virtual", action="store_true",
                    help="also run the model store's group-landing rows on virtual time (no CPU cost)")
    ap.add_argument("--model-dir", type=Path, default=_memory_dir(),
                    help="where the model store keeps its files (default: /dev/shm when there is one)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per configuration")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = ap.parse_args()
    stores = [s for s in args.stores.split(",") if s]
    bad = set(stores) - {"embedded", "s3", "model"}
    if bad or not stores:
        raise SystemExit(f"--stores takes embedded,s3,model (not {', '.join(sorted(bad)) or 'nothing'})")
    repos = [r for r in args.repos.split(",") if r]
    if set(repos) - {"agent", "process"} or not repos:
        raise SystemExit(f"--repos takes agent,process (not {args.repos!r})")

    print(f"land_contention: {args.sessions} sessions per agent, {FILES} new files each, agents {args.agents}, "
          f"group {args.group}; {machine()}", flush=True)
    results: list[tuple[dict[str, Any], dict[str, Any]]] = []
    with workdir("hif-contention-", args.keep) as base, \
            workdir("hif-contention-model-", args.keep, args.model_dir) as model_base:
        for kind in stores:
            server = None
            endpoint = ""
            if kind == "s3":
                sys.path.insert(0, str(ROOT / "tests"))
                from s3server import start_s3_server, stop_s3_server

                server, endpoint = start_s3_server()
            try:
                for n in args.agents:
                    if kind == "s3" and n > args.s3_max_agents:
                        print(f"  s3 N={n}: skipped (--s3-max-agents {args.s3_max_agents})", flush=True)
                        continue
                    # interleaved, so a change in machine load hits every variant
                    for g, share, virtual in [
                        (gs, r, v) for gs in args.group
                        for r in (repos if kind == "model" and gs > 1 else ["agent"])
                        for v in ([False, True] if kind == "model" and gs > 1 and args.virtual else [False])
                    ]:
                        tag = f"{kind}-{n}-{g}-{share}" + ("-virtual" if virtual else "")
                        url = (f"s3://c{uuid.uuid4().hex[:12]}/b" if kind == "s3"
                               else str((model_base if kind == "model" else base) / tag))
                        cfg = {"store": kind, "url": url, "endpoint": endpoint, "agents": n,
                               "sessions": args.sessions, "group": g, "repos": share, "virtual": virtual}
                        mcpu = proc_cpu(server.pid) if server else float("nan")
                        r = run_config(cfg, args.timeout, args.procs if kind != "embedded" else 1)
                        r["server_cpu"] = proc_cpu(server.pid) - mcpu if server else float("nan")
                        results.append((cfg, r))
                        if "error" in r:
                            print(f"  {tag}: ERROR {r['error']}", flush=True)
                        else:
                            print(f"  {_label(cfg)} N={n} group={g} repos={share}: {r['landings']} landings in {secs(r['time'])}, "
                                  f"{r['records']} records", flush=True)
                        for msg in (r.get("failures") or [])[:3] + (r.get("problems") or []):
                            print(f"    ! {msg}", flush=True)
            finally:
                if server is not None:
                    stop_s3_server(server)

        git: dict[int, dict[str, Any]] = {}
        if not args.no_git:
            import land_concurrent

            for n in [n for n in args.agents if n in GIT_AGENTS]:
                with workdir(f"git-contention-{n}-", args.keep) as d:
                    git[n] = land_concurrent.bench_git(d, n, args.sessions, args.git_retries)
                print(f"  git N={n}: {n * args.sessions} pushes in {secs(git[n]['time'])}", flush=True)

    rows = []
    for cfg, r in results:
        if "error" in r:
            rows.append([_label(cfg), cfg["agents"], cfg["group"], cfg["repos"], f"error: {r['error'][:40]}",
                         *[""] * 13])
            continue
        k = max(r["landings"], 1)
        cpu = f"{r['cpu']:.1f} s" + (f" + {r['server_cpu']:.1f} s" if r["server_cpu"] == r["server_cpu"] else "")
        rows.append([
            _label(cfg), cfg["agents"], cfg["group"], cfg["repos"],
            f"{r['landings']}" + (f" ({len(r['failures'])} failed)" if r["failures"] else ""),
            secs(r["time"]), f"{r['landings'] / r['time']:.1f}", f"{sustained(r['done']):.1f}",
            secs(percentile(r["lat"], 0.5)), secs(percentile(r["lat"], 0.99)), secs(max(r["lat"], default=0)),
            f"{sum(r['attempts']) / k:.1f}", f"{r['log_writes'] / k:.1f}",
            f"{r['records']} / {r['max_group']}", r["grouped"], f"{r['calls'] / k:.0f}",
            cpu, f"{mib(r['rss_start'])} -> {mib(r['rss_peak'])}",
        ])
    print()
    print(table(
        ["store", "agents", "group", "repos", "landings", "wall", "landings/s", "sustained/s", "land p50", "land p99", "land max",
         "attempts", "log writes/landing", "records / largest", "grouped", "store calls/landing", "CPU",
         "RSS start -> peak"],
        rows,
    ))

    if git:
        grows = []
        for n, gr in git.items():
            pushes = n * args.sessions
            emb = [r for cfg, r in results if cfg["store"] == "embedded" and cfg["agents"] == n
                   and cfg["group"] == max(args.group) and cfg["repos"] == "agent" and "error" not in r]
            hif_rate = emb[0]["landings"] / emb[0]["time"] if emb else float("nan")
            grows.append([n, pushes, secs(gr["time"]), f"{pushes / gr['time']:.1f}", secs(gr["op"]),
                          gr["retries"], f"{gr['cpu']:.1f} s", mib(gr["rss"]),
                          f"{hif_rate:.1f}", ratio(hif_rate, pushes / gr["time"])])
        print()
        print(table(
            ["git agents", "pushes", "wall", "pushes/s", "push p50", "rejected", "CPU", "peak RSS",
             f"hif embedded group={max(args.group)} landings/s", "hif/git"],
            grows,
        ))

    print()
    top = max(args.group)
    checked = False
    for cfg, r in results:
        if cfg["store"] != "model" or cfg["group"] != top or top <= 1 or cfg["agents"] not in TARGET_AGENTS:
            continue
        checked = True
        if "error" in r:
            print(f"targets, {_label(cfg)}, {cfg['agents']} agents, group={top}, repos={cfg['repos']}: NOT met "
                  f"({r['error']})")
            continue
        rate, p99 = sustained(r["done"]), percentile(r["lat"], 0.99)
        ok_rate = "met" if rate >= TARGET_RATE and not r["failures"] else "NOT met"
        ok_p99 = "met" if p99 < TARGET_P99 and not r["failures"] else "NOT met"
        print(f"{_label(cfg)}, {cfg['agents']} agents, group={top}, one Repo per {cfg['repos']}: target >= {TARGET_RATE:.0f} landings/s "
              f"sustained: {ok_rate} ({rate:.1f}; {r['landings'] / r['time']:.1f} over the whole wall); "
              f"p99 < {TARGET_P99:.0f} s: {ok_p99} ({secs(p99)})")
    if not checked:
        print(f"(targets apply to the model store with group landing at {' and '.join(map(str, TARGET_AGENTS))} "
              "agents: not run)")
    print("(wall: all agents, first start to last landing; landings/s: landings / wall; sustained/s: between "
          "the 10th and 90th percentile of completion times; land p50/p99/max: one "
          "land() call; attempts: mean as land() reports it (a session landed inside another's record counts "
          "1); log writes: put-if-absent of log records, won or lost; records / largest: mainline records "
          "written and the most sessions in one; grouped: sessions landed by another lander; CPU: the worker "
          "(+ the moto server for s3); RSS: the worker process after set-up and its peak (VmHWM); git: "
          "land_concurrent's agents, push p50 incl. rebases and retries, peak RSS of the largest git process)")


if __name__ == "__main__":
    main()

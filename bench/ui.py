"""The web UI on a real imported history: server time per page kind, HTML size, blame, isolation.

Set-up (timed, only reported): ``micelio import bench/NAME SOURCE`` of a git repository (a path, e.g.
a bare clone of pallets/click: ~3,300 commits, ~1,400 landings, files up to 147 KB) into a fresh
store, or ``--store DIR`` to reuse one imported before (the import is skipped when the repository is
there). Then ``micelio serve`` on loopback over that store, with a fresh cache directory (so the
first blame is cold), and one client (httpx, keep-alive, ``Accept-Encoding: gzip``) that asks, one
request at a time:

- every page kind: home, repository, tree, blob (a sample of files incl. the largest), blame (the
  largest file cold, then warm, then a sample), raw, the session list (and a later page), session
  pages (a sample of sessions incl. the ones with the most files and the merges), per-file diffs,
  search, offers, the stylesheet, after one unmeasured page of each kind (templates compiled); the
  time of each request as the client sees it on loopback (server time plus a fraction of a
  millisecond) and the CPU time the node's threads spent on it (``/proc/PID/task/*/schedstat``: on
  a shared, loaded machine the steadier figure), p50/p95/max per kind, and the largest body per kind
  (decoded HTML bytes, and the bytes on the wire, gzip accepted);
- "a page never blocks others": the latency of a cheap page asked every 20 ms while a cold blame of
  another big file and the largest session page are rendering;
- the same work through git (``git blame`` of the largest file, ``git show`` of the largest merge,
  ``git log -n 50``), each a subprocess, with the ratio page/git;
- the node's peak RSS (``VmHWM``).

Run: ``.venv/bin/python bench/ui.py --source /path/to/click.git [--store DIR] [--quick]``.
Targets (issue 17): every page kind p95 <= 300 ms and max <= 1 s; blame of the largest file <= 500 ms
cold and <= 50 ms warm; HTML <= 1 MB per page; a cheap page not delayed by a heavy one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from _util import (  # noqa: E402
    HIF,
    ROOT,
    git_env,
    machine,
    median,
    mib,
    ratio,
    run,
    secs,
    serve_node,
    table,
    vm_hwm_kib,
    workdir,
)

# this script is bench/ui.py: the project's ui package must win over it on the path
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
from ui.render import generated  # noqa: E402

NAME = "bench/click"
PASSWORD = "bench-password-long-enough"


def micelio_bin() -> str:
    return str(Path(HIF).parent / "micelio")


def ensure_import(store: Path, source: str, cache: Path) -> float | None:
    """Import ``source`` into ``store`` unless it is there already; the import's seconds, or None."""
    from hif.repo import Repo
    from hif.store import open_store
    from node.accounts import Accounts
    from node.authdb import AuthDB

    async def registered() -> bool:
        st = open_store(str(store), create=True)
        try:
            accounts = Accounts(AuthDB(st, cache))
            if await accounts.get_user("bench") is None:
                await accounts.create_user("bench", PASSWORD)
            if await accounts.get_repo(NAME) is None:
                return False
            return await Repo(st, NAME).mainline.head() > 0
        finally:
            await st.close()

    if asyncio.run(registered()):
        return None
    t0 = time.perf_counter()
    subprocess.run([micelio_bin(), "import", NAME, source, "--store", str(store), "--cache-dir", str(cache),
                    "--json"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def survey(store: Path, sample: int, seed: int) -> dict[str, Any]:
    """What to ask for: sessions (a random sample, the ones with the most files, merges) and files
    (the largest, a sample), read from the store before the node starts."""
    from hif.repo import Repo
    from hif.store import open_store
    from hif.tree import walk

    async def go() -> dict[str, Any]:
        st = open_store(str(store))
        try:
            repo = Repo(st, NAME)
            head = await repo.mainline.head()
            rows = []
            async for rec in repo.mainline.iter_back(head, 1):
                s = rec.sessions[0]
                rows.append((rec.position, s.session, len(s.changes), bool((rec.extra.get("git") or {}).get("merged"))))
            files = []
            async for path, entry in walk(repo.objects, await repo.mainline.tree_at(head)):
                if entry.kind == "f":
                    files.append((len(await repo.objects.get_blob(entry.oid)), path))
            return {"head": head, "rows": rows, "files": sorted(files, reverse=True)}
        finally:
            await st.close()

    data = asyncio.run(go())
    rng = random.Random(seed)
    rows = data["rows"]
    biggest = sorted(rows, key=lambda r: -r[2])[:5]
    merges = [r for r in rows if r[3]]
    picked = {r[1]: r for r in rng.sample(rows, min(sample, len(rows))) + biggest + merges[:5]}
    # the largest files a person reads (a lockfile's diff and highlighting are only summarised)
    files = [(n, p) for n, p in data["files"] if generated(p, "") is None]
    return {"head": data["head"], "sessions": list(picked.values()), "biggest": biggest, "all_sessions": rows,
            "files": files, "file_sample": [p for _, p in files[:3]] + [p for _, p in rng.sample(files, min(8, len(files)))]}


def cpu_seconds(pid: int) -> float:
    """CPU time the node's threads have run so far (nanoseconds from ``schedstat``, summed over its
    threads): per request, a figure the other load on a shared machine barely moves."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile
    return total / 1e9


class Client:
    def __init__(self, url: str, pid: int) -> None:
        self.url, self.pid = url, pid
        self.http = httpx.Client(base_url=url, timeout=120, headers={"Accept-Encoding": "gzip"})
        self.times: dict[str, list[float]] = defaultdict(list)
        self.cpu: dict[str, list[float]] = defaultdict(list)
        self.sizes: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.slowest: dict[str, tuple[float, str]] = {}
        self.last_cpu = 0.0

    def settle(self) -> None:
        """Wait (at most 3 s) until the node is idle: background work a page left behind (warming
        the highlight cache) must not be counted as the next page's CPU."""
        end = time.monotonic() + 3
        while time.monotonic() < end:
            before = cpu_seconds(self.pid)
            time.sleep(0.02)
            if cpu_seconds(self.pid) - before < 0.002:
                return

    def get(self, kind: str, path: str, record: bool = True) -> httpx.Response:
        if record:
            self.settle()
        c0, t0 = cpu_seconds(self.pid), time.perf_counter()
        r = self.http.get(path)
        took = time.perf_counter() - t0
        cpu = self.last_cpu = cpu_seconds(self.pid) - c0
        if r.status_code != 200:
            raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:200]}")
        if record:
            self.times[kind].append(took)
            self.cpu[kind].append(cpu)
            wire = int(r.headers.get("content-length") or len(r.content))
            self.sizes[kind].append((len(r.content), wire))
            if took > self.slowest.get(kind, (0.0, ""))[0]:
                self.slowest[kind] = (took, path)
        return r


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def isolation(url: str, heavy: list[str], cheap: str) -> dict[str, float]:
    """Latency of ``cheap`` asked every 20 ms while the ``heavy`` pages render (each on its own
    connection), against the same page alone."""
    alone = []
    with httpx.Client(base_url=url, timeout=120) as c:
        for _ in range(10):
            t0 = time.perf_counter()
            c.get(cheap)
            alone.append(time.perf_counter() - t0)
    during: list[float] = []
    done = threading.Event()
    heavy_took: list[float] = []

    def load(path: str) -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            t0 = time.perf_counter()
            c.get(path)
            heavy_took.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=load, args=(p,)) for p in heavy]
    for t in threads:
        t.start()

    def waiter() -> None:
        for t in threads:
            t.join()
        done.set()

    threading.Thread(target=waiter).start()
    with httpx.Client(base_url=url, timeout=120) as c:
        while not done.is_set():
            t0 = time.perf_counter()
            c.get(cheap)
            during.append(time.perf_counter() - t0)
            time.sleep(0.02)
    return {"alone_p50": median(alone), "during_p50": median(during), "during_max": max(during or [0.0]),
            "during_n": len(during), "heavy_max": max(heavy_took or [0.0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="a git repository (path) to import")
    ap.add_argument("--store", type=Path, help="reuse (or fill) this store directory")
    ap.add_argument("--sessions", type=int, default=60, help="random session pages asked")
    ap.add_argument("--quick", action="store_true", help="a short run: 15 sessions, fewer files")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.sessions = 15
    print(f"machine: {machine()}; load {os.getloadavg()[0]:.2f}")
    with workdir("micelio-bench-ui-") as base:
        store = args.store or base / "store"
        took = ensure_import(store, args.source, base / "import-cache")
        print(f"import: {'reused ' + str(store) if took is None else secs(took)}")
        plan = survey(store, args.sessions, args.seed)
        node, url = serve_node(store, base)
        try:
            figures = exercise(url, node.pid, plan, args, Path(args.source), base / "node-cache")
            figures["node_peak_rss_kib"] = vm_hwm_kib(node.pid)
        finally:
            node.terminate()
            node.wait(timeout=20)
        report(figures)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1))


def exercise(url: str, pid: int, plan: dict[str, Any], args: argparse.Namespace, source: Path,
             cache_dir: Path) -> dict[str, Any]:
    c = Client(url, pid)
    r = NAME
    largest = plan["files"][0][1]
    figures: dict[str, Any] = {"largest_file": largest, "largest_size": plan["files"][0][0]}
    # a serving node has its templates compiled and its auth copy loaded: one of each page kind
    # first, not measured (a small file, the oldest session: nothing the measured pages ask for)
    small = plan["files"][-1][1]
    oldest = min(plan["all_sessions"])[1]
    for path in ("/", f"/{r}", f"/{r}/tree/docs", f"/{r}/blob/{small}", f"/{r}/blame/{small}",
                 f"/{r}/sessions", f"/{r}/sessions/{oldest}", f"/{r}/offers", "/search?q=x"):
        c.get("-", path, record=False)
    # blame of the largest file first: cold (fresh cache directory), then warm
    c.get("blame", f"/{r}/blame/{largest}")
    figures["blame_cold"], figures["blame_cold_cpu"] = c.times["blame"][-1], c.cpu["blame"][-1]
    for _ in range(5):
        c.get("blame", f"/{r}/blame/{largest}")
    figures["blame_warm"], figures["blame_warm_cpu"] = median(c.times["blame"][-5:]), median(c.cpu["blame"][-5:])
    # cold again with the blame cache emptied but the file's highlighting kept: the first cold page
    # also starts highlighting the file in the background, which on a loaded machine runs before
    # the client has read the answer and so counts as the page's CPU; here only the blame's own
    # work does (not recorded as a page: a third request of the same page)
    cold: list[float] = []
    for _ in range(3):
        shutil.rmtree(cache_dir / "ui" / "blame", ignore_errors=True)
        c.settle()
        c.get("-", f"/{r}/blame/{largest}", record=False)
        cold.append(c.last_cpu)
    figures["blame_cold_only_cpu"] = min(cold)
    c.get("home", "/")
    c.get("repo", f"/{r}")
    c.get("css", "/assets/style.css")
    for d in ("src/click", "docs", "tests", "examples"):
        c.get("tree", f"/{r}/tree/{d}")
    files = plan["file_sample"][: 5 if args.quick else None]
    for p in files:
        c.get("blob", f"/{r}/blob/{p}")
        c.get("raw", f"/{r}/raw/{p}")
    # isolation before the sample blames warm the cache: the second-largest file's blame is cold
    second = plan["files"][1][1]
    biggest_sid = plan["biggest"][0][1]
    figures["isolation"] = isolation(url, [f"/{r}/blame/{second}", f"/{r}/sessions/{biggest_sid}"], f"/{r}/tree/docs")
    for p in files[1:]:
        c.get("blame", f"/{r}/blame/{p}")
    c.get("sessions", f"/{r}/sessions")
    c.get("sessions", f"/{r}/sessions?before={plan['head'] - 30}")
    c.get("sessions", f"/{r}/sessions?path=src/click/core.py")
    c.get("sessions", f"/{r}/sessions?author=Armin")
    c.get("search", "/search?q=click")
    c.get("offers", f"/{r}/offers")
    for pos, sid, _n, _merge in plan["sessions"]:
        page = c.get("session", f"/{r}/sessions/{sid}")
        if pos % 4 == 0:
            for href in diff_links(page.text)[:2]:
                c.get("file diff", href)
    for _pos, sid, _n, _m in plan["biggest"][:2]:
        c.get("session split", f"/{r}/sessions/{sid}?view=split")
    figures["pages"] = {
        kind: {"n": len(ts), "p50": median(ts), "p95": pct(ts, 0.95), "max": max(ts),
               "cpu_p50": median(c.cpu[kind]), "cpu_p95": pct(c.cpu[kind], 0.95), "cpu_max": max(c.cpu[kind]),
               "html_max": max(s[0] for s in c.sizes[kind]), "wire_max": max(s[1] for s in c.sizes[kind]),
               "slowest": c.slowest[kind][1]}
        for kind, ts in c.times.items()
    }
    figures["git"] = git_side(source, largest, plan, url, c)
    return figures


def diff_links(html: str) -> list[str]:
    """The per-file diff pages a session page links to (``data-diff`` hrefs), if any."""
    out = []
    for part in html.split('class="diff-file-link" href="')[1:]:
        out.append(part.split('"', 1)[0].replace("&amp;", "&"))
    return out


def git_side(source: Path, largest: str, plan: dict[str, Any], url: str, c: Client) -> list[list[str]]:
    """The same work through git, each one subprocess, against the page that shows it."""
    env = git_env(Path("/tmp"))
    merges = [row for row in plan["sessions"] if row[3]]
    big = max(merges or plan["biggest"], key=lambda row: row[2])
    commit = run(["git", "rev-list", "--first-parent", "--reverse", "HEAD"], source, env).out.split()[big[0] - 1]
    rows = []
    for label, cmd, page in (
        (f"blame {largest}", ["git", "blame", "--", largest], f"/{NAME}/blame/{largest}"),
        (f"show {commit[:10]} ({big[2]} files)", ["git", "show", "-m", "--first-parent", commit], f"/{NAME}/sessions/{big[1]}"),
        ("log -n 50", ["git", "log", "-n", "50"], f"/{NAME}/sessions?before={plan['head'] + 1}"),
    ):
        g = min(run(cmd, source, env).seconds for _ in range(3))
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            c.get("-", page, record=False)
            ts.append(time.perf_counter() - t0)
        rows.append([label, secs(min(ts)), secs(g), ratio(min(ts), g)])
    return rows


def report(f: dict[str, Any]) -> None:
    print(f"largest file: {f['largest_file']} ({f['largest_size']} bytes)")
    print(f"blame of it: cold {secs(f['blame_cold'])} (CPU {secs(f['blame_cold_cpu'])}), "
          f"warm {secs(f['blame_warm'])} (CPU {secs(f['blame_warm_cpu'])}; median of 5); "
          f"cold with the highlighting cached: CPU {secs(f['blame_cold_only_cpu'])} (best of 3)")
    rows = [[k, v["n"], secs(v["p50"]), secs(v["p95"]), secs(v["max"]), secs(v["cpu_p50"]), secs(v["cpu_p95"]),
             secs(v["cpu_max"]), f"{v['html_max'] / 1024:.0f} KB", f"{v['wire_max'] / 1024:.0f} KB", v["slowest"][:50]]
            for k, v in sorted(f["pages"].items())]
    print(table(["page", "n", "p50", "p95", "max", "CPU p50", "CPU p95", "CPU max", "HTML max", "wire max",
                 "slowest"], rows))
    i = f["isolation"]
    print(f"isolation: a cheap page alone p50 {secs(i['alone_p50'])}; while a cold blame and the largest "
          f"session render ({secs(i['heavy_max'])}): p50 {secs(i['during_p50'])}, max {secs(i['during_max'])} "
          f"({i['during_n']} requests)")
    print(table(["git", "page (best of 3)", "git (best of 3)", "page/git"], f["git"]))
    print(f"node peak RSS: {mib(f['node_peak_rss_kib'])}")


if __name__ == "__main__":
    main()

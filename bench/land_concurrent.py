"""N agents landing disjoint work at once: ``hif`` (CLI, embedded store) versus git (bare repo + clones).

hif, per agent (own workspace over one store), S times: ``hif session start``, write a new file,
``hif land``. git, per agent (own clone of one bare repo), S times: write a new file, ``git add``,
``git commit``, ``git push``; a rejected push does ``git pull --rebase`` and pushes again (bounded).
Set-up (``hif init`` + ``hif workspace add``; ``git init --bare`` + clones) is not timed.

hif runs twice per N, interleaved with git: plain (every command a cold process, ``HIF_NO_SERVER=1``)
and warm (every command through one warm command server started for the run, ``hif server start``;
its CPU, and its forked children's, is added to the clients').

Run: ``.venv/bin/python bench/land_concurrent.py [--agents 1,8,32] [--sessions 5] [--modes plain,warm]``.
Targets (issue 20): git/hif wall >= 0.7x at 1 agent and >= 4x at 32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import (  # noqa: E402
    HIF,
    Stats,
    git_env,
    hif_env,
    machine,
    median,
    mib,
    parse_ints,
    ratio,
    run,
    secs,
    table,
    warm_server,
    workdir,
)

TARGETS = {1: 0.7, 32: 4.0}  # agents -> git/hif wall time wanted


def concurrently(n: int, work: Callable[[int], None]) -> float:
    """Run ``work(i)`` for i < n in threads released together; wall time until the last one ends."""
    errors: list[BaseException] = []
    gate = threading.Barrier(n + 1)

    def body(i: int) -> None:
        gate.wait()
        try:
            work(i)
        except BaseException as e:  # reported after all threads finish
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    gate.wait()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return took


def content(i: int, j: int) -> bytes:
    return f"agent {i} session {j}\n".encode() * 4


def bench_hif(base: Path, n: int, sessions: int, warm: bool) -> dict[str, object]:
    if warm:
        with warm_server(base) as server:
            served = server.served()  # (a command itself: asked outside the CPU counted)
            before = server.cpu()
            r = bench_hif_with(base, n, sessions, server.dir)
            r["cpu"] = float(r["cpu"]) + server.cpu() - before  # type: ignore[arg-type]
            plain = int(r["calls"]) - (server.served() - served - 1)  # type: ignore[call-overload]
            if plain:  # a command no server accepted ran cold: the figures would mix both ways
                print(f"  warning: {plain} of {r['calls']} commands ran without the server", flush=True)
            return r
    return bench_hif_with(base, n, sessions, None)


def bench_hif_with(base: Path, n: int, sessions: int, server: Path | None) -> dict[str, object]:
    stats = Stats()
    lands: list[float] = []
    env = hif_env()
    repo = base / "repo"
    run([HIF, "init", str(repo)], cwd=base, env=env)
    spaces = [base / f"ws{i}" for i in range(n)]
    for ws in spaces:
        run([HIF, "workspace", "add", str(ws)], cwd=repo, env=env)
    envs = [hif_env(f"agent{i}", server) for i in range(n)]

    def agent(i: int) -> None:
        ws, e = spaces[i], envs[i]
        for j in range(sessions):
            stats.add(run([HIF, "session", "start", f"agent {i}: task {j}"], cwd=ws, env=e))
            d = ws / f"agent{i}"
            d.mkdir(exist_ok=True)
            (d / f"task{j}.txt").write_bytes(content(i, j))
            r = stats.add(run([HIF, "land"], cwd=ws, env=e))
            lands.append(r.seconds)

    took = concurrently(n, agent)
    want = n * sessions
    out = run([HIF, "log", "--json", "-n", str(want + 1)], cwd=repo, env=env).out
    landed = {e["session"] for e in json.loads(out)["landings"]}  # several may share a record (group landing)
    if len(landed) != want:
        raise SystemExit(f"hif: expected {want} landed sessions, found {len(landed)}:\n{out[:2000]}")
    return {"time": took, "op": median(lands), "rss": stats.maxrss_kib, "retries": 0, "calls": stats.calls,
            "cpu": stats.cpu}


def bench_git(base: Path, n: int, sessions: int, max_retries: int) -> dict[str, object]:
    stats = Stats()
    pushes: list[float] = []
    retries = [0]
    lock = threading.Lock()
    env = git_env(base)
    origin = base / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], cwd=base, env=env)
    seed = base / "seed"
    run(["git", "init", "-q", "-b", "main", str(seed)], cwd=base, env=env)
    (seed / "README").write_text("bench\n")
    run(["git", "add", "README"], cwd=seed, env=env)
    run(["git", "commit", "-q", "-m", "seed"], cwd=seed, env=env)
    run(["git", "push", "-q", str(origin), "main"], cwd=seed, env=env)
    clones = [base / f"clone{i}" for i in range(n)]
    for c in clones:
        run(["git", "clone", "-q", str(origin), str(c)], cwd=base, env=env)

    def agent(i: int) -> None:
        c = clones[i]
        for j in range(sessions):
            d = c / f"agent{i}"
            d.mkdir(exist_ok=True)
            name = f"agent{i}/task{j}.txt"
            (c / name).write_bytes(content(i, j))
            stats.add(run(["git", "add", name], cwd=c, env=env))
            stats.add(run(["git", "commit", "-q", "-m", f"agent {i}: task {j}"], cwd=c, env=env))
            t0 = time.perf_counter()
            for attempt in range(max_retries + 1):
                r = stats.add(run(["git", "push", "-q", "origin", "HEAD:main"], cwd=c, env=env, check=False))
                if r.rc == 0:
                    break
                if attempt == max_retries:
                    raise RuntimeError(f"git push failed {max_retries + 1} times:\n{r.out}")
                with lock:
                    retries[0] += 1
                stats.add(run(["git", "pull", "-q", "--rebase", "origin", "main"], cwd=c, env=env))
            pushes.append(time.perf_counter() - t0)

    took = concurrently(n, agent)
    count = run(["git", "rev-list", "--count", "main"], cwd=origin, env=env).out.strip()
    if count != str(n * sessions + 1):
        raise SystemExit(f"git: expected {n * sessions + 1} commits on main, got {count}")
    return {"time": took, "op": median(pushes), "rss": stats.maxrss_kib, "retries": retries[0],
            "calls": stats.calls, "cpu": stats.cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=parse_ints, default=[1, 8, 32], help="comma-separated agent counts")
    ap.add_argument("--sessions", type=int, default=5, help="sessions (commits) per agent")
    ap.add_argument("--git-retries", type=int, default=1000, help="max rejected pushes per commit")
    ap.add_argument("--tools", default="hif,git", help="which to run (for profiling one side): hif,git")
    ap.add_argument("--modes", default="plain,warm", help="hif's ways to run: plain (cold processes), warm")
    ap.add_argument("--repeat", type=int, default=1, help="runs per N; the fastest is shown")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = ap.parse_args()
    modes = [m for m in ("plain", "warm") if m in args.modes.split(",")] if "hif" in args.tools else []

    print(f"land_concurrent: {args.sessions} sessions per agent, disjoint files, best of {args.repeat}; "
          f"{machine()}; load {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    rows = []
    verdicts = []
    nan = float("nan")
    for n in args.agents:
        empty = {"time": nan, "op": nan, "rss": 0, "retries": 0, "calls": 0, "cpu": nan}
        best = {m: dict(empty) for m in [*modes, "git"]}
        for _ in range(args.repeat):  # interleaved, so a change in machine load hits all
            for m in modes:
                with workdir(f"hif-land-{m}-{n}-", args.keep) as d:
                    r = bench_hif(d, n, args.sessions, m == "warm")
                best[m] = r if not r["time"] >= best[m]["time"] else best[m]
            if "git" in args.tools:
                with workdir(f"git-land-{n}-", args.keep) as d:
                    r = bench_git(d, n, args.sessions, args.git_retries)
                best["git"] = r if not r["time"] >= best["git"]["time"] else best["git"]
        g = best["git"]
        for m in modes:
            h = best[m]
            rows.append([
                n, f"hif {m}", n * args.sessions, secs(h["time"]), secs(g["time"]), ratio(g["time"], h["time"]),
                f"{h['cpu']:.2f} s", f"{g['cpu']:.2f} s", ratio(g["cpu"], h["cpu"]),
                secs(h["op"]), secs(g["op"]), g["retries"], mib(h["rss"]), mib(g["rss"]),
            ])
            if n in TARGETS and g["time"] == g["time"]:
                got = g["time"] / h["time"]
                verdicts.append(f"{n} agent(s), hif {m}: git/hif {got:.2f}x, target {TARGETS[n]}x: "
                                f"{'met' if got >= TARGETS[n] else 'NOT met'}")
        print(f"  N={n}: " + ", ".join(f"{m} {secs(best[m]['time'])} ({best[m]['calls']} calls)"
                                       for m in [*modes, "git"] if best[m]["calls"]), flush=True)
    print()
    print(table(
        ["agents", "hif", "landings", "hif wall", "git wall", "git/hif", "hif CPU", "git CPU", "git/hif CPU",
         "hif land p50", "git push p50", "git rejected", "hif peak RSS", "git peak RSS"],
        rows,
    ))
    print(f"load after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for v in verdicts:
        print(f"target: {v}")
    print("(wall: all agents' work, start to last finish; CPU: user+sys of every command (warm: with the "
          "server's and its children's); p50: one hif land / one git push incl. rejected retries; peak RSS: "
          "largest single process, a warm command's client)")


if __name__ == "__main__":
    main()

"""A big session: landing F new files through the CLI, and checking that tree out again, hif against git.

Land: a fresh repository whose working copy holds F new files (100 per directory, 10 directories per
top directory, 0.1-2 KiB of made-up text from a seeded RNG; written before timing). hif: ``hif session
start`` + ``hif land``; git: ``git add -A`` + ``git commit``, twice: with git's defaults (no fsync of
loose objects, refs or the index) and with ``core.fsync=committed,index`` and
``core.fsyncMethod=batch`` (objects, refs and index durable, batched: hif's durability).
Checkout: the landed tree into a new directory from the same local store: ``hif workspace add``
against ``git worktree add`` and ``git clone`` of the local repository (hard links, then a checkout).

Each timed command runs once per ``--repeat`` through a small launcher (peak RSS its own), after an
``os.sync()`` (so one tool's write-back is not charged to the next), hif and git interleaved.

Run: ``.venv/bin/python bench/big_session.py [--files 100000] [--repeat 1]``; ``--quick`` is
``--files 10000``. Targets: land <= 2x git add + commit (same durability), checkout <= 1.5x git's.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import HIF, Run, git_env, hif_env, machine, mib, run, run_lean, secs, table, workdir  # noqa: E402

LAND_TARGET = 2.0
CHECKOUT_TARGET = 1.5
GIT_DURABLE = ["-c", "core.fsync=committed,index", "-c", "core.fsyncMethod=batch"]


def write_tree(root: Path, files: int, seed: int = 7) -> int:
    """F files of made-up text under ``root``; returns their total size."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(500)]
    total = 0
    for i in range(files):
        d = root / f"t{i // 1000:03d}" / f"d{i // 100 % 10}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        text = " ".join(rng.choices(words, k=rng.randint(20, 400))).encode() + b"\n"
        (d / f"f{i:06d}.txt").write_bytes(text)
        total += len(text)
    return total


def steps(*runs: Run) -> dict[str, float]:
    """Commands run one after another: wall and CPU add up, peak RSS is the largest."""
    return {"wall": sum(r.seconds for r in runs), "cpu": sum(r.cpu for r in runs),
            "rss": max(r.maxrss_kib for r in runs)}


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> Run:
    os.sync()
    return run_lean(cmd, cwd, env)


def count_hif(cwd: Path, env: dict[str, str]) -> int:
    return len(run([HIF, "ls", "-r"], cwd=cwd, env=env).out.splitlines())


def count_git(cwd: Path, env: dict[str, str]) -> int:
    return len(run(["git", "ls-files"], cwd=cwd, env=env).out.split())


def one_round(base: Path, files: int, tools: list[str], out: dict[str, list[dict[str, float]]]) -> None:
    """Land and check out once with each tool, hif and git interleaved."""
    henv, genv = hif_env(), git_env(base)

    def note(name: str, r: dict[str, float]) -> None:
        out.setdefault(name, []).append(r)

    def check(name: str, n: int) -> None:
        if n != files:
            raise SystemExit(f"{name}: {n} files, expected {files}")

    if "hif" in tools:
        run([HIF, "init", str(base / "h")], cwd=base, env=henv)
        write_tree(base / "h", files)
        ws = base / "h"
        note("hif land", steps(timed([HIF, "session", "start", "big"], ws, henv), timed([HIF, "land"], ws, henv)))
        check("hif land", count_hif(ws, henv))
        note("hif workspace add", steps(timed([HIF, "workspace", "add", str(base / "h-co")], ws, henv)))
        check("hif workspace add", count_hif(base / "h-co", henv))
    for name, extra in (("git", []), ("git durable", GIT_DURABLE)):
        if "git" not in tools:
            continue
        g = base / name.replace(" ", "-")
        run(["git", "init", "-q", "-b", "main", str(g)], cwd=base, env=genv)
        write_tree(g, files)
        note(f"{name} add+commit", steps(timed(["git", *extra, "add", "-A"], g, genv),
                                         timed(["git", *extra, "commit", "-q", "-m", "big"], g, genv)))
        check(name, count_git(g, genv))
        if name == "git":  # the checkouts read the same objects either way
            note("git worktree add", steps(timed(["git", "worktree", "add", "-q", str(base / "g-wt")], g, genv)))
            check("git worktree add", count_git(base / "g-wt", genv))
            note("git clone (local)", steps(timed(["git", "clone", "-q", str(g), str(base / "g-clone")], base, genv)))
            check("git clone", count_git(base / "g-clone", genv))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000, help="new files in the session")
    ap.add_argument("--quick", action="store_true", help="10,000 files")
    ap.add_argument("--repeat", type=int, default=1, help="rounds (interleaved); the best is shown")
    ap.add_argument("--tools", default="hif,git", help="which to run (for profiling one side): hif,git")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    ap.add_argument("--dir", type=Path, default=None, help="where the temporary directories go")
    args = ap.parse_args()
    files = 10_000 if args.quick else args.files
    tools = args.tools.split(",")

    print(f"big_session: {files} new files, best of {args.repeat}; {machine()}; "
          f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    results: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.repeat):
        with workdir("hif-big-", args.keep, args.dir) as d:
            one_round(d, files, tools, results)
    best = {k: min(v, key=lambda r: r["wall"]) for k, v in results.items()}
    rows = [[k, secs(r["wall"]), f"{r['cpu']:.2f} s", mib(int(r["rss"])), f"{files / r['wall']:,.0f}"]
            for k, r in best.items()]
    print()
    print(table(["command", "wall (best)", "CPU", "peak RSS", "files/s"], rows))
    print(f"load after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    def verdict(what: str, hif: str, git: str, target: float) -> None:
        if hif in best and git in best:
            r = best[hif]["wall"] / best[git]["wall"]
            cpu = best[hif]["cpu"] / best[git]["cpu"]
            ok = "met" if r <= target else "NOT met"
            print(f"{what}: hif/{git} wall {r:.2f}x (CPU {cpu:.2f}x); target <= {target}x: {ok}")

    print()
    verdict("land", "hif land", "git durable add+commit", LAND_TARGET)
    verdict("land", "hif land", "git add+commit", LAND_TARGET)
    verdict("checkout", "hif workspace add", "git clone (local)", CHECKOUT_TARGET)
    verdict("checkout", "hif workspace add", "git worktree add", CHECKOUT_TARGET)
    print("(durability: hif syncs every object, event and record before it acknowledges; git by default "
          "syncs none of loose objects, refs or index, 'git durable' syncs all three in one batch)")


if __name__ == "__main__":
    main()

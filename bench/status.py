"""``hif status`` versus ``git status`` on an unchanged working copy of F files.

Set-up (timed, but only reported): F small files in nested directories, written twice (once per tool,
identical); hif: ``hif init``, ``hif session start``, ``hif land``; git: ``git init``, ``git add -A``,
``git commit``. Then each tool's status runs once to settle its cache (hif's stat cache, git's index
refresh), and --runs more times are measured: the warm figures are the median and the best of those.

Run: ``.venv/bin/python bench/status.py [--files 100000] [--runs 5]``.
Target: hif status no slower than git status (ratio git/hif >= 1) on the warm runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import (  # noqa: E402
    HIF,
    Run,
    git_env,
    hif_env,
    machine,
    median,
    mib,
    ratio,
    run,
    secs,
    table,
    workdir,
)

RACY_WAIT = 2.1  # hif distrusts a file modified within 2 s of its stat cache being written


def write_tree(root: Path, files: int, per_dir: int) -> None:
    """F files, ``per_dir`` per leaf directory, leaves grouped 10 to a directory: a/b/f.txt."""
    for i in range(files):
        leaf = i // per_dir
        d = root / f"d{leaf // 10:04d}" / f"s{leaf % 10}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:07d}.txt").write_bytes(f"file {i}\nsome small content\n".encode())


def status_runs(cmd: list[str], cwd: Path, env: dict[str, str], runs: int, check_out: str) -> tuple[Run, list[Run]]:
    first = run(cmd, cwd=cwd, env=env)
    if check_out not in first.out:
        raise SystemExit(f"{' '.join(cmd)}: expected {check_out!r} in:\n{first.out[:2000]}")
    time.sleep(RACY_WAIT)
    warm = [run(cmd, cwd=cwd, env=env) for _ in range(runs)]
    for r in warm:
        if check_out not in r.out:
            raise SystemExit(f"{' '.join(cmd)}: expected {check_out!r} in:\n{r.out[:2000]}")
    return first, warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000, help="files in the working copy")
    ap.add_argument("--per-dir", type=int, default=100, help="files per leaf directory")
    ap.add_argument("--runs", type=int, default=5, help="measured (warm) status runs per tool")
    ap.add_argument("--tools", default="hif,git", help="which to run (for profiling one side): hif,git")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    print(f"status: {args.files} unchanged files, {args.per_dir} per directory; {machine()}", flush=True)
    rows = []
    res: dict[str, tuple[float, Run, list[Run]]] = {}
    with workdir("hif-status-", args.keep) as base:
        if "hif" in args.tools:
            env = hif_env()
            repo = base / "hif"
            run([HIF, "init", str(repo)], cwd=base, env=env)
            write_tree(repo, args.files, args.per_dir)
            t0 = time.perf_counter()
            run([HIF, "session", "start", f"import {args.files} files"], cwd=repo, env=env)
            run([HIF, "land"], cwd=repo, env=env)
            setup = time.perf_counter() - t0
            print(f"  hif: session start + land of {args.files} files took {secs(setup)}", flush=True)
            res["hif"] = (setup, *status_runs([HIF, "status"], repo, env, args.runs, "no changes"))
        if "git" in args.tools:
            env = git_env(base)
            repo = base / "git"
            run(["git", "init", "-q", "-b", "main", str(repo)], cwd=base, env=env)
            write_tree(repo, args.files, args.per_dir)
            t0 = time.perf_counter()
            run(["git", "add", "-A"], cwd=repo, env=env)
            run(["git", "commit", "-q", "-m", f"import {args.files} files"], cwd=repo, env=env)
            setup = time.perf_counter() - t0
            print(f"  git: add + commit of {args.files} files took {secs(setup)}", flush=True)
            res["git"] = (setup, *status_runs(["git", "status"], repo, env, args.runs, "nothing to commit"))

    for tool, (setup, first, warm) in res.items():
        times = [r.seconds for r in warm]
        rows.append([tool, secs(setup), secs(first.seconds), secs(median(times)), secs(min(times)),
                     f"{median([r.cpu for r in warm]) * 1000:.0f} ms", mib(max(r.maxrss_kib for r in [first, *warm]))])
    print()
    print(table(["tool", "set-up", "status 1st", "status warm p50", "warm best", "warm CPU p50", "peak RSS"], rows))
    if "hif" in res and "git" in res:
        h = median([r.seconds for r in res["hif"][2]])
        g = median([r.seconds for r in res["git"][2]])
        verdict = "met" if g / h >= 1 else "NOT met"
        print(f"\nratio git/hif (warm p50): {ratio(g, h)}; target >= 1x (hif no slower than git): {verdict}")
    print("(1st: right after set-up, may refresh the cache; warm: after that and a 2 s pause; "
          "peak RSS of the status process, from wait4)")


if __name__ == "__main__":
    main()

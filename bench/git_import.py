"""``hif import git`` against git's own ways of copying a history.

Set-up (timed, only reported): a git repository of C commits over F files, written by
``git fast-import`` from a seeded generator: a first commit adding all F files (text, 0.2-2 KiB, in
directories of 100 under 20 top directories), then commits changing 1-5 files each (some add, delete,
rename or flip the executable bit), and every 100 commits a two-commit side branch merged back, so
the history has merges (C counts every commit, merged-in ones included). It is repacked (``git gc``)
like a served repository.

Timed, each one subprocess from start to exit (through a small launcher, so the peak memory is the
command's own):

- ``git fast-export --reencode=no --show-original-ids main | git fast-import`` into an empty bare
  repository (the target's reference: the same stream-based copy of the history, no checkout);
- ``git clone --no-local`` of the repository (history and a checkout of the files);
- ``hif import git SRC DIR --no-checkout`` (history only, like fast-export | fast-import), and
- ``hif import git SRC DIR`` (history and checkout, like the clone), each into a fresh directory.

Run: ``.venv/bin/python bench/git_import.py [--commits 5000] [--files 20000]``; a smoke run:
``--commits 500 --files 2000`` (under a minute).
Target: hif import (history only) within 3x of fast-export | fast-import (ratio hif/git <= 3).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
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
    run_lean,
    secs,
    table,
    workdir,
)

TARGET = 3.0
T0 = 1_600_000_000
WORDS = [f"w{i}" for i in range(4000)] + ["the", "a", "of", "to", "and", "in", "is", "it"] * 50

# -- the repository ------------------------------------------------------------------------------


def file_name(i: int) -> str:
    leaf = i // 100
    return f"d{leaf // 10:03d}/s{leaf % 10}/f{i:06d}.txt"


def stream(commits: int, files: int, seed: int) -> Iterator[bytes]:
    """A fast-import stream of ``commits`` commits (merged-in ones included) over ``files`` files."""
    rng = random.Random(seed)
    names = [file_name(i) for i in range(files)]
    live = set(range(len(names)))
    mark = 0
    t = T0

    def content() -> bytes:
        words = rng.choices(WORDS, k=rng.randint(25, 280))
        lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
        return ("\n".join(lines) + "\n").encode()

    def data(raw: bytes) -> bytes:
        return b"data %d\n%s\n" % (len(raw), raw)

    def header(ref: str, message: str) -> bytes:
        nonlocal mark, t
        mark += 1
        t += 60
        who = b"Bench Author <bench@example.org> %d +0000" % t
        return (b"commit %s\nmark :%d\nauthor %s\ncommitter %s\n" % (ref.encode(), mark, who, who)
                + data(message.encode()))

    def edits() -> bytes:
        out = []
        for _ in range(rng.randint(1, 5)):
            roll = rng.random()
            i = rng.choice(tuple(live)) if roll > 0.03 else None
            if roll < 0.02:  # a new file
                names.append(file_name(len(names)))
                live.add(len(names) - 1)
                out.append(b"M 100644 inline %s\n" % names[-1].encode() + data(content()))
            elif roll < 0.03 and len(live) > 1:  # a deletion
                j = rng.choice(tuple(live))
                live.discard(j)
                out.append(b"D %s\n" % names[j].encode())
            elif roll < 0.04 and i is not None:  # a rename: delete + add
                live.discard(i)
                names.append(names[i].replace(".txt", "-moved.txt"))
                live.add(len(names) - 1)
                out.append(b"D %s\nM 100644 inline %s\n" % (names[i].encode(), names[-1].encode())
                           + data(content()))
            elif i is not None:
                mode = b"100755" if roll < 0.05 else b"100644"
                out.append(b"M %s inline %s\n" % (mode, names[i].encode()) + data(content()))
        return b"".join(out)

    yield header("refs/heads/main", "Initial import\n")
    for i in range(files):
        yield b"M 100644 inline %s\n" % names[i].encode() + data(content())
    yield b"\n"
    done = 1
    main_mark = mark
    while done < commits:
        if done % 100 == 99 and commits - done >= 3:  # a side branch of two commits, merged
            fork = main_mark
            yield header("refs/heads/side", f"Side work {done}\n\nOn a branch.\n") + b"from :%d\n" % fork + edits() + b"\n"
            first = mark
            yield header("refs/heads/side", f"Side work {done + 1}\n") + b"from :%d\n" % first + edits() + b"\n"
            side = mark
            yield (header("refs/heads/main", f"Merge side work {done}\n") + b"from :%d\nmerge :%d\n"
                   % (main_mark, side) + edits() + b"\n")
            main_mark = mark
            done += 3
            continue
        yield header("refs/heads/main", f"Change {done}\n\nWhy: benchmark history.\n") + (
            b"from :%d\n" % main_mark) + edits() + b"\n"
        main_mark = mark
        done += 1


def generate(path: Path, commits: int, files: int, seed: int, env: dict[str, str]) -> None:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=env)
    p = subprocess.Popen(["git", "fast-import", "--quiet"], cwd=path, env=env, stdin=subprocess.PIPE)
    assert p.stdin is not None
    for chunk in stream(commits, files, seed):
        p.stdin.write(chunk)
    p.stdin.close()
    if p.wait() != 0:
        raise SystemExit("git fast-import failed while generating the repository")
    subprocess.run(["git", "branch", "-q", "-D", "side"], cwd=path, env=env, check=False)
    subprocess.run(["git", "gc", "-q", "--prune=now"], cwd=path, env=env, check=True)
    subprocess.run(["git", "reset", "-q", "--hard"], cwd=path, env=env, check=True)


# -- the runs ------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", type=int, default=5000, help="commits in all (merged-in ones included)")
    ap.add_argument("--files", type=int, default=20000, help="files of the first commit")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each command (best and median)")
    ap.add_argument("--tools", default="fast-export,clone,hif,hif-checkout",
                    help="which to run: fast-export,clone,hif,hif-checkout")
    ap.add_argument("--work", default=None, help="keep the generated repository here and reuse it")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--generate", default=None, help=argparse.SUPPRESS)  # internal: the set-up alone
    args = ap.parse_args()
    tools = args.tools.split(",")
    if args.generate:  # in its own process, so this one stays small (see _util.run_lean)
        generate(Path(args.generate), args.commits, args.files, args.seed, git_env(Path(args.generate).parent))
        return

    print(f"git import: {args.commits} commits over {args.files} files; {machine()}", flush=True)
    with workdir("hif-git-import-", args.keep) as base:
        genv = git_env(base)
        src = base / "src"
        if args.work:
            src = Path(args.work).absolute() / f"src-{args.commits}-{args.files}-{args.seed}"
        if not (src / ".git").exists():
            t0 = time.perf_counter()
            shutil.rmtree(src, ignore_errors=True)
            src.parent.mkdir(parents=True, exist_ok=True)
            run([sys.executable, __file__, "--generate", str(src), "--commits", str(args.commits),
                 "--files", str(args.files), "--seed", str(args.seed)], cwd=base, env=genv)
            print(f"  generated the repository with git fast-import + gc in {secs(time.perf_counter() - t0)}",
                  flush=True)
        count = int(subprocess.run(["git", "rev-list", "--count", "main"], cwd=src, env=genv,
                                   capture_output=True, text=True, check=True).stdout)
        chain = int(subprocess.run(["git", "rev-list", "--count", "--first-parent", "main"], cwd=src,
                                   env=genv, capture_output=True, text=True, check=True).stdout)
        tip = subprocess.run(["git", "rev-parse", "main"], cwd=src, env=genv, capture_output=True,
                             text=True, check=True).stdout.strip()
        size = sum(f.stat().st_size for f in (src / ".git").rglob("*") if f.is_file())
        print(f"  {count} commits ({chain} on the first-parent chain), .git {mib(size // 1024)}", flush=True)

        results: dict[str, list[Run]] = {t: [] for t in tools}
        henv = hif_env()
        for rep in range(args.repeat):
            for tool in tools:
                dest = base / f"{tool}-{rep}"
                os.sync()  # the previous run's write-back is not charged to this one
                if tool == "fast-export":
                    subprocess.run(["git", "init", "-q", "--bare", str(dest)], env=genv, check=True)
                    r = run_lean(["git", "-C", str(src), "fast-export", "--reencode=no", "--show-original-ids",
                                  "main", "--|--", "git", "-C", str(dest), "fast-import", "--quiet"],
                                 cwd=base, env=genv)
                elif tool == "clone":
                    r = run_lean(["git", "clone", "-q", "--no-local", str(src), str(dest)], cwd=base, env=genv)
                else:
                    extra = [] if tool == "hif-checkout" else ["--no-checkout"]
                    r = run_lean([HIF, "import", "git", str(src), str(dest), "--json", *extra], cwd=base, env=henv)
                    doc = json.loads(r.out)
                    if doc["position"] != chain or doc["tip"] != tip or doc["commits"] != count:
                        raise SystemExit(f"hif import did not import everything: {doc}")
                results[tool].append(r)
                print(f"  {tool:<12} run {rep + 1}: {secs(r.seconds)} wall, {secs(r.cpu)} CPU, "
                      f"{mib(r.maxrss_kib)} peak", flush=True)
                shutil.rmtree(dest, ignore_errors=True)

    labels = {"fast-export": "git fast-export | fast-import", "clone": "git clone --no-local",
              "hif": "hif import git --no-checkout", "hif-checkout": "hif import git"}
    ref = median([r.seconds for r in results.get("fast-export", [])])
    ref_cpu = median([r.cpu for r in results.get("fast-export", [])])
    rows = []
    for tool, runs in results.items():
        wall = median([r.seconds for r in runs])
        cpu = median([r.cpu for r in runs])
        rows.append([labels[tool], secs(min(r.seconds for r in runs)), secs(wall), secs(cpu),
                     mib(max(r.maxrss_kib for r in runs)), f"{count / wall:,.0f}",
                     ratio(wall, ref) if "fast-export" in results else "n/a",
                     ratio(cpu, ref_cpu) if "fast-export" in results else "n/a"])
    print()
    print(table(["command", "best", "wall p50", "CPU p50", "peak RSS", "commits/s", "wall / fe|fi",
                 "CPU / fe|fi"], rows))
    if "clone" in results and "hif-checkout" in results:
        c = median([r.seconds for r in results["clone"]])
        h = median([r.seconds for r in results["hif-checkout"]])
        print(f"\nhif import git (with checkout) / git clone --no-local: {ratio(h, c)}")
    if "fast-export" in results and "hif" in results:
        h = median([r.seconds for r in results["hif"]])
        verdict = "met" if h / ref <= TARGET else "NOT met"
        print(f"hif import git (history only) / fast-export | fast-import: {ratio(h, ref)}; "
              f"target <= {TARGET:.0f}x: {verdict}")
    print("(wall: start to exit of one subprocess; CPU: user + system of it and its children; peak RSS: "
          "the largest process, from wait4)")


if __name__ == "__main__":
    main()

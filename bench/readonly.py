"""Read-only commands on a small repository: ``hif log/show/status/diff/cat/ls/blame`` against git's.

A repository of 20 small files landed in 5 sessions (git: 5 commits of the same), one file changed
in the working copy (so ``diff`` and ``status`` have something to say). Each command runs ``--runs``
times, hif's and git's interleaved so a change in the machine's load hits both; reported: wall (median
and best), CPU (user + system, median, from ``wait4``) and peak RSS. With ``--callgrind`` each command
also runs once under ``valgrind --tool=callgrind`` for its instruction count, which the machine's
other load does not move (the steadiest figure on a shared machine).

Each hif command runs twice per round: plain (a cold process, ``HIF_NO_SERVER=1``) and warm (through
a warm command server started for the run: ``hif server start``); the warm command's CPU is its
client's plus what the server and its forked child spent (the server's ``/proc`` counters).

Run: ``.venv/bin/python bench/readonly.py [--runs 15] [--callgrind]``. Target: every hif command
<= 60 ms wall (judged on the warm path, the default when a server runs).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
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
    run,
    run_lean,
    secs,
    table,
    warm_server,
    workdir,
)

TARGET = 0.060
with open(HIF, "rb") as _script:  # the interpreter the hif command starts: the floor of a command
    _first = _script.readline()
PYTHON = _first[2:].decode().strip() if _first.startswith(b"#!") else sys.executable
COMMANDS = [  # (label, hif argv, git argv)
    ("log -n 5", ["log", "-n", "5"], ["log", "-n", "5"]),
    ("show 1", ["show", "1"], ["show", "HEAD~4"]),
    ("status", ["status"], ["status"]),
    ("diff", ["diff"], ["diff"]),
    ("cat", ["cat", "d1/f01.txt"], ["show", "HEAD:d1/f01.txt"]),
    ("ls", ["ls"], ["ls-tree", "HEAD"]),
    ("blame", ["blame", "d1/f01.txt"], ["blame", "d1/f01.txt"]),
]


def build(base: Path) -> tuple[Path, Path, dict[str, str], dict[str, str]]:
    henv, genv = hif_env(), git_env(base)
    h, g = base / "h", base / "g"
    run([HIF, "init", str(h)], cwd=base, env=henv)
    run(["git", "init", "-q", "-b", "main", str(g)], cwd=base, env=genv)
    for s in range(5):
        run([HIF, "session", "start", f"session {s}"], cwd=h, env=henv)
        for root in (h, g):
            for i in range(4):
                f = root / f"d{i % 2}" / f"f{s * 4 + i:02d}.txt"
                f.parent.mkdir(exist_ok=True)
                f.write_text(f"line {s} {i}\n" * (5 + i))
            if s:  # later sessions also change a line of an earlier file (blame has history)
                with (root / "d1" / "f01.txt").open("a") as fh:
                    fh.write(f"added in {s}\n")
        run([HIF, "land"], cwd=h, env=henv)
        run(["git", "add", "-A"], cwd=g, env=genv)
        run(["git", "commit", "-q", "-m", f"session {s}"], cwd=g, env=genv)
    for root in (h, g):  # a change in the working copy
        with (root / "d0" / "f00.txt").open("a") as fh:
            fh.write("changed\n")
    return h, g, henv, genv


def callgrind(cmd: list[str], cwd: Path, env: dict[str, str]) -> int:
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=300).stderr
    m = re.search(r"Collected : (\d+)", out)
    return int(m.group(1)) if m else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15, help="runs of each command (interleaved)")
    ap.add_argument("--callgrind", action="store_true", help="also count instructions (valgrind)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    if args.callgrind and not shutil.which("valgrind"):
        raise SystemExit("--callgrind needs valgrind")
    print(f"readonly: {args.runs} runs each, interleaved; {machine()}; "
          f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    with workdir("hif-readonly-", args.keep) as base, warm_server(base) as server:
        h, g, henv, genv = build(base)
        wenv = hif_env(server=server.dir)
        runs: dict[tuple[str, str], list[Run]] = {}
        server_cpu: dict[str, float] = {}
        for _label, hcmd, gcmd in COMMANDS:  # warm: byte code compiled, caches settled
            run_lean([HIF, *hcmd], h, henv)
            run_lean([HIF, *hcmd], h, wenv)
            run_lean(["git", *gcmd], g, genv)
        for _ in range(args.runs):
            for label, hcmd, gcmd in COMMANDS:
                runs.setdefault((label, "hif"), []).append(run_lean([HIF, *hcmd], h, henv))
                before = server.cpu()
                runs.setdefault((label, "warm"), []).append(run_lean([HIF, *hcmd], h, wenv))
                server_cpu[label] = server_cpu.get(label, 0.0) + server.cpu() - before
                runs.setdefault((label, "git"), []).append(run_lean(["git", *gcmd], g, genv))
        rows, worst, worst_plain = [], 0.0, 0.0
        floor = [run_lean([PYTHON, "-c", "pass"], base, henv) for _ in range(args.runs)]
        for label, hcmd, gcmd in COMMANDS:
            hr, wr, gr = runs[(label, "hif")], runs[(label, "warm")], runs[(label, "git")]
            for r in hr + wr:
                if r.out != hr[0].out:
                    raise SystemExit(f"hif {label}: the warm and plain outputs differ:\n{hr[0].out}\n{r.out}")
            hw, ww = median([r.seconds for r in hr]), median([r.seconds for r in wr])
            worst, worst_plain = max(worst, ww), max(worst_plain, hw)
            row = [f"hif {label}", secs(hw), secs(ww), secs(min(r.seconds for r in wr)),
                   secs(median([r.cpu for r in hr])), secs(median([r.cpu for r in wr]) + server_cpu[label] / args.runs),
                   mib(max(r.maxrss_kib for r in hr)), mib(max(r.maxrss_kib for r in wr)),
                   secs(median([r.seconds for r in gr])), secs(median([r.cpu for r in gr]))]
            if args.callgrind:
                row += [f"{callgrind([HIF, *hcmd], h, henv) / 1e6:.0f} M",
                        f"{callgrind([HIF, *hcmd], h, wenv) / 1e6:.0f} M",
                        f"{callgrind(['git', *gcmd], g, genv) / 1e6:.1f} M"]
            rows.append(row)
        rows.append(["python -c pass", secs(median([r.seconds for r in floor])), "",
                     secs(min(r.seconds for r in floor)), secs(median([r.cpu for r in floor])), "",
                     mib(max(r.maxrss_kib for r in floor)), "", "", "",
                     *([f"{callgrind([PYTHON, '-c', 'pass'], base, henv) / 1e6:.0f} M", "", ""]
                       if args.callgrind else [])])
    heads = ["command", "plain wall p50", "warm wall p50", "warm best", "plain CPU", "warm CPU",
             "plain RSS", "client RSS", "git wall p50", "git CPU p50"]
    print()
    print(table(heads + (["plain instr.", "warm client instr.", "git instr."] if args.callgrind else []), rows))
    print(f"load after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    verdict = "met" if worst <= TARGET else "NOT met"
    print(f"\ntarget: every hif command <= {TARGET * 1000:.0f} ms wall (median): {verdict} on the warm path "
          f"(slowest {secs(worst)}; plain path slowest {secs(worst_plain)})")
    print("(warm CPU: the client's and the server's with its forked child; callgrind counts the client only)")


if __name__ == "__main__":
    main()

"""``hif agent hook`` per event type versus git doing the equivalent bookkeeping.

A coding agent runs the hook at every prompt, every file edit and the end of every turn, and waits
for it: it must cost well under 100 ms. For each event type the same record is kept with git, the
way a git-based recorder would (``git notes append`` for a text, ``git hash-object -w`` then
``git notes append`` for a file write), in a repository with one commit. Calls of both tools are
interleaved (hif, git, hif, git...), so a change of load on the shared machine hits both.

Events (Claude Code's hook inputs, as in tests/agents): ``prompt`` (UserPromptSubmit, the session
already open), ``write`` (PostToolUse of a Write: the file read, its blob stored, a write event),
``todo`` (PostToolUse of a TodoWrite: a note), ``stop`` (Stop: the reply read from the new tail of a
transcript that grew by a few lines), and ``outside`` (a call in a directory that is no working copy:
the floor, Python's start-up and the hook's imports).

Run: ``.venv/bin/python bench/agent_hook.py [--runs 30]``. Target: p95 well under 100 ms per call.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import ROOT, git_env, hif_env, machine, mib, table, workdir  # noqa: E402

HIF = [sys.executable, "-m", "hif"]


class Child:
    """Runs a command fed ``data`` on stdin and reports (wall s, CPU s, peak RSS KiB) of it alone."""

    @staticmethod
    def run(cmd: list[str], cwd: Path, env: dict[str, str], data: bytes = b"") -> tuple[float, float, int]:
        r, w = os.pipe()
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child: stdin from the pipe, output discarded, then exec
            os.dup2(r, 0)
            os.close(r)
            os.close(w)
            null = os.open(os.devnull, os.O_WRONLY)
            out = os.open(str(cwd.parent / "bench-stdout"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(out, 1)
            os.dup2(null, 2)
            os.chdir(cwd)
            os.execvpe(cmd[0], cmd, env)
        os.close(r)
        os.write(w, data)
        os.close(w)
        _, status, ru = os.wait4(pid, 0)
        took = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {os.waitstatus_to_exitcode(status)}")
        return took, ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="calls per event type and tool")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    with workdir("hif-bench-hook-", args.keep) as tmp:
        wc, repo, outside = tmp / "wc", tmp / "git", tmp / "outside"
        for d in (wc, repo, outside):
            d.mkdir()
        henv = {**hif_env("ana"), "PYTHONPATH": str(ROOT), "HIF_CONFIG_DIR": str(tmp / "cfg")}
        genv = git_env(tmp / "home")
        subprocess.run([*HIF, "init"], cwd=wc, env=henv, check=True, capture_output=True)
        subprocess.run([*HIF, "session", "start", "bench"], cwd=wc, env=henv, check=True, capture_output=True)
        for cmd in (["git", "init", "-q"], ["git", "commit", "-q", "--allow-empty", "-m", "base"]):
            subprocess.run(cmd, cwd=repo, env=genv, check=True)
        transcript = tmp / "t.jsonl"
        transcript.write_text("")
        common = {"session_id": "bench", "transcript_path": str(transcript), "cwd": str(wc)}
        text = "Please refactor the parser so that it streams its input; keep the public API. " * 3

        def hook_input(kind: str, i: int) -> bytes:
            if kind == "prompt":
                d = {**common, "hook_event_name": "UserPromptSubmit", "prompt": f"{text} ({i})"}
            elif kind == "write":
                (wc / "src.py").write_text(f"x = {i}\n" * 200)
                d = {**common, "hook_event_name": "PostToolUse", "tool_name": "Write", "tool_use_id": f"t{i}",
                     "tool_input": {"file_path": str(wc / "src.py")}}
            elif kind == "todo":
                d = {**common, "hook_event_name": "PostToolUse", "tool_name": "TodoWrite", "tool_use_id": f"t{i}",
                     "tool_input": {"todos": [{"content": f"step {j}", "status": "pending"} for j in range(8)]}}
            else:
                with open(transcript, "a") as f:
                    for j in range(5):
                        f.write(json.dumps({"type": "assistant", "message": {"model": "m", "content": [
                            {"type": "text", "text": f"{text} {i}.{j}"}]}}) + "\n")
                d = {**common, "hook_event_name": "Stop", "stop_hook_active": False}
            return json.dumps(d).encode()

        def git_calls(kind: str, i: int) -> list[tuple[list[str], bytes]]:
            note = ["git", "notes", "--ref=agent", "append", "-m", f"{kind} {text} ({i})", "HEAD"]
            if kind == "write":
                (repo / "src.py").write_text(f"x = {i}\n" * 200)
                return [(["git", "hash-object", "-w", "src.py"], b""), (note, b"")]
            return [(note, b"")]

        events = {"prompt": "UserPromptSubmit", "write": "PostToolUse", "todo": "PostToolUse", "stop": "Stop",
                  "outside": "UserPromptSubmit"}
        rows = []
        for kind, event in events.items():
            h_wall, h_cpu, g_wall, g_cpu, h_rss, g_rss = [], [], [], [], 0, 0
            for i in range(args.runs):
                cwd = outside if kind == "outside" else wc
                data = hook_input("prompt" if kind == "outside" else kind, i)
                if kind == "outside":
                    data = json.dumps({**json.loads(data), "cwd": str(outside)}).encode()
                wall, cpu, rss = Child.run([*HIF, "agent", "hook", "claude-code", event], cwd, henv, data)
                h_wall.append(wall)
                h_cpu.append(cpu)
                h_rss = max(h_rss, rss)
                w = c = 0.0
                for cmd, stdin in git_calls(kind, i):
                    wall, cpu, rss = Child.run(cmd, repo, genv, stdin)
                    w, c, g_rss = w + wall, c + cpu, max(g_rss, rss)
                g_wall.append(w)
                g_cpu.append(c)
            rows.append([kind, f"{pct(h_wall, .5) * 1000:.1f}", f"{pct(h_wall, .95) * 1000:.1f}",
                         f"{pct(h_cpu, .5) * 1000:.0f}", f"{pct(g_wall, .5) * 1000:.1f}",
                         f"{pct(g_wall, .95) * 1000:.1f}", f"{pct(g_cpu, .5) * 1000:.0f}",
                         f"{pct(h_wall, .5) / pct(g_wall, .5):.1f}x", mib(h_rss), mib(g_rss)])
        log = wc / ".hif" / "agent-hook.log"
        if log.exists():
            raise SystemExit(f"the hook logged failures:\n{log.read_text()}")
        events_kept = len(json.loads(subprocess.run([*HIF, "session", "show", "--json"], cwd=wc, env=henv,
                                                    check=True, capture_output=True).stdout)["session"]["events"])
        print(table(["event", "hif p50 ms", "hif p95 ms", "hif CPU p50 ms", "git p50 ms", "git p95 ms",
                     "git CPU p50 ms", "hif/git p50", "hif peak RSS", "git peak RSS"], rows))
        print(f"{events_kept} events in the session after {args.runs} calls of each kind; "
              f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""Shared helpers for the benchmarks: running a command with its own peak memory, timing, tables.

Peak memory of a subprocess is taken from ``os.wait4`` (the child's rusage, in KiB on Linux), so two
tools run in one benchmark process never mix their figures (``RUSAGE_CHILDREN`` would only give the
largest child of the whole run).
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HIF = str(ROOT / ".venv" / "bin" / "hif")
if not os.path.exists(HIF):  # an installed hif on PATH, e.g. outside the dev checkout
    HIF = shutil.which("hif") or HIF
HIF = os.environ.get("HIF_BENCH_BIN", HIF)  # e.g. a wrapper that profiles each call


class CommandFailed(RuntimeError):
    pass


@dataclass
class Run:
    rc: int
    out: str
    maxrss_kib: int
    seconds: float
    cpu: float  # user + system seconds of the process (and the children it waited for)


def run(cmd: Sequence[str], cwd: str | os.PathLike[str], env: dict[str, str] | None = None,
        check: bool = True) -> Run:
    """Run ``cmd`` (stdout and stderr merged) and return its exit code, output and peak RSS."""
    t0 = time.perf_counter()
    p = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.stdout is not None
    out = p.stdout.read()
    p.stdout.close()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = rc = os.waitstatus_to_exitcode(status)  # tell Popen the child is reaped
    took = time.perf_counter() - t0
    text = out.decode("utf-8", "replace")
    if check and rc != 0:
        raise CommandFailed(f"{' '.join(cmd)} (in {cwd}) exited {rc}:\n{text}")
    return Run(rc, text, ru.ru_maxrss, took, ru.ru_utime + ru.ru_stime)


class Stats:
    """Calls, CPU seconds and peak memory of one tool's commands (thread-safe)."""

    def __init__(self) -> None:
        self.maxrss_kib = 0
        self.calls = 0
        self.cpu = 0.0
        self._lock = threading.Lock()

    def add(self, r: Run) -> Run:
        with self._lock:
            self.calls += 1
            self.cpu += r.cpu
            self.maxrss_kib = max(self.maxrss_kib, r.maxrss_kib)
        return r


# A child's ru_maxrss starts from its parent's high-water mark (kept across exec), so commands are
# spawned by this small launcher (``python -S``, ~8 MiB): peak RSS and CPU of the command alone, and
# for a pipeline (argv split at ``--|--``) the larger peak and the summed CPU of both sides.
_SPAWN = """
import os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
if "--|--" in argv:
    i = argv.index("--|--")
    r, w = os.pipe()
    a = os.posix_spawnp(argv[0], argv[:i], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, w, 1),
                        (os.POSIX_SPAWN_CLOSE, r), (os.POSIX_SPAWN_CLOSE, w)])
    b = os.posix_spawnp(argv[i + 1], argv[i + 1:], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, r, 0),
                        (os.POSIX_SPAWN_CLOSE, r), (os.POSIX_SPAWN_CLOSE, w)])
    os.close(r)
    os.close(w)
    pids = [a, b]
else:
    pids = [os.posix_spawnp(argv[0], argv, os.environ)]
rss, cpu, code = 0, 0.0, 0
for pid in pids:
    _, status, ru = os.wait4(pid, 0)
    rss, cpu = max(rss, ru.ru_maxrss), cpu + ru.ru_utime + ru.ru_stime
    code = code or os.waitstatus_to_exitcode(status)
took = time.perf_counter() - t0
with open(out, "w") as f:
    f.write(f"{rss} {cpu} {took}")
sys.exit(code & 255)
"""


def run_lean(cmd: list[str], cwd: Path, env: dict[str, str]) -> Run:
    """``run(cmd)`` through the launcher: peak RSS, CPU and wall time of ``cmd`` alone."""
    fd, result = tempfile.mkstemp(prefix="hif-bench-rusage-")
    os.close(fd)
    try:
        r = run([sys.executable, "-S", "-c", _SPAWN, result, *cmd], cwd=cwd, env=env)
        rss, cpu, took = Path(result).read_text().split()
    finally:
        os.unlink(result)
    return Run(r.rc, r.out, int(rss), float(took), float(cpu))



_SPAWNER = r"""
import json, os, subprocess, sys, time
for line in sys.stdin:
    req = json.loads(line)
    t0 = time.perf_counter()
    p = subprocess.Popen(req["cmd"], cwd=req["cwd"], env=req["env"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read()
    p.stdout.close()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = rc = os.waitstatus_to_exitcode(status)
    doc = {"rc": rc, "out": out.decode("utf-8", "replace"), "kib": ru.ru_maxrss,
           "s": time.perf_counter() - t0, "cpu": ru.ru_utime + ru.ru_stime}
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()
"""


class Spawner:
    """Runs commands from a small helper process, one at a time.

    Linux carries a process's memory high-water mark into a child it forks across ``exec``, so a
    command started by a benchmark that has grown big reports the benchmark's peak, not its own.
    Start a Spawner while the benchmark is still small and run the measured commands through it.
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _SPAWNER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        atexit.register(self.close)

    def run(self, cmd: Sequence[str], cwd: str | os.PathLike[str], env: dict[str, str] | None = None,
            check: bool = True) -> Run:
        import json

        assert self.proc.stdin is not None and self.proc.stdout is not None
        req = {"cmd": list(cmd), "cwd": str(cwd), "env": env if env is not None else dict(os.environ)}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        doc = json.loads(self.proc.stdout.readline())
        if check and doc["rc"] != 0:
            raise CommandFailed(f"{' '.join(cmd)} (in {cwd}) exited {doc['rc']}:\n{doc['out']}")
        return Run(doc["rc"], doc["out"], doc["kib"], doc["s"], doc["cpu"])

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


def self_maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def secs(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


@contextmanager
def workdir(prefix: str, keep: bool = False, parent: Path | None = None) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield d
    finally:
        if keep:
            print(f"(kept {d})", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)


def git_env(home: Path) -> dict[str, str]:
    """A git environment independent of the user's configuration."""
    env = dict(os.environ)
    env.update({
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
        "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost",
        "GIT_TERMINAL_PROMPT": "0",
    })
    return env


_PYC_DIR = tempfile.mkdtemp(prefix="hif-bench-pyc-")


def _drop_pyc_dir() -> None:
    shutil.rmtree(_PYC_DIR, ignore_errors=True)


atexit.register(_drop_pyc_dir)


def hif_env(author: str = "bench", server: Path | None = None) -> dict[str, str]:
    """The environment for ``hif`` subprocesses. Byte code is cached (in a temporary directory, so
    nothing is written to the checkout) even if PYTHONDONTWRITEBYTECODE is set: an installed hif has
    its .pyc files, and compiling every module on every call would measure the compiler instead.
    Without ``server`` (a socket directory of :func:`warm_server`) the warm command server is off:
    each command is a cold process, and no benchmark leaves a server behind."""
    env = dict(os.environ)
    env.update({"HIF_AUTHOR": author, "HIF_ROLE": "agent", "PYTHONPYCACHEPREFIX": _PYC_DIR})
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("HIF_DEBUG", None)
    env.update({"HIF_NO_SERVER": "", "HIF_SERVER_DIR": str(server)} if server else {"HIF_NO_SERVER": "1"})
    return env


@dataclass
class WarmServer:
    dir: Path  # the socket directory, for :func:`hif_env`
    pid: int

    def cpu(self) -> float:
        """CPU seconds (user + system) of the server and of the commands it has run and reaped so
        far: a warm command's CPU is its client's plus this one's growth (in clock ticks, 10 ms)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def served(self) -> int:
        """Commands the server has run, ``hif server status`` asking it included."""
        doc = json.loads(run([HIF, "server", "status", "--json"], cwd=self.dir, env=hif_env(server=self.dir)).out)
        return next(int(s["served"]) for s in doc["servers"] if s.get("current"))


@contextmanager
def warm_server(base: Path) -> Iterator[WarmServer]:
    """A warm command server (``hif server start``) with its own socket directory under ``base``,
    stopped and awaited at the end."""
    d = base / "hif-server"
    d.mkdir(mode=0o700)
    env = hif_env(server=d)
    info = json.loads(run([HIF, "server", "start", "--json"], cwd=base, env=env).out)
    try:
        yield WarmServer(d, int(info["pid"]))
    finally:
        run([HIF, "server", "stop"], cwd=base, env=env, check=False)
        deadline = time.monotonic() + 60
        while list(d.glob("*.sock")) and time.monotonic() < deadline:
            time.sleep(0.05)


def machine() -> str:
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} CPU(s), Python {sys.version.split()[0]}, {git}"


def vm_hwm_kib(pid: int) -> int:
    """Peak resident memory of a running process (``VmHWM``), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def serve_node(store: Path, base: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``micelio serve`` over ``store`` on a free loopback port (log and cache under ``base``),
    once it answers ``/healthz``; the caller terminates it."""
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    micelio = str(Path(HIF).parent / "micelio")
    log = open(base / "node.log", "wb")  # noqa: SIM115 - the node keeps it
    node = subprocess.Popen([micelio, "serve", "--store", str(store), "--port", str(port),
                             "--cache-dir", str(base / "node-cache")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return node, url

"""The forge API: ``hif clone`` over HTTP versus ``git clone``, and landing through the API versus in-process.

Clone: a repository of F files (100 per directory, 1-4 KiB of text each) and S landed sessions (the
first adds every file, each later one changes 1-5 files), served by ``micelio serve`` over an embedded
store; the same content and history as S git commits, served by ``git daemon`` and by
``git http-backend`` behind a small loopback HTTP server (git's smart HTTP). Each clone is a
subprocess timed from start to exit; the clones are checked against each other (every file).

Landing: C clients land L sessions of one new small file each (distinct paths), (a) in-process: C
asyncio tasks calling ``hif.landing.land`` on an embedded store in one process, (b) through the API: C
threads with one httpx client each against ``micelio serve``, in two ways: the step-by-step flow a
streaming client uses (start session, objects/put, events, land: four requests per landing) and the
one-request route for a session made offline (``POST .../land`` with goal, objects and events).

Set-up (the fixture, not timed) is built with the plumbing and ``git fast-import`` and cached under
``--work DIR`` when given. Everything listens on 127.0.0.1 only.

Run: ``.venv/bin/python bench/api.py [--files 10000] [--sessions 1000] [--clients 32] [--landings 200]``.
Targets: hif clone no slower than git clone (ratio git/hif >= 1); landing throughput through the API at
32 clients at least 0.8x the in-process figure in four requests and 0.9x in one (issue 20).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

if TYPE_CHECKING:
    import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import (  # noqa: E402
    HIF,
    ROOT,
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
from land_concurrent import concurrently  # noqa: E402

MICELIO = str(ROOT / ".venv" / "bin" / "micelio")
if not os.path.exists(MICELIO):  # an installed micelio on PATH
    MICELIO = shutil.which("micelio") or MICELIO
MICELIO = os.environ.get("MICELIO_BENCH_BIN", MICELIO)  # e.g. a wrapper that profiles the node

REPO = "bench/big"
USER = "bench"
GIT_NAME = "big.git"
FIXTURE_FORMAT = 1  # bump when the fixture's content or layout changes: cached fixtures are rebuilt
PER_DIR = 100
CLONE_TARGET = 1.0
# issue 20's targets at 32 clients: the four-request flow and the one-request route against in-process
LAND_TARGETS = {"API, 4 requests each": 0.8, "API, 1 request each": 0.9}
START_TIMEOUT = 30.0
CBOR = "application/cbor"
TICK = os.sysconf("SC_CLK_TCK")


# -- fixture content ---------------------------------------------------------------------------


def file_path(i: int) -> str:
    return f"d{i // PER_DIR:03d}/f{i % PER_DIR:03d}.txt"


class Text:
    """Deterministic, varied text: lines of words from a made-up vocabulary (so files differ)."""

    def __init__(self, rng: random.Random) -> None:
        syll = ["ka", "lo", "mi", "ne", "tor", "us", "an", "el", "ri", "po", "sa", "ve", "qu", "dim",
                "ex", "ar", "zo", "fi", "gra", "hem", "ix", "jo", "pel", "wu"]
        self.rng = rng
        self.words = ["".join(rng.choices(syll, k=rng.randint(1, 4))) for _ in range(4000)]
        self.words += ["(", ")", "=", "return", "if", "for", "{", "}", "0", "1", "->", "#"]

    def line(self) -> str:
        r = self.rng
        return " " * (4 * r.randint(0, 3)) + " ".join(r.choices(self.words, k=r.randint(2, 12)))

    def lines(self, size: int) -> list[str]:
        out: list[str] = []
        n = 0
        while n < size:
            out.append(self.line())
            n += len(out[-1]) + 1
        return out

    def edit(self, old: bytes) -> bytes:
        """Replace a few lines and add a few: what a small commit does to a file."""
        lines = old.decode().splitlines()
        r = self.rng
        at = r.randrange(len(lines))
        lines[at : at + r.randint(1, 4)] = [self.line() for _ in range(r.randint(1, 6))]
        return ("\n".join(lines) + "\n").encode()


def history(files: int, sessions: int, seed: int) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(goal, {path: content}) per session: the first adds every file, the others change 1-5 files."""
    rng = random.Random(seed)
    text = Text(rng)
    current = {file_path(i): ("\n".join(text.lines(rng.randint(1024, 4096))) + "\n").encode()
               for i in range(files)}
    yield f"Import {files} files", dict(current)
    paths = sorted(current)
    for n in range(2, sessions + 1):
        changes = {}
        for p in rng.sample(paths, min(len(paths), rng.randint(1, 5))):
            current[p] = changes[p] = text.edit(current[p])
        yield f"Change {len(changes)} file(s), session {n}", changes


# -- building the fixture ------------------------------------------------------------------------


@dataclass
class Fixture:
    root: Path
    store: Path
    git_root: Path  # holds GIT_NAME (bare)
    files: int
    sessions: int


def fixture_for(base: Path, files: int, sessions: int, seed: int) -> Fixture:
    """The fixture under ``base`` (built once; a complete one is reused)."""
    root = base / f"fixture-v{FIXTURE_FORMAT}-f{files}-s{sessions}-r{seed}"
    fx = Fixture(root, root / "store", root / "git", files, sessions)
    if (root / "done").exists():
        print(f"  fixture: reusing {root}", flush=True)
        return fx
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    sessions_data = list(history(files, sessions, seed))
    t1 = time.perf_counter()
    asyncio.run(build_hif(fx, sessions_data))
    t2 = time.perf_counter()
    build_git(fx, sessions_data)
    t3 = time.perf_counter()
    (root / "done").write_text(json.dumps({"files": files, "sessions": sessions, "seed": seed}) + "\n")
    print(f"  fixture: content {secs(t1 - t0)}, hif store {secs(t2 - t1)}, git (fast-import + repack) "
          f"{secs(t3 - t2)}", flush=True)
    return fx


async def build_hif(fx: Fixture, sessions: list[tuple[str, dict[str, bytes]]]) -> None:
    """Land every session with the plumbing (no fsync: only the result matters), then register the
    repository (public) and its owner so that ``micelio serve`` serves it."""
    from hif.landing import land
    from hif.objects import FILE
    from hif.repo import Repo
    from hif.session import fold, make_event
    from hif.store import EmbeddedStore
    from node.accounts import Accounts
    from node.authdb import AuthDB

    store = EmbeddedStore(fx.store, create=True, fsync=False)
    try:
        repo = Repo(store, REPO)
        await repo.create(description="bench/api.py fixture")
        for n, (goal, changes) in enumerate(sessions, 1):
            s = await repo.sessions.start(goal, USER, "agent", n - 1)
            events = list(s.events)
            for path, data in sorted(changes.items()):
                oid = await repo.objects.put_blob(data)
                ev = make_event("write", USER, "agent", repo.clock(), path=path, kind=FILE, blob=oid)
                events.append(await repo.sessions.append(s.id, ev, len(events)))
            result = await land(repo, fold(s.id, events))
            if result.position != n:
                raise SystemExit(f"fixture: session {n} landed at {result.position}")
        accounts = Accounts(AuthDB(store, fx.root / "auth-cache"))
        await accounts.create_user(USER, admin=True)
        await accounts.register_repo(REPO, private=False, owner_user=USER, description="bench/api.py fixture")
    finally:
        await store.close()


def build_git(fx: Fixture, sessions: list[tuple[str, dict[str, bytes]]]) -> None:
    """The same history as one commit per session through ``git fast-import``, then a full repack
    (fresh deltas and a bitmap, as a server would have after ``git gc``)."""
    env = git_env(fx.root)
    bare = fx.git_root / GIT_NAME
    fx.git_root.mkdir(parents=True)
    run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], cwd=fx.root, env=env)
    chunks: list[bytes] = []
    for n, (goal, changes) in enumerate(sessions, 1):
        msg = goal.encode() + b"\n"
        chunks.append(b"commit refs/heads/main\ncommitter bench <bench@localhost> %d +0000\ndata %d\n%s"
                      % (1_700_000_000 + n, len(msg), msg))
        for path, data in sorted(changes.items()):
            chunks.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data))
        chunks.append(b"\n")
    proc = subprocess.run(["git", "fast-import", "--quiet"], cwd=bare, env=env, input=b"".join(chunks),
                          capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"git fast-import failed:\n{proc.stderr.decode(errors='replace')}")
    run(["git", "repack", "-q", "-a", "-d", "-f", "-b"], cwd=bare, env=env)
    run(["git", "prune-packed"], cwd=bare, env=env)


# -- servers ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status_kib(pid: int, field_name: str) -> int:
    """A ``/proc/<pid>/status`` figure in KiB (VmHWM: the process's peak RSS so far)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def proc_cpu(pid: int, children: bool = False) -> float:
    """User + system seconds of a running process (``children``: of its reaped children instead)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    i = 13 if children else 11  # utime/stime are fields 14/15, cutime/cstime 16/17 (1-based)
    return (int(fields[i]) + int(fields[i + 1])) / TICK


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def hwm(self) -> int:
        return proc_status_kib(self.proc.pid, "VmHWM")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_until(ok: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """Poll ``ok`` until it holds (bounded); a server that exits or never answers is killed."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if ok():
            return
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise SystemExit(f"{what} did not start: {log.read_text(errors='replace')[-3000:]}")


def serve_node(store: Path, cache: Path, log: Path, code: Path | None = None) -> Server:
    """``micelio serve`` on a free loopback port, ready when /healthz answers; ``code``: another
    checkout of the project to run it from (``--baseline``)."""
    env = hif_env()
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), *filter(None, [env.get("PYTHONPATH")])])
    for _attempt in range(3):  # a port taken between choosing and binding: choose again
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [MICELIO, "serve", "--store", str(store), "--host", "127.0.0.1", "--port", str(port),
                 "--cache-dir", str(cache)],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

        def healthy(url: str = url) -> bool:
            import httpx  # here, not at the top: the git HTTP server process stays small

            try:
                return httpx.get(url + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        with contextlib.suppress(SystemExit):
            wait_until(healthy, proc, log, "micelio serve")
            return Server(proc, url, log)
    raise SystemExit(f"micelio serve did not start: {log.read_text(errors='replace')[-3000:]}")


def serve_git_daemon(git_root: Path, home: Path, log: Path) -> Server:
    """``git-daemon`` itself (``git daemon`` would run it as a child), so that /proc shows the CPU of
    the upload-packs it forked and reaped."""
    exec_path = run(["git", "--exec-path"], cwd=home, env=git_env(home)).out.strip()
    for _attempt in range(3):
        port = free_port()
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [os.path.join(exec_path, "git-daemon"), "--reuseaddr", "--export-all", f"--base-path={git_root}", f"--port={port}",
                 "--listen=127.0.0.1", str(git_root)],
                env=git_env(home), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        url = f"git://127.0.0.1:{port}/{GIT_NAME}"

        def answers(url: str = url) -> bool:
            r = subprocess.run(["git", "ls-remote", url], env=git_env(home), capture_output=True, timeout=30)
            return r.returncode == 0

        with contextlib.suppress(SystemExit):
            wait_until(answers, proc, log, "git daemon")
            return Server(proc, url, log)
    raise SystemExit(f"git daemon did not start: {log.read_text(errors='replace')[-3000:]}")


class GitHTTP(ThreadingHTTPServer):
    """git's smart HTTP on loopback: every request runs ``git http-backend`` (CGI), whose answer is
    streamed back (HTTP/1.0, so the body ends when the connection closes). It runs in a process of
    its own (``api.py --git-http-server``), small, so that the peak RSS ``os.wait4`` reports for each
    backend (folding in the upload-pack and pack-objects it waited for) is git's own; one line
    ``maxrss_kib cpu_seconds`` per request is appended to the stats file."""

    daemon_threads = True

    def __init__(self, git_root: str, stats: str) -> None:
        super().__init__(("127.0.0.1", 0), _GitCGI)
        self.git_root = git_root
        self.stats = stats
        self.lock = threading.Lock()


class _GitCGI(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server: GitHTTP

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._cgi()

    def do_POST(self) -> None:  # noqa: N802
        self._cgi()

    def _cgi(self) -> None:
        path, _, query = self.path.partition("?")
        length = self.headers.get("Content-Length")
        if self.command == "POST" and length is None:
            self.send_error(411, "chunked request bodies are not supported here")  # clones never send one
            return
        body = self.rfile.read(int(length)) if length else b""
        env = {**os.environ, "GIT_PROJECT_ROOT": self.server.git_root, "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
               "REMOTE_ADDR": "127.0.0.1", "SERVER_PROTOCOL": "HTTP/1.0"}
        for header, var in (("Content-Encoding", "HTTP_CONTENT_ENCODING"), ("Git-Protocol", "GIT_PROTOCOL")):
            if self.headers.get(header):
                env[var] = self.headers[header]
        p = subprocess.Popen(["git", "http-backend"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(body)
        p.stdin.close()
        status, headers = 200, []
        for _ in range(100):  # CGI headers, then a blank line
            line = p.stdout.readline().rstrip(b"\r\n").decode("latin-1")
            if not line:
                break
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            else:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        while chunk := p.stdout.read(1 << 16):
            self.wfile.write(chunk)
        p.stdout.close()
        _, _, ru = os.wait4(p.pid, 0)
        p.returncode = 0  # reaped above
        with self.server.lock, open(self.server.stats, "a") as f:
            f.write(f"{ru.ru_maxrss} {ru.ru_utime + ru.ru_stime}\n")


def git_http_server(argv: list[str]) -> None:
    """``api.py --git-http-server GIT_ROOT STATS``: print the port, then serve until terminated."""
    server = GitHTTP(argv[0], argv[1])
    print(server.server_address[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


def serve_git_http(git_root: Path, stats: Path, env: dict[str, str], log: Path) -> Server:
    with open(log, "ab") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--git-http-server", str(git_root), str(stats)],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # the port, or nothing if it failed to start
    if not line.isdigit():
        proc.kill()
        proc.wait()
        raise SystemExit(f"the git HTTP server did not start: {log.read_text(errors='replace')[-3000:]}")
    return Server(proc, f"http://127.0.0.1:{int(line)}/{GIT_NAME}", log)


def git_http_stats(stats: Path) -> tuple[int, float]:
    """(peak RSS KiB of any backend so far, CPU seconds of all backends so far)."""
    rss, cpu = 0, 0.0
    with contextlib.suppress(FileNotFoundError):
        for line in stats.read_text().splitlines():
            k, c = line.split()
            rss, cpu = max(rss, int(k)), cpu + float(c)
    return rss, cpu


# -- clone -------------------------------------------------------------------------------------------


@dataclass
class CloneSide:
    """One way to clone: the command's URL and how to read its server's CPU and peak memory."""

    tool: str  # hif | daemon | http
    name: str
    url: str
    server_cpu: Callable[[], float]
    server_rss: Callable[[], str]
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: int = 0
    server_cpus: list[float] = field(default_factory=list)
    server_peak: str = ""
    transferred: str = ""

    def command(self, dest: Path) -> list[str]:
        if self.tool == "hif":
            return [HIF, "clone", "--json", self.url, str(dest)]
        return ["git", "clone", "-q", self.url, str(dest)]


def tree_files(root: Path) -> dict[str, Path]:
    """The working files of a clone (without ``.hif`` or ``.git``), by relative path."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root):
            dirnames[:] = [d for d in dirnames if d not in (".hif", ".git")]
        for f in filenames:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = p
    return out


def same_checkout(one: Path, other: Path, files: int) -> None:
    """Both clones hold exactly the same files with the same bytes."""
    a, b = tree_files(one), tree_files(other)
    if len(a) != files or set(a) != set(b):
        raise SystemExit(f"clones differ: {one.name} has {len(a)} files, {other.name} {len(b)}, expected {files}; "
                         f"e.g. {sorted(set(a) ^ set(b))[:5]}")
    for rel in a:
        if a[rel].read_bytes() != b[rel].read_bytes():
            raise SystemExit(f"clones differ at {rel}")


def check_clone(side: CloneSide, dest: Path, out: str, fx: Fixture, env: dict[str, str]) -> None:
    """The clone is at the last landing / commit; note how much it transferred."""
    if side.tool == "hif":
        doc = json.loads(out)
        if doc.get("position") != fx.sessions:
            raise SystemExit(f"hif clone: at position {doc.get('position')}, expected {fx.sessions}")
        side.transferred = f"{doc['fetched_objects']} objects, {mib(doc['fetched_bytes'] // 1024)}"
        return
    count = run(["git", "rev-list", "--count", "HEAD"], cwd=dest, env=env).out.strip()
    if count != str(fx.sessions):
        raise SystemExit(f"git clone: {count} commits, expected {fx.sessions}")
    packs = list((dest / ".git" / "objects" / "pack").glob("*.pack"))
    side.transferred = f"pack {mib(sum(p.stat().st_size for p in packs) // 1024)}"


def bench_clone(fx: Fixture, base: Path, repeat: int, transports: list[str]) -> list[CloneSide]:
    genv = git_env(base)
    henv = {**hif_env(), "HIF_CONFIG_DIR": str(base / "hif-config")}  # anonymous: the repository is public
    servers: list[Server] = []
    try:
        node = serve_node(fx.store, base / "node-cache", base / "node-clone.log")
        servers.append(node)
        idle = node.hwm()
        sides = [CloneSide("hif", "hif clone (micelio serve)", f"{node.url}/{REPO}",
                           lambda: proc_cpu(node.proc.pid), lambda: f"{mib(node.hwm())} (idle {mib(idle)})")]
        if "daemon" in transports:
            gd = serve_git_daemon(fx.git_root, base, base / "git-daemon.log")
            servers.append(gd)
            sides.append(CloneSide("daemon", "git clone (git daemon)", gd.url,
                                   lambda: proc_cpu(gd.proc.pid, children=True), lambda: "n/a (forks)"))
        if "http" in transports:
            stats = base / "git-http.stats"
            gh = serve_git_http(fx.git_root, stats, genv, base / "git-http.log")
            servers.append(gh)
            sides.append(CloneSide("http", "git clone (smart HTTP)", gh.url, lambda: git_http_stats(stats)[1],
                                   lambda: mib(git_http_stats(stats)[0])))
        for k in range(repeat):  # interleaved, so a change in machine load hits every tool
            for side in sides:
                dest = base / f"clone-{side.tool}-{k}"
                os.sync()  # the last clone's and removal's writeback is not charged to this one
                before = side.server_cpu()
                res = run_lean(side.command(dest), cwd=base, env=henv if side.tool == "hif" else genv)
                if side.tool == "daemon":
                    time.sleep(0.2)  # the daemon reaps its child on SIGCHLD: let it count the CPU
                side.server_cpus.append(side.server_cpu() - before)
                side.times.append(res.seconds)
                side.cpu.append(res.cpu)
                side.rss = max(side.rss, res.maxrss_kib)
                check_clone(side, dest, res.out, fx, genv)
                print(f"  clone {k + 1}/{repeat}: {side.tool} {secs(res.seconds)}", flush=True)
            if k == 0:
                for other in sides[1:]:
                    same_checkout(base / "clone-hif-0", base / f"clone-{other.tool}-0", fx.files)
            for side in sides:
                shutil.rmtree(base / f"clone-{side.tool}-{k}", ignore_errors=True)
        for side in sides:
            side.server_peak = side.server_rss()
    finally:
        for s in servers:
            s.stop()
    return sides


# -- landing -----------------------------------------------------------------------------------------


def share(total: int, clients: int, i: int) -> int:
    """Landings for client ``i``: ``total`` spread as evenly as possible."""
    return total // clients + (1 if i < total % clients else 0)


def landing_content(i: int, j: int) -> bytes:
    return f"client {i} landing {j}\n".encode() * 8


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def _inproc(store_path: str, name: str, clients: int, total: int) -> dict[str, Any]:
    from hif.landing import land
    from hif.objects import FILE
    from hif.repo import Repo
    from hif.session import fold, make_event
    from hif.store import EmbeddedStore

    store = EmbeddedStore(store_path)  # fsync on, as the node's store
    repo = Repo(store, name)
    await repo.ensure(description="in-process landings")
    lat: list[float] = []
    attempts = [0]

    async def client(i: int) -> None:
        for j in range(share(total, clients, i)):
            t0 = time.perf_counter()
            s = await repo.sessions.start(f"client {i}: landing {j}", f"client{i}", "agent",
                                          await repo.mainline.head())
            oid = await repo.objects.put_blob(landing_content(i, j))
            ev = make_event("write", f"client{i}", "agent", repo.clock(), path=f"c{i:02d}/f{j:04d}.txt",
                            kind=FILE, blob=oid)
            stamped = await repo.sessions.append(s.id, ev, s.next_seq)
            result = await land(repo, fold(s.id, [*s.events, stamped]))
            attempts[0] += result.attempts
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    took = time.perf_counter() - t0
    head = await repo.mainline.head()
    landed = 0  # group landing may put several sessions in one record: count sessions, not records
    for pos in range(1, head + 1):
        landed += len((await repo.mainline.record(pos)).sessions)
    await store.close()
    return {"time": took, "lat": lat, "attempts": attempts[0], "head": head, "landed": landed}


def inproc_worker(argv: list[str]) -> None:
    """``api.py --inproc-worker STORE REPO CLIENTS LANDINGS``: one in-process run, JSON on stdout."""
    store, name, clients, total = argv[0], argv[1], int(argv[2]), int(argv[3])
    print(json.dumps(asyncio.run(_inproc(store, name, clients, total))))


@dataclass
class LandRuns:
    name: str
    time: float = float("nan")
    lat: list[float] = field(default_factory=list)
    attempts: int = 0
    rss: str = ""
    cpu: str = ""
    routes: dict[str, list[float]] = field(default_factory=dict)  # client-side seconds per request
    node_ms: dict[str, list[float]] = field(default_factory=dict)  # node-side, from its access log
    node_errors: int = 0

    @property
    def rate(self) -> float:
        return len(self.lat) / self.time if self.time > 0 else float("nan")


async def _land_setup(store_path: Path, cache: Path, names: list[str], clients: int) -> list[str]:
    """The landing store: the user, its repositories and one write token per client."""
    from hif.repo import Repo
    from hif.store import EmbeddedStore
    from node.accounts import Accounts
    from node.authdb import AuthDB

    store = EmbeddedStore(store_path, create=True)
    try:
        accounts = Accounts(AuthDB(store, cache))
        await accounts.create_user(USER, admin=False)
        for name in names:
            await Repo(store, name).create(description="API landings")
            await accounts.register_repo(name, private=False, owner_user=USER)
        return [(await accounts.create_token(USER, scope="write", name=f"client {i}"))[1] for i in range(clients)]
    finally:
        await store.close()


class ApiError(RuntimeError):
    pass


@dataclass
class Reply:
    status_code: int
    content: bytes

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise ApiError(f"HTTP {self.status_code}")


class LeanClient:
    """A keep-alive HTTP/1.1 client on the standard library's ``http.client``, with httpx's calls
    that the landing clients make. The clients stand for agents on other machines, yet here they
    share the node's 2 CPUs: httpx spends about 1.3 ms of CPU a request (more than the node spends
    on one), this about a fifth of that, so the node, not the load generator, is what is measured.
    ``--client httpx`` measures with httpx."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        u = urlsplit(base_url)
        assert u.hostname is not None and u.port is not None
        self.prefix, self.headers = u.path, headers
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)

    def _call(self, method: str, path: str, body: bytes | None, params: dict[str, Any] | None) -> Reply:
        url = self.prefix + path + ("?" + urlencode(params) if params else "")
        self.conn.request(method, url, body=body, headers=self.headers)
        r = self.conn.getresponse()
        return Reply(r.status, r.read())

    def post(self, path: str, content: bytes) -> Reply:
        return self._call("POST", path, content, None)

    def get(self, path: str, params: dict[str, Any] | None = None) -> Reply:
        return self._call("GET", path, None, params)

    def close(self) -> None:
        self.conn.close()


ROUTE_SUFFIXES = (("/sessions", "sessions (start)"), ("/objects/put", "objects/put"),
                  ("/events", "sessions/<id>/events"), ("/land", "sessions/<id>/land"))
ONE = "land (one request)"


def node_times(logs: list[Path]) -> tuple[dict[str, list[float]], int]:
    """Milliseconds per landing route from the nodes' JSON access logs, and how many answers were
    errors (status >= 400): the node's own view, without the client's queueing."""
    out: dict[str, list[float]] = {}
    errors = 0
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict) or "path" not in entry:
                continue
            errors += int(entry.get("status", 200) >= 400)
            if entry.get("method") == "POST" and entry.get("ms") is not None:
                if "/sessions/" not in entry["path"] and entry["path"].endswith("/land"):
                    out.setdefault(ONE, []).append(float(entry["ms"]))
                    continue
                for suffix, route in ROUTE_SUFFIXES:
                    if entry["path"].endswith(suffix):
                        out.setdefault(route, []).append(float(entry["ms"]))
    return out, errors


def api_landings(urls: list[str], tokens: list[str], name: str, clients: int, total: int,
                 one: bool, client_kind: str = "lean") -> LandRuns:
    """C threads, one HTTP client each (:class:`LeanClient` or httpx), released together; four
    requests per landing, or ``one``."""
    import cbor2
    import httpx

    from hif.objects import blob_bytes, digest, pack

    out = LandRuns("API, 1 request each" if one else "API, 4 requests each")
    lock = threading.Lock()

    def connect(i: int) -> httpx.Client | LeanClient:
        base = f"{urls[i % len(urls)]}/api/v1/repos/{name}/"
        headers = {"Authorization": f"Bearer {tokens[i]}", "Content-Type": CBOR, "Accept": CBOR}
        if client_kind == "httpx":
            return httpx.Client(base_url=base, timeout=120, headers=headers)
        return LeanClient(base, headers)

    conns = [connect(i) for i in range(clients)]

    def call(c: httpx.Client | LeanClient, route: str, path: str, body: dict[str, Any], times: dict[str, list[float]]) -> Any:
        t0 = time.perf_counter()
        r = c.post(path, content=cbor2.dumps(body))
        times.setdefault(route, []).append(time.perf_counter() - t0)
        doc = cbor2.loads(r.content) if r.content else {}
        if r.status_code not in (200, 201):
            raise ApiError(f"POST {path}: HTTP {r.status_code} {doc}")
        return doc

    def client(i: int) -> None:
        c = conns[i]
        times: dict[str, list[float]] = {}
        lat: list[float] = []
        attempts = 0
        for j in range(share(total, clients, i)):
            t0 = time.perf_counter()
            canonical = blob_bytes(landing_content(i, j))
            event = {"type": "write", "path": f"c{i:02d}/f{j:04d}.txt", "kind": "f", "blob": digest(canonical)}
            if one:
                attempts += call(c, ONE, "land", {"goal": f"client {i}: landing {j}", "role": "agent",
                                                  "objects": [pack(canonical)], "events": [event]},
                                 times)["attempts"]
                lat.append(time.perf_counter() - t0)
                continue
            sid = call(c, "sessions (start)", "sessions", {"goal": f"client {i}: landing {j}", "role": "agent"},
                       times)["id"]
            call(c, "objects/put", "objects/put", {"objects": [pack(canonical)]}, times)
            call(c, "sessions/<id>/events", f"sessions/{sid}/events", {"events": [event], "next_seq": 1}, times)
            attempts += call(c, "sessions/<id>/land", f"sessions/{sid}/land", {}, times)["attempts"]
            lat.append(time.perf_counter() - t0)
        with lock:
            out.lat += lat
            out.attempts += attempts
            for route, xs in times.items():
                out.routes.setdefault(route, []).extend(xs)

    try:
        for c in conns:  # open the connections before the clock starts, as long-lived clients would
            c.get("head").raise_for_status()
        out.time = concurrently(clients, client)
        landed, start = 0, 1  # sessions in the log (group landing puts several in one record)
        for _ in range(total + 1):  # bounded: at most one page per landing
            page = cbor2.loads(conns[0].get("log", params={"start": start, "limit": 500}).content)
            landed += sum(len(cbor2.loads(raw)["sessions"]) for _pos, raw in page["records"])
            if not page.get("next"):
                break
            start = page["next"]
    finally:
        for c in conns:
            c.close()
    if landed != total:
        raise SystemExit(f"API landings: {landed} sessions in the log, expected {total}")
    return out


def bench_land(base: Path, clients: int, total: int, repeat: int, replicas: int,
               client_kind: str = "lean", baseline: Path | None = None) -> tuple[LandRuns, list[LandRuns]]:
    """The in-process run and the two API flows, ``repeat`` times each, interleaved so that a change
    in the machine's load touches all alike; the fastest run of each is kept. With ``baseline`` (a
    checkout of other code, say main's) its nodes serve the same flows in the same run, in turn with
    this code's (the order alternating per run): before and after in one run."""
    store = base / "land-store"
    sides = {"": None} if baseline is None else {"": None, " (baseline)": baseline}
    names = [f"{USER}/api-{k}-{flow}{'-base' if side else ''}" for k in range(repeat) for flow in (4, 1)
             for side in sides]
    tokens = asyncio.run(_land_setup(store, base / "land-auth", names, clients))
    inproc = LandRuns("in-process")
    best = {(flow, side): LandRuns(f"API, {flow} request{'s' if flow > 1 else ''} each{side}")
            for flow in (4, 1) for side in sides}
    nodes = {side: [serve_node(store, base / f"land-cache{'-base' if side else ''}-{n}",
                               base / f"node-land{'-base' if side else ''}-{n}.log", code)
                    for n in range(replicas)] for side, code in sides.items()}
    try:
        for k in range(repeat):
            r = run_lean([sys.executable, __file__, "--inproc-worker", str(store), f"{USER}/inproc-{k}", str(clients),
                     str(total)], cwd=base, env=hif_env())
            doc = json.loads(r.out)
            if doc["landed"] != total:
                raise SystemExit(f"in-process landings: {doc['landed']} sessions in the log, expected {total}")
            if not doc["time"] >= inproc.time:
                inproc = LandRuns("in-process", doc["time"], doc["lat"], doc["attempts"], mib(r.maxrss_kib),
                                  f"{r.cpu:.1f} s ({r.cpu / total * 1000:.1f} ms/landing)")
            print(f"  land {k + 1}/{repeat}: in-process {len(doc['lat']) / doc['time']:.1f}/s, "
                  f"{r.cpu / total * 1000:.1f} ms CPU/landing, load {os.getloadavg()[0]:.1f}", flush=True)
            for flow in (4, 1):
                for side in (list(sides) if k % 2 == 0 else list(sides)[::-1]):
                    ns = nodes[side]
                    cpu0 = [proc_cpu(n.proc.pid) for n in ns]
                    self0 = resource.getrusage(resource.RUSAGE_SELF)
                    a = api_landings([n.url for n in ns], tokens, f"{USER}/api-{k}-{flow}{'-base' if side else ''}",
                                     clients, total, flow == 1, client_kind)
                    a.name += side
                    self1 = resource.getrusage(resource.RUSAGE_SELF)
                    node_cpu = sum(proc_cpu(n.proc.pid) - c for n, c in zip(ns, cpu0, strict=True))
                    client_cpu = self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime
                    a.cpu = (f"node {node_cpu:.1f} s ({node_cpu / total * 1000:.1f} ms/landing), "
                             f"clients {client_cpu:.1f} s")
                    print(f"  land {k + 1}/{repeat}: {a.name} {a.rate:.1f}/s, node {node_cpu / total * 1000:.1f} ms "
                          f"CPU/landing, load {os.getloadavg()[0]:.1f}", flush=True)
                    if not a.time >= best[(flow, side)].time:
                        best[(flow, side)] = a
        for side, ns in nodes.items():
            node_ms, errors = node_times([n.log for n in ns])
            for (_flow, s), a in best.items():
                if s == side:
                    a.rss = " + ".join(mib(n.hwm()) for n in ns) + (" (node)" if replicas == 1 else " (nodes)")
                    a.node_ms, a.node_errors = node_ms, errors
    finally:
        for ns in nodes.values():
            for n in ns:
                n.stop()
    return inproc, list(best.values())


# -- main ----------------------------------------------------------------------------------------------


def main() -> None:
    if sys.argv[1:2] == ["--inproc-worker"]:
        inproc_worker(sys.argv[2:])
        return
    if sys.argv[1:2] == ["--git-http-server"]:
        git_http_server(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000, help="files in the cloned repository")
    ap.add_argument("--sessions", type=int, default=1_000, help="landed sessions (git commits) in it")
    ap.add_argument("--clients", type=int, default=32, help="concurrent landing clients")
    ap.add_argument("--landings", type=int, default=200, help="landings in all, per run")
    ap.add_argument("--replicas", type=int, default=1, help="micelio serve processes (one store) for landing")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="land: also run nodes from this checkout (e.g. `git worktree` of main), interleaved")
    ap.add_argument("--client", choices=("lean", "httpx"), default="lean",
                    help="the landing clients' HTTP client: lean (http.client, keep-alive) or httpx")
    ap.add_argument("--git", default="daemon,http", help="git transports to compare with: daemon,http")
    ap.add_argument("--parts", default="clone,land", help="what to run: clone,land")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement (clone: best and median; "
                    "land: the fastest run is shown)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the fixture's content")
    ap.add_argument("--work", type=Path, default=None, help="keep the fixture here and reuse it next time")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    transports = [t for t in args.git.split(",") if t in ("daemon", "http")]
    if not transports:
        raise SystemExit("--git needs daemon and/or http")

    print(f"api: clone of {args.files} files / {args.sessions} sessions, {args.landings} landings by "
          f"{args.clients} clients ({args.client} HTTP client), {args.replicas} node(s), {args.repeat} run(s); "
          f"{machine()}; load {os.getloadavg()[0]:.1f}", flush=True)
    clone: list[CloneSide] = []
    land_res: tuple[LandRuns, list[LandRuns]] | None = None
    with workdir("hif-api-", args.keep) as base:
        if "clone" in args.parts:
            fx = fixture_for(args.work.absolute() if args.work else base, args.files, args.sessions, args.seed)
            clone = bench_clone(fx, base, args.repeat, transports)
        if "land" in args.parts:
            land_res = bench_land(base, args.clients, args.landings, args.repeat, args.replicas, args.client,
                                  args.baseline.absolute() if args.baseline else None)

    if clone:
        print()
        print(table(
            ["clone", "best", "median", "client CPU p50", "client peak RSS", "server CPU p50", "server peak RSS",
             "transferred"],
            [[r.name, secs(min(r.times)), secs(median(r.times)), secs(median(r.cpu)), mib(r.rss),
              secs(median(r.server_cpus)), r.server_peak, r.transferred] for r in clone],
        ))
        hif = clone[0]
        for g in clone[1:]:
            x = min(g.times) / min(hif.times)
            verdict = "met" if x >= CLONE_TARGET else "NOT met"
            print(f"ratio {g.name.split('(')[1].rstrip(')')}/hif: best {ratio(min(g.times), min(hif.times))}, "
                  f"median {ratio(median(g.times), median(hif.times))}; target >= {CLONE_TARGET:.0f}x "
                  f"(hif clone no slower than git, on the best runs): {verdict}")
    if land_res is not None:
        inproc, apis = land_res
        print()
        print(table(
            ["landing", "landings", "wall", "landings/s", "p50", "p99", "land attempts", "CPU", "peak RSS"],
            [[r.name, len(r.lat), secs(r.time), f"{r.rate:.1f}", secs(percentile(r.lat, 0.5)),
              secs(percentile(r.lat, 0.99)), r.attempts, r.cpu, r.rss] for r in (inproc, *apis)],
        ))
        print()
        print(table(
            ["API route (fastest runs)", "client p50", "client p99", "node p50 (all runs)", "node p99"],
            [[route + (" (baseline)" if api.name.endswith("(baseline)") else ""), secs(percentile(xs, 0.5)),
              secs(percentile(xs, 0.99)),
              secs(percentile(api.node_ms.get(route, []), 0.5) / 1000),
              secs(percentile(api.node_ms.get(route, []), 0.99) / 1000)]
             for api in apis for route, xs in api.routes.items()],
        ))
        errors = {"baseline" if a.name.endswith("(baseline)") else "this code": a.node_errors for a in apis}
        print("node answers with status >= 400 during landing: " + ", ".join(f"{k} {v}" for k, v in errors.items()))
        for api in apis:
            x, target = api.rate / inproc.rate, LAND_TARGETS.get(api.name.removesuffix(" (baseline)"), 0.8)
            verdict = "met" if x >= target else "NOT met"
            print(f"ratio {api.name}/in-process (landings/s): {x:.2f}x; target >= {target}x: {verdict}")
    print("(clone: one subprocess from start to exit, over loopback; server CPU/RSS: micelio serve from /proc, "
          "git http-backend from wait4 incl. upload-pack, git daemon's reaped children; landing p50/p99: one "
          "landing, start to land, through the API in four requests or one)")


if __name__ == "__main__":
    main()

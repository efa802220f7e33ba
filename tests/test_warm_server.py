"""The warm command server (hif/cli/warm.py, hif/cli/warmserver.py), with real processes: the
``hif`` console script as a client, the server it starts, and hostile clients and directories.

Each test has its own socket directory (``XDG_RUNTIME_DIR`` under its tmp_path) and stops every
server it started (the ``servers`` fixture), so none outlives the test.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hif.cli import warm

ROOT = Path(__file__).resolve().parent.parent
HIF = str(Path(sys.executable).with_name("hif"))
if not os.path.exists(HIF):  # pragma: no cover - an installed hif elsewhere
    HIF = shutil.which("hif") or HIF
WAIT = 20.0  # the longest any wait below may take (a loaded machine), never a timing assertion


def wait_until(what: str, check: object, limit: float = WAIT) -> None:
    deadline = time.monotonic() + limit
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Warm:
    """One test's environment: the server on, its own socket directory, this checkout's code."""

    def __init__(self, tmp: Path, code: Path = ROOT) -> None:
        self.runtime = tmp / "runtime"
        self.runtime.mkdir(mode=0o700, exist_ok=True)
        self.dir = self.runtime / "hif"
        self.env = {k: v for k, v in os.environ.items() if k not in (warm.DIR_ENV, "HIF_DEBUG")}
        self.env.update({warm.OFF: "", "XDG_RUNTIME_DIR": str(self.runtime), "PYTHONPATH": str(code),
                         "HIF_AUTHOR": "tester"})
        self.pids: set[int] = set()

    def hif(self, *args: str, cwd: Path, off: bool = False, check: bool = True, **kw: object
            ) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **kw.pop("env", {}), **({warm.OFF: "1"} if off else {})}  # type: ignore[dict-item]
        p = subprocess.run([HIF, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, **kw)
        if check and p.returncode != 0:
            raise AssertionError(f"hif {' '.join(args)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
        return p

    def start(self, cwd: Path, **kw: object) -> dict[str, object]:
        """``hif server start``: the running server's ping (pid, key, served...)."""
        info = json.loads(self.hif("server", "start", "--json", cwd=cwd, **kw).stdout)  # type: ignore[arg-type]
        self.pids.add(int(info["pid"]))
        return info

    def ping(self, name: str) -> dict[str, str]:
        dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return dict(p.split("=", 1) for p in warm.ask(dfd, name, "ping").split())
        finally:
            os.close(dfd)

    def sockets(self) -> list[str]:
        return sorted(p.name for p in self.dir.glob("*.sock")) if self.dir.is_dir() else []

    def running(self) -> list[int]:
        """The pids of the servers answering in the directory (recorded for the teardown)."""
        pids = []
        for name in self.sockets():
            with contextlib.suppress(OSError, warm.ServerRefused):
                pids.append(int(self.ping(name.removesuffix(".sock"))["pid"]))
        self.pids.update(pids)
        return pids

    def stop_all(self) -> None:
        self.running()
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in self.pids:
            wait_until(f"server {pid} to exit", lambda pid=pid: not alive(pid))


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Warm]:
    w = Warm(tmp_path)
    try:
        yield w
    finally:
        w.stop_all()


def small_repo(w: Warm, root: Path) -> Path:
    """Two landed sessions and a change in the working copy; made without the server."""
    repo = root / "repo"
    w.hif("init", str(repo), cwd=root, off=True)
    for s in range(2):
        w.hif("session", "start", f"session {s}", cwd=repo, off=True)
        (repo / "d").mkdir(exist_ok=True)
        (repo / "d" / f"f{s}.txt").write_text(f"line {s}\n" * 3)
        with (repo / "notes.txt").open("a") as f:
            f.write(f"added in {s}\n")
        w.hif("land", cwd=repo, off=True)
    (repo / "notes.txt").write_text("changed\n")
    return repo


READ_ONLY = [
    ["log", "-n", "5"], ["log", "--json"], ["show", "1"], ["show", "2", "--json"], ["status"], ["status", "--json"],
    ["diff"], ["cat", "d/f0.txt"], ["ls"], ["blame", "notes.txt"],
    ["cat", "missing.txt"], ["show", "99"], ["no-such-command"], ["log", "--bad-option"],  # errors and usage
]


def test_same_output_and_exit_code_as_the_plain_path(servers: Warm, tmp_path: Path) -> None:
    repo = small_repo(servers, tmp_path)
    name = str(servers.start(repo)["key"])
    before = int(servers.ping(name)["served"])
    for args in READ_ONLY:
        warm_run = servers.hif(*args, cwd=repo, check=False)
        plain = servers.hif(*args, cwd=repo, off=True, check=False)
        assert (warm_run.returncode, warm_run.stdout, warm_run.stderr) == \
            (plain.returncode, plain.stdout, plain.stderr), args
    assert int(servers.ping(name)["served"]) - before == len(READ_ONLY)  # all of them were the server's


def test_a_whole_landing_through_the_server(servers: Warm, tmp_path: Path) -> None:
    repo = small_repo(servers, tmp_path)
    name = str(servers.start(repo)["key"])
    before = int(servers.ping(name)["served"])
    trace = servers.hif("export", "agent-trace", "2", cwd=repo).stdout
    started = servers.hif("session", "start", "through the server", cwd=repo)
    sid = started.stdout.split()[2]
    (repo / "new.txt").write_text("new\n")
    attached = servers.hif("import", "agent-trace", "-", cwd=repo, input=trace)  # stdin is the client's
    assert f"to session {sid}" in attached.stdout
    decided = servers.hif("decide", "keep it small", "--why", "a test", cwd=repo)
    landed = servers.hif("land", cwd=repo)
    assert landed.stdout.startswith(f"landed session {sid} at position 3")
    assert int(servers.ping(name)["served"]) - before == 5, (started, decided)  # all through it
    log = json.loads(servers.hif("log", "--json", cwd=repo, off=True).stdout)
    assert log["landings"][0]["session"] == sid
    shown = json.loads(servers.hif("show", "3", "--json", cwd=repo, off=True).stdout)
    assert "new.txt" in json.dumps(shown) and "tester" in json.dumps(shown)


def test_the_command_has_the_clients_directory_and_umask(servers: Warm, tmp_path: Path) -> None:
    repo = small_repo(servers, tmp_path)
    name = str(servers.start(repo)["key"])
    before = int(servers.ping(name)["served"])
    # the working directory: relative paths and the repository found from a subdirectory
    servers.hif("init", "made-here", cwd=tmp_path)
    assert (tmp_path / "made-here" / ".hif").is_dir()
    sub = servers.hif("cat", "f0.txt", cwd=repo / "d", check=False)
    plain = servers.hif("cat", "f0.txt", cwd=repo / "d", off=True, check=False)
    assert (sub.returncode, sub.stdout, sub.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    # the umask: what init creates has the modes a plain run under the same umask gives
    for mask in (0o027, 0o077, 0o002):
        servers.hif("init", f"w{mask:o}", cwd=tmp_path, umask=mask)
        servers.hif("init", f"p{mask:o}", cwd=tmp_path, umask=mask, off=True)
        for path in (Path(".hif"), Path(".hif/store")):
            got = (tmp_path / f"w{mask:o}" / path).stat().st_mode
            want = (tmp_path / f"p{mask:o}" / path).stat().st_mode
            assert got == want, (mask, path)
    assert int(servers.ping(name)["served"]) - before == 5  # all but the plain runs were the server's


def test_the_environment_is_the_clients_not_the_servers(servers: Warm, tmp_path: Path) -> None:
    repo = small_repo(servers, tmp_path)
    servers.start(repo, env={"HIF_AUTHOR": "the-servers-starter"})
    env_without = {k: v for k, v in servers.env.items() if k != "HIF_AUTHOR"}
    for author, env in (("someone", {**env_without, "USER": "someone", "LOGNAME": "someone"}),
                        ("chosen", {**servers.env, "HIF_AUTHOR": "chosen"})):
        p = subprocess.run([HIF, "session", "start", f"by {author}"], cwd=repo, env=env, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        (repo / f"{author}.txt").write_text(author)
        p = subprocess.run([HIF, "land", "--json"], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        position = json.loads(p.stdout)["position"]
        shown = servers.hif("show", str(position), "--json", cwd=repo, off=True).stdout
        assert author in shown and "the-servers-starter" not in shown


def test_another_uid_is_refused(servers: Warm, tmp_path: Path) -> None:
    """A client of another user never gets a command run, even when the directory and the socket
    are opened to it (the server checks the peer's uid with SO_PEERCRED)."""
    repo = small_repo(servers, tmp_path)
    name = str(servers.start(repo)["key"])
    nobody = 65534
    os.chmod(tmp_path, 0o755)
    os.chmod(servers.runtime, 0o711)
    os.chmod(servers.dir, 0o711)
    os.chmod(servers.dir / f"{name}.sock", 0o777)
    def as_nobody(kind: bytes, argv: list[str], fds: list[int]) -> str:
        """Connect and send a well-formed request as uid ``nobody`` (a forked child), its answer."""
        payload = warm.encode([name.encode(), kind, b"18", b"", *[b"utf-8", b"strict"] * 3, b"%d" % len(argv),
                               *[a.encode() for a in argv], b"PATH=/usr/bin"])
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.close(r)
                os.chdir(servers.dir)  # as root: the socket's full path is longer than AF_UNIX allows
                os.setgroups([])
                os.setgid(nobody)
                os.setuid(nobody)
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(20)
                s.connect(f"{name}.sock")
                warm.send_request(s, payload, fds)  # type: ignore[arg-type]
                out = b""
                while chunk := s.recv(4096):
                    out += chunk
                os.write(w, out)
                code = 0
            except BaseException as e:
                os.write(w, f"client failed: {e!r}".encode())
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            out = f.read().decode(errors="replace")
        os.waitpid(pid, 0)
        return out

    before = int(servers.ping(name)["served"])
    for argv in (["hif", "log"], ["hif", "session", "start", "intruder"], ["hif", "server", "stop"]):
        out = as_nobody(b"run", argv, [0, 1, 2, 0])
        assert out.startswith("R") and f"uid {nobody}" in out, out
    for kind in (b"ping", b"stop"):  # nor may it ask the server anything
        out = as_nobody(kind, [], [])
        assert out.startswith("R") and f"uid {nobody}" in out, out
    assert int(servers.ping(name)["served"]) == before  # nothing ran, and it still serves
    assert "intruder" not in servers.hif("log", cwd=repo, off=True).stdout


def test_a_confined_client_is_refused(servers: Warm, tmp_path: Path) -> None:
    """The same user in another namespace (a sandbox), with fewer privileges, lower resource limits
    or another niceness or CPU set is refused: its commands must not run in a process that is not
    confined as it is. Its own ``hif`` runs the plain path (and may start a server of its own)."""
    for tool in ("unshare", "setpriv", "prlimit", "nice", "taskset"):
        assert shutil.which(tool), f"{tool} (util-linux, coreutils) is needed"
    repo = small_repo(servers, tmp_path)
    name = str(servers.start(repo)["key"])
    before = int(servers.ping(name)["served"])
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); from hif.cli import warm; import os\n"
             "dfd = os.open(sys.argv[2], os.O_RDONLY | os.O_DIRECTORY)\n"
             "try:\n    print('answered', warm.ask(dfd, sys.argv[3], 'ping'))\n"
             "except warm.ServerRefused as e:\n    print('refused', e)\n")
    wrappers = [["unshare", "-n"], ["unshare", "-u"], ["unshare", "-i"],  # network, hostname, IPC namespaces
                ["setpriv", "--no-new-privs"], ["setpriv", "--bounding-set=-sys_admin"],  # privileges
                ["prlimit", "--nofile=256:256"], ["prlimit", "--as=8000000000"],  # resource limits
                ["nice", "-n", "5"], ["taskset", "-c", "0"]]  # scheduling
    for wrapper in wrappers:
        p = subprocess.run([*wrapper, sys.executable, "-c", probe, str(ROOT), str(servers.dir), name],
                           capture_output=True, text=True, timeout=60, env=servers.env)
        assert p.stdout.startswith("refused") and "confined" in p.stdout, (wrapper, p.stdout, p.stderr)
    assert int(servers.ping(name)["served"]) == before


@pytest.mark.parametrize("bad", ["mode-0755", "mode-0770", "other-owner", "symlink", "a-file", "socket-symlink"])
def test_a_socket_directory_that_is_not_private_is_refused(servers: Warm, tmp_path: Path, bad: str) -> None:
    """The client never uses (nor starts a server in) a directory another user could reach or
    plant: the command runs the plain path, with the same output."""
    repo = small_repo(servers, tmp_path)
    d = servers.dir
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    if bad == "mode-0755":
        d.mkdir(mode=0o700)
        os.chmod(d, 0o755)
    elif bad == "mode-0770":
        d.mkdir(mode=0o700)
        os.chmod(d, 0o770)
    elif bad == "other-owner":
        d.mkdir(mode=0o700)
        os.chown(d, 65534, 65534)
    elif bad == "symlink":
        d.symlink_to(elsewhere)
    elif bad == "a-file":
        d.write_text("not a directory")
    else:  # the directory is fine, but the server's socket name is a symlink to someone's socket
        info = servers.start(repo)
        name = str(info["key"])
        servers.stop_all()
        planted = elsewhere / "planted.sock"
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(planted))
        listener.listen(1)
        (d / f"{name}.sock").unlink(missing_ok=True)
        (d / f"{name}.sock").symlink_to(planted)
    for args in (["log", "-n", "5"], ["show", "1"], ["cat", "missing.txt"]):
        got = servers.hif(*args, cwd=repo, check=False)
        want = servers.hif(*args, cwd=repo, off=True, check=False)
        assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)
    if bad == "socket-symlink":
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):  # nothing connected to the planted socket
            listener.accept()
        listener.close()
    time.sleep(0.5)  # a server wrongly started would have made its socket by now (it is not awaited)
    made = [p for p in (*elsewhere.iterdir(), *(d.iterdir() if d.is_dir() else ())) if p.suffix == ".sock"
            and not p.is_symlink() and p.name != "planted.sock"]
    assert made == []
    status = servers.hif("server", "status", cwd=repo, check=False)
    if bad != "socket-symlink":
        assert "refused" in status.stdout + status.stderr


@pytest.mark.parametrize("change", ["edit", "touch", "new-module", "package-installed", "package-upgraded"])
def test_a_code_change_makes_a_new_server_and_the_old_one_exits(servers: Warm, tmp_path: Path, change: str
                                                                ) -> None:
    code = tmp_path / "code"
    shutil.copytree(ROOT / "hif", code / "hif", ignore=shutil.ignore_patterns("__pycache__"))
    (code / "dep-1.0.dist-info").mkdir()
    w = Warm(tmp_path, code)
    try:
        repo = small_repo(w, tmp_path)
        old = w.start(repo)
        edited = code / "hif" / "blame.py"
        if change == "edit":  # size and mtime change
            edited.write_text(edited.read_text() + "\nEDITED = True\n")
        elif change == "touch":  # the same bytes, written again
            st = edited.stat()
            os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        elif change == "new-module":
            (code / "hif" / "store" / "extra.py").write_text("X = 1\n")
        elif change == "package-installed":
            (code / "other-2.0.dist-info").mkdir()
        else:
            (code / "dep-1.0.dist-info").rename(code / "dep-1.1.dist-info")
        new = w.start(repo)
        assert new["key"] != old["key"] and new["pid"] != old["pid"]
        wait_until("the old server to exit", lambda: not alive(int(old["pid"])))  # type: ignore[arg-type]
        assert w.sockets() == [f"{new['key']}.sock"]
        # a command after the edit is the new server's
        before = int(w.ping(str(new["key"]))["served"])
        w.hif("blame", "notes.txt", cwd=repo)
        assert int(w.ping(str(new["key"]))["served"]) == before + 1
    finally:
        w.stop_all()


def test_the_server_exits_when_idle(servers: Warm, tmp_path: Path) -> None:
    repo = small_repo(servers, tmp_path)
    info = servers.start(repo, env={warm.IDLE_ENV: "1"})
    pid = int(info["pid"])  # type: ignore[arg-type]
    wait_until("the idle server to exit", lambda: not alive(pid))
    assert servers.sockets() == []
    assert not (servers.dir / f"{info['key']}.lock").exists()


def test_hif_no_server_runs_and_starts_nothing(servers: Warm, tmp_path: Path) -> None:
    repo = small_repo(servers, tmp_path)
    for value in ("1", "yes"):
        for args in (["log"], ["show", "1"], ["session", "start", "x"], ["session", "abandon"]):
            servers.hif(*args, cwd=repo, env={warm.OFF: value})
    time.sleep(0.5)  # a server wrongly started would have made its directory by now
    assert not servers.dir.exists()
    info = servers.start(repo)
    before = int(servers.ping(str(info["key"]))["served"])
    servers.hif("log", cwd=repo, off=True)
    assert int(servers.ping(str(info["key"]))["served"]) == before
    status = servers.hif("server", "status", cwd=repo, off=True)
    assert "off" in status.stdout
    stop = servers.hif("server", "stop", cwd=repo, off=True)
    assert "stopped 1 server" in stop.stdout
    wait_until("the stopped server to exit", lambda: not alive(int(info["pid"])))  # type: ignore[arg-type]


def _blocked_reader(w: Warm, repo: Path, off: bool, ignore: tuple[signal.Signals, ...] = ()
                    ) -> tuple[subprocess.Popen[str], int, int]:
    """``hif import agent-trace -`` reading a stdin that never ends, once it is blocked in the read
    (the byte written first was consumed). Returns the process, the pipe's write end and a
    duplicate of its read end."""
    r, wfd = os.pipe()
    env = {**w.env, **({warm.OFF: "1"} if off else {})}
    def ignoring() -> None:  # as nohup, or a shell for a background job, starts a command
        for sig in ignore:
            signal.signal(sig, signal.SIG_IGN)

    p = subprocess.Popen([HIF, "import", "agent-trace", "-"], cwd=repo, env=env, stdin=r,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignoring)
    os.write(wfd, b"{")

    def consumed() -> bool:
        buf = bytearray(4)
        fcntl.ioctl(r, termios.FIONREAD, buf)
        return int.from_bytes(buf, sys.byteorder) == 0

    wait_until("the command to read its stdin", consumed)
    return p, wfd, r


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_reaches_the_command(servers: Warm, tmp_path: Path, sig: signal.Signals) -> None:
    """Ctrl-C (SIGINT) or SIGTERM sent to the client ends the command as it ends a plain hif: the
    same message and exit code (a signal's death as 128+n)."""
    repo = small_repo(servers, tmp_path)
    name = str(servers.start(repo)["key"])
    outcomes = []
    for off in (False, True):
        p, wfd, r = _blocked_reader(servers, repo, off)
        try:
            if not off:
                assert servers.ping(name)["running"] == "1"
            p.send_signal(sig)
            out, err = p.communicate(timeout=60)
        finally:
            os.close(wfd)
            os.close(r)
        code = p.returncode if p.returncode >= 0 else 128 - p.returncode
        outcomes.append((code, out, err))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == (1 if sig == signal.SIGINT else 128 + sig)
    wait_until("the command to be reaped", lambda: servers.ping(name)["running"] == "0")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_a_signal_the_client_ignores_the_command_ignores(servers: Warm, tmp_path: Path, sig: signal.Signals
                                                         ) -> None:
    """Started ignoring a signal (``nohup``, a background job), hif goes on when it is sent, warm or
    plain; the command then ends on its own (here: its input ends, and is not a record)."""
    repo = small_repo(servers, tmp_path)
    servers.start(repo)
    outcomes = []
    for off in (False, True):
        p, wfd, r = _blocked_reader(servers, repo, off, ignore=(sig,))
        try:
            p.send_signal(sig)
            with pytest.raises(subprocess.TimeoutExpired):  # still running: the signal did nothing
                p.wait(timeout=1)
        finally:
            os.close(wfd)
            os.close(r)
        out, err = p.communicate(timeout=60)
        outcomes.append((p.returncode, out, err))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == 1 and "interrupted" not in outcomes[0][2], outcomes[0]


def test_a_client_that_goes_away_stops_its_command(servers: Warm, tmp_path: Path) -> None:
    repo = small_repo(servers, tmp_path)
    name = str(servers.start(repo)["key"])
    p, wfd, r = _blocked_reader(servers, repo, off=False)
    try:
        p.kill()
        p.wait(timeout=60)
        wait_until("the command to be stopped", lambda: servers.ping(name)["running"] == "0")
    finally:
        os.close(wfd)
        os.close(r)


def test_server_killed_mid_command_is_an_error_never_a_second_run(servers: Warm, tmp_path: Path) -> None:
    repo = small_repo(servers, tmp_path)
    info = servers.start(repo)
    p, wfd, r = _blocked_reader(servers, repo, off=False)
    try:
        os.kill(int(info["pid"]), signal.SIGKILL)  # type: ignore[arg-type]
        wait_until("the server to die", lambda: not alive(int(info["pid"])))  # type: ignore[arg-type]
        os.close(wfd)  # the command, still running, reads the end of its input and fails
        wfd = -1
        out, err = p.communicate(timeout=60)
    finally:
        if wfd >= 0:
            os.close(wfd)
        os.close(r)
    assert p.returncode == 1
    assert "the hif server stopped before the command ended" in err
    assert err.count("error:") == 2, err  # the command's own error once, then the client's: not run again


@pytest.mark.parametrize("args", [["log", "-n", "1"], ["status"]], ids=["cli", "quick-status"])
def test_a_plain_command_starts_the_server_for_the_next_ones(servers: Warm, tmp_path: Path, args: list[str]
                                                             ) -> None:
    repo = small_repo(servers, tmp_path)
    first = servers.hif(*args, cwd=repo)  # no server yet: the plain path, which starts one as it ends
    assert first.stdout
    wait_until("the started server to answer", lambda: servers.running() != [])
    name = servers.sockets()[0].removesuffix(".sock")
    before = int(servers.ping(name)["served"])
    assert servers.hif(*args, cwd=repo).stdout == first.stdout
    assert int(servers.ping(name)["served"]) == before + 1
    assert len(servers.running()) == 1  # one server however many commands found none


def test_working_copies_share_one_server_and_nothing_else(servers: Warm, tmp_path: Path) -> None:
    """Commands of several working copies at once, through one server: each sees its own."""
    from concurrent.futures import ThreadPoolExecutor  # (only this test runs commands in threads)

    repos = []
    for i in range(2):
        (tmp_path / f"w{i}").mkdir()
        repos.append(small_repo(servers, tmp_path / f"w{i}"))
    servers.hif("session", "start", "only in the second", cwd=repos[1], off=True)
    name = str(servers.start(repos[0])["key"])
    before = int(servers.ping(name)["served"])
    cases = [(repo, args) for repo in repos for args in (["status"], ["log", "-n", "2"], ["diff"])]
    want = {(str(r), tuple(a)): servers.hif(*a, cwd=r, off=True).stdout for r, a in cases}
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda c: (c, servers.hif(*c[1], cwd=c[0]).stdout), cases * 4))
    for (repo, args), out in got:
        assert out == want[(str(repo), tuple(args))], (repo, args)
    assert "only in the second" in want[(str(repos[1]), ("status",))]
    assert int(servers.ping(name)["served"]) - before == len(cases) * 4


def test_malformed_requests_are_refused_and_the_server_goes_on(servers: Warm, tmp_path: Path) -> None:
    """Requests of the right user that are not well formed: each is refused (or dropped) without
    running anything, every descriptor sent is closed, and the server serves the next command."""
    repo = small_repo(servers, tmp_path)
    info = servers.start(repo)
    name, pid = str(info["key"]), int(info["pid"])  # type: ignore[arg-type]
    fd_count = len(os.listdir(f"/proc/{pid}/fd"))
    good = warm.request(name, "run", ["hif", "log"])
    cases: list[tuple[bytes, bytes, list[int]]] = [  # (head, payload, descriptors)
        (b"HIF0" + len(good).to_bytes(4, "big"), good, [0, 1, 2, 0]),  # another magic
        (warm.MAGIC + (warm.MAX_REQUEST + 1).to_bytes(4, "big"), b"", [0, 1, 2, 0]),  # too large
        (warm.MAGIC + (len(good) + 10).to_bytes(4, "big"), good, [0, 1, 2, 0]),  # cut short
        (warm.MAGIC + len(good).to_bytes(4, "big"), good, [0, 1, 2]),  # a descriptor missing
        (warm.MAGIC + len(good).to_bytes(4, "big"), good, [0, 1, 2, 0, 1, 2]),  # too many
        (warm.MAGIC + len(good).to_bytes(4, "big"), good, []),  # none
    ]
    for bad in (warm.request("0" * 32, "run", ["hif"]), warm.request(name, "explode", ["hif"]),
                good.replace(b"\0run\0", b"\0run\0x", 1), good.split(b"\0hif\0")[0], b"\xff\0" * 20,
                good.replace(b"utf-8", b"no-such-codec", 1), b""):  # another key, kind, umask, fields...
        cases.append((warm.MAGIC + len(bad).to_bytes(4, "big"), bad, [0, 1, 2, 0]))
    before = int(servers.ping(name)["served"])
    dfd = os.open(servers.dir, os.O_RDONLY | os.O_DIRECTORY)
    for head, payload, fds in cases:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect(warm.socket_path(dfd, f"{name}.sock"))
        s.sendmsg([head], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                            b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))] if fds else [])
        with contextlib.suppress(OSError):
            s.sendall(payload)
            if len(payload) < int.from_bytes(head[4:], "big"):  # cut short: the end comes now
                s.shutdown(socket.SHUT_WR)
        reply = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(4096):
                reply += chunk
        s.close()
        assert reply[:1] in (b"R", b""), (head, payload[:60], fds, reply)
    os.close(dfd)
    assert int(servers.ping(name)["served"]) == before
    assert len(os.listdir(f"/proc/{pid}/fd")) == fd_count  # nothing kept open
    assert servers.hif("log", "-n", "1", cwd=repo).stdout == servers.hif("log", "-n", "1", cwd=repo, off=True).stdout
    assert int(servers.ping(name)["served"]) == before + 1


def test_what_does_not_change_the_code_keeps_the_server(servers: Warm, tmp_path: Path) -> None:
    """A file written beside the packages (pip's temporary files), byte code, a repository's
    files: the same server goes on serving."""
    code = tmp_path / "code"
    shutil.copytree(ROOT / "hif", code / "hif", ignore=shutil.ignore_patterns("__pycache__"))
    w = Warm(tmp_path, code)
    try:
        repo = small_repo(w, tmp_path)
        info = w.start(repo)
        (code / "pip-unpack-xyz.tmp").write_text("x")
        (code / "hif" / "__pycache__").mkdir(exist_ok=True)
        (code / "hif" / "__pycache__" / "blame.cpython-311.pyc").write_bytes(b"\0" * 16)
        (repo / "notes.txt").write_text("changed again\n")
        time.sleep(2.5)  # past the server's re-check of its key
        assert w.start(repo)["pid"] == info["pid"]
    finally:
        w.stop_all()

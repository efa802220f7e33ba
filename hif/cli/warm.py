"""The client of the warm command server (``chg``-like): a ``hif`` command handed to a per-user
process that has already imported the CLI, which forks a child to run it with this process's file
descriptors, working directory, environment and umask. It saves the ~30 ms a cold CLI spends
importing click and the SDK.

This module is imported on every ``hif`` command before anything else, so it imports only modules
the interpreter has loaded already or that cost nothing (``_socket``, ``_blake2``: the ``socket``
and ``hashlib`` modules would cost ~3 ms each, ``contextlib`` ~4 ms, which an installed hif's
interpreter has not loaded): the client costs ~1 ms over the interpreter's start. Everything here
is Linux-only (``SO_PEERCRED``, ``/proc``); elsewhere :func:`run` returns None (the plain path).

The server's side and the threat model are in :mod:`hif.cli.warmserver` and docs/architecture.md
("The warm command server"). :func:`run` returns None (run the plain path) whenever the command was
not accepted by a server: off, no server, a directory or socket that is not private, a refusal, a
server that died before accepting. Once a server has accepted a command, the command is never run
a second time here: if the server dies before reporting how it ended, that is an error.
"""

from __future__ import annotations

import _blake2  # hashlib would load OpenSSL: ~3 ms (start-up time)
import _signal  # the signal module imports enum (start-up time)
import _socket  # the socket module imports enum and selectors: ~3 ms (start-up time)
import os
import stat
import sys

from hif.errors import ServerRefused  # (loaded already: the hif package imports it)

OFF = "HIF_NO_SERVER"  # set (to anything but "" or "0"): no server is used or started
DIR_ENV = "HIF_SERVER_DIR"  # the socket directory, instead of $XDG_RUNTIME_DIR/hif or /tmp/hif-<uid>
IDLE_ENV = "HIF_SERVER_IDLE"  # seconds a server waits for a command before it exits
IDLE_DEFAULT = 600.0
MAGIC = b"HIF1"
MAX_REQUEST = 1 << 20  # argv + environment; a larger one runs on the plain path
# a reply is one byte of kind, then: A (accepted; the command runs), X <code byte> (how it ended),
# R <text> (refused before running: the client runs the plain path), P <text> (a ping's answer)
ACCEPTED, EXITED, REFUSED, PONG = b"A", b"X", b"R", b"P"
SIGNAL = b"S"  # client -> server after A: <signal number byte>, delivered to the command
FORWARDED = (2, 15, 1, 3)  # SIGINT, SIGTERM, SIGHUP, SIGQUIT (the signal module imports enum)
NAMESPACES = ("mnt", "user", "pid", "net", "ipc", "uts", "cgroup")
INSTALLED = (".dist-info", ".egg-info", ".egg-link", ".pth")  # what an install or removal changes
CONFINEMENT = (b"Seccomp:", b"NoNewPrivs:", b"CapEff:", b"CapBnd:", b"Groups:", b"Cpus_allowed_list:",
               b"Mems_allowed_list:")


def enabled(environ: os._Environ[str] | dict[str, str] = os.environ) -> bool:
    return environ.get(OFF, "") in ("", "0") and sys.platform == "linux"


def directory() -> str:
    """Where this user's servers keep their sockets: private to the user, never shared."""
    explicit = os.environ.get(DIR_ENV)
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "hif") if runtime else f"/tmp/hif-{os.geteuid()}"


def open_directory(create: bool) -> int:
    """A descriptor of the socket directory, made 0700 if missing; ServerRefused unless it is a real
    directory (not a symlink) owned by this user with no access for anyone else. Sockets are then
    reached through ``/proc/self/fd/<fd>/``, so the directory checked is the one used."""
    path = directory()
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as e:
            raise ServerRefused(f"cannot create {path}: {e.strerror}") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ServerRefused(f"{path}: {e.strerror} (not a directory, or a symlink)") from None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        os.close(fd)
        raise ServerRefused(f"{path} is owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}: "
                      f"it must be uid {os.geteuid()}'s, mode 0700")
    return fd


def socket_path(dfd: int, name: str) -> str:
    return f"/proc/self/fd/{dfd}/{name}"


def confinement(pid: str = "self") -> list[bytes]:
    """What confines a process beyond its uid: its namespaces, root directory, seccomp mode,
    no-new-privileges flag, capabilities, groups, CPUs, resource limits, control groups and
    niceness. A server serves only clients whose confinement equals its own (a sandboxed or
    limited command must not be run by a process that is not); part of the key."""
    out = []
    for ns in NAMESPACES:
        try:
            out.append(os.readlink(f"/proc/{pid}/ns/{ns}").encode())
        except OSError:
            out.append(b"-")
    out.append(os.readlink(f"/proc/{pid}/root").encode())
    with open(f"/proc/{pid}/status", "rb") as f:
        out += [line for line in f.read().splitlines() if line.startswith(CONFINEMENT)]
    for name in ("limits", "cgroup"):
        with open(f"/proc/{pid}/{name}", "rb") as f:
            out.append(f.read())
    with open(f"/proc/{pid}/stat", "rb") as f:
        out.append(f.read().rsplit(b")", 1)[1].split()[16])  # nice
    return out


def _files(top: str, h: object) -> None:
    """Feed ``h`` every file under ``top`` (not ``__pycache__``) with its size and mtime."""
    for e in sorted(os.scandir(top), key=lambda e: e.name):
        if e.is_dir(follow_symlinks=False):
            if e.name != "__pycache__":
                _files(e.path, h)
        else:
            st = e.stat()
            h.update(f"{e.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())  # type: ignore[attr-defined]


def key() -> str:
    """The name of the server that may run this process's commands: a hash of everything that
    decides which code runs and how — the interpreter, its flags and search path, hif's own files
    (size and mtime: an upgrade or an edit makes a new key, so old code never runs), the packages
    installed on the search path (their ``.dist-info`` names, with versions), the PYTHON* and locale
    variables read at interpreter start-up, the user, group and confinement."""
    h = _blake2.blake2b(digest_size=16)
    env = [f"{k}={v}" for k, v in sorted(os.environ.items())
           if k.startswith("PYTHON") or k in ("LANG", "LC_ALL", "LC_CTYPE")]
    flags = getattr(sys, "_xoptions", {})
    head = [sys.executable, sys.version, repr(sys.flags), repr(sys.warnoptions), repr(sorted(flags.items())),
            sys.getfilesystemencoding(), *sys.path, *env,
            f"{os.geteuid()} {os.getegid()} {sorted(os.getgroups())}"]
    h.update("\0".join(head).encode("utf-8", "surrogateescape"))
    for line in confinement():
        h.update(line + b"\0")
    for p in sys.path:  # the distributions installed (names carry versions) and the .pth hooks
        try:
            names = [n for n in os.listdir(p) if n.endswith(INSTALLED)]
        except OSError:
            continue
        h.update("\0".join([p, *sorted(names)]).encode("utf-8", "surrogateescape") + b"\n")
    _files(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), h)  # the hif package
    return h.hexdigest()


def connect(dfd: int, name: str) -> _socket.socket:
    """A connection to the server listening at ``name`` in the directory; FileNotFoundError if there
    is none, ServerRefused if the name is something else than this user's socket."""
    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
        raise ServerRefused(f"{name} is not a socket of uid {os.geteuid()}")
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.connect(socket_path(dfd, name))
    except OSError:
        s.close()
        raise
    return s


def recv_exact(s: _socket.socket, n: int) -> bytes:
    """``n`` bytes, or fewer if the peer closed first."""
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def send_request(s: _socket.socket, payload: bytes, fds: list[int]) -> None:
    """The request: MAGIC, the payload's length and the descriptors, then the payload."""
    rights = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
    head = MAGIC + len(payload).to_bytes(4, "big")
    s.sendmsg([head], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)] if fds else [])
    s.sendall(payload)


def encode(fields: list[bytes]) -> bytes:
    """NUL-separated: no argument, variable or value can hold a NUL."""
    return b"\0".join(fields)


def request(name: str, kind: str, argv: list[str] | None = None) -> bytes:
    """The payload of a request: key, kind, umask, the forwarded signals this process ignores (as
    ``nohup`` or a shell's background job sets them), the three streams' encodings and error
    handlers (so the child's ``sys.stdout`` is this process's), argv and the environment."""
    mask = os.umask(0o077)
    os.umask(mask)
    ignored = b",".join(b"%d" % n for n in FORWARDED if _signal.getsignal(n) == _signal.SIG_IGN)
    fields = [name.encode(), kind.encode(), b"%d" % mask, ignored]
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        fields += [str(getattr(stream, "encoding", None) or "utf-8").encode(),
                   str(getattr(stream, "errors", None) or "strict").encode()]
    args = [os.fsencode(a) for a in (argv or [])]
    fields += [b"%d" % len(args), *args, *(k + b"=" + v for k, v in os.environb.items())]
    return encode(fields)


def run(argv: list[str]) -> int | None:
    """Run ``argv`` through this user's warm server and return its exit code; None if no server
    accepted it (the caller runs the plain path; when no server was running, one is started for
    the next command as this one exits)."""
    if not enabled() or None in (sys.stdin, sys.stdout, sys.stderr):
        return None
    try:
        dfd = open_directory(create=True)
    except ServerRefused:
        return None
    try:
        name = key()
        try:
            s = connect(dfd, name + ".sock")
        except (FileNotFoundError, ConnectionRefusedError):
            import atexit  # (start-up time: only when no server is running)

            atexit.register(start_later, name)  # once this command is done: it keeps the CPU
            return None
        cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except (ServerRefused, OSError):
        return None
    finally:
        os.close(dfd)
    caught: list[int] = []
    try:
        try:
            payload = request(name, "run", argv)
            if len(payload) > MAX_REQUEST:
                return None
            caught = _forward_signals(s)
            send_request(s, payload, [0, 1, 2, cwd])
            kind = s.recv(1)
        except OSError:
            kind = b""
        finally:
            os.close(cwd)
        if kind != ACCEPTED:  # refused, or gone before accepting: the command did not run here
            if caught:  # interrupted meanwhile: as if the plain command had been
                return 128 + caught[0]
            _forward_signals(None)
            return None
        try:
            reply = recv_exact(s, 2)
        except OSError:
            reply = b""
    finally:
        s.close()
    if len(reply) == 2 and reply[:1] == EXITED:
        return reply[1]
    os.write(2, b"error: the hif server stopped before the command ended; it may have run "
                b"(hif status and hif log show where it got to)\n")
    return 1


_PREVIOUS: dict[int, object] = {}  # the handlers _forward_signals replaced


def _forward_signals(s: _socket.socket | None) -> list[int]:
    """From now on Ctrl-C, SIGTERM, SIGHUP and SIGQUIT go to the command (through the server, which
    knows its process group), unless this process ignores them; returns the list of those caught.
    ``None``: the handlers as they were."""
    caught: list[int] = []

    def forward(signum: int, frame: object) -> None:
        caught.append(signum)
        try:  # noqa: SIM105 - as above
            s.send(SIGNAL + bytes([signum]))  # type: ignore[union-attr]
        except OSError:
            pass

    for signum in FORWARDED:
        if s is None:
            if signum in _PREVIOUS:
                _signal.signal(signum, _PREVIOUS.pop(signum))  # type: ignore[arg-type]
        elif _signal.getsignal(signum) != _signal.SIG_IGN:
            _PREVIOUS[signum] = _signal.getsignal(signum)
            _signal.signal(signum, forward)
    return caught


def start_later(name: str) -> None:
    """Start the server of key ``name`` (at the end of a plain command, which needed one)."""
    try:
        dfd = open_directory(create=True)
    except ServerRefused:
        return
    try:
        spawn(dfd, name)
    except OSError:
        pass  # no server: the next command runs plain too
    finally:
        os.close(dfd)


def spawn(dfd: int, name: str) -> None:
    """Start a server for ``name`` in the background, detached (its own session, no terminal, its
    output discarded), and return at once: this command runs the plain path meanwhile. Two
    commands starting one at once is harmless: the second server finds the first's lock and exits."""
    import fcntl  # (start-up time: only when no server is running)

    try:  # a server that holds the lock is starting (or running): do not start another
        lock = os.open(name + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                       dir_fd=dfd)
    except OSError:
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return
    finally:
        os.close(lock)
    server_command(name, detach=True)


def server_command(name: str, detach: bool) -> int:
    """Start ``python -m hif.cli.warmserver`` for key ``name`` with this interpreter, flags and
    search path (its key must come out the same); returns its pid. Started in ``/`` (its working
    directory must pin nothing) with the search path set before anything is imported, so nothing
    in the directory it starts from can be imported instead of hif."""
    import json  # (start-up time: only when a server is started)
    import subprocess  # (as above)

    boot = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
            "from hif.cli.warmserver import main; main(sys.argv[2])")
    flags = subprocess._args_from_interpreter_flags()  # the flags this interpreter runs with
    cmd = [sys.executable, *flags, "-c", boot, json.dumps(sys.path), name]
    p = subprocess.Popen(cmd, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=detach, close_fds=True)
    p.returncode = 0  # not waited for: it outlives this command (reaped by init when it exits)
    return p.pid


def ask(dfd: int, name: str, kind: str) -> str:
    """Send a ``ping`` or ``stop`` to the server of key ``name``; its answer (ServerRefused if it
    turns the request down, OSError if there is no server)."""
    s = connect(dfd, name + ".sock")
    try:
        s.settimeout(5.0)
        send_request(s, request(name, kind), [])
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    finally:
        s.close()
    if reply[:1] != PONG:
        raise ServerRefused(reply[1:].decode(errors="replace") or "no answer")
    return reply[1:].decode(errors="replace")


def servers(dfd: int) -> list[str]:
    """The keys of the servers whose sockets are in the directory (running or not)."""
    return sorted(n.removesuffix(".sock") for n in os.listdir(dfd) if n.endswith(".sock"))

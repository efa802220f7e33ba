"""The warm command server: one per user and key (:func:`hif.cli.warm.key`), started on demand by
a ``hif`` command that found none. It imports the CLI once, then for each command a client sends
(argv, environment, umask and its stdin, stdout, stderr and working directory as descriptors) it
forks a child that takes all of those over and runs the command as a plain ``hif`` would, while
this process waits for the next one. The child is fresh from the fork every time: nothing one
command does is seen by the next, whichever working copy it ran in.

Who may use it: a client of this user and group (``SO_PEERCRED``) whose confinement (namespaces,
root, seccomp, capabilities: :func:`hif.cli.warm.confinement`) is the server's; anyone else is
refused before anything is read. The server exits when idle (``HIF_SERVER_IDLE`` seconds, default
600), when its key changes (hif's files edited or upgraded: the key is checked every few seconds),
when its socket is removed or taken over, on SIGTERM and on ``hif server stop``; commands running
then finish first. Run as ``python -c`` by :func:`hif.cli.warm.server_command`, never imported by
the library.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import gc
import io
import os
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass

from hif.cli import warm
from hif.errors import ServerRefused

RECHECK = 2.0  # seconds between checks of the key and of the socket still being this server's
READ_TIMEOUT = 5.0
HELD = {signal.Signals(s) for s in warm.FORWARDED}  # a client sends its whole request at once; a slow one is dropped
PREWARM = (  # modules commands import lazily, imported once here so no child pays for them
    "hif.cli.main", "hif.blame", "hif.history", "hif.landing", "hif.merge", "hif.store.embedded",
    "hif.checks", "hif.keys", "hif.worktree.quickstatus", "subprocess", "getpass",
)


@dataclass
class Request:
    kind: str
    umask: int
    ignored: list[int]  # signals the client ignores: the command ignores them too
    streams: list[tuple[str, str]]  # (encoding, errors) of stdin, stdout, stderr
    argv: list[bytes]
    env: list[bytes]  # KEY=VALUE


class Server:
    def __init__(self, name: str, dfd: int, lock: int) -> None:
        self.name, self.dfd, self.lock = name, dfd, lock
        self.idle = float(os.environ.get(warm.IDLE_ENV) or warm.IDLE_DEFAULT)
        self.confinement = warm.confinement()
        self.started = self.last = time.monotonic()
        self.pid = os.getpid()
        self.served = 0
        self.stopping = False
        self.children: dict[int, socket.socket] = {}  # pid -> its client's connection
        self.gone: set[int] = set()  # commands whose client went away
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock = name + ".sock"
        with contextlib.suppress(FileNotFoundError):  # a dead server's (we hold the key's lock)
            os.unlink(sock, dir_fd=dfd)
        self.listener.bind(warm.socket_path(dfd, sock))
        self.inode = os.stat(sock, dir_fd=dfd, follow_symlinks=False).st_ino
        self.listener.listen(128)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes poll through the wakeup fd
        signal.signal(signal.SIGTERM, self._stop)
        for s in (signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def serve(self) -> None:
        next_check = time.monotonic() + RECHECK
        while True:
            self.reap()
            now = time.monotonic()
            if now >= next_check:
                next_check = now + RECHECK
                if not self.stopping and not self.current():
                    self.stopping = True
            if self.stopping and self.listener.fileno() >= 0:
                self.close_listener()
            if not self.children and (self.stopping or now - self.last >= self.idle):
                return
            # poll, not select: any number of commands may be running (select stops at fd 1024)
            waits: dict[int, socket.socket | None] = {self.wake_r: None}
            waits.update((c.fileno(), c) for p, c in self.children.items() if p not in self.gone)
            if self.listener.fileno() >= 0:
                waits[self.listener.fileno()] = self.listener
            poller = select.poll()
            for fd in waits:
                poller.register(fd, select.POLLIN)
            timeout = max(0.0, min(next_check, self.last + self.idle) - now)
            for fd, _ in poller.poll(int(timeout * 1000) + 1):
                r = waits[fd]
                if r is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_r, 512)
                elif r is self.listener:
                    self.accept()
                else:
                    self.from_client(r)

    def current(self) -> bool:
        """Whether this server is still the one for its key: the code unchanged, the socket ours."""
        try:
            st = os.stat(self.name + ".sock", dir_fd=self.dfd, follow_symlinks=False)
        except OSError:
            return False
        return st.st_ino == self.inode and warm.key() == self.name

    def close_listener(self) -> None:
        with contextlib.suppress(OSError):
            if os.stat(self.name + ".sock", dir_fd=self.dfd, follow_symlinks=False).st_ino == self.inode:
                os.unlink(self.name + ".sock", dir_fd=self.dfd)
        self.listener.close()

    def reap(self) -> None:
        """Tell each finished command's client how it ended: its exit code, or 128+n for signal n."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            if pid not in self.gone:
                with contextlib.suppress(OSError):
                    conn.sendall(warm.EXITED + bytes([code & 255]))
            self.gone.discard(pid)
            conn.close()
            self.last = time.monotonic()

    def from_client(self, conn: socket.socket) -> None:
        """A running command's client: a signal to pass on, or gone (the command is stopped, as
        killing a plain ``hif`` would stop it)."""
        pid = next(p for p, c in self.children.items() if c is conn)
        try:
            msg = conn.recv(2)
        except OSError:
            msg = b""
        if len(msg) == 2 and msg[:1] == warm.SIGNAL and msg[1] in warm.FORWARDED:
            sig = msg[1]
        elif msg:
            return
        else:
            sig = signal.SIGTERM
            self.gone.add(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        fds: list[int] = []
        try:
            conn.settimeout(READ_TIMEOUT)
            self.check_peer(conn)
            req, fds = self.read_request(conn)
            if req.kind == "ping":
                conn.sendall(warm.PONG + self.describe().encode())
            elif req.kind == "stop":
                self.stopping = True
                conn.sendall(warm.PONG + b"stopping")
            elif req.kind == "run" and len(fds) == 4 and not self.stopping:
                self.run(conn, req, fds)
                return
            else:
                raise ServerRefused("stopping" if self.stopping else "bad request")
        except ServerRefused as e:
            with contextlib.suppress(OSError):
                conn.sendall(warm.REFUSED + str(e).encode())
                drain(conn)
        except OSError:
            pass
        finally:
            for fd in fds:
                os.close(fd)
        conn.close()

    def check_peer(self, conn: socket.socket) -> None:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", creds)
        if uid != os.geteuid() or gid != os.getegid():
            raise ServerRefused(f"uid {uid} gid {gid} may not use uid {os.geteuid()}'s server")
        try:
            theirs = warm.confinement(str(pid))
        except OSError:
            raise ServerRefused("the client's confinement cannot be read") from None
        if theirs != self.confinement:
            raise ServerRefused("the client is confined differently (namespaces, seccomp, capabilities)")

    def read_request(self, conn: socket.socket) -> tuple[Request, list[int]]:
        """The request and the descriptors that came with it (the caller closes them)."""
        fds: list[int] = []
        space = socket.CMSG_SPACE(4 * struct.calcsize("i"))
        head, anc, flags, _ = conn.recvmsg(8, space, socket.MSG_CMSG_CLOEXEC)
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                n = len(data) // 4
                fds += struct.unpack(f"{n}i", data[:n * 4])
        try:
            if flags & socket.MSG_CTRUNC:
                raise ServerRefused("too many descriptors")
            head += warm.recv_exact(conn, 8 - len(head))
            if len(head) != 8 or head[:4] != warm.MAGIC:
                raise ServerRefused("not a hif request (another version of the client?)")
            size = int.from_bytes(head[4:], "big")
            if size > warm.MAX_REQUEST:
                raise ServerRefused("request too large")
            payload = warm.recv_exact(conn, size)
            if len(payload) != size:
                raise ServerRefused("request cut short")
            return decode(payload, self.name), fds
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise

    def describe(self) -> str:
        now = time.monotonic()
        return (f"pid={os.getpid()} key={self.name} up={now - self.started:.0f} served={self.served} "
                f"running={len(self.children)} idle={self.idle:.0f} idle_for={now - self.last:.0f}")

    def run(self, conn: socket.socket, req: Request, fds: list[int]) -> None:
        # the signals a client forwards are held from before the fork until the child has its own
        # handlers: one sent at once is delivered to the command, not lost to the server's
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
        try:
            pid = os.fork()
        except OSError as e:
            raise ServerRefused(f"cannot fork: {e.strerror}") from None
        finally:
            if os.getpid() == self.pid:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
        if pid == 0:
            self.child(conn, req, fds)
        with contextlib.suppress(OSError):  # the child does it too: whichever runs first
            os.setpgid(pid, pid)
        conn.settimeout(None)
        self.children[pid] = conn
        self.served += 1
        self.last = time.monotonic()
        try:
            conn.sendall(warm.ACCEPTED)
        except OSError:  # the client is gone already
            self.gone.add(pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)

    def child(self, conn: socket.socket, req: Request, fds: list[int]) -> None:
        """Become the client's command: its descriptors, directory, umask, environment, argv and
        streams replace the server's; then the CLI runs as in a plain ``hif``. Never returns."""
        try:
            os.setpgid(0, 0)  # its own group: a forwarded Ctrl-C reaches its subprocesses too
            signal.set_wakeup_fd(-1)
            for s in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                signal.signal(s, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as the interpreter sets it at start-up
            for s in req.ignored:  # as the client (nohup, a background job) ignores them
                signal.signal(s, signal.SIG_IGN)
            for other in self.children.values():  # other clients' connections: theirs alone
                other.close()
            self.listener.close()
            for fd in (self.wake_r, self.wake_w, self.lock, self.dfd):
                os.close(fd)
            # conn stays open (close-on-exec) until the command ends: if the server dies meanwhile,
            # the client waits for the command to end rather than leaving it running behind it
            for i in range(3):
                os.dup2(fds[i], i)
                os.close(fds[i])
            os.fchdir(fds[3])
            os.close(fds[3])
            os.umask(req.umask)
            os.environb.clear()
            os.environb.update(dict(e.split(b"=", 1) for e in req.env if b"=" in e))
            time.tzset()
            if "tempfile" in sys.modules:  # it caches the temporary directory ($TMPDIR) on first use
                sys.modules["tempfile"].tempdir = None
            sys.argv = [os.fsdecode(a) for a in req.argv]
            _streams(req.streams)
            gc.enable()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
        except KeyboardInterrupt:  # a Ctrl-C before the command began
            os._exit(130)
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.write(2, f"error: the hif server could not start the command: {e}\n".encode())
            os._exit(1)
        code = 1
        try:
            from hif.__main__ import run_here  # (imported already: by main(), before the fork)

            run_here()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, int) and e.code is not None:
                with contextlib.suppress(Exception):
                    print(e.code, file=sys.stderr)
        except KeyboardInterrupt:  # outside a command's own handler: as the interpreter exits on it
            code = 130
        except BaseException:  # the CLI's own guard reports errors; this is the very last resort
            code = 1
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            code = 120  # as the interpreter exits when it cannot flush stdout
        os._exit(code)


_KEPT: list[object] = []  # the server's own streams, kept so freeing them never closes fds 0-2


def _streams(spec: list[tuple[str, str]]) -> None:
    """``sys.stdin``/``stdout``/``stderr`` over descriptors 0-2 as the client's interpreter made
    them: its encodings and error handlers, stdout line-buffered on a terminal, stderr always."""
    _KEPT.extend((sys.stdin, sys.stdout, sys.stderr))
    unbuffered = bool(getattr(sys.stdout, "write_through", False))  # python -u, as the server was started
    made = []
    for fd, (encoding, errors) in enumerate(spec):
        line = fd == 2 or (fd == 1 and os.isatty(1))
        raw = open(fd, "rb" if fd == 0 else "wb", closefd=False)  # noqa: SIM115 - lives on as sys.std*
        made.append(io.TextIOWrapper(raw, encoding=encoding, errors=errors, newline="\n",
                                     line_buffering=line, write_through=unbuffered and fd > 0))
    sys.stdin = sys.__stdin__ = made[0]
    sys.stdout = sys.__stdout__ = made[1]
    sys.stderr = sys.__stderr__ = made[2]


def drain(conn: socket.socket) -> None:
    """After a refusal: read what the client sent (up to a request's size, for a second at most)
    before closing, or it would get a reset instead of the reason."""
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(1.0)
    left = warm.MAX_REQUEST + 8
    while left > 0 and (chunk := conn.recv(min(left, 65536))):
        left -= len(chunk)


def decode(payload: bytes, name: str) -> Request:
    """Parse :func:`hif.cli.warm.request`'s payload; ServerRefused if it is not one for this key."""
    f = payload.split(b"\0")
    try:
        if f[0].decode() != name:
            raise ServerRefused("another key")
        kind, umask = f[1].decode(), int(f[2])
        ignored = [int(n) for n in f[3].split(b",") if n]
        streams = [(f[i].decode(), f[i + 1].decode()) for i in (4, 6, 8)]
        argc = int(f[10])
        argv, env = f[11:11 + argc], f[11 + argc:]
    except (IndexError, ValueError, UnicodeDecodeError):
        raise ServerRefused("bad request") from None
    if len(argv) != argc or not 0 <= umask <= 0o777 or not set(ignored) <= set(warm.FORWARDED):
        raise ServerRefused("bad request")
    for enc, err in streams:
        try:
            codecs.lookup(enc)
            codecs.lookup_error(err)
        except LookupError:
            raise ServerRefused(f"unknown encoding {enc}/{err}") from None
    return Request(kind, umask, ignored, streams, argv, env)


def main(name: str) -> None:
    """Serve key ``name`` until idle or stale; exit at once if another server has it or this
    interpreter's key is not ``name`` (the client and this process disagree: nothing to serve)."""
    os.umask(0o077)
    try:
        dfd = warm.open_directory(create=True)
    except ServerRefused:
        return
    lock = os.open(name + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another server has this key
    if warm.key() != name:
        return
    gc.disable()  # as the plain path: importing makes no cycles worth collecting
    import importlib  # (only the server pre-imports)

    import hif.__main__  # noqa: F401 - run_here, which every child calls

    for module in PREWARM:
        importlib.import_module(module)
    if warm.key() != name:  # hif's files changed while they were imported: the code is not the key's
        return
    gc.collect()
    gc.freeze()  # the imported modules are never freed: the children's collections skip them
    server = Server(name, dfd, lock)
    try:
        server.serve()
    finally:
        server.close_listener()
        with contextlib.suppress(OSError):
            os.unlink(name + ".lock", dir_fd=dfd)
    os._exit(0)

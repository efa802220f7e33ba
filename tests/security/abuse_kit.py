"""What a hostile anonymous caller sends a node, and how much of the node's memory it takes.

Shared by ``tests/security`` and ``bench/abuse.py``: oversized chunked bodies sent over a raw socket
(so nothing on the client side buffers or stops them early), decompression bombs, and the node's
resident memory read from ``/proc``. Loopback only.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import zstandard

CHUNK = 64 * 1024
MiB = 1 << 20


@dataclass
class Sent:
    """What one oversized request achieved: bytes the node took before answering, and its answer."""

    sent: int
    status: int | None  # None: the node closed the connection without an answer


def send_chunked(url: str, path: str, total: int, *, content_type: str = "application/cbor",
                 headers: dict[str, str] | None = None, head: bytes = b"",
                 timeout: float = 30.0) -> Sent:
    """POST ``head`` then zero bytes up to ``total`` bytes with Transfer-Encoding: chunked, stopping
    as soon as the node answers or stops reading; returns the status it answered."""
    parts = urlsplit(url)
    assert parts.hostname in ("127.0.0.1", "localhost", "::1"), "loopback only"
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as s:
        lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", "Transfer-Encoding: chunked",
                 f"Content-Type: {content_type}", "Connection: close",
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        zeros = bytes(CHUNK)
        sent = 0
        while sent < total:
            piece = head[sent:sent + CHUNK] if sent < len(head) else zeros[:min(CHUNK, total - sent)]
            readable, writable, _ = select.select([s], [s], [], timeout)
            if readable or not writable:  # an answer (or a stall): stop sending
                break
            try:
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except OSError:  # the node closed the connection
                break
            sent += len(piece)
        else:
            with contextlib.suppress(OSError):
                s.sendall(b"0\r\n\r\n")
        return Sent(sent, _status(s, timeout))


def send_length(url: str, path: str, body: bytes, *, content_type: str = "application/cbor",
                headers: dict[str, str] | None = None, timeout: float = 30.0) -> int | None:
    """POST ``body`` with a Content-Length; the status answered."""
    parts = urlsplit(url)
    assert parts.hostname in ("127.0.0.1", "localhost", "::1"), "loopback only"
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as s:
        lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}",
                 f"Content-Type: {content_type}", "Connection: close",
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        with contextlib.suppress(OSError):
            s.sendall(body)
        return _status(s, timeout)


def _status(s: socket.socket, timeout: float) -> int | None:
    s.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            more = s.recv(4096)
            if not more:
                break
            data += more
    except OSError:
        pass
    first = data.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) >= 2 and first[1].isdigit() else None


def together(n: int, call: Callable[[int], object]) -> list[object]:
    """``call(i)`` for i in range(n), all at once in threads; the results in order."""
    out: list[object] = [None] * n

    def one(i: int) -> None:
        out[i] = call(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def zstd_bomb(expanded: int, *, kind: bytes = b"blob", declare: bool = False) -> bytes:
    """A stored object (header byte 1 + one zstd frame) whose canonical bytes would be ``["blob",
    <expanded zero bytes>]``: a few KiB that expand to ``expanded`` bytes. ``declare`` puts the
    content size in the frame header (a liar or not, it must not be trusted)."""
    head = b"\x82" + bytes([0x60 + len(kind)]) + kind + b"\x5b" + expanded.to_bytes(8, "big")
    cz = zstandard.ZstdCompressor(level=19, write_content_size=declare)
    w = cz.compressobj(size=len(head) + expanded if declare else -1)
    parts = [w.compress(head)]
    zeros = bytes(MiB)
    left = expanded
    while left > 0:
        parts.append(w.compress(zeros[:min(MiB, left)]))
        left -= MiB
    parts.append(w.flush())
    return b"\x01" + b"".join(parts)


def status_kib(pid: int, field: str) -> int:
    """A figure of ``/proc/<pid>/status`` in KiB (VmRSS: resident now, VmHWM: peak resident)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """Start VmHWM afresh from the current resident size (Linux ``clear_refs`` 5)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")

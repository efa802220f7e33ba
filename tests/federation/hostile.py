"""Hostile peers on loopback, for tests and ``bench/federation.py``: a key server that drips its
answer, and a flood of requests that name its keys.

``DripServer`` answers every request with ``200`` and a ``Content-Length`` it never reaches,
sending one byte per ``interval`` seconds: the slowloris of key servers. It counts what a node
does to it: connections in all, open now, most open at once, and how many bytes each connection
had received when the node closed it (``dripped``: with the node's overall key deadline, at most
``deadline / interval`` plus a byte or two). With ``body`` it instead sends that body at once
(e.g. a deeply nested actor document), with ``status``.

``flood(targets, drip, n)`` sends ``n`` POSTs in parallel (asyncio, no connection limit), each a
Follow signed by a fresh key whose id is on the drip server (``drip.key(i)``), spread over
``targets`` (inbox URLs), and returns the statuses (with ``Retry-After`` when given) once all
answered. ``start_flood`` does the same in a background thread and returns a handle to ``join``.

Needs only the standard library, httpx and ``federation.httpsig``: the benchmark imports it with
``tests/federation`` on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from federation.httpsig import sign_headers
from federation.identity import NodeKey


@dataclass
class DripStats:
    connections: int = 0
    open: int = 0
    max_open: int = 0
    dripped: list[int] = field(default_factory=list)  # bytes sent per closed connection
    paths: list[str] = field(default_factory=list)


class DripServer:
    """A key server on ``host`` (127.0.0.1; any loopback address) that sends one byte per ``interval`` (or ``body`` at once)."""

    def __init__(self, interval: float = 0.5, length: int = 1 << 20, body: bytes | None = None,
                 content_type: str = "application/activity+json", status: int = 200,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.interval = interval
        self.status = status
        self.length = length
        self.body = body
        self.content_type = content_type
        self.stats = DripStats()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(512)
        self.port = int(self._sock.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def signer(self, i: int = 0) -> NodeKey:
        """A fresh key whose id (``<drip>/k<i>/ap/node#main-key``) points at this server."""
        return NodeKey(os.urandom(32), f"{self.url}/k{i}")

    def key(self, i: int = 0) -> str:
        return self.signer(i).key_id

    def close(self) -> None:
        self._stopping.set()
        self._sock.close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> DripServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self.stats.connections += 1
            self.stats.open += 1
            self.stats.max_open = max(self.stats.max_open, self.stats.open)
        sent = 0
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            with self._lock:
                self.stats.paths.append(line.split(" ")[1] if " " in line else line)
            if self.body is not None:
                conn.sendall(
                    f"HTTP/1.1 {self.status} X\r\nContent-Type: ".encode() + self.content_type.encode()
                    + b"\r\nContent-Length: " + str(len(self.body)).encode()
                    + b"\r\nConnection: close\r\n\r\n" + self.body
                )
                return
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: " + self.content_type.encode()
                + b"\r\nContent-Length: " + str(self.length).encode() + b"\r\n\r\n"
            )
            while sent < self.length and not self._stopping.is_set():
                readable, _, _ = select.select([conn], [], [], self.interval)
                if readable and not conn.recv(4096):  # the node closed the connection
                    return
                conn.sendall(b" ")
                sent += 1
        except OSError:
            return
        finally:
            conn.close()
            with self._lock:
                self.stats.open -= 1
                self.stats.dripped.append(sent)


def follow_for(signer: NodeKey, target: str) -> dict[str, Any]:
    """A Follow of ``target`` by the actor of ``signer`` (on the same host as its key)."""
    return {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{signer.actor}#follow-{time.time_ns()}",
        "type": "Follow",
        "actor": signer.actor,
        "object": target,
    }


def forged_request(signer: NodeKey, inbox: str, target: str) -> tuple[bytes, dict[str, str]]:
    """A well-formed signed Follow whose key the node must fetch (from wherever it points)."""
    body = json.dumps(follow_for(signer, target)).encode()
    headers = sign_headers(
        signer, "POST", inbox, body, {"Content-Type": "application/activity+json"}
    )
    return body, headers


async def _flood(targets: list[tuple[str, str]], drip: DripServer, n: int,
                 distinct: bool) -> list[tuple[int, str | None]]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one(i: int) -> tuple[int, str | None]:
            inbox, target = targets[i % len(targets)]
            body, headers = forged_request(drip.signer(i if distinct else 0), inbox, target)
            try:
                r = await client.post(inbox, content=body, headers=headers)
            except httpx.HTTPError as e:
                return 0, type(e).__name__
            return r.status_code, r.headers.get("retry-after")

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def flood(targets: list[tuple[str, str]], drip: DripServer, n: int = 70, *,
          distinct: bool = True) -> list[tuple[int, str | None]]:
    """``n`` parallel forged Follows; ``targets``: (inbox URL, followed actor URL) pairs.
    ``distinct``: each request names another key URL on the drip server (else all the same)."""
    return asyncio.run(_flood(targets, drip, n, distinct))


class Flood:
    """A :func:`flood` running in a background thread."""

    def __init__(self, targets: list[tuple[str, str]], drip: DripServer, n: int = 70, *,
                 distinct: bool = True) -> None:
        self.result: list[tuple[int, str | None]] = []
        self._thread = threading.Thread(
            target=lambda: self.result.extend(flood(targets, drip, n, distinct=distinct)),
            daemon=True,
        )
        self._thread.start()

    def join(self, timeout: float = 180.0) -> list[tuple[int, str | None]]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError("the flood's requests did not all get an answer")
        return self.result


def start_flood(targets: list[tuple[str, str]], drip: DripServer, n: int = 70, *,
                distinct: bool = True) -> Flood:
    return Flood(targets, drip, n, distinct=distinct)

"""The HTTP client of the forge's API (docs/api.md): CBOR requests with retries of the safe ones,
error answers turned into hif errors, and the streamed ``objects/stream`` reader. Tokens never
appear in messages."""

from __future__ import annotations

import io
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import cbor2

from hif.errors import (
    AuthRequired,
    Conflict,
    ConflictError,
    CorruptObject,
    HifError,
    InvalidInput,
    InvalidPath,
    NotFound,
    PermissionDenied,
    RemoteError,
    SessionClosed,
)
from hif.forge.urls import normalize_url
from hif.objects import decode, encode

# httpx imports its own command-line client (rich, pygments: 30 ms of every hif command's start-up)
# and carries on without it when that import fails; hif never runs it, so the import is refused
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
import httpx  # noqa: E402

CBOR = "application/cbor"
ATTEMPTS = 3  # per request, for requests that are safe to repeat
STREAM_BATCH = 100_000  # ids per objects/stream (the forge's limit)
STREAM_REPORT = 512  # objects between two progress reports while an answer streams
HAVE_BATCH = 10_000  # ids per objects/have (the forge's limit)
PUT_BATCH = 1_000  # objects per objects/put
PUT_BYTES = 32 << 20  # bytes per objects/put (the forge accepts 64 MiB)
EVENT_BATCH = 500  # events per sessions/<id>/events (the forge accepts 1,000)
EVENT_BYTES = 512 << 10  # bytes of events per request (the forge accepts 1 MiB bodies)
LOG_PAGE = 100  # landing records per log request
MAX_PAGES = 10_000  # bound on any paged listing

# A transfer report: (direction "fetch" | "send", objects, bytes) after each batch.
Progress = Callable[[str, int, int], None]

def one_line(text: str) -> str:
    return " ".join(str(text).split())


def field_of(doc: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    """A typed field of an answer; anything else is a forge hif cannot understand."""
    if not isinstance(doc, dict) or not isinstance(doc.get(name), kind):
        raise RemoteError(f"the forge sent an answer without a valid {name!r}")
    return doc[name]


class ForgeClient:
    """CBOR requests to one forge with one (optional) bearer token; forge errors become hif errors.

    Requests that are safe to repeat (reads, object transfers, landing, which is idempotent) are
    retried a bounded number of times on connection failures and 5xx answers; any request is
    retried when the connection could not even be opened, since then nothing was sent.
    """

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float | None = None) -> None:
        self.base_url = normalize_url(base_url)
        headers = {"Accept": CBOR, "User-Agent": "hif"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if timeout is None:
            timeout = float(os.environ.get("HIF_REMOTE_TIMEOUT", "60"))
        # a plain-HTTP forge never speaks TLS here (redirects are not followed): no need to load the
        # system's certificates, which costs a CLI command 30 ms per client
        self._http = httpx.Client(base_url=self.base_url + "/api/v1/", headers=headers, timeout=timeout,
                                  follow_redirects=False, verify=self.base_url.startswith("https:"))
        self.requests = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ForgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params, idempotent=True)

    def post(self, path: str, body: Any, *, idempotent: bool = False) -> Any:
        return self.request("POST", path, body=body, idempotent=idempotent)

    def request(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
                idempotent: bool = False) -> Any:
        content = encode(body) if body is not None else None
        headers = {"Content-Type": CBOR} if content is not None else {}
        query = {k: v for k, v in (params or {}).items() if v is not None}
        problem = "no answer"
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(0.2 * 2 ** (attempt - 1) * (1 + random.random()))
            self.requests += 1
            try:
                resp = self._http.request(method, path, content=content, params=query, headers=headers)
            except httpx.ConnectError as e:  # nothing was sent: repeating is safe for any request
                problem = one_line(str(e) or type(e).__name__)
                continue
            except (httpx.HTTPError, httpx.InvalidURL) as e:
                problem = one_line(str(e) or type(e).__name__)
                if idempotent:
                    continue
                break
            if resp.status_code >= 500 and idempotent and attempt + 1 < ATTEMPTS:
                problem = f"HTTP {resp.status_code}"
                continue
            return self._answer(resp)
        raise RemoteError(f"cannot reach {self.base_url}: {problem}")

    def stream(self, path: str, body: Any) -> Iterator[bytes]:
        """POST ``body`` and yield the answer's bytes as they arrive, so that a large answer is used
        while it is still coming. An error answer raises as :meth:`request` does; a connection that
        fails or a 5xx raises :class:`StreamCut`, after which asking again for the rest is safe."""
        self.requests += 1
        try:
            with self._http.stream("POST", path, content=encode(body),
                                   headers={"Content-Type": CBOR}) as resp:
                if resp.status_code != 200:
                    resp.read()
                    if resp.status_code >= 500:
                        raise StreamCut(f"cannot reach {self.base_url}: HTTP {resp.status_code}")
                    self._answer(resp)  # raises the forge's error
                    raise RemoteError(f"{self.base_url} sent an answer hif cannot read")
                yield from resp.iter_bytes()
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise StreamCut(f"cannot reach {self.base_url}: {one_line(str(e) or type(e).__name__)}") from None

    def _answer(self, resp: httpx.Response) -> Any:
        status = resp.status_code
        doc: Any = None
        if resp.content:
            try:
                doc = decode(resp.content)  # one CBOR item, nothing after it
            except CorruptObject:  # a proxy may answer HTML
                doc = None
        if 200 <= status < 300:
            if doc is None and resp.content:
                raise RemoteError(f"{self.base_url} sent an answer hif cannot read (HTTP {status})")
            return doc if doc is not None else {}
        raise self._error(status, doc if isinstance(doc, dict) else {}, resp)

    def _error(self, status: int, doc: dict[str, Any], resp: httpx.Response) -> HifError:
        code = doc.get("error") if isinstance(doc.get("error"), str) else ""
        message = one_line(doc.get("message")) if isinstance(doc.get("message"), str) else ""
        message = message or f"HTTP {status}"
        if status == 401:
            return AuthRequired(f"{message} (log in with: hif login {self.base_url} --token ...)")
        if status == 403:
            return PermissionDenied(message)
        if status == 404:
            return NotFound(message)
        if status == 409:
            if code == "conflict" and isinstance(doc.get("conflicts"), list):
                return ConflictError([conflict_of(c) for c in doc["conflicts"]])
            if code == "session_closed":
                return SessionClosed(message)
            return InvalidInput(message)
        if status == 422:
            return InvalidPath(message) if "path" in message.lower() else CorruptObject(message)
        if status == 429:
            wait = resp.headers.get("Retry-After")
            return InvalidInput(f"{message} (try again in {wait} s)" if wait else message)
        if status in (400, 413):
            return InvalidInput(message)
        if status >= 500:
            return RemoteError(f"cannot reach {self.base_url}: HTTP {status} ({message})")
        return RemoteError(f"{self.base_url} answered HTTP {status}: {message}")


class StreamCut(RemoteError):
    """A streamed answer stopped early (connection lost, or the node failed): ask again for the rest."""


class ObjectStreamReader:
    """The items of an ``objects/stream`` answer (a CBOR sequence, RFC 8742), read incrementally:
    :meth:`feed` each chunk as it arrives and get the complete ``(id, stored)`` pairs, then
    :meth:`close` for the closing map. Only that shape is read, by hand: a general decoder would need
    the whole answer, or a file-like wrapper and a call per item. Memory stays one item and a chunk;
    ``max_item`` refuses an item that claims more (a hostile peer cannot make it buffer without end)."""

    def __init__(self, max_item: int | None = None) -> None:
        self._buf = bytearray()
        self._at = 0
        self._max_item = max_item

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        buf, at = self._buf, self._at
        if at:
            del buf[:at]
            at = 0
        buf += chunk
        end = len(buf)
        out: list[tuple[bytes, bytes]] = []
        while at < end:
            if buf[at] != 0x82:  # not a pair: the closing map, decoded once the answer is complete
                break
            if end - at < 36:
                break
            if buf[at + 1] != 0x58 or buf[at + 2] != 0x20 or buf[at + 35] >> 5 != 2:
                raise RemoteError("the forge sent a malformed object stream")
            info = buf[at + 35] & 31
            if info < 24:
                head, size = 1, info
            elif info <= 27:
                head = 1 + (1 << (info - 24))
                if end - at < 35 + head:
                    break
                size = int.from_bytes(buf[at + 36:at + 35 + head], "big")
            else:
                raise RemoteError("the forge sent a malformed object stream")
            if self._max_item is not None and size > self._max_item:
                raise RemoteError(f"the forge sent an object of {size} bytes (at most {self._max_item})")
            stop = at + 35 + head + size
            if stop > end:
                break
            with memoryview(buf) as view:  # one copy of a (possibly large) object, not two
                out.append((bytes(view[at + 3:at + 35]), bytes(view[at + 35 + head:stop])))
            at = stop
        self._at = at
        return out

    def close(self) -> dict[str, Any]:
        """The closing map once the answer ended; :class:`StreamCut` if it stopped early."""
        rest = bytes(self._buf[self._at:])
        self._buf = bytearray()
        self._at = 0
        if not rest:
            raise StreamCut("the forge's answer stopped early")
        fp = io.BytesIO(rest)
        try:
            closing = cbor2.CBORDecoder(fp).decode()
        except Exception:  # cbor2 raises several types; a cut answer ends in half an item
            raise StreamCut("the forge's answer stopped early") from None
        if not isinstance(closing, dict) or fp.tell() != len(rest):
            raise RemoteError("the forge sent a malformed object stream")
        return closing


def cbor_objects(chunks: Iterable[bytes]) -> Iterator[tuple[bytes, bytes] | dict[str, Any]]:
    """The items of an ``objects/stream`` answer as the bytes arrive: ``(id, stored)`` for each
    ``[id, stored]`` pair, then the closing map (see :class:`ObjectStreamReader`)."""
    reader = ObjectStreamReader()
    for chunk in chunks:
        yield from reader.feed(chunk)
    yield reader.close()


def conflict_of(raw: Any) -> Conflict:
    try:
        return Conflict(raw["path"], [(int(s["position"]), str(s["session"])) for s in raw["sessions"]],
                        str(raw["reason"]))
    except (KeyError, TypeError, ValueError):
        raise RemoteError("the forge sent a conflict hif cannot read") from None



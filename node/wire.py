"""CBOR on the wire: reading request bodies and writing answers, errors included.

Request bodies are read under a limit *while* they arrive (docs/architecture.md, "Request bodies"):
:class:`CappedBody` counts every byte the server receives for a request and refuses (413) the moment
the count passes the request's limit; until a handler reads, it holds at most one received chunk
(the connection below it then stops reading the socket), so a body nobody has asked for costs
nothing. Every route's limit starts at :data:`FORM_LIMIT`; a handler that accepts more raises it with
:func:`read_bytes` (the one reader), which also refuses a Content-Length over it before reading.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Generator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from quart import Quart, Response, request
from quart.asgi import ASGIHTTPConnection
from quart.wrappers.request import Body, Request
from werkzeug.exceptions import HTTPException

from hif.aio import read_capped
from hif.errors import Ambiguous, ConflictError, CorruptObject, HifError, SessionClosed
from hif.objects import decode, encode
from node.errors import Exists, InvalidInput, PayloadTooLarge, RateLimited

CBOR = "application/cbor"
CBOR_SEQ = "application/cbor-seq"  # RFC 8742: CBOR items one after another (objects/stream)
KiB = 1024
MiB = 1024 * KiB
DEFAULT_LIMIT = 1 * MiB
# Every body's limit until its handler raises it: web forms (log-in, tokens, members) and any route
# that declares nothing. One socket read (hypercorn reads 64 KiB) fits, so a body received before its
# handler starts reading never trips a limit the handler is about to raise.
FORM_LIMIT = 64 * KiB
# One JSON-RPC message to the MCP endpoint (node.mcp), counted while it arrives by the MCP SDK's
# transport: a write tool's whole file content fits.
MCP_LIMIT = 4 * MiB
MAX_ITEMS = 250_000  # CBOR items in a request body (100,000 ids of objects/stream and then some)
CHUNK_SLACK = 256 * KiB  # what may arrive before a handler starts reading (a chunk or two)

_CODES = {
    400: "bad_request",
    401: "auth_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "conflict",
    413: "too_large",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}


error_log = logging.getLogger("micelio.error")


@dataclass
class Answer:
    """An API answer as either server path sends it (``node.api.asgi`` straight to the ASGI server,
    Quart through :func:`to_response`): the bytes, or chunks streamed with no time limit."""

    body: bytes | AsyncIterator[bytes]
    status: int = 200
    content_type: str = CBOR
    headers: dict[str, str] = dataclass_field(default_factory=dict)


def cbor_answer(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    """``value`` encoded once, as the answer's body."""
    return Answer(encode(value), status, CBOR, headers or {})


def to_response(answer: Answer) -> Response:
    """The Quart response for ``answer`` (a streamed one is not cut by Quart's response timeout)."""
    resp = Response(answer.body, status=answer.status, content_type=answer.content_type, headers=answer.headers)
    if not isinstance(answer.body, bytes):
        resp.timeout = None  # a large checkout may stream for longer than Quart's default minute
    return resp


def cbor_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return to_response(cbor_answer(value, status, headers))


def error_body(status: int, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": _CODES.get(status, "error"), "message": message, **extra}


def error_response(e: HifError) -> Response:
    return to_response(error_answer(e))


def failure_answer(e: Exception, method: str, path: str) -> Answer:
    """The one error path of the API, whichever server path raised ``e``: a HifError is its status
    and message, an HTTP error its status, anything else a 500 logged for the operator (never a
    traceback to the caller)."""
    if isinstance(e, HifError):
        return error_answer(e)
    if isinstance(e, HTTPException):
        status = e.code or 500
        return cbor_answer(error_body(status, e.description or e.name), status)
    error_log.error("unhandled error on %s %s", method, path, exc_info=e)
    return cbor_answer(error_body(500, "internal error (see the node's log)"), 500)


def error_answer(e: HifError) -> Answer:
    status = e.response_status
    body = error_body(status, str(e))
    if e.session is not None:
        body["session"] = e.session
    headers: dict[str, str] = {}
    if isinstance(e, ConflictError):
        body["conflicts"] = [c.to_json() for c in e.conflicts]
    elif isinstance(e, SessionClosed):
        body["error"] = "session_closed"
    elif isinstance(e, Exists):
        body["error"] = "exists"
    elif isinstance(e, Ambiguous):
        body["error"] = "ambiguous"
        body["candidates"] = e.candidates
    elif isinstance(e, RateLimited):
        headers["Retry-After"] = str(e.retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="micelio"'
    return cbor_answer(body, status, headers)


class CappedBody(Body):
    """A request body that counts what the server receives and stops at the request's limit.

    Quart's own body buffers whatever arrives (up to the app-wide maximum) whether or not the
    handler reads it. This one refuses the body (:class:`TooLarge`, 413) as soon as the bytes received
    pass ``limit``, drops what it holds, and asks the connection to wait (:meth:`room`) while it holds
    a chunk nobody has taken: memory per request is one chunk, whatever the body's size."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(None, None)  # the limits are checked here, against our error
        self.declared = expected_content_length
        self.limit = max_content_length if max_content_length is not None else FORM_LIMIT
        self.received = 0
        self._whole = False  # someone awaits the whole body: receive freely
        self._reading = False  # a reader has started (the limit is final)
        self._room = asyncio.Event()
        self._room.set()

    def set_limit(self, limit: int) -> None:
        """The handler's limit for this request (before it reads)."""
        self.limit = limit
        self._reading = True
        self._check(declared=True)

    def _check(self, *, declared: bool = False) -> None:
        """Refuse the body once more than the limit was received, or, when a reader starts, when its
        declared length is over the limit (not before: the handler may still raise the limit)."""
        # before a reader starts, the handler may still raise the limit: allow one more chunk
        limit = self.limit if self._reading else max(self.limit, FORM_LIMIT + CHUNK_SLACK)
        over = self.received > limit or (
            declared and self.declared is not None and self.declared > self.limit)
        if over and self._must_raise is None:
            self._must_raise = PayloadTooLarge(f"the request body is over {self.limit} bytes")
            self._data = bytearray()
            self._whole = False
            self._room.clear()  # the connection stops receiving: nothing more is wanted
            self.set_complete()  # wakes a reader, who raises

    async def room(self) -> None:
        """Return once the connection may receive the next chunk."""
        await self._room.wait()

    def append(self, data: bytes) -> None:
        if not data or self._must_raise is not None:
            return
        self.received += len(data)
        self._check()
        if self._must_raise is None:
            self._data.extend(data)
            self._has_data.set()
            if not self._whole:
                self._room.clear()  # one chunk held: the next waits until a reader takes this one

    async def __anext__(self) -> bytes:
        self._reading = True
        self._check(declared=True)
        try:
            data = await super().__anext__()
        except StopAsyncIteration:
            # refused while the reader waited: Quart's body would end quietly with what it had
            if self._must_raise is not None:
                raise self._must_raise from None
            raise
        if self._must_raise is not None:
            raise self._must_raise
        self._room.set()
        return data

    def __await__(self) -> Generator[Any, None, Any]:
        # the whole body at once (a form, get_data): receive freely, bounded by the limit alone
        self._reading = True
        self._check(declared=True)
        self._whole = True
        self._room.set()
        return super().__await__()


class CappedRequest(Request):
    body_class = CappedBody


class CappedConnection(ASGIHTTPConnection):
    """Receives a request's body only as fast as its handler takes it (see :class:`CappedBody`)."""

    async def handle_messages(self, request: Request, receive: Any) -> None:
        body = request.body
        while True:
            if isinstance(body, CappedBody):
                await body.room()
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body.set_complete()
            elif message["type"] == "http.disconnect":
                return


def cap_bodies(app: Quart) -> None:
    """Make every request of ``app`` read its body under a limit (:data:`FORM_LIMIT` unless raised)."""
    app.request_class = CappedRequest
    app.asgi_http_class = CappedConnection  # type: ignore[assignment]
    app.config["MAX_CONTENT_LENGTH"] = FORM_LIMIT


async def read_bytes(limit: int, what: str = "the request body") -> bytes:
    """The request's body, refused (413) as soon as it passes ``limit`` bytes, or before reading when
    its Content-Length does."""
    return await read_capped(request.body, limit, declared=request.content_length, what=what)


async def read_body(limit: int) -> dict[str, Any]:
    """The request's CBOR map; an empty body is an empty map (for bodiless POSTs)."""
    return body_map(await read_bytes(limit))


def body_map(data: bytes) -> dict[str, Any]:
    """A request body (already read under its limit) as the CBOR map it must be."""
    if not data:
        return {}
    try:
        value = decode(data, max_items=MAX_ITEMS)
    except CorruptObject as e:
        raise InvalidInput(f"the body is not one well-formed CBOR item ({e})") from None
    if not isinstance(value, dict):
        raise InvalidInput("the body must be a CBOR map")
    return value


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], *, default: Any = ...) -> Any:
    """A typed field of a request body, or a 400 naming it."""
    if name not in body or body[name] is None:
        if default is ...:
            raise InvalidInput(f"missing field {name!r}")
        return default
    value = body[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidInput(f"field {name!r} has the wrong type")
    return value


def query_int(name: str, default: int | None = None, *, lo: int = 0, hi: int | None = None,
              args: Mapping[str, str] | None = None) -> int | None:
    """The one parser of integer query arguments (API and web UI): absent or blank is ``default``,
    anything else a whole number within ``lo``..``hi`` or a 400 naming the argument. ``args``: the
    query's arguments (an API handler's ``ctx.args``); by default the Quart request's."""
    raw = (request.args if args is None else args).get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"query parameter {name} must be an integer") from None
    if value < lo or (hi is not None and value > hi):
        raise InvalidInput(f"query parameter {name} must be between {lo} and {hi}" if hi is not None
                           else f"query parameter {name} must be at least {lo}")
    return value

"""CBOR on the wire: reading request bodies and writing answers, errors included."""

from __future__ import annotations

from typing import Any

import cbor2
from quart import Response, request

from hif.errors import ConflictError, HifError, SessionClosed
from hif.objects import encode
from node.errors import Exists, InvalidInput, PayloadTooLarge, RateLimited

CBOR = "application/cbor"
CBOR_SEQ = "application/cbor-seq"  # RFC 8742: CBOR items one after another (objects/stream)
KiB = 1024
MiB = 1024 * KiB
DEFAULT_LIMIT = 1 * MiB

_CODES = {
    400: "bad_request",
    401: "auth_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "conflict",
    413: "too_large",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}


def cbor_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(encode(value), status=status, content_type=CBOR, headers=headers)


def error_body(status: int, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": _CODES.get(status, "error"), "message": message, **extra}


def error_response(e: HifError) -> Response:
    status = e.http_status
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
    elif isinstance(e, RateLimited):
        headers["Retry-After"] = str(e.retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="micelio"'
    return cbor_response(body, status if status != 412 else 409, headers)


async def read_body(limit: int) -> dict[str, Any]:
    """The request's CBOR map; an empty body is an empty map (for bodiless POSTs)."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes")
    data = await request.get_data(cache=False, as_text=False)
    if len(data) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes")
    if not data:
        return {}
    try:
        value = cbor2.loads(data)
    except Exception as e:  # cbor2 raises several types for malformed input
        raise InvalidInput(f"malformed CBOR body: {e}") from None
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


def query_int(name: str, default: int | None, *, lo: int = 0, hi: int | None = None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"query parameter {name} must be an integer") from None
    if value < lo or (hi is not None and value > hi):
        raise InvalidInput(f"query parameter {name} must be between {lo} and {hi}")
    return value

"""The API's thin server path: requests for a route of ``ROUTES`` go from the ASGI server straight to
the route (``node.api.routing.answer``), without Quart's request and response objects, its context
pushes, hooks and werkzeug's routing; everything else (the web UI, federation, HEAD and OPTIONS, a
method a path does not take: Quart's 405) goes on to Quart.

The same route table, the same checks and the same error path as through Quart
(``node.wire.failure_answer``); the body is read under the route's limit while it arrives (from the
server's ``receive``, one message at a time, only once the caller may send it) and within Quart's
body timeout; the answer is encoded once and sent as one start and one body message. Per request this
saves most of the framework's CPU, which a landing through the API pays four times
(bench/README.md, issue 20 target 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import werkzeug.urls  # noqa: F401 - registers the "werkzeug.url_quote" codec error handler args use
from quart import Quart
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import RequestTimeout

from hif.aio import read_capped
from node.api.routing import ENDPOINTS, Call, Endpoint, answer
from node.context import Node
from node.errors import InvalidInput
from node.ratelimit import client_address
from node.wire import Answer, failure_answer

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("micelio.access")


def log_request(node: Node, method: str, path: str, status: int, started: float | None, user: str | None,
                remote: str) -> None:
    """The one access-log line per request (both server paths): the query string and headers are
    left out on purpose, since tokens must never reach a log."""
    if not node.config.access_log:
        return
    access_log.info(json.dumps({
        "time": round(time.time(), 3),
        "method": method,
        "path": path,
        "status": status,
        "ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
        "user": user,
        "remote": remote,
    }))


class AsgiCall(Call):
    """A request as the ASGI server hands it over."""

    def __init__(self, scope: Scope, receive: Receive, body_timeout: float | None) -> None:
        self.method, self.path = scope["method"], scope["path"]
        self.remote = (scope.get("client") or ["<local>"])[0]
        self._query: bytes = scope.get("query_string", b"")
        self._headers: dict[str, list[str]] = {}
        for name, value in scope["headers"]:
            self._headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        self._receive = receive
        self._body_timeout = body_timeout
        self._args: MultiDict[str, str] | None = None

    def header(self, name: str) -> str | None:
        values = self._headers.get(name.lower())
        return values[0] if values else None

    def header_list(self, name: str) -> list[str]:
        return self._headers.get(name.lower(), [])

    @property
    def args(self) -> MultiDict[str, str]:
        if self._args is None:  # parsed as werkzeug parses them (Quart's request.args)
            self._args = MultiDict(parse_qsl(self._query.decode(), keep_blank_values=True,
                                             errors="werkzeug.url_quote"))
        return self._args

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] != "http.request":  # the client went away: nobody waits for an answer
                raise InvalidInput("the request ended before its body did")
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                return

    async def read(self, limit: int) -> bytes:
        raw = self.header("Content-Length")
        try:
            declared = int(raw) if raw is not None else None
        except ValueError:
            declared = None
        try:
            async with asyncio.timeout(self._body_timeout):
                return await read_capped(self._chunks(), limit, declared=declared)
        except TimeoutError:
            raise RequestTimeout() from None


class ApiApp:
    """The ASGI app in front of the rest: a route of ``ROUTES`` is answered here, anything else is
    handed to ``inner`` untouched."""

    def __init__(self, app: Quart, node: Node, inner: ASGIApp) -> None:
        self.node, self.inner = node, inner
        self.body_timeout: float | None = app.config["BODY_TIMEOUT"]
        self.response_timeout: float | None = app.config["RESPONSE_TIMEOUT"]
        # the routes by method and number of path segments: a request tries only its few candidates
        self.table: dict[tuple[str, int], list[Endpoint]] = {}
        for ep in ENDPOINTS:
            self.table.setdefault((ep.route.method, ep.route.rule.count("/")), []).append(ep)

    def match(self, method: str, path: str) -> tuple[Endpoint, dict[str, str]] | None:
        for ep in self.table.get((method, path.count("/")), ()):
            m = ep.pattern.match(path)
            if m is not None:
                return ep, m.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.match(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if found is None:
            await self.inner(scope, receive, send)
            return
        started = time.perf_counter()
        call = AsgiCall(scope, receive, self.body_timeout)
        try:
            out = await answer(found[0], self.node, call, found[1])
        except Exception as e:  # the one error path (a HifError is the caller's; the rest a 500)
            out = failure_answer(e, call.method, call.path)
        try:
            await self._send(send, out)
        finally:
            log_request(self.node, call.method, call.path, out.status, started, call.user,
                        client_address(call.remote, call.header_list("X-Forwarded-For"),
                                       self.node.trusted_proxies))

    async def _send(self, send: Send, out: Answer) -> None:
        headers = [(b"content-type", out.content_type.encode("latin-1"))]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in out.headers.items()]
        if isinstance(out.body, bytes):
            headers.append((b"content-length", str(len(out.body)).encode()))
            with contextlib.suppress(TimeoutError):  # a client too slow to take it: given up, as Quart does
                async with asyncio.timeout(self.response_timeout):
                    await send({"type": "http.response.start", "status": out.status, "headers": headers})
                    await send({"type": "http.response.body", "body": out.body})
            return
        body = out.body  # streamed: no time limit (a large checkout may take long)
        try:
            await send({"type": "http.response.start", "status": out.status, "headers": headers})
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()


def install(app: Quart, node: Node) -> None:
    """Put the thin path in front of whatever serves the app now (Quart, or the MCP endpoint)."""
    app.asgi_app = ApiApp(app, node, app.asgi_app)  # type: ignore[method-assign]

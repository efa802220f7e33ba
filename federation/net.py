"""Outgoing requests to other nodes, with the guard rails every one of them needs.

A federated node fetches URLs that strangers name (key ids, actors, inboxes, objects), so each
request: resolves the host once and refuses private, loopback, link-local, multicast and unspecified
addresses unless the operator allowed them (``MICELIO_FEDERATION_ALLOW_PRIVATE``); then connects to
that very address (the Host header and TLS name stay the original host, so a second DNS answer
cannot redirect it); never follows redirects; has short timeouts; and stops reading at a body cap.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from federation.settings import FedSettings
from hif.errors import HifError, PermissionDenied, RemoteError

JSON_CAP = 1 << 20  # actor documents, WebFinger, activities
CBOR_CAP = 64 << 20  # envelopes pages, objects, offer bundles


class Refused(PermissionDenied):
    """The operator's policy forbids this address or domain."""


class TooLarge(RemoteError):
    """The answer was longer than the cap for its kind."""


@dataclass
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        import json

        try:
            return json.loads(self.body)
        except ValueError:
            raise RemoteError("the peer sent malformed JSON") from None


def _forbidden(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_unspecified
        or addr.is_reserved
    )


class Fetcher:
    """One pooled httpx client for everything a node asks of its peers."""

    def __init__(self, settings: FedSettings) -> None:
        self.settings = settings
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout, connect=min(5.0, settings.timeout)),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            headers={"User-Agent": "micelio (federation)"},
        )
        self._dns: dict[tuple[str, int], tuple[float, str]] = {}

    async def close(self) -> None:
        await self._http.aclose()

    async def resolve(self, url: str) -> str:
        """The one address this URL may be fetched from; raises :class:`Refused` otherwise."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
            raise Refused(f"refusing to fetch {url!r}: not an http(s) URL")
        why = self.settings.refuses(url)
        if why:
            raise Refused(why)
        host = parts.hostname.lower()
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise Refused(f"refusing to fetch {url!r}: bad port") from None
        loop = asyncio.get_running_loop()
        now = loop.time()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            literal = ipaddress.ip_address(host)
            addresses = [str(literal)]
        except ValueError:
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), self.settings.timeout
                )
            except (OSError, TimeoutError) as e:
                raise RemoteError(f"cannot resolve {host}: {e}") from None
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise RemoteError(f"cannot resolve {host}")
        for a in addresses:  # every answer must be allowed: one bad record refuses the host
            if _forbidden(ipaddress.ip_address(a)) and not self.settings.private_allowed(host, a):
                raise Refused(
                    f"refusing to connect to {host} ({a}): a private or reserved address "
                    "(the operator can allow it with MICELIO_FEDERATION_ALLOW_PRIVATE)"
                )
        if len(self._dns) > 4096:
            self._dns.clear()
        self._dns[(host, port)] = (now + 60.0, addresses[0])
        return addresses[0]

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        cap: int = JSON_CAP,
        timeout: float | None = None,
        sink: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> Answer:
        """Send one request to the resolved address; the answer body is read up to ``cap`` bytes.
        With ``sink``, a 2xx body goes to it chunk by chunk as it arrives (not kept: ``body`` is
        empty), so a long answer is consumed in bounded memory."""
        address = await self.resolve(url)
        parts = urlsplit(url)
        pinned_host = f"[{address}]" if ":" in address else address
        netloc = pinned_host + (f":{parts.port}" if parts.port else "")
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        hdrs = {"Host": parts.netloc, **(headers or {})}
        extensions: dict[str, Any] = {}
        if parts.scheme == "https":
            extensions["sni_hostname"] = parts.hostname
        if timeout is not None:
            extensions["timeout"] = {
                "connect": min(5.0, timeout),
                "read": timeout,
                "write": timeout,
                "pool": timeout,
            }
        req = self._http.build_request(
            method, pinned, headers=hdrs, content=content, extensions=extensions
        )
        try:
            resp = await self._http.send(req, stream=True)
        except httpx.HTTPError as e:
            raise RemoteError(
                f"cannot reach {parts.netloc}: {type(e).__name__} {e}".strip()
            ) from None
        try:
            length = resp.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > cap:
                raise TooLarge(f"{parts.netloc} sent {length} bytes (the cap is {cap})")
            chunks: list[bytes] = []
            size = 0
            try:
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > cap:
                        raise TooLarge(f"{parts.netloc} sent more than {cap} bytes")
                    if sink is not None and 200 <= resp.status_code < 300:
                        await sink(chunk)
                    else:
                        chunks.append(chunk)
            except httpx.HTTPError as e:
                raise RemoteError(f"{parts.netloc} broke off its answer: {e}") from None
            return Answer(resp.status_code, resp.headers, b"".join(chunks))
        finally:
            await resp.aclose()

    async def get_json(self, url: str, *, accept: str = "application/activity+json") -> Any:
        a = await self.request("GET", url, headers={"Accept": accept})
        if a.status != 200:
            raise http_error(a, url)
        return a.json()


def http_error(a: Answer, url: str) -> HifError:
    """A peer's non-2xx answer as an error that says who answered what."""
    text = a.body[:200].decode("utf-8", "replace").strip()
    host = urlsplit(url).netloc
    if a.status == 404:
        from hif.errors import NotFound

        return NotFound(f"{host} has no {urlsplit(url).path} (HTTP 404)")
    err = RemoteError(f"{host} answered HTTP {a.status}{': ' + text if text else ''}")
    err.status = a.status  # type: ignore[attr-defined]
    return err

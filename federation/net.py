"""Outgoing requests to other nodes, with the guard rails every one of them needs.

A federated node fetches URLs that strangers name (key ids, actors, inboxes, objects), so each
request: normalises the host (:func:`federation.settings.normal_host`) and applies the operator's
block/allow lists to that spelling; resolves the host once and refuses every address that is not
globally routable (``ipaddress`` ``is_global``, plus the IPv4 inside IPv4-mapped, IPv4-compatible,
6to4, NAT64 and ISATAP forms; Teredo always) unless the operator allowed it
(``MICELIO_FEDERATION_ALLOW_PRIVATE``); then connects to that very address (the Host header and
TLS name stay the original host, so a second DNS answer cannot redirect it); never follows
redirects; has short timeouts, and an overall deadline when asked; and stops reading at a body cap.

Three connection pools, one per kind of work, so that abuse of one cannot starve the others: key
and actor lookups (``keys``: any stranger can make the node fetch one), object and envelope fetches
(``objects``: replication into mirrors) and deliveries (``delivery``: signed POSTs to inboxes).

Errors never carry the fetched body: a stranger who names a URL must not learn what it holds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from federation import boundedjson
from federation.errors import (
    AnswerTooLarge,
    MalformedJSON,
    PeerError,
    PoolFull,
    Refused,
    UnknownHost,
)
from federation.settings import DEFAULT_PORTS, FedSettings, authority, split_url
from hif.errors import HifError, InvalidInput, NotFound, RemoteError

JSON_CAP = 1 << 20  # actor documents, WebFinger, activities
CBOR_CAP = 64 << 20  # envelopes pages, objects, offer bundles
RESOLVER_THREADS = 8  # name lookups at once (a lookup that hangs holds one until its timeout)
POOLS = {  # max connections per pool (keep-alive: half)
    "keys": 32,
    "objects": 64,
    "delivery": 64,
}


# getaddrinfo's "no such name" answers (a temporary failure is EAI_AGAIN and stays retryable)
_NO_SUCH_HOST = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


@dataclass
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        """The body as JSON, within :mod:`federation.boundedjson`'s depth and size limits."""
        try:
            return boundedjson.loads(self.body, "the peer's answer")
        except MalformedJSON as e:
            raise RemoteError(f"the peer sent malformed JSON ({e})") from None


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix: the IPv4 decides
_TEREDO = ipaddress.ip_network("2001::/32")
_NOT_GLOBAL = tuple(  # not globally reachable (IANA; 192.88.99/24: the deprecated 6to4 relay
    # anycast, RFC 7526), newer than some Pythons' is_global
    ipaddress.ip_network(n)
    for n in ("192.0.0.0/24", "192.88.99.0/24", "64:ff9b:1::/48", "100:0:0:1::/64", "3fff::/20", "5f00::/16")
)


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries and may be routed to (6to4, IPv4-compatible,
    ISATAP)."""
    out = [a for a in (addr.sixtofour,) if a is not None]
    n = int(addr)
    low = ipaddress.IPv4Address(n & 0xFFFFFFFF)
    if n >> 32 == 0:  # ::a.b.c.d
        out.append(low)
    if (n >> 32) & 0xFDFFFFFF == 0x00005EFE:  # ISATAP interface id ::(0|200):5efe:a.b.c.d
        out.append(low)
    return out


def forbidden(addr: Address) -> bool:
    """Whether ``addr`` is anything but a globally routable unicast address: private, CGNAT,
    loopback, link- and site-local, documentation, benchmarking, reserved, multicast,
    unspecified, Teredo, the deprecated 6to4 relay anycast (192.88.99.0/24), and the like. IPv4-mapped and NAT64 (``64:ff9b::/96``) addresses are
    judged by their IPv4; 6to4, IPv4-compatible and ISATAP ones must pass with their IPv4 too."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return forbidden(addr.ipv4_mapped)
        if addr in _NAT64:
            return forbidden(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    if (
        not addr.is_global
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or addr.is_loopback
        or addr.is_link_local
        or any(addr in net for net in _NOT_GLOBAL if net.version == addr.version)
    ):
        return True
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.is_site_local or addr in _TEREDO:
            return True
        return any(forbidden(v4) for v4 in _embedded_ipv4(addr))
    return False


class Fetcher:
    """Pooled httpx clients (one per kind of work, :data:`POOLS`) for everything a node asks of
    its peers."""

    def __init__(self, settings: FedSettings) -> None:
        self.settings = settings
        self._pools = {
            name: httpx.AsyncClient(
                timeout=httpx.Timeout(settings.timeout, connect=min(5.0, settings.timeout)),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size // 2),
                headers={"User-Agent": "micelio (federation)"},
            )
            for name, size in POOLS.items()
        }
        self._dns: dict[tuple[str, int], tuple[float, str]] = {}
        # name lookups block a thread each (getaddrinfo): their own threads, so names a stranger
        # makes hang cannot take the default executor's few threads from argon2 and the rest
        self._resolver = ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="micelio-dns")

    async def close(self) -> None:
        for client in self._pools.values():
            await client.aclose()
        self._resolver.shutdown(wait=False, cancel_futures=True)

    async def resolve(self, url: str) -> str:
        """The one address this URL may be fetched from; raises :class:`Refused` otherwise."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
            raise Refused(f"refusing to fetch {url!r}: not an http(s) URL")
        why = self.settings.refuses(url)
        if why:
            raise Refused(why)
        try:
            scheme, host, port_or_none = split_url(url)
        except InvalidInput:
            raise Refused(f"refusing to fetch {url!r}: not a valid host or port") from None
        port = port_or_none or DEFAULT_PORTS[scheme]
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
                    loop.run_in_executor(
                        self._resolver, socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM
                    ),
                    self.settings.timeout,
                )
            except socket.gaierror as e:
                if e.errno in _NO_SUCH_HOST:
                    raise UnknownHost(f"{host} does not exist (DNS: {e.strerror})") from None
                raise RemoteError(f"cannot resolve {host}: {e}") from None
            except (OSError, TimeoutError) as e:
                raise RemoteError(f"cannot resolve {host}: {e}") from None
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise RemoteError(f"cannot resolve {host}")
        for a in addresses:  # every answer must be allowed: one bad record refuses the host
            if forbidden(ipaddress.ip_address(a)) and not self.settings.private_allowed(host, a):
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
        deadline: float | None = None,
        pool: str = "objects",
        sink: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> Answer:
        """Send one request to the resolved address; the answer body is read up to ``cap`` bytes.
        ``timeout`` bounds each read; ``deadline`` (seconds) bounds the whole exchange, DNS and a
        peer that drips its answer one byte at a time included. With ``sink``, a 2xx body goes to
        it chunk by chunk as it arrives (not kept: ``body`` is empty), so a long answer is
        consumed in bounded memory."""
        if deadline is None:
            return await self._request(method, url, headers, content, cap, timeout, pool, sink)
        try:
            async with asyncio.timeout(deadline):
                return await self._request(
                    method, url, headers, content, cap, timeout, pool, sink
                )
        except TimeoutError:
            raise RemoteError(
                f"{authority_or(url)} did not answer within {deadline:g} s (the deadline)"
            ) from None

    async def _request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None,
        content: bytes | None,
        cap: int,
        timeout: float | None,
        pool: str,
        sink: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> Answer:
        address = await self.resolve(url)
        client = self._pools[pool]
        parts = urlsplit(url)
        scheme, host, port = split_url(url)
        pinned_host = f"[{address}]" if ":" in address else address
        netloc = pinned_host + (f":{parts.port}" if parts.port else "")
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        shown = f"[{host}]" if ":" in host else host
        hdrs = {"Host": shown + (f":{port}" if port else ""), **(headers or {})}
        extensions: dict[str, Any] = {}
        if scheme == "https":
            extensions["sni_hostname"] = host
        if timeout is not None:
            extensions["timeout"] = {
                "connect": min(5.0, timeout),
                "read": timeout,
                "write": timeout,
                "pool": timeout,
            }
        req = client.build_request(
            method, pinned, headers=hdrs, content=content, extensions=extensions
        )
        where = hdrs["Host"]
        try:
            resp = await client.send(req, stream=True)
        except httpx.PoolTimeout:
            raise PoolFull(f"no free connection to reach {where} ({pool} pool); try again") from None
        except httpx.HTTPError as e:
            raise RemoteError(f"cannot reach {where}: {type(e).__name__}") from None
        try:
            length = resp.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > cap:
                raise AnswerTooLarge(f"{where} sent {length} bytes (the cap is {cap})")
            chunks: list[bytes] = []
            size = 0
            try:
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > cap:
                        raise AnswerTooLarge(f"{where} sent more than {cap} bytes")
                    if sink is not None and 200 <= resp.status_code < 300:
                        await sink(chunk)
                    else:
                        chunks.append(chunk)
            except httpx.HTTPError as e:
                raise RemoteError(f"{where} broke off its answer: {type(e).__name__}") from None
            return Answer(resp.status_code, resp.headers, b"".join(chunks))
        finally:
            await resp.aclose()

    async def get_json(
        self,
        url: str,
        *,
        accept: str = "application/activity+json",
        deadline: float | None = None,
        pool: str = "objects",
    ) -> Any:
        a = await self.request(
            "GET", url, headers={"Accept": accept}, deadline=deadline, pool=pool
        )
        if a.status != 200:
            raise http_error(a, url)
        return a.json()


def authority_or(url: str) -> str:
    """The URL's authority for a message, or the URL itself when it has none."""
    try:
        return authority(url)
    except InvalidInput:
        return repr(url)


def http_error(a: Answer, url: str) -> HifError:
    """A peer's non-2xx answer as an error that says who answered which status. Never the body:
    the URL may be one a stranger named, and its content is not theirs to read through us."""
    host = authority_or(url)
    if a.status == 404:
        return NotFound(f"{host} has no {urlsplit(url).path} (HTTP 404)")
    return PeerError(f"{host} answered HTTP {a.status}", a.status)

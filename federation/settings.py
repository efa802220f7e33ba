"""Federation settings (``MICELIO_FEDERATION_*``) and the operator's domain policy.

Every replica of a node reads the same variables; nothing here is stored.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from hif.errors import InvalidInput

DEFAULT_PORTS = {"http": 80, "https": 443}


def normal_host(host: str) -> str:
    """The one spelling of a host that every policy check compares: lowercase, no trailing dot,
    IDNA names as punycode ASCII, IPv6 literals compressed. Raises InvalidInput for a name that
    cannot be a host (bad IDNA, empty labels, numeric forms a resolver would read as an address)."""
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h.endswith(".") and not h.endswith(".."):
        h = h[:-1]
    if not h or len(h) > 253:
        raise InvalidInput(f"not a host name: {host!r}")
    if ":" in h:  # an IPv6 literal; a zone id (``%eth0``) names a local interface: never a peer
        try:
            addr = ipaddress.IPv6Address(h)
        except ValueError:
            raise InvalidInput(f"not a host name: {host!r}") from None
        if addr.scope_id:
            raise InvalidInput(f"not a host name: {host!r}")
        return str(addr)
    try:
        ascii_host = h.encode("idna").decode("ascii").lower() if not h.isascii() else h.lower()
    except UnicodeError:
        raise InvalidInput(f"not a valid internationalised host name: {host!r}") from None
    labels = ascii_host.split(".")
    for label in labels:
        if label.startswith("xn--"):  # punycode given as such must decode
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError:
                raise InvalidInput(f"not a valid internationalised host name: {host!r}") from None
    if any(not label or len(label) > 63 for label in labels) or not _HOST.fullmatch(ascii_host):
        raise InvalidInput(f"not a host name: {host!r}")
    if _NUMERIC.fullmatch(labels[-1]):  # 0x7f.1, 2130706433, 127.1: addresses in disguise
        try:
            return str(ipaddress.IPv4Address(ascii_host))
        except ValueError:
            raise InvalidInput(f"not a host name or a dotted IPv4 address: {host!r}") from None
    return ascii_host


_HOST = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?")
_NUMERIC = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")


@functools.lru_cache(maxsize=4096)
def split_url(url: str) -> tuple[str, str, int | None]:
    """(scheme, normalised host, port) of an http(s) URL; raises InvalidInput otherwise. Memoised
    (a pure function; errors are not kept): a backfill compares the same few URLs for every
    envelope, and normalising an address costs tens of microseconds each time."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        netloc = parts.netloc
    except ValueError:
        raise InvalidInput(f"not a URL: {url!r}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or "@" in netloc or not parts.hostname:
        raise InvalidInput(f"not an http(s) URL: {url!r}")
    raw = netloc[: netloc.index("]") + 1] if netloc.startswith("[") else netloc.split(":")[0]
    host = normal_host(raw)
    if port == DEFAULT_PORTS[scheme]:
        port = None
    return scheme, host, port


def authority(url: str) -> str:
    """``host[:port]`` of a URL, normalised (:func:`normal_host`) and without the scheme's default
    port: the identity a key, an actor and an object are compared by (two nodes on one host differ
    by port), and what the per-host limits count."""
    _, host, port = split_url(url)
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def hostname(url: str) -> str:
    """The normalised host name alone (no port): what block and allow lists name."""
    return split_url(url)[1]


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(x.strip().lower() for x in (value or "").split(",") if x.strip())


def _domains(value: str | None, name: str) -> tuple[str, ...]:
    """A block or allow list, each entry normalised like the hosts it is compared with."""
    out = []
    for item in _split(value):
        try:
            out.append(normal_host(item.lstrip("*").lstrip(".")))
        except InvalidInput:
            raise InvalidInput(f"{name}: {item!r} is not a domain") from None
    return tuple(out)


def _matches(host: str, domains: tuple[str, ...]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


_COUNTS = ("key_per_host", "key_per_address", "key_in_flight", "offers_per_actor", "offers_per_host", "offers_per_hour")


@dataclass
class FedSettings:
    """What the operator decides: who may talk to the node, where it may connect, how it retries."""

    block: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()  # when not empty: only these domains (allowlist mode)
    allow_private: tuple[str, ...] = ()  # hosts, addresses or networks allowed although private
    poll: float = 1.0  # seconds between outbox polls
    retry_scale: float = 1.0  # multiplies the retry schedule (tests shrink it)
    resync: float = 300.0  # seconds between checks that a mirror is up to date with its origin
    timeout: float = 10.0  # per outgoing request
    tries: int = 17  # the first and 16 retries (federation.delivery)
    key_deadline: float = 5.0  # seconds for a whole key/actor/WebFinger fetch, however it drips
    key_per_host: int = 4  # key/actor fetches in flight per host (authority)
    key_per_address: int = 8  # ... per resolved IP address (however many ports or names point there)
    key_in_flight: int = 16  # ... in all (half the keys pool: a flood cannot take every connection)
    key_fail_ttl: float = 30.0  # seconds a failed key/actor fetch is answered from the cache
    # offers from other nodes (federation.offers): pending ones per remote actor and per remote host,
    # received per host and hour, and how long one may wait unreviewed before it expires (seconds)
    offers_per_actor: int = 10
    offers_per_host: int = 50
    offers_per_hour: int = 20
    offer_expiry: float = 30 * 86400.0
    max_followers_per_host: int = 50  # followers of one repository on one remote host

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> FedSettings:
        e = os.environ if env is None else env
        s = cls(
            block=_domains(e.get("MICELIO_FEDERATION_BLOCK"), "MICELIO_FEDERATION_BLOCK"),
            allow=_domains(e.get("MICELIO_FEDERATION_ALLOW"), "MICELIO_FEDERATION_ALLOW"),
            allow_private=_split(e.get("MICELIO_FEDERATION_ALLOW_PRIVATE")),
        )
        for name, attr in (
            ("POLL", "poll"),
            ("RETRY_SCALE", "retry_scale"),
            ("RESYNC", "resync"),
            ("TIMEOUT", "timeout"),
            ("KEY_DEADLINE", "key_deadline"),
            ("KEY_FAIL_TTL", "key_fail_ttl"),
            ("KEY_PER_HOST", "key_per_host"),
            ("KEY_PER_ADDRESS", "key_per_address"),
            ("KEY_IN_FLIGHT", "key_in_flight"),
            ("OFFERS_PER_ACTOR", "offers_per_actor"),
            ("OFFERS_PER_HOST", "offers_per_host"),
            ("OFFERS_PER_HOUR", "offers_per_hour"),
            ("OFFER_EXPIRY", "offer_expiry"),
        ):
            raw = e.get(f"MICELIO_FEDERATION_{name}")
            if raw:
                try:
                    value = float(raw)
                except ValueError:
                    raise InvalidInput(f"MICELIO_FEDERATION_{name} must be a number") from None
                if value <= 0:
                    raise InvalidInput(f"MICELIO_FEDERATION_{name} must be positive")
                setattr(s, attr, int(value) if attr in _COUNTS else value)
        raw = e.get("MICELIO_FEDERATION_MAX_FOLLOWERS_PER_HOST")
        if raw:
            if not raw.strip().isdigit() or int(raw) < 1:
                raise InvalidInput(
                    "MICELIO_FEDERATION_MAX_FOLLOWERS_PER_HOST must be a positive whole number"
                )
            s.max_followers_per_host = int(raw)
        return s

    def refuses(self, url_or_host: str) -> str | None:
        """Why the operator's policy refuses this peer, or None. Checked before any fetch."""
        try:
            host = (
                hostname(url_or_host)
                if "://" in url_or_host
                else normal_host(urlsplit("//" + url_or_host).hostname or "")
            )
        except (InvalidInput, ValueError):
            return f"{url_or_host!r} is not a valid host"
        if _matches(host, self.block):
            return f"{host} is blocked on this node"
        if self.allow and not _matches(host, self.allow):
            return f"{host} is not on this node's allowlist"
        return None

    def private_allowed(self, host: str, address: str) -> bool:
        """Whether a private, loopback or link-local ``address`` (of ``host``) may be contacted."""
        for item in self.allow_private:
            try:
                same = "/" not in item and normal_host(item) == normal_host(host)
            except InvalidInput:
                same = False
            if same or item == address:
                return True
            try:
                if ipaddress.ip_address(address) in ipaddress.ip_network(item, strict=False):
                    return True
            except ValueError:
                continue
        return False

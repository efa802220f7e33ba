"""Federation settings (``MICELIO_FEDERATION_*``) and the operator's domain policy.

Every replica of a node reads the same variables; nothing here is stored.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from hif.errors import InvalidInput

DEFAULT_PORTS = {"http": 80, "https": 443}


def authority(url: str) -> str:
    """``host[:port]`` of a URL, lowercased and without the scheme's default port: the identity a
    key, an actor and an object are compared by (two nodes on one host differ by port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInput(f"not a URL: {url!r}") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in DEFAULT_PORTS or not host or "@" in parts.netloc:
        raise InvalidInput(f"not an http(s) URL: {url!r}")
    shown = f"[{host}]" if ":" in host else host
    if port is None or port == DEFAULT_PORTS[parts.scheme]:
        return shown
    return f"{shown}:{port}"


def hostname(url: str) -> str:
    """The host name alone (no port), lowercased: what block and allow lists name."""
    return (urlsplit(url).hostname or "").lower()


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(x.strip().lower() for x in (value or "").split(",") if x.strip())


def _matches(host: str, domains: tuple[str, ...]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


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
    # offers from other nodes (federation.offers): pending ones per remote actor and per remote host,
    # received per host and hour, and how long one may wait unreviewed before it expires
    offers_per_actor: int = 10
    offers_per_host: int = 50
    offers_per_hour: int = 20
    offer_expiry: float = 30 * 86400.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> FedSettings:
        e = os.environ if env is None else env
        s = cls(
            block=_split(e.get("MICELIO_FEDERATION_BLOCK")),
            allow=_split(e.get("MICELIO_FEDERATION_ALLOW")),
            allow_private=_split(e.get("MICELIO_FEDERATION_ALLOW_PRIVATE")),
        )
        for name, attr in (
            ("POLL", "poll"),
            ("RETRY_SCALE", "retry_scale"),
            ("RESYNC", "resync"),
            ("TIMEOUT", "timeout"),
        ):
            raw = e.get(f"MICELIO_FEDERATION_{name}")
            if raw:
                try:
                    value = float(raw)
                except ValueError:
                    raise InvalidInput(f"MICELIO_FEDERATION_{name} must be a number") from None
                if value <= 0:
                    raise InvalidInput(f"MICELIO_FEDERATION_{name} must be positive")
                setattr(s, attr, value)
        for name, attr in (
            ("OFFERS_PER_ACTOR", "offers_per_actor"),
            ("OFFERS_PER_HOST", "offers_per_host"),
            ("OFFERS_PER_HOUR", "offers_per_hour"),
        ):
            raw = e.get(f"MICELIO_FEDERATION_{name}")
            if raw:
                if not raw.strip().isdigit() or int(raw) < 1:
                    raise InvalidInput(f"MICELIO_FEDERATION_{name} must be a positive integer")
                setattr(s, attr, int(raw))
        raw = e.get("MICELIO_FEDERATION_OFFER_EXPIRY")
        if raw:
            try:
                s.offer_expiry = float(raw)
            except ValueError:
                raise InvalidInput("MICELIO_FEDERATION_OFFER_EXPIRY must be a number (seconds)") from None
            if s.offer_expiry <= 0:
                raise InvalidInput("MICELIO_FEDERATION_OFFER_EXPIRY must be positive")
        return s

    def refuses(self, url_or_host: str) -> str | None:
        """Why the operator's policy refuses this peer, or None. Checked before any fetch."""
        host = hostname(url_or_host) if "://" in url_or_host else url_or_host.split(":")[0].lower()
        if _matches(host, self.block):
            return f"{host} is blocked on this node"
        if self.allow and not _matches(host, self.allow):
            return f"{host} is not on this node's allowlist"
        return None

    def private_allowed(self, host: str, address: str) -> bool:
        """Whether a private, loopback or link-local ``address`` (of ``host``) may be contacted."""
        for item in self.allow_private:
            if item in (host.lower(), address):
                return True
            try:
                if ipaddress.ip_address(address) in ipaddress.ip_network(item, strict=False):
                    return True
            except ValueError:
                continue
        return False

"""Failed-login throttling with exponential back-off, and who the client is behind a proxy.

Three counters, each a failure count and the time of the last failure:

- per (user, address): after ``pair_free`` failures, the next attempt must wait ``base`` seconds after
  the last failure, doubling with each further failure up to ``cap``. This is what slows down
  someone guessing one user's password; a success clears it.
- per address, across users: the same back-off after ``addr_free`` failures, so an address guessing
  many users (one or two tries each) is slowed down too. A success does not clear it.
- per user, across addresses: after ``user_free`` failures (many addresses guessing one user), every
  address *that has already failed for this user* waits ``base * 2 ** (n - user_free)`` (up to
  ``cap``) after its own last failure. An address that has not failed for the user, such as the
  owner's own, is never slowed by it: failures from elsewhere cannot lock the owner out.

An attempt counts as a failure from the moment it is let through (:meth:`LoginLimiter.begin`),
before its password is verified, and is taken back when the password is right
(:meth:`LoginLimiter.granted`): otherwise a burst of concurrent guesses would all pass the check
while argon2 runs, one guess per parallel request. Nothing is a hard lock: at worst an address gets one attempt per ``cap`` seconds. Counts are forgotten
``forget`` seconds after their last failure. Kept in memory on each replica: no store round trip on
the login path, and nothing to clean up. The price is that N replicas allow up to N times the attempts
(see docs/architecture.md); an attacker who spreads requests over replicas still meets argon2's cost
on each attempt. Memory is bounded: one entry (a count and a time) per key, at most ``max_keys``
keys, the least recently failing forgotten first.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from node.errors import InvalidInput, RateLimited

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_KEYED_NAME = 64  # characters of a user name kept in a key (real names are shorter)
Key = tuple[str, ...]


def address_key(address: str | None) -> str:
    """The unit an address is counted in: an IPv4 address, or an IPv6 address's /64 (one host
    usually holds a whole /64, so counting single IPv6 addresses would be no limit at all)."""
    if address is None:
        return "?"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LoginLimiter:
    """Refuse login attempts (RateLimited, with the seconds to wait) while a back-off is running;
    see the module docstring for the three counters."""

    def __init__(
        self,
        *,
        pair_free: int = 5,
        addr_free: int = 20,
        user_free: int = 100,
        base: float = 1.0,
        cap: float = 900.0,
        forget: float = 86400.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.pair_free, self.addr_free, self.user_free = pair_free, addr_free, user_free
        self.base, self.cap, self.forget = base, cap, forget
        self.clock = clock
        self.max_keys = max_keys
        self._failures: OrderedDict[Key, tuple[int, float]] = OrderedDict()  # key -> (count, last)

    def delay(self, count: int, free: int) -> float:
        """Seconds to wait after the last of ``count`` failures when ``free`` are allowed."""
        if count < free:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(count - free, 64))

    def _get(self, key: Key, now: float) -> tuple[int, float] | None:
        entry = self._failures.get(key)
        if entry is not None and now - entry[1] >= self.forget:
            del self._failures[key]
            return None
        return entry

    @staticmethod
    def _keys(user: str | None, address: str | None) -> tuple[Key, Key, Key]:
        addr = address_key(address)
        # a name is at most 39 characters: longer ones are no user's, and are cut so that a key
        # stays small whatever a caller sends (max_keys bounds the count, this the size)
        who = "" if user is None else user[:MAX_KEYED_NAME]
        return ("pair", who, addr), ("addr", addr), ("user", who)

    def check(self, user: str | None, address: str | None) -> None:
        """Raise RateLimited if this user may not try a password from this address yet."""
        now = self.clock()
        pair_key, addr_key, user_key = self._keys(user, address)
        until = 0.0
        pair = self._get(pair_key, now)
        if pair is not None:
            until = pair[1] + self.delay(pair[0], self.pair_free)
            spread = self._get(user_key, now)  # many addresses guessing this user
            if spread is not None:
                until = max(until, pair[1] + self.delay(spread[0], self.user_free))
        addr = self._get(addr_key, now)
        if addr is not None:
            until = max(until, addr[1] + self.delay(addr[0], self.addr_free))
        if until > now:
            raise RateLimited("too many failed logins; try again later", max(1, math.ceil(until - now)))

    def failure(self, user: str | None, address: str | None) -> None:
        now = self.clock()
        for key in self._keys(user, address):
            entry = self._get(key, now)
            self._failures[key] = (1 if entry is None else entry[0] + 1, now)
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)
        self._sweep(now)

    def success(self, user: str | None, address: str | None) -> None:
        """A good password clears this user's count from this address (not the address's count
        across users, nor the user's across addresses: one success must not reopen a guessing
        campaign)."""
        self._failures.pop(self._keys(user, address)[0], None)

    def begin(self, user: str | None, address: str | None) -> None:
        """An attempt about to verify a password: :meth:`check` it, then count it as a failure at
        once, before the (slow) verification, so that parallel attempts see each other and a burst
        of concurrent guesses is throttled like a sequence. :meth:`granted` takes the count back."""
        self.check(user, address)
        self.failure(user, address)

    def granted(self, user: str | None, address: str | None) -> None:
        """The password of an attempt :meth:`begin` counted was right: take back the failure it
        counted for the address and the user, and clear the pair (:meth:`success`)."""
        for key in self._keys(user, address)[1:]:
            entry = self._failures.get(key)
            if entry is not None:
                if entry[0] <= 1:
                    del self._failures[key]
                else:
                    self._failures[key] = (entry[0] - 1, entry[1])
        self.success(user, address)

    def _sweep(self, now: float, budget: int = 8) -> None:
        """Drop a few forgotten keys from the cold end, so idle keys do not linger until max_keys."""
        for key in list(itertools.islice(self._failures, budget)):
            self._get(key, now)


# -- the client's address behind a reverse proxy ---------------------------------------------------


def parse_networks(text: str | Iterable[str]) -> tuple[Network, ...]:
    """``MICELIO_TRUSTED_PROXIES``: networks (or addresses) separated by commas or spaces."""
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise InvalidInput(f"not an address or network: {item!r} (in the trusted proxies)") from None
    return tuple(out)


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: tuple[Network, ...]) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in trusted)


def client_address(peer: str | None, forwarded_for: list[str], trusted: tuple[Network, ...]) -> str:
    """The address a request came from, for rate limits and the access log.

    The TCP peer, unless it is a trusted proxy: then ``X-Forwarded-For`` is read from the right
    (each proxy appends the address it saw), skipping trusted proxies, and the first address that
    is not one is the client. Anything left of it was written by the client and is ignored. A hop
    that is not an address ends the walk at the last trusted hop, which is then the client.
    """
    if peer is None:
        return "?"
    if not trusted:
        return peer
    try:
        here = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if not _trusted(here, trusted):
        return peer
    hops = [h.strip() for header in forwarded_for for h in header.split(",")]
    for hop in reversed(hops):
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            break
        here = ip
        if not _trusted(ip, trusted):
            break
    return str(here)

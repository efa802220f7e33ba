"""Failed-login limiting, per user and per client address.

Kept in memory on each replica: no store round trip on the login path, and nothing to clean up. The
price is that N replicas allow up to N times the limit (see docs/architecture.md); an attacker who
can spread requests over replicas still meets argon2's cost on each attempt.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from node.errors import RateLimited


class LoginLimiter:
    """Refuse logins for a user or an address after ``max_failures`` failures within ``window``
    seconds. Memory is bounded: at most ``max_failures`` timestamps per key and ``max_keys`` keys
    (the least recently failed are forgotten first)."""

    def __init__(
        self,
        max_failures: int = 10,
        window: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_keys: int = 100_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    @staticmethod
    def _keys(user: str | None, address: str | None) -> list[tuple[str, str]]:
        keys = []
        if user is not None:
            keys.append(("user", user))
        if address is not None:
            keys.append(("addr", address))
        return keys

    def check(self, user: str | None, address: str | None) -> None:
        """Raise RateLimited (with the seconds until the oldest counted failure expires) if either
        the user or the address is over the limit."""
        now = self.clock()
        wait = 0.0
        for key in self._keys(user, address):
            times = self._recent(key, now)
            if times is not None and len(times) >= self.max_failures:
                wait = max(wait, times[0] + self.window - now)
        if wait > 0:
            raise RateLimited("too many failed logins; try again later", max(1, math.ceil(wait)))

    def failure(self, user: str | None, address: str | None) -> None:
        now = self.clock()
        for key in self._keys(user, address):
            times = self._recent(key, now)
            if times is None:
                times = self._failures[key] = deque(maxlen=self.max_failures)
            times.append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)
        self._sweep(now)

    def success(self, user: str | None, address: str | None) -> None:
        """A good password clears the user's count (not the address's: one address may try many)."""
        if user is not None:
            self._failures.pop(("user", user), None)

    def _sweep(self, now: float, budget: int = 8) -> None:
        """Drop a few expired keys from the cold end, so idle keys do not linger until max_keys."""
        for key in list(itertools.islice(self._failures, budget)):
            self._recent(key, now)

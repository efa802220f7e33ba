"""A fault and latency wrapper around any ObjectStore, for tests, the simulation and benchmarks.

Everything random comes from one ``random.Random`` (give it a seed), and waiting goes through an
injectable ``sleep`` (real ``asyncio.sleep`` for benchmarks; under the simulation's virtual-time
event loop the same ``asyncio.sleep`` costs no wall time). Per call, in this order:

1. crash point: with ``crash_after=k`` the k-th call and every later one raise :class:`SimulatedCrash`
   without touching the store, modelling a process that died between two store calls;
2. latency: ``await sleep(latency(rng))``;
3. error: with probability ``error_rate`` raise :class:`StoreError` before applying the call (a 5xx);
4. the call itself, on the inner store (its NotFound / PreconditionFailed pass through unchanged);
5. lost reply (writes only: put, delete): with probability ``lost_reply_rate`` the write *was*
   applied, but the caller gets :class:`StoreError` as if the response never arrived.

Nothing else changes: with all rates at zero the wrapper behaves exactly as the inner store.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hif.errors import StoreError
from hif.store.base import ObjectInfo, ObjectStore

Sleep = Callable[[float], Awaitable[Any]]
Latency = Callable[[random.Random], float]

WRITES = ("put", "delete")


class SimulatedCrash(BaseException):
    """The process "died" at a store call. A BaseException, so ``except Exception`` cannot swallow it."""


@dataclass(frozen=True, slots=True)
class Faults:
    """What to inject. Rates are per call; ``crash_after`` is 1-based (the k-th call crashes)."""

    error_rate: float = 0.0
    lost_reply_rate: float = 0.0
    latency: Latency | None = None
    crash_after: int | None = None

    def __post_init__(self) -> None:
        for name in ("error_rate", "lost_reply_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], not {rate!r}")
        if self.crash_after is not None and self.crash_after < 1:
            raise ValueError(f"crash_after counts calls from 1, not {self.crash_after!r}")


def s3_latency(rng: random.Random) -> float:
    """One S3 round trip in seconds: lognormal around a 60 ms median; 1% of calls take 300–800 ms."""
    if rng.random() < 0.01:
        return rng.uniform(0.3, 0.8)
    return math.exp(rng.gauss(math.log(0.060), 0.35))


class FaultyStore(ObjectStore):
    """Wrap ``inner``, injecting seeded errors, lost replies, latency and a crash point."""

    @property  # type: ignore[override]
    def hedge_reads(self) -> bool:
        """A latency model stands for S3: treat it like S3."""
        return self.faults.latency is not None

    def __init__(
        self,
        inner: ObjectStore,
        faults: Faults | None = None,
        *,
        rng: random.Random | int | str | None = 0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.faults = faults or Faults()
        self.rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        self.sleep = sleep
        self.calls: Counter[str] = Counter()  # per operation, every call (including failed ones)
        self.errors: Counter[str] = Counter()  # injected errors (nothing applied)
        self.lost_replies: Counter[str] = Counter()  # applied, then reported as failed
        self.count = 0  # calls so far (the crash point counts these)
        self.crashed = False

    def stats(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "errors": dict(self.errors),
            "lost_replies": dict(self.lost_replies),
            "crashed": self.crashed,
        }

    async def _call(self, op: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        self.count += 1
        self.calls[op] += 1
        f = self.faults
        if f.crash_after is not None and self.count >= f.crash_after:
            self.crashed = True
            raise SimulatedCrash(f"simulated crash at store call {self.count} ({op})")
        if f.latency is not None:
            await self.sleep(f.latency(self.rng))
        if f.error_rate and self.rng.random() < f.error_rate:
            self.errors[op] += 1
            raise StoreError(f"injected store error ({op})")
        lost = op in WRITES and f.lost_reply_rate > 0 and self.rng.random() < f.lost_reply_rate
        try:
            result = await fn()
        except StoreError as e:
            if lost:  # the failure reply was lost as well: the caller cannot tell what happened
                self.lost_replies[op] += 1
                raise StoreError(f"injected lost reply ({op})") from e
            raise
        if lost:
            self.lost_replies[op] += 1
            raise StoreError(f"injected lost reply ({op}, applied)")
        return result

    async def get(self, key: str) -> bytes:
        return await self._call("get", lambda: self.inner.get(key))

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        return await self._call("get_with_etag", lambda: self.inner.get_with_etag(key))

    async def head(self, key: str) -> ObjectInfo | None:
        return await self._call("head", lambda: self.inner.head(key))

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        return await self._call(
            "put",
            lambda: self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match),
        )

    async def delete(self, key: str) -> None:
        await self._call("delete", lambda: self.inner.delete(key))

    async def list_page(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> list[str]:
        return await self._call(
            "list_page", lambda: self.inner.list_page(prefix, start_after=start_after, limit=limit)
        )

    async def list_children(self, prefix: str) -> list[str]:
        return await self._call("list_children", lambda: self.inner.list_children(prefix))

    async def close(self) -> None:
        await self.inner.close()

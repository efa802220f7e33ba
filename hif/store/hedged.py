"""Reads sent a second time when they are slow, over a store with a long latency tail (S3).

A landing fans out: one record's group reads a hundred trees and intents at once, and waits for the
slowest. With 1% of S3 calls taking ten times the median, nearly every such fan-out would wait for a
tail call. Re-sending a read that has not answered after a few round trips and taking whichever copy
answers first cuts that tail at the price of a few percent more reads (AWS's performance guidelines
for S3 recommend retrying slow requests; "The Tail at Scale" calls them hedged requests). Only reads
are hedged here: they have no effect to duplicate. Content-addressed writes are hedged by their
callers (``hif.landing``), where a duplicate's "already exists" means success; conditional writes of
mutable keys never are.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import TypeVar

from hif.aio import RttEstimate, hedged, running_loop
from hif.store.base import ObjectInfo, ObjectStore

T = TypeVar("T")
FACTOR = 2.0  # round trips to wait before re-sending a read
FLOOR = 0.005  # seconds: never hedge faster than this


def _now() -> float:
    loop = running_loop()
    return loop.time() if loop is not None else time.monotonic()  # the loop's clock: virtual in sim


class HedgedStore(ObjectStore):
    """Wrap ``inner``: time every call, re-send reads slower than ``FACTOR`` times the usual."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.rtt = RttEstimate(_now, initial=0.05)

    def _after(self) -> float:
        return max(FACTOR * self.rtt.estimate, FLOOR)

    async def _read(self, call: Callable[[], Awaitable[T]]) -> T:
        return await hedged(lambda: self.rtt.timed(call()), self._after())

    async def get(self, key: str) -> bytes:
        return await self._read(lambda: self.inner.get(key))

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        return await self._read(lambda: self.inner.get_with_etag(key))

    async def head(self, key: str) -> ObjectInfo | None:
        return await self._read(lambda: self.inner.head(key))

    async def list_page(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> list[str]:
        return await self._read(lambda: self.inner.list_page(prefix, start_after=start_after, limit=limit))

    async def list_children(self, prefix: str) -> list[str]:
        return await self._read(lambda: self.inner.list_children(prefix))

    async def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        return await self.rtt.timed(self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match))

    async def delete(self, key: str) -> None:
        await self.rtt.timed(self.inner.delete(key))

    async def create_all(self, items: Sequence[tuple[str, bytes]]) -> None:
        await self.inner.create_all(items)

    def deferred_sync(self) -> AbstractContextManager[None]:
        return self.inner.deferred_sync()

    async def close(self) -> None:
        await self.inner.close()

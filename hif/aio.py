"""Concurrency for code that must also run without an event loop.

The CLI over the embedded store drives coroutines directly (``hif.store.base.drive``) and never
imports asyncio; the forge node, the SDK over S3 and the simulation run under an event loop. These
helpers overlap independent store calls when there is a loop and run them one by one when there is
not, so one algorithm serves both.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from hif.errors import TooLarge

T = TypeVar("T")


def running_loop() -> Any:
    """The running asyncio loop, or None (also when asyncio was never imported: the plain CLI)."""
    aio = sys.modules.get("asyncio")
    if aio is None:
        return None
    return aio._get_running_loop()


async def together(coros: list[Coroutine[Any, Any, T]]) -> list[T | BaseException]:
    """Await independent calls concurrently under an event loop (one round trip of latency instead of
    a chain), one by one without one. Errors are returned, not raised, except a BaseException that is
    not an Exception (a simulated crash), which is re-raised after all ended."""
    if running_loop() is not None and len(coros) > 1:
        import asyncio

        results: list[Any] = await asyncio.gather(*coros, return_exceptions=True)
    else:
        results = []
        for c in coros:
            try:
                results.append(await c)
            except Exception as e:
                results.append(e)
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, Exception):
            raise r
    return results


async def detach(coro: Coroutine[Any, Any, Any], keep: set[Any]) -> None:
    """Run best-effort work without waiting for it: under an event loop as a task held in ``keep``
    until it ends (its outcome, an error included, is dropped); without one, right here."""
    loop = running_loop()
    if loop is None:
        with contextlib.suppress(Exception):  # best effort: nobody waits for the answer
            await coro
        return
    task = loop.create_task(coro)
    keep.add(task)
    task.add_done_callback(_forget(keep))


def _forget(keep: set[Any]) -> Callable[[Any], None]:
    def done(task: Any) -> None:
        keep.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: not reported as lost

    return done


async def pause(seconds: float) -> None:
    """``asyncio.sleep`` under an event loop (virtual time in the simulation); a plain sleep without."""
    if running_loop() is not None:
        import asyncio

        await asyncio.sleep(seconds)
    else:
        time.sleep(seconds)


async def hedged(call: Callable[[], Awaitable[T]], after: float | None) -> T:
    """Run an *idempotent* call; if it has not answered ``after`` seconds later, start a second copy
    and take whichever answers first ("The Tail at Scale"). A wide fan-out of object-store calls
    otherwise waits for the slowest of them: with 1% of S3 calls ten times slower than the median,
    a record's hundred tree writes hit that tail nearly every time. Without a loop, one plain call."""
    if after is None or running_loop() is None:
        return await call()
    import asyncio

    async def run() -> T:
        return await call()

    first = asyncio.ensure_future(run())
    done, _ = await asyncio.wait({first}, timeout=after)
    if done:
        return first.result()
    second = asyncio.ensure_future(run())
    try:
        # the first answer wins, an error included: "not found" is an answer, and hedging is for
        # latency, not for retrying failures (the store's own retries do that)
        done, _ = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()
    finally:
        for task in (first, second):
            if not task.done():
                task.cancel()
        await asyncio.gather(first, second, return_exceptions=True)


class RttEstimate:
    """The median of the recent round trips to a store, measured on ``clock`` (the repository's:
    virtual time in the simulation), so waits and hedges scale with the store: microseconds on disk,
    tens of milliseconds on S3. A median, not a mean: the calls of a fan-out finish slowest last, so
    a moving average would drift toward the tail it is meant to cut."""

    WINDOW = 64

    def __init__(self, clock: Callable[[], float], initial: float = 0.005) -> None:
        self.clock = clock
        self.estimate = initial
        self._recent: deque[float] = deque(maxlen=self.WINDOW)
        self._since = 0

    def observe(self, seconds: float) -> None:
        self._recent.append(max(seconds, 0.0))
        self._since += 1
        if self._since >= 8 or len(self._recent) < 8:  # re-sorting 64 floats every 8 calls is cheap
            self._since = 0
            ordered = sorted(self._recent)
            self.estimate = ordered[len(ordered) // 2]

    async def timed(self, call: Awaitable[T]) -> T:
        t0 = self.clock()
        try:
            return await call
        finally:
            self.observe(self.clock() - t0)


async def read_capped(chunks: AsyncIterable[bytes], limit: int, *, declared: int | None = None,
                      what: str = "the request body") -> bytes:
    """Everything ``chunks`` yields, refused (:class:`TooLarge`) as soon as it passes ``limit`` bytes,
    or at once when the ``declared`` length (Content-Length) already does: a body is never buffered
    past its limit. The one reader of size-limited streams (node API, federation). A stream that
    counts what it receives itself (``node.wire.CappedBody``) is told the limit first."""
    set_limit = getattr(chunks, "set_limit", None)
    if set_limit is not None:
        set_limit(limit)
    if declared is not None and declared > limit:
        raise TooLarge(f"{what} is over {limit} bytes")
    data = bytearray()
    async for chunk in chunks:
        if len(data) + len(chunk) > limit:
            raise TooLarge(f"{what} is over {limit} bytes")
        data += chunk
    return bytes(data)

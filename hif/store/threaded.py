"""Run a blocking store's calls in worker threads.

The embedded store's methods are ``async`` in name only: they read, write and fsync files. A server
that awaits them on its event loop stops serving everyone while one request waits for the disk; this
wrapper moves each call to a thread pool so requests overlap (the store is safe across threads: its
conditional writes use ``link`` and per-key ``flock``, which also exclude threads of one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from hif.store.base import ObjectInfo, ObjectStore, drive

T = TypeVar("T")


_Job = tuple[Callable[[], Coroutine[Any, Any, Any]], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class ThreadedStore(ObjectStore):
    """A node makes tens of store calls per landing, so the hop to a worker and back is kept small:
    a plain queue and one ``call_soon_threadsafe`` per call (``run_in_executor`` builds a
    concurrent future, a condition and a chained asyncio future for each, and was a third of a
    node's CPU)."""

    def __init__(self, inner: ObjectStore, *, workers: int = 16) -> None:
        self.inner = inner
        self.url = inner.url
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = 0  # workers waiting for a job (under _lock)
        self._queued = 0  # jobs not yet taken by a worker (under _lock)

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            job = self._jobs.get()
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            if job is None:
                return
            call, loop, fut = job
            if fut.cancelled():  # cancelled before it started: the coroutine is never made
                continue
            try:
                result, error = drive(call()), None
            except BaseException as e:  # handed to the awaiting coroutine
                result, error = None, e
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(_settle, fut, result, error)

    async def _call(self, call: Callable[[], Coroutine[Any, Any, T]]) -> T:
        # the coroutine is made in the worker: a call cancelled before it starts leaves none unawaited
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._queued += 1
            grow = self._queued > self._idle and len(self._threads) < self._workers
            if grow:
                t = threading.Thread(target=self._work, name=f"store-{len(self._threads)}", daemon=True)
                self._threads.append(t)
        if grow:
            t.start()
        self._jobs.put((call, loop, fut))
        return await fut

    async def get(self, key: str) -> bytes:
        return await self._call(lambda: self.inner.get(key))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """All of them in one worker call: one thread hop per batch instead of one per key."""
        return await self._call(lambda: self.inner.get_many(keys))

    async def has_many(self, keys: Sequence[str]) -> list[bool]:
        """All of them in one worker call, like ``get_many``."""
        return await self._call(lambda: self.inner.has_many(keys))

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        return await self._call(lambda: self.inner.get_with_etag(key))

    async def head(self, key: str) -> ObjectInfo | None:
        return await self._call(lambda: self.inner.head(key))

    async def put(self, key: str, data: bytes, *, if_none_match: bool = False,
                  if_match: str | None = None) -> str:
        return await self._call(lambda: self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match))

    async def delete(self, key: str) -> None:
        await self._call(lambda: self.inner.delete(key))

    async def list_page(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> list[str]:
        return await self._call(lambda: self.inner.list_page(prefix, start_after=start_after, limit=limit))

    async def list_children(self, prefix: str) -> list[str]:
        return await self._call(lambda: self.inner.list_children(prefix))

    async def create_all(self, items: Sequence[tuple[str, bytes]]) -> None:
        await self._call(lambda: self.inner.create_all(items))

    @contextlib.contextmanager
    def deferred_sync(self) -> Iterator[None]:
        with self.inner.deferred_sync():
            yield

    async def close(self) -> None:
        for _ in self._threads:
            with self._lock:
                self._queued += 1
            self._jobs.put(None)
        for t in self._threads:
            await asyncio.to_thread(t.join)
        self._threads.clear()
        await self.inner.close()


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():  # cancelled while the worker ran
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)

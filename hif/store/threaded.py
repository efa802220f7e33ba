"""Run a blocking store's calls in worker threads.

The embedded store's methods are ``async`` in name only: they read, write and fsync files. A server
that awaits them on its event loop stops serving everyone while one request waits for the disk; this
wrapper moves each call to a thread pool so requests overlap (the store is safe across threads: its
conditional writes use ``link`` and per-key ``flock``, which also exclude threads of one process).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from hif.store.base import ObjectInfo, ObjectStore, drive

T = TypeVar("T")


class ThreadedStore(ObjectStore):
    def __init__(self, inner: ObjectStore, *, workers: int = 16) -> None:
        self.inner = inner
        self.url = inner.url
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="store")

    async def _call(self, call: Callable[[], Coroutine[Any, Any, T]]) -> T:
        # the coroutine is made in the worker: a call cancelled before it starts leaves none unawaited
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: drive(call()))

    async def get(self, key: str) -> bytes:
        return await self._call(lambda: self.inner.get(key))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """All of them in one worker call: one thread hop per batch instead of one per key."""
        return await self._call(lambda: self.inner.get_many(keys))

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
        self._pool.shutdown(wait=True)
        await self.inner.close()

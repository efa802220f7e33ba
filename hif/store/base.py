"""The object-store seam: the one small async interface behind which all durable state lives.

Semantics follow S3 so that the embedded store and any S3 API behave alike:
- ``put(key, data, if_none_match=True)`` creates the key only if absent (S3 ``If-None-Match: *``);
- ``put(key, data, if_match=etag)`` replaces it only if unchanged since that etag (S3 ``If-Match``);
  on a missing key it fails with :class:`PreconditionFailed` too;
- a lost condition raises :class:`hif.errors.PreconditionFailed`; a missing key on ``get`` raises
  :class:`hif.errors.NotFound`.
Etags are opaque strings; only equality is meaningful.
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hif.errors import InvalidInput, NotFound

T = TypeVar("T")

_KEY_COMPONENT = re.compile(r"^[^/\x00]+$")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """A stored object's key, entity tag and size in bytes."""

    key: str
    etag: str
    size: int


def check_key(key: str) -> str:
    """Refuse keys that could escape a prefix or that S3 and a file system would treat differently."""
    if not key or key.startswith("/") or key.endswith("/"):
        raise InvalidInput(f"invalid store key: {key!r}")
    for part in key.split("/"):
        if part in (".", "..") or not _KEY_COMPONENT.match(part):
            raise InvalidInput(f"invalid store key: {key!r}")
    return key


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to completion, without an event loop: the embedded
    store's methods are async in name only, so the CLI (and a worker thread) can call them directly."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a store operation waited outside an event loop")


class ObjectStore(ABC):
    """Async key/value store with conditional writes and ordered prefix listing."""

    url: str = ""
    # a store with a long latency tail (S3): ``Repo`` re-sends its slow reads (``hif.store.hedged``)
    hedge_reads: bool = False

    @abstractmethod
    async def get(self, key: str) -> bytes:
        """Return the bytes at ``key`` or raise NotFound."""

    @abstractmethod
    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """Return the bytes and etag at ``key`` (for a later compare-and-swap) or raise NotFound."""

    @abstractmethod
    async def head(self, key: str) -> ObjectInfo | None:
        """Return the key's etag and size, or None when absent."""

    @abstractmethod
    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        """Write ``data`` atomically (readers see the old or the new bytes, never a mix); return the etag."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error (as in S3)."""

    @abstractmethod
    async def list_page(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> list[str]:
        """Up to ``limit`` keys beginning with ``prefix``, in byte order, strictly after ``start_after``."""

    @abstractmethod
    async def list_children(self, prefix: str) -> list[str]:
        """Immediate children of ``prefix`` (which ends in ``/``): names of keys and sub-prefixes, sorted."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default store holds none."""

    async def create_all(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Put-if-absent of several keys, in order, stopping with PreconditionFailed at the first one
        that exists (earlier ones may have been created). Every put is durable on return; a store may
        make the batch cheaper (see ``EmbeddedStore``) but never reorders it."""
        for key, data in items:
            await self.put(key, data, if_none_match=True)

    @contextlib.contextmanager
    def deferred_sync(self) -> Iterator[None]:
        """Bulk writers (``hif import git``) may skip per-write durability inside this block; only
        ``create_all`` then makes things durable (together with everything written before it). Stores
        whose every write is durable anyway ignore it."""
        yield

    async def get_or_none(self, key: str) -> bytes | None:
        try:
            return await self.get(key)
        except NotFound:
            return None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of several keys (None where absent), in order. Concurrent by default, since on
        S3 each read is a round trip; a local store overrides it to read them in one go."""
        import asyncio  # here: the CLI drives the embedded store without ever importing asyncio

        return list(await asyncio.gather(*(self.get_or_none(k) for k in keys)))

    async def has_many(self, keys: Sequence[str]) -> list[bool]:
        """Whether each key exists, in order. Concurrent ``head`` calls by default (a round trip
        each on S3); a local store overrides it to look them all up in one go."""
        import asyncio  # here: the CLI drives the embedded store without ever importing asyncio

        return [info is not None for info in await asyncio.gather(*(self.head(k) for k in keys))]

    async def iter_keys(self, prefix: str, *, page: int = 1000) -> AsyncIterator[str]:
        """Every key under ``prefix`` in order, fetched a page at a time so memory stays bounded."""
        after: str | None = None
        while True:
            keys = await self.list_page(prefix, start_after=after, limit=page)
            for key in keys:
                yield key
            if len(keys) < page:
                return
            after = keys[-1]

    async def __aenter__(self) -> ObjectStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

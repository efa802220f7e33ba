"""The durable outbox: deliveries queued in the store, retried with backoff, taken under a lease.

One key per pending delivery, ``_fed/outbox/<due ms>-<position>-<id>``, so a listing comes out
in due order. Any replica's worker may take an item: it compare-and-swaps a lease into it
(``if_match``), so two replicas never send the same item at once; a lease left by a crashed
replica expires. A failed try writes the item again under its next due time and removes the old
key (a crash in between sends it twice: receivers are idempotent).

Retry schedule (Mastodon's and Sidekiq's): before try n+1 wait ``n**4 + 15 + rand(30)·(n+1)``
seconds: the first try and 16 retries (as Mastodon), the last one about 2.8 days after the first
(2.9 with the average jitter). Most 4xx answers end the item at once; so do refusals by policy.
Ended items stay in ``_fed/failed/`` for the operator.

Per-peer circuit breaker in ``_fed/peers/<host>``: after 5 consecutive failures the peer is skipped
for ``60 s · 2^(k-5)`` (at most an hour); its items are postponed without spending a try.

A landing's deliveries are *claimed* before they are sent (:func:`claim`): the item is written
already leased by the replica that will send it and due only when that lease runs out, so another
replica's outbox leaves it alone while it is in flight and re-sends it only if the sender died.

Sending is done by :class:`Lanes`: one lane per destination host, each a bounded queue with one
request in flight, so a slow or dead host delays only its own deliveries; the lanes of a replica
share a bounded number of requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from federation.layout import load_map
from hif.errors import CorruptObject, NotFound, PreconditionFailed, StoreError
from hif.objects import decode, encode
from hif.store.base import ObjectStore

OUTBOX = "_fed/outbox/"
FAILED = "_fed/failed/"
PEERS = "_fed/peers/"
TRIES = 17  # the first try and 16 retries
LEASE = 120.0  # seconds a replica holds an item while sending it
BREAK_AFTER = 5
HOST_QUEUE = 256  # deliveries waiting for one destination host on one replica
IN_FLIGHT = 64  # requests in flight at once on one replica, all hosts together

log = logging.getLogger("micelio.federation")


def retry_delay(tries: int, scale: float = 1.0, rng: random.Random | None = None) -> float:
    """Seconds to wait after ``tries`` failed tries (Sidekiq's formula, like Mastodon)."""
    r = rng or random
    return (tries**4 + 15 + r.randrange(30) * (tries + 1)) * scale


def schedule_table(scale: float = 1.0) -> list[float]:
    """Cumulative seconds (without jitter) at which each try happens: for docs and ``status``."""
    out, t = [0.0], 0.0
    for n in range(1, TRIES):
        t += (n**4 + 15) * scale
        out.append(t)
    return out


def _key(due: float, position: int, ident: str) -> str:
    return f"{OUTBOX}{int(due * 1000):013d}-{position:012d}-{ident}"


@dataclass
class Item:
    key: str
    etag: str
    value: dict[str, Any]

    @property
    def due(self) -> float:
        return int(self.key[len(OUTBOX) :].split("-", 1)[0]) / 1000


async def enqueue(
    store: ObjectStore, value: dict[str, Any], *, due: float | None = None, position: int = 0
) -> str:
    """Queue a delivery; ``value`` has ``kind`` and ``peer`` (the host it goes to)."""
    now = time.time()
    ident = value.get("id") or os.urandom(8).hex()
    body = {"tries": 0, "created": now, **value, "id": ident}
    key = _key(due if due is not None else now, position, ident)
    await store.put(key, encode(body))
    return key


async def claim(
    store: ObjectStore, value: dict[str, Any], owner: str, *, position: int = 0
) -> Item:
    """Queue a delivery already leased by ``owner``, who sends it now: it is due only when the lease
    runs out, so no other replica takes it unless ``owner`` died before finishing it."""
    now = time.time()
    ident = os.urandom(8).hex()
    body = {"tries": 0, "created": now, **value, "id": ident, "lease": now + LEASE, "owner": owner}
    key = _key(now + LEASE, position, ident)
    etag = await store.put(key, encode(body), if_none_match=True)
    return Item(key, etag, body)


async def renew(store: ObjectStore, item: Item, now: float | None = None) -> bool:
    """Extend the lease of an item this replica holds; False if it was lost (another took it)."""
    t = time.time() if now is None else now
    value = {**item.value, "lease": t + LEASE}
    try:
        item.etag = await store.put(item.key, encode(value), if_match=item.etag)
    except (PreconditionFailed, NotFound):
        return False
    item.value = value
    return True


async def due_items(
    store: ObjectStore,
    limit: int,
    now: float | None = None,
    *,
    skip: set[str] | frozenset[str] = frozenset(),
    scan: int = 4096,
) -> list[str]:
    """Keys of items due now, oldest first, leaving out ``skip`` (items this replica is already
    sending) and looking at no more than ``scan`` keys."""
    t = time.time() if now is None else now
    out: list[str] = []
    after: str | None = None
    seen = 0
    while len(out) < limit and seen < scan:
        keys = await store.list_page(OUTBOX, start_after=after, limit=min(1000, limit + len(skip)))
        for k in keys:
            if _due_of(k) > t:
                return out
            if k not in skip:
                out.append(k)
                if len(out) >= limit:
                    return out
        if len(keys) < min(1000, limit + len(skip)):
            return out
        seen += len(keys)
        after = keys[-1]
    return out


def _due_of(key: str) -> float:
    try:
        return int(key[len(OUTBOX) :].split("-", 1)[0]) / 1000
    except ValueError:
        return 0.0


async def lease(store: ObjectStore, key: str, owner: str, now: float | None = None) -> Item | None:
    """Take the item for ``LEASE`` seconds, or None if it is gone or leased by someone else."""
    t = time.time() if now is None else now
    try:
        data, etag = await store.get_with_etag(key)
    except NotFound:
        return None
    try:
        value = decode(data)
    except CorruptObject:
        await store.delete(key)  # a torn item cannot be sent; nothing to keep
        return None
    if not isinstance(value, dict) or value.get("lease", 0) > t:
        return None
    value["lease"], value["owner"] = t + LEASE, owner
    try:
        etag = await store.put(key, encode(value), if_match=etag)
    except PreconditionFailed:
        return None
    return Item(key, etag, value)


async def done(store: ObjectStore, item: Item) -> None:
    await store.delete(item.key)


async def retry(
    store: ObjectStore,
    item: Item,
    error: str,
    *,
    scale: float,
    tries: int = TRIES,
    count: bool = True,
    until: float | None = None,
) -> str | None:
    """Put the item back for a later try (or end it after the last); returns the new key."""
    v = dict(item.value)
    v.pop("lease", None)
    v.pop("owner", None)
    v["error"] = error
    v["last_try"] = time.time()
    if count:
        v["tries"] = int(v.get("tries", 0)) + 1
        if v["tries"] >= tries:
            await fail(store, item, f"gave up after {v['tries']} tries: {error}")
            return None
    due = until if until is not None else time.time() + retry_delay(max(1, v["tries"]), scale)
    key = _key(due, int(v.get("start") or 0), v["id"])
    await store.put(key, encode(v))
    if key != item.key:
        await store.delete(item.key)
    return key


async def record_failed(store: ObjectStore, value: dict[str, Any]) -> None:
    """Keep a delivery that can never succeed (a peer refused it) for the operator to see."""
    v = {"tries": 1, "created": time.time(), **value, "failed": time.time()}
    v.setdefault("id", os.urandom(8).hex())
    with contextlib.suppress(StoreError):
        await store.put(f"{FAILED}{int(time.time() * 1000):013d}-{v['id']}", encode(v))


async def fail(store: ObjectStore, item: Item, error: str) -> None:
    """End an item for good; the operator sees it in ``micelio federation status`` and the UI."""
    v = dict(item.value)
    v.pop("lease", None)
    v.pop("owner", None)
    v.update(error=error, failed=time.time())
    with contextlib.suppress(StoreError):
        await store.put(f"{FAILED}{int(time.time() * 1000):013d}-{v['id']}", encode(v))
    await store.delete(item.key)


# -- peers -------------------------------------------------------------------------------------


def _peer_key(peer: str) -> str:
    return PEERS + peer


async def peer_state(store: ObjectStore, peer: str) -> dict[str, Any]:
    return load_map(await store.get_or_none(_peer_key(peer))) or {}


def circuit_open(state: dict[str, Any], now: float | None = None) -> float | None:
    """Until when deliveries to the peer are held back, or None."""
    until = state.get("open_until")
    t = time.time() if now is None else now
    return until if isinstance(until, (int, float)) and until > t else None


async def peer_failed(store: ObjectStore, peer: str, error: str, scale: float) -> dict[str, Any]:
    s = await peer_state(store, peer)
    now = time.time()
    s["consecutive"] = int(s.get("consecutive", 0)) + 1
    s["failures"] = int(s.get("failures", 0)) + 1
    s["last_error"], s["last_failure"] = error, now
    days = sorted({*s.get("failure_days", []), int(now // 86400)})[-30:]
    s["failure_days"] = days
    if s["consecutive"] >= BREAK_AFTER:
        s["open_until"] = now + min(3600.0, 60.0 * 2 ** (s["consecutive"] - BREAK_AFTER)) * scale
    with contextlib.suppress(StoreError):
        await store.put(_peer_key(peer), encode(s))
    return s


async def peer_ok(store: ObjectStore, peer: str, known: dict[str, Any] | None = None) -> None:
    s = known if known is not None else await peer_state(store, peer)
    if (
        s.get("consecutive")
        or s.get("open_until")
        or not s.get("last_success")
        or time.time() - s["last_success"] > 60
    ):
        s.update(consecutive=0, open_until=None, last_success=time.time())
        with contextlib.suppress(StoreError):
            await store.put(_peer_key(peer), encode(s))


# -- lanes: one queue per destination host -----------------------------------------------------


class Lanes:
    """Per-host delivery queues of one replica. Each host has a bounded queue worked by its own task,
    one request at a time; all hosts together have at most ``total`` requests in flight. ``send``
    must finish the item (done, retry or fail) and never raise; it is given the host and the item.
    """

    def __init__(
        self,
        send: Callable[[str, Item], Awaitable[None]],
        *,
        per_host: int = HOST_QUEUE,
        total: int = IN_FLIGHT,
    ) -> None:
        self._send = send
        self.per_host = per_host
        self._queues: dict[str, deque[Item]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(total)
        self.keys: set[str] = set()  # items queued or in flight here

    def full(self, host: str) -> bool:
        q = self._queues.get(host)
        return q is not None and len(q) >= self.per_host

    def offer(self, host: str, item: Item) -> bool:
        """Queue ``item`` for ``host``; False (nothing queued) when that host's queue is full."""
        if item.key in self.keys:
            return True
        q = self._queues.setdefault(host, deque())
        if len(q) >= self.per_host:
            return False
        q.append(item)
        self.keys.add(item.key)
        if host not in self._tasks:
            self._tasks[host] = asyncio.create_task(self._run(host, q))
        return True

    def take(self, host: str, want: Callable[[Item], bool]) -> list[Item]:
        """Remove and return the items waiting behind the one in flight for ``host`` that ``want``
        accepts (asked in queue order), so the caller can send them together with it."""
        q = self._queues.get(host)
        if not q or len(q) < 2:
            return []
        kept: list[Item] = [q[0]]
        taken: list[Item] = []
        for item in list(q)[1:]:
            if want(item):
                taken.append(item)
                self.keys.discard(item.key)
            else:
                kept.append(item)
        q.clear()
        q.extend(kept)
        return taken

    async def _run(self, host: str, q: deque[Item]) -> None:
        try:
            while q:
                item = q[0]
                try:
                    async with self._slots:
                        await self._send(host, item)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the item stays in the outbox under its lease: retried later
                    log.exception("delivery to %s failed unexpectedly", host)
                finally:
                    q.popleft()
                    self.keys.discard(item.key)
        finally:
            self._tasks.pop(host, None)
            if not q:
                self._queues.pop(host, None)

    def busy(self) -> int:
        """Items queued or in flight (for tests and status)."""
        return len(self.keys)

    async def close(self) -> list[Item]:
        """Stop every lane; returns the items that were queued or in flight (still leased by this
        replica), for the caller to put back in the outbox."""
        left = [item for q in self._queues.values() for item in q]
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        self._queues.clear()
        self.keys.clear()
        return left

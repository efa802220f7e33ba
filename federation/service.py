"""The federation side of a node: identity, delivery, mirrors and the inbox, in one object.

``Federation`` knows nothing of the node's HTTP layer or auth database: the node hands it the store,
its public URL, the settings, and two callbacks (a local repository's registration, and the node's
``Repo`` handle for a name). Every replica runs one, with three background loops:

- **announce**: for each local repository with followers, claim the positions after
  ``_fed/announced/<repo>``: one outbox item per follower *inbox* (followers behind one shared inbox
  get one ``Push``), written already leased by this replica, then the mark moved by compare-and-swap
  *before* anything is sent, so of two replicas only the one whose swap won delivers the range (the
  other deletes its claims). The claims are then handed to the per-host lanes
  (:class:`federation.delivery.Lanes`) and the loop goes on at once: it never waits for a peer.
  A landing through this replica wakes it at once; landings made elsewhere (another replica, a tool
  on the store) are found by the periodic scan.
- **outbox**: take due items under a lease and hand them to the same lanes (one request in flight per
  host, a bounded number in all), with retries and circuit breaking; never one host after another.
- **resync**: bring each followed mirror up to its origin's head from the paged envelope log (at
  start, after an ``Accept``, and every ``resync`` seconds), which also heals missed deliveries.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from federation import delivery, offer_inbox
from federation.actors import (
    ACTIVITY_JSON,
    Directory,
    is_error_permanent,
    with_context,
)
from federation.addressing import repo_actor_url
from federation.backfill import backfill, remember_actor
from federation.envelope import landing_envelope
from federation.errors import DeliveryFailed, UnknownHost
from federation.httpsig import expire_replays, sign_headers
from federation.identity import NodeKey, load_node_key
from federation.layout import FOLLOWERS, announced_key, following_key, load_map
from federation.mirror import mirror_repo, write_sync
from federation.net import Fetcher
from federation.settings import FedSettings, authority
from hif.errors import (
    CorruptObject,
    HifError,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    RemoteError,
)
from hif.objects import decode, encode
from hif.repo import Repo
from hif.store.base import ObjectStore

log = logging.getLogger("micelio.federation")

PUSH_MAX = 100  # envelopes per Push
PUSH_BYTES = 512 << 10  # base64 envelope bytes per Push (the inbox accepts 1 MiB)
OUTBOX_BATCH = 64
RETRY_DEADLINE = 60.0  # seconds a retried request may take in all (the first try: settings.timeout)
ENVELOPE_CACHE = 16 << 20  # bytes of signed envelopes kept per replica (signed once per landing)
ENVELOPE_CACHE_MAX = 1 << 20  # envelopes bigger than this are signed again rather than kept
PUSH_CACHE = 16  # one-Push ranges kept per replica (built once, posted to every inbox)

RepoInfo = Callable[[str], Awaitable[dict[str, Any] | None]]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise InvalidInput("malformed base64") from None


class Federation:
    def __init__(
        self,
        store: ObjectStore,
        url: str,
        settings: FedSettings,
        *,
        repo_info: RepoInfo,
        local_repo: Callable[[str], Repo],
        node_key: str | None = None,
    ) -> None:
        self.store = store
        self.url = url.rstrip("/")
        self.settings = settings
        self.repo_info = repo_info
        self.local_repo = local_repo
        self._configured_key = node_key
        self._key: NodeKey | None = None
        self.fetcher = Fetcher(settings)
        self._directory: Directory | None = None
        self.replica = os.urandom(6).hex()
        self._tasks: list[asyncio.Task[None]] = []
        self._wake_announce = asyncio.Event()
        self._wake_outbox = asyncio.Event()
        self._wake_resync = asyncio.Event()
        self._dirty: set[str] = set()
        self._dirty_mirrors: set[tuple[str, str]] = set()
        self._repo_locks: dict[str, asyncio.Lock] = {}
        self._mirror_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._mirrors: dict[tuple[str, str], Repo] = {}
        self._envelopes: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._envelope_bytes = 0
        self._pushes: OrderedDict[tuple[str, int, int], tuple[int, int, bytes]] = OrderedDict()
        self.lanes = delivery.Lanes(self._deliver)
        self.stopping = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, worker: bool = True) -> None:
        self._key = await load_node_key(self.store, self.url, self._configured_key)
        self._directory = Directory(self.fetcher, self._key)
        if worker:
            for loop in (self._announce_loop, self._outbox_loop, self._resync_loop):
                self._tasks.append(asyncio.create_task(self._guard(loop)))

    async def stop(self) -> None:
        self.stopping = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        for item in await self.lanes.close():  # due at once for whichever replica runs next
            with contextlib.suppress(HifError):
                await self._put_back(item, "the sending replica stopped", time.time())
        await self.fetcher.close()

    @property
    def key(self) -> NodeKey:
        assert self._key is not None, "federation has not started"
        return self._key

    @property
    def directory(self) -> Directory:
        assert self._directory is not None, "federation has not started"
        return self._directory

    def landed(self, name: str) -> None:
        """A local landing happened: announce it now rather than at the next poll."""
        self._dirty.add(name)
        self._wake_announce.set()

    def mirror(self, host: str, name: str) -> Repo:
        repo = self._mirrors.get((host, name))
        if repo is None:
            if len(self._mirrors) > 256:
                self._mirrors.clear()
            repo = self._mirrors[(host, name)] = mirror_repo(self.store, host, name)
        return repo

    def mirror_lock(self, host: str, name: str) -> asyncio.Lock:
        return self._mirror_locks.setdefault((host, name), asyncio.Lock())

    def wake_outbox(self) -> None:
        self._wake_outbox.set()

    def resync_soon(self, host: str, name: str) -> None:
        self._dirty_mirrors.add((host, name))
        self._wake_resync.set()

    async def _guard(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Keep a loop alive: an unexpected error is logged and the loop starts again shortly."""
        while not self.stopping:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("federation loop %s failed; restarting", loop.__name__)
                await asyncio.sleep(max(0.5, self.settings.poll))

    async def _nap(self, event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
        event.clear()

    # -- sending -----------------------------------------------------------------------------

    async def post(
        self, inbox: str, activity: dict[str, Any], *, timeout: float | None = None
    ) -> None:
        """Sign and deliver one activity; raises DeliveryFailed unless the peer answers 2xx."""
        activity = with_context(activity, self.url)  # our terms expand through <node>/ns
        body = json.dumps(activity, separators=(",", ":")).encode()
        await self.post_body(inbox, body, timeout=timeout)

    async def post_body(self, inbox: str, body: bytes, *, timeout: float | None = None) -> None:
        """POST an activity's JSON bytes, signed for ``inbox``, within an overall deadline of
        ``timeout`` seconds (connect, send and the whole answer: a peer that drips its answer
        byte by byte is cut off like one that never answers)."""
        deadline = timeout or max(RETRY_DEADLINE, self.settings.timeout)
        headers = sign_headers(
            self.key, "POST", inbox, body, {"Content-Type": ACTIVITY_JSON, "Accept": ACTIVITY_JSON}
        )
        try:
            a = await self.fetcher.request(
                "POST",
                inbox,
                headers=headers,
                content=body,
                timeout=deadline,
                deadline=deadline,
                pool="delivery",
            )
        except RemoteError as e:
            raise DeliveryFailed(str(e)) from None
        if not 200 <= a.status < 300:
            text = a.body[:300].decode("utf-8", "replace")
            with contextlib.suppress(ValueError, AttributeError):
                text = json.loads(a.body).get("message") or text
            raise DeliveryFailed(f"{authority(inbox)} answered HTTP {a.status}: {text}", a.status)

    async def push(
        self, inbox: str, name: str, start: int, end: int, *, timeout: float | None = None
    ) -> None:
        """Deliver positions ``start..end`` of a local repository as signed ``Push`` activities.
        On failure raises DeliveryFailed with ``position`` = the first position not delivered.

        A range that fits one ``Push`` (the usual landing) is built once and kept, so every inbox
        that follows gets the same bytes (only the HTTP signature differs); a longer range is built
        one ``Push`` at a time while it is sent, never all at once."""
        cached = self._pushes.get((name, start, end))
        if cached is not None:
            self._pushes.move_to_end((name, start, end))
            chunks: Any = _aiter([cached])
        else:
            chunks = self._push_bodies(name, start, end)
        async for first, last, body in chunks:
            if cached is None and first == start and last >= end:  # the whole range in one
                self._pushes[(name, start, end)] = (first, last, body)
                while len(self._pushes) > PUSH_CACHE:
                    self._pushes.popitem(last=False)
            try:
                await self.post_body(inbox, body, timeout=timeout)
            except DeliveryFailed as e:
                e.position = first  # type: ignore[attr-defined]
                raise

    async def _push_bodies(
        self, name: str, start: int, end: int
    ) -> AsyncIterator[tuple[int, int, bytes]]:
        """The ``Push`` activities carrying ``start..end``: (first position, last position, JSON
        bytes), at most 100 envelopes and 512 KiB of them inline each."""
        actor = repo_actor_url(self.url, name)
        pos = start
        while pos <= end:
            items: list[dict[str, Any]] = []
            size = 0
            first = pos
            while pos <= end and len(items) < PUSH_MAX:
                text = b64(await self.envelope(name, pos))
                if items and size + len(text) > PUSH_BYTES:
                    break
                item: dict[str, Any] = {
                    "type": "Landing",
                    "id": f"{actor}/envelopes/{pos}",
                    "position": pos,
                }
                if len(text) <= PUSH_BYTES:
                    item["envelope"] = text  # inline; a bigger one is fetched by its id
                items.append(item)
                size += len(text)
                pos += 1
            activity = {
                "id": f"{actor}/pushes/{first}-{pos - 1}",
                "type": "Push",
                "actor": actor,
                "target": actor,
                "to": [f"{actor}/followers"],
                "object": {
                    "type": "OrderedCollection",
                    "totalItems": len(items),
                    "orderedItems": items,
                },
            }
            activity = with_context(activity, self.url)  # our terms expand through <node>/ns
            yield first, pos - 1, json.dumps(activity, separators=(",", ":")).encode()

    async def envelope(self, name: str, position: int) -> bytes:
        """The signed envelope of a local landing, signed once per replica (positions never
        change once landed, so the cache needs no invalidation)."""
        wire = self._envelopes.get((name, position))
        if wire is not None:
            self._envelopes.move_to_end((name, position))
            return wire
        wire = await landing_envelope(self.local_repo(name), self.key, position)
        if len(wire) <= ENVELOPE_CACHE_MAX:
            self._envelopes[(name, position)] = wire
            self._envelope_bytes += len(wire)
            while self._envelope_bytes > ENVELOPE_CACHE:
                self._envelope_bytes -= len(self._envelopes.popitem(last=False)[1])
        return wire

    # -- announce: local landings to followers -----------------------------------------------

    async def followers(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        out = []
        async for key in self.store.iter_keys(f"{FOLLOWERS}{name}/"):
            data = await self.store.get_or_none(key)
            if data is None:
                continue
            with contextlib.suppress(CorruptObject):
                v = decode(data)
                if isinstance(v, dict) and isinstance(v.get("inbox"), str):
                    out.append((key, v))
        return out

    async def followed_repos(self) -> list[str]:
        names = []
        for owner in await self.store.list_children(FOLLOWERS):
            for repo in await self.store.list_children(f"{FOLLOWERS}{owner}/"):
                names.append(f"{owner}/{repo}")
        return names

    async def _announce_loop(self) -> None:
        last_full = -math.inf  # the first pass scans at once (monotonic time may start near 0)
        while not self.stopping:
            dirty, self._dirty = self._dirty, set()
            full = time.monotonic() - last_full >= self.settings.poll
            names = set(dirty)
            if full:
                names |= set(await self.followed_repos())
                last_full = time.monotonic()
            if names:
                await asyncio.gather(*(self.announce(n) for n in sorted(names)))
            if not self._dirty:
                await self._nap(self._wake_announce, self.settings.poll)

    async def announce(self, name: str) -> None:
        """Claim and hand out what followers of ``name`` have not been sent yet (at least once,
        idempotent): never waits for a peer."""
        lock = self._repo_locks.setdefault(name, asyncio.Lock())
        if lock.locked():
            self._dirty.add(name)  # the running one may have read the head already: go again
            return
        async with lock:
            key = announced_key(name)
            try:
                data, etag = await self.store.get_with_etag(key)
                done = decode(data)
            except NotFound:
                return  # set when the first follower was accepted
            except CorruptObject:
                done, etag = 0, None
            if not isinstance(done, int):
                done = 0
            head = await self.local_repo(name).mainline.head()
            if head <= done:
                return
            followers = await self.followers(name)
            if not followers:
                return
            info = await self.repo_info(name)
            if info is None or info.get("private"):
                return  # private repositories never leave the node
            inboxes: dict[str, int] = {}  # one delivery per inbox, however many actors behind it
            for _, f in followers:
                inboxes[f["inbox"]] = inboxes.get(f["inbox"], 0) + 1
            values = []
            for inbox, count in sorted(inboxes.items()):
                with contextlib.suppress(InvalidInput):
                    values.append(
                        {
                            "kind": "push",
                            "peer": authority(inbox),
                            "inbox": inbox,
                            "repo": name,
                            "start": done + 1,
                            "end": head,
                            "followers": count,
                        }
                    )
            # durable claims first, then the mark: a crash between them re-sends (at least once),
            # and of two replicas only the one whose compare-and-swap wins sends the range
            made = await asyncio.gather(
                *(delivery.claim(self.store, v, self.replica, position=done + 1) for v in values),
                return_exceptions=True,
            )
            claims = [c for c in made if isinstance(c, delivery.Item)]
            failed = next((c for c in made if isinstance(c, BaseException)), None)
            if failed is not None:  # the mark stays: the next pass claims the range again
                await asyncio.gather(*(delivery.done(self.store, c) for c in claims))
                raise failed
            try:
                if etag is None:
                    await self.store.put(key, encode(head))
                else:
                    await self.store.put(key, encode(head), if_match=etag)
            except PreconditionFailed:
                await asyncio.gather(*(delivery.done(self.store, c) for c in claims))
                self._dirty.add(name)  # the winner's range may end before our head
                return
            for c in claims:
                await self.hand(c)

    async def hand(self, item: delivery.Item) -> None:
        """Give a leased item to its host's lane; when that lane is full, put it back in the outbox
        (due soon, no try spent) for the outbox loop to hand over once the lane has room."""
        peer = str(item.value.get("peer"))
        if not self.lanes.offer(peer, item):
            await self._put_back(
                item,
                "waiting: the host's delivery queue is full",
                time.time() + max(1.0, self.settings.poll),
            )

    async def _put_back(self, item: delivery.Item, why: str, until: float) -> None:
        """Return an item to the outbox, due at ``until``, without spending one of its tries; it
        keeps the error of its last try, if it had one, else says ``why`` it waits."""
        await delivery.retry(
            self.store,
            item,
            item.value.get("error") or why,
            scale=self.settings.retry_scale,
            count=False,
            until=until,
        )

    # -- the outbox --------------------------------------------------------------------------

    async def _outbox_loop(self) -> None:
        while not self.stopping:
            keys = await delivery.due_items(self.store, OUTBOX_BATCH, skip=self.lanes.keys)
            items = [
                item
                for item in await asyncio.gather(
                    *(delivery.lease(self.store, k, self.replica) for k in keys)
                )
                if item is not None
            ]
            for item in await self._coalesce(items):
                await self.hand(item)
            if len(keys) < OUTBOX_BATCH:
                await self._nap(self._wake_outbox, self.settings.poll)

    async def _send_all(self, peer: str, items: list[delivery.Item]) -> None:
        """Send items for one peer here and now, one after the other (the lanes do this per item)."""
        for item in await self._coalesce(items):
            await self._deliver(peer, item)

    async def _deliver(self, peer: str, item: delivery.Item) -> None:
        """One item to its host: circuit breaker, lease, an overall deadline (short for a first
        try), then done, retry with back-off or fail for good. Never raises a delivery error."""
        state = await delivery.peer_state(self.store, peer)
        until = delivery.circuit_open(state)
        if until is not None:
            await self._put_back(item, "circuit open", until)
            return
        absorbed = await self._absorb(peer, item)
        if absorbed is None:
            return  # our lease on it was lost: whoever holds it sends it
        item = absorbed
        first = not item.value.get("tries")
        deadline = self.settings.timeout if first else max(RETRY_DEADLINE, self.settings.timeout)
        lease = item.value.get("lease")
        if (
            isinstance(lease, (int, float))
            and lease - time.time() < delivery.LEASE / 2
            and not await delivery.renew(self.store, item)
        ):
            return  # another replica took it over (ours ran out): it sends it
        try:
            await self.send(item, timeout=deadline)
        except HifError as e:
            if is_error_permanent(e):
                await self._follow_failed(item, str(e), final=True)
                await delivery.fail(self.store, item, str(e))
            else:
                await delivery.peer_failed(self.store, peer, str(e), self.settings.retry_scale)
                new = await delivery.retry(
                    self.store,
                    item,
                    str(e),
                    scale=self.settings.retry_scale,
                    tries=self.settings.tries,
                )
                await self._follow_failed(item, str(e), final=new is None)
            return
        await delivery.done(self.store, item)
        await delivery.peer_ok(self.store, peer, state)

    async def _absorb(self, peer: str, item: delivery.Item) -> delivery.Item | None:
        """A Push claim takes along the claims queued behind it that continue its range for the
        same inbox and repository (landings that came while the host was busy): one request for
        all of them, as many as the host is behind. Returns the item to send (None if our lease on
        it was lost)."""
        v = item.value
        if v.get("kind") != "push":
            return item
        end = int(v["end"])

        def continues(other: delivery.Item) -> bool:
            nonlocal end
            o = other.value
            if (
                o.get("kind") == "push"
                and o.get("inbox") == v.get("inbox")
                and o.get("repo") == v.get("repo")
                and int(o.get("start") or 0) == end + 1
            ):
                end = int(o["end"])
                return True
            return False

        more = self.lanes.take(peer, continues)
        if not more:
            return item
        merged = await self._coalesce([item, *more])
        return item if item in merged else None

    async def _follow_failed(self, item: delivery.Item, error: str, *, final: bool) -> None:
        """A Follow that failed: its entry says why; one that can never succeed (the target
        refused, has no such repository, is not a followable repository, or every try was spent)
        ends as ``failed`` and is not tried again until an operator follows anew."""
        key = item.value.get("following")
        activity = item.value.get("activity")
        if not isinstance(key, str) or not isinstance(activity, dict):
            return
        if activity.get("type") != "Follow":
            return
        with contextlib.suppress(HifError):
            data, etag = await self.store.get_with_etag(key)
            v = decode(data)
            if not isinstance(v, dict) or v.get("state") != "pending":
                return
            v.update(error=error, error_at=time.time())
            if final:
                v.update(state="failed", failed=time.time())
            await self.store.put(key, encode(v), if_match=etag)

    async def _coalesce(self, items: list[delivery.Item]) -> list[delivery.Item]:
        """Pushes queued for one follower and repository (one per landing that found it down) go as
        one range: the first item takes the union, the others are dropped."""
        out: list[delivery.Item] = []
        first: dict[tuple[str, str], delivery.Item] = {}
        merged: dict[tuple[str, str], list[delivery.Item]] = {}
        for item in items:
            v = item.value
            if v.get("kind") != "push":
                out.append(item)
                continue
            key = (str(v.get("inbox")), str(v.get("repo")))
            head = first.get(key)
            if head is None:
                first[key] = item
                out.append(item)
                continue
            head.value["start"] = min(int(head.value["start"]), int(v["start"]))
            head.value["end"] = max(int(head.value["end"]), int(v["end"]))
            merged.setdefault(key, []).append(item)
        for key, rest in merged.items():
            head = first[key]
            try:  # the union is stored before the others go: a crash in between loses nothing
                head.etag = await self.store.put(head.key, encode(head.value), if_match=head.etag)
            except PreconditionFailed:
                out.remove(head)  # our lease was lost: leave all of them to whoever holds it
                continue
            for item in rest:
                await delivery.done(self.store, item)
        return out

    async def send(self, item: delivery.Item, *, timeout: float | None = None) -> None:
        v = item.value
        if v.get("kind") == "push":
            try:
                await self.push(
                    v["inbox"], v["repo"], int(v["start"]), int(v["end"]), timeout=timeout
                )
            except DeliveryFailed as e:
                item.value["start"] = getattr(e, "position", v["start"])  # resume where it stopped
                raise
            return
        activity = _fill(v.get("activity") or {}, self.url)
        inbox = v.get("inbox")
        target = v.get("target")
        if target:  # a repository URL: find its actor and inbox now (the peer may have been down)
            if v.get("following") and not v.get("tries"):  # a new explicit follow: ask afresh
                self.directory.forget_failures(authority(target))
            limit = timeout or max(RETRY_DEADLINE, self.settings.timeout)
            try:
                actor = await asyncio.wait_for(self.directory.repository(target), limit)
            except UnknownHost:
                raise
            except NotFound as e:  # what the operator reads as the reason a Follow failed
                raise NotFound(
                    f"{target} cannot be followed: no public repository there "
                    f"(a private one, a mirror or a wrong name; {e})"
                ) from None
            except TimeoutError:
                raise DeliveryFailed(
                    f"{authority(target)} did not say within {limit:g} s where {target} is"
                ) from None
            inbox = actor.inbox
            for name in v.get("resolve") or ():
                activity[name] = actor.id
            if v.get("following"):
                await remember_actor(self.store, v["following"], actor.id, actor.inbox, actor.envelopes)
        if not isinstance(inbox, str):
            raise InvalidInput("the delivery has no inbox")
        await self.post(inbox, activity, timeout=timeout)

    async def enqueue_activity(
        self,
        activity: dict[str, Any],
        *,
        inbox: str | None = None,
        target: str | None = None,
        **extra: Any,
    ) -> None:
        peer = authority(inbox or target or "")
        await delivery.enqueue(
            self.store,
            {
                "kind": "activity",
                "peer": peer,
                "inbox": inbox,
                "target": target,
                "activity": activity,
                **extra,
            },
        )
        self.wake_outbox()

    # -- mirrors: resync and backfill --------------------------------------------------------

    async def following(self) -> list[dict[str, Any]]:
        out = []
        async for key in self.store.iter_keys("_fed/following/"):
            data = await self.store.get_or_none(key)
            if data is None:
                continue
            with contextlib.suppress(CorruptObject):
                v = decode(data)
                if isinstance(v, dict):
                    out.append({**v, "key": key})
        return out

    async def get_following(self, host: str, name: str) -> dict[str, Any] | None:
        return load_map(await self.store.get_or_none(following_key(host, name)))

    async def _resync_loop(self) -> None:
        last = -math.inf  # resync at start even on a machine booted moments ago
        while not self.stopping:
            due = time.monotonic() - last >= self.settings.resync
            wanted, self._dirty_mirrors = self._dirty_mirrors, set()
            if due:
                last = time.monotonic()
                with contextlib.suppress(HifError):
                    await expire_replays(self.store)
                with contextlib.suppress(HifError):
                    await offer_inbox.expire(self)  # offers left unreviewed too long
            for f in await self.following():
                target = (f.get("host"), f.get("name"))
                if f.get("state") == "accepted" and (due or target in wanted):
                    try:
                        await self.sync_mirror(f)
                    except HifError as e:
                        log.info("resync of %s/%s failed: %s", target[0], target[1], e)
                        await write_sync(
                            self.mirror(f["host"], f["name"]),
                            {"error": str(e), "error_at": time.time()},
                        )
            if not self._dirty_mirrors:
                await self._nap(self._wake_resync, min(self.settings.resync, 60.0))

    async def sync_mirror(self, f: dict[str, Any], until: int | None = None) -> int:
        """Backfill a mirror from its origin's paged envelope log; returns how many were added."""
        async with self.mirror_lock(f["host"], f["name"]):
            return await backfill(self, f, until)


def _fill(value: Any, url: str) -> Any:
    """Activities queued without the node's URL (``micelio federation``) name it ``$node``."""
    if isinstance(value, str):
        return url + value[5:] if value.startswith("$node") else value
    if isinstance(value, list):
        return [_fill(v, url) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, url) for k, v in value.items()}
    return value


async def _aiter(items: Iterable[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item

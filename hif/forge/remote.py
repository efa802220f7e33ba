"""The client side of the forge's HTTP API (docs/api.md): a plumbing ``Repo`` whose mainline, sessions
and rollups live on a forge, with objects and landing records cached in a local store.

Requests are synchronous httpx calls made inside the ``async def`` plumbing interfaces. They never
suspend a coroutine, so porcelain keeps driving the plumbing without an event loop (and the CLI
never imports asyncio), exactly as over the embedded store. Landing and abandoning run on the forge:
porcelain calls :meth:`RemoteRepo.land` / :meth:`RemoteRepo.abandon` instead of ``hif.landing``.

Objects are content-addressed and immutable, and so are landing records, so the local cache never
needs invalidating: a read falls back to the forge on a local miss (and re-verifies the hash;
missing objects come down in one streamed ``objects/stream`` answer per 100,000), a write goes to the
cache and is queued; :meth:`RemoteObjectDB.flush` uploads what the forge lacks,
in batches, before any event that refers to those objects.

Nothing here knows about click or the working copy; tokens never appear in messages.
"""
from __future__ import annotations

import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hif.errors import CorruptObject, InvalidInput, NotFound, PreconditionFailed, RemoteError
from hif.forge.client import (
    ATTEMPTS,
    EVENT_BATCH,
    EVENT_BYTES,
    HAVE_BATCH,
    LOG_PAGE,
    PUT_BATCH,
    PUT_BYTES,
    STREAM_BATCH,
    STREAM_REPORT,
    ForgeClient,
    Progress,
    StreamCut,
    cbor_objects,
    field_of,
    one_line,
)
from hif.forge.credentials import token_for
from hif.forge.urls import normalize_url, repo_api
from hif.landing import LandResult
from hif.mainline import LandingRecord, Mainline, log_key
from hif.objects import (
    DIR,
    EMPTY_TREE,
    Entry,
    ObjectDB,
    check_object,
    decode,
    digest,
    encode,
    unpack,
)
from hif.repo import Repo, check_repo_name
from hif.rollups import Rollups
from hif.session import Session, SessionStore, check_session_id, check_text, fold
from hif.store import EmbeddedStore, ObjectStore


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# -- plumbing over the forge -------------------------------------------------------------------


FRESH_BYTES = 64 << 20  # fetched objects kept in memory until their first read


class RemoteObjectDB(ObjectDB):
    """Objects in a local cache store, fetched from the forge on a miss, uploaded on :meth:`flush`."""

    remote = True

    def __init__(self, store: ObjectStore, prefix: str, client: ForgeClient, api: str) -> None:
        super().__init__(store, prefix)
        self.client = client
        self.api = api + "objects/"
        self._pending: dict[bytes, None] = {}  # written locally, not yet known to be on the forge
        self._on_forge: set[bytes] = set()
        self.progress: Progress | None = None
        self.fetched_objects = 0
        self.fetched_bytes = 0
        self.sent_objects = 0
        self.sent_bytes = 0
        # a brand-new cache holds nothing: no need to ask it about every object of a clone
        self.cache_is_new = False
        # canonical bytes of objects just fetched, read once more by the checkout that asked for them
        self._fresh: dict[bytes, bytes] = {}
        self._fresh_bytes = 0

    async def put_canonical(self, canonical: bytes) -> bytes:
        oid = await super().put_canonical(canonical)
        if oid not in self._on_forge:
            self._pending[oid] = None
        return oid

    async def put_blobs(self, contents: Sequence[bytes]) -> None:
        """One by one into the cache, each queued for the next upload (which batches them)."""
        for content in contents:
            await self.put_blob(content)

    async def get_canonical(self, oid: bytes) -> bytes:
        fresh = self._fresh.pop(oid, None)
        if fresh is not None:  # verified when it arrived
            self._fresh_bytes -= len(fresh)
            return fresh
        try:
            return await super().get_canonical(oid)
        except NotFound:
            pass
        except CorruptObject:
            # the cache is written without fsync: a copy torn by a power cut is dropped and refetched
            await self.store.delete(self.key(oid))
            self._known.discard(oid)
        await self._fetch([oid])
        return await super().get_canonical(oid)

    async def _local(self, oid: bytes) -> bool:
        if oid in self._known:
            return True
        if self.cache_is_new:
            return False
        if await self.store.head(self.key(oid)) is not None:
            self._known.add(oid)
            return True
        return False

    async def prefetch(self, ids: Iterable[bytes]) -> None:
        """Fetch the objects among ``ids`` that are not cached yet, ≤ 1,000 per request."""
        wanted: dict[bytes, None] = {}
        for oid in ids:
            if oid != EMPTY_TREE and oid not in wanted and not await self._local(oid):
                wanted[oid] = None
        await self._fetch(list(wanted))

    async def _fetch(self, ids: Sequence[bytes], *, cache: bool = True) -> dict[bytes, bytes]:
        """Fetch and verify; cache them (kept in memory too, until read once), or with ``cache=False``
        only return their canonical bytes."""
        out: dict[bytes, bytes] = {}
        for oid, stored, canonical in self.stream(ids):
            self._on_forge.add(oid)
            if not cache:
                out[oid] = canonical
                continue
            if self._fresh_bytes + len(canonical) <= FRESH_BYTES:
                self._fresh[oid] = canonical
                self._fresh_bytes += len(canonical)
            if isinstance(self.store, EmbeddedStore):  # verified on every read: see add_to_cache
                self.store.add_to_cache(self.key(oid), stored)
            else:
                with contextlib.suppress(PreconditionFailed):
                    await self.store.put(self.key(oid), stored, if_none_match=True)
            self._known.add(oid)
        return out

    def stream(self, ids: Sequence[bytes]) -> Iterator[tuple[bytes, bytes, bytes]]:
        """``(id, stored, canonical)`` for each of ``ids`` in order, each verified against its id, from
        one streamed ``objects/stream`` answer per 100,000 ids: no round trip per batch, and the
        caller uses each object as it arrives. A cut answer is asked again from where it stopped
        (a bounded number of times without progress). Nothing is cached here."""
        at = failures = 0
        while at < len(ids):
            batch = ids[at:at + STREAM_BATCH]
            got = n = size = 0
            chunks = self.client.stream(self.api + "stream", {"ids": list(batch)})
            try:
                closing: dict[str, Any] = {}
                for item in cbor_objects(chunks):
                    if isinstance(item, dict):
                        closing = item
                        break
                    oid, stored = item
                    if got >= len(batch) or oid != batch[got]:
                        raise RemoteError("the forge sent an object hif did not ask for")
                    # verified before anyone uses it: a bad object must not reach the cache or a file
                    canonical = unpack(stored)
                    if digest(canonical) != oid:
                        raise CorruptObject(f"object {oid.hex()} from the forge is corrupt (hash mismatch)")
                    got += 1
                    n += 1
                    size += len(stored)
                    if n >= STREAM_REPORT:
                        self._count(n, size)
                        n = size = 0
                    yield oid, stored, canonical
                self._count(n, size)
                n = size = 0
                if "error" in closing:
                    message = one_line(str(closing.get("message") or closing["error"]))
                    if closing["error"] == "not_found":
                        raise NotFound(message)
                    raise StreamCut(f"{self.client.base_url}: {message}")
                if got != len(batch):
                    raise RemoteError("the forge's answer lacks objects hif asked for")
            except StreamCut as e:
                self._count(n, size)
                at += got
                failures = 1 if got else failures + 1
                if failures >= ATTEMPTS:
                    raise RemoteError(str(e)) from None
                time.sleep(0.2 * 2 ** (failures - 1) * (1 + random.random()))
                continue
            finally:
                chunks.close()
            at += len(batch)

    def _count(self, n: int, size: int) -> None:
        if n:
            self.fetched_objects += n
            self.fetched_bytes += size
            if self.progress is not None:
                self.progress("fetch", n, size)

    def stream_blobs(self, ids: Sequence[bytes]) -> Iterator[tuple[bytes, bytes]]:
        """``(id, content)`` of each blob in order, verified and *not* cached: a clone's checkout
        writes each straight to its working files, which are then the local copy."""
        for oid, _stored, canonical in self.stream(ids):
            content = check_object("blob", decode(canonical))
            if not isinstance(content, bytes):
                raise CorruptObject(f"object {oid.hex()} is not a blob")
            yield oid, content

    async def prefetch_diff(self, old: bytes, new: bytes) -> None:
        """Fetch what moving from tree ``old`` to tree ``new`` reads: the differing directories level
        by level (one round trip per level, not per directory), then the new files' blobs."""
        await self.prefetch(await self.prefetch_trees(old, new))

    async def prefetch_trees(self, old: bytes, new: bytes) -> list[bytes]:
        """Fetch the directories that differ between two trees, level by level; return the blob ids
        of the files that differ (not fetched)."""
        pairs = [(old, new)] if old != new else []
        blobs: list[bytes] = []
        while pairs:
            await self.prefetch(n for _, n in pairs)
            nxt: list[tuple[bytes, bytes]] = []
            for o, n in pairs:
                before = await self.get_tree(o) if o != EMPTY_TREE else {}
                for name, entry in (await self.get_tree(n)).items():
                    was = before.get(name)
                    if was == entry:
                        continue
                    if entry.kind == DIR:
                        nxt.append((was.oid if was is not None and was.kind == DIR else EMPTY_TREE, entry.oid))
                    else:
                        blobs.append(entry.oid)
            pairs = nxt
        return blobs

    async def flush(self) -> None:
        """Upload the objects written here that the forge lacks (have, then put in batches)."""
        ids = list(self._pending)
        if not ids:
            return
        missing: list[bytes] = []
        for batch in _chunks(ids, HAVE_BATCH):
            answer = self.client.post(self.api + "have", {"ids": list(batch)}, idempotent=True)
            missing += field_of(answer, "missing", list)
        batch_objs: list[bytes] = []
        size = 0
        for oid in missing:
            stored = await self.store.get(self.key(oid))
            if digest(unpack(stored)) != oid:  # torn by a power cut: the next run writes it again
                await self.store.delete(self.key(oid))
                self._known.discard(oid)
                raise CorruptObject(f"cached object {oid.hex()} was damaged and is dropped; run the "
                                    "command again")
            if batch_objs and (len(batch_objs) >= PUT_BATCH or size + len(stored) > PUT_BYTES):
                self._send(batch_objs, size)
                batch_objs, size = [], 0
            batch_objs.append(stored)
            size += len(stored)
        if batch_objs:
            self._send(batch_objs, size)
        self._on_forge.update(ids)
        for oid in ids:
            self._pending.pop(oid, None)

    def _send(self, objs: list[bytes], size: int) -> None:
        self.client.post(self.api + "put", {"objects": objs}, idempotent=True)
        self.sent_objects += len(objs)
        self.sent_bytes += size
        if self.progress is not None:
            self.progress("send", len(objs), size)


class RemoteMainline(Mainline):
    """The forge's landing log; records are immutable, so each is fetched once and cached locally."""

    def __init__(self, store: ObjectStore, prefix: str, client: ForgeClient, api: str) -> None:
        super().__init__(store, prefix)
        self.client = client
        self.api = api
        self._last: int | None = None  # the last position asked for: tells a backward walk

    async def head(self, known: int | None = None) -> int:
        pos = field_of(self.client.get(self.api + "head"), "position", int)
        return max(pos, known or 0)

    async def record(self, position: int) -> LandingRecord:
        if position < 1:
            raise NotFound(f"no position {position}")
        backwards = self._last == position + 1
        self._last = position
        rec = self._records.get(position) or await self._cached(position)
        if rec is not None:
            return rec
        page = await self._page(position, "desc" if backwards else "asc", LOG_PAGE)
        rec = page.get(position)
        if rec is None:
            raise NotFound(f"no landing at position {position}")
        return rec

    async def _cached(self, position: int) -> LandingRecord | None:
        data = await self.store.get_or_none(log_key(self.prefix, position))
        if data is None:
            return None
        try:
            rec = LandingRecord.from_bytes(data, position)
        except CorruptObject:  # torn (the cache is not fsynced): drop it, the forge has it
            await self.store.delete(log_key(self.prefix, position))
            return None
        self._remember(rec)
        return rec

    def _remember(self, rec: LandingRecord) -> None:
        if len(self._records) > 10000:
            self._records.clear()
        self._records[rec.position] = rec

    async def _page(self, start: int, order: str, limit: int) -> dict[int, LandingRecord]:
        answer = self.client.get(self.api + "log", start=start, limit=limit, order=order)
        out: dict[int, LandingRecord] = {}
        for row in field_of(answer, "records", list):
            if not (isinstance(row, list) and len(row) == 2 and isinstance(row[0], int)
                    and isinstance(row[1], bytes)):
                raise RemoteError("the forge sent a malformed landing log")
            pos, data = row
            rec = LandingRecord.from_bytes(data, pos)
            with contextlib.suppress(PreconditionFailed):
                await self.store.put(log_key(self.prefix, pos), data, if_none_match=True)
            self._remember(rec)
            out[pos] = rec
        return out

    async def exists(self, position: int) -> bool:
        return position in self._records or 1 <= position <= await self.head()

    async def iter_back(self, start: int, stop: int = 1) -> AsyncIterator[LandingRecord]:
        """Newest first, a page of records per request (cached ones cost nothing)."""
        pos = start
        page: dict[int, LandingRecord] = {}
        while pos >= max(stop, 1):
            rec = page.get(pos) or self._records.get(pos) or await self._cached(pos)
            if rec is None:
                page = await self._page(pos, "desc", min(LOG_PAGE, pos - max(stop, 1) + 1))
                rec = page.get(pos)
                if rec is None:
                    raise NotFound(f"no landing at position {pos}")
            yield rec
            pos -= 1

    async def append(self, record: LandingRecord) -> None:
        raise InvalidInput("landing runs on the forge")  # porcelain calls RemoteRepo.land

    async def advance_hint(self, position: int) -> None:
        return None


class RemoteSessions(SessionStore):
    """Sessions kept by the forge: every event is one request, so they stream as they happen."""

    def __init__(self, store: ObjectStore, prefix: str, objects: RemoteObjectDB, client: ForgeClient,
                 api: str, clock: Callable[[], float]) -> None:
        super().__init__(store, prefix, objects, clock)
        self.remote_objects = objects
        self.client = client
        self.api = api + "sessions"
        self.read_only = api.startswith("mirrors/")

    async def start(self, goal: str, author: str, role: str, base: int) -> Session:
        check_text(goal, "goal")
        if self.read_only:
            raise InvalidInput("this is a read-only mirror: start the session on a repository of "
                               "your own forge, then offer it to the origin (hif offer URL)")
        answer = self.client.post(self.api, {"goal": goal.strip(), "base": base, "role": role,
                                             "author": author})
        sid = check_session_id(field_of(answer, "id", str))
        return fold(sid, [field_of(answer, "event", dict)])

    async def append(self, sid: str, event: dict[str, Any], next_seq: int | None = None) -> dict[str, Any]:
        return (await self.append_many(sid, [event], next_seq))[0]

    async def append_many(self, sid: str, events: Sequence[dict[str, Any]],
                          next_seq: int | None = None) -> list[dict[str, Any]]:
        """Upload the objects the events refer to, then append the events in order (batched)."""
        await self.remote_objects.flush()
        out: list[dict[str, Any]] = []
        batch: list[dict[str, Any]] = []
        size = 0
        for event in [*events, None]:
            n = len(encode(event)) if event is not None else 0
            if batch and (event is None or len(batch) >= EVENT_BATCH or size + n > EVENT_BYTES):
                body: dict[str, Any] = {"events": batch}
                if next_seq is not None:
                    body["next_seq"] = next_seq
                stamped = field_of(self.client.post(f"{self.api}/{sid}/events", body), "events", list)
                if len(stamped) != len(batch) or not all(isinstance(e, dict) for e in stamped):
                    raise RemoteError("the forge did not acknowledge every event")
                out += stamped
                next_seq = stamped[-1]["seq"] + 1
                batch, size = [], 0
            if event is not None:
                batch.append(event)
                size += n
        return out

    async def _get(self, sid: str) -> dict[str, Any]:
        check_session_id(sid)
        doc = self.client.get(f"{self.api}/{sid}")
        field_of(doc, "events", list)
        field_of(doc, "state", str)
        return doc

    async def events(self, sid: str) -> list[dict[str, Any]]:
        return (await self._get(sid))["events"]

    async def state(self, sid: str) -> dict[str, Any] | None:
        doc = await self._get(sid)
        if doc["state"] == "open":
            return None
        return {"state": doc["state"], "position": doc.get("position"), "snapshot": doc.get("snapshot")}

    async def load(self, sid: str) -> Session:
        doc = await self._get(sid)
        s = fold(sid, doc["events"])
        if doc["state"] != "open":
            s.state, s.position, s.snapshot = doc["state"], doc.get("position"), doc.get("snapshot")
            if isinstance(doc.get("changes"), list):
                s.changes = {p: (Entry(k, o) if k else None) for p, k, o in doc["changes"]}
        return s

    async def list_open(self) -> list[str]:
        answer = self.client.get(self.api, state="open")
        return [x["id"] for x in field_of(answer, "sessions", list) if isinstance(x, dict) and "id" in x]

    async def write_snapshot(self, s: Session, changes: dict[str, Entry | None]) -> bytes:
        raise InvalidInput("sessions are closed on the forge")  # RemoteRepo.land / .abandon

    async def close(self, sid: str, state: dict[str, Any]) -> None:
        raise InvalidInput("sessions are closed on the forge")


class RemoteRollups(Rollups):
    """The forge answers the rollup walk in one request (``POST scan``)."""

    def __init__(self, mainline: RemoteMainline, client: ForgeClient, api: str) -> None:
        super().__init__(mainline)
        self.client = client
        self.api = api + "scan"

    async def candidates(self, lo: int, hi: int, items: set[str]) -> list[int]:
        if hi <= lo:
            return []
        answer = self.client.post(self.api, {"since": lo, "until": hi, "items": sorted(items)},
                                  idempotent=True)
        positions = field_of(answer, "positions", list)
        return sorted({p for p in positions if isinstance(p, int) and lo < p <= hi})

    async def extend(self, position: int, *, max_level: int = 16) -> None:
        return None


class RemoteRepo(Repo):
    """A repository on a forge, seen through a local cache: duck-types ``Repo`` for porcelain and for
    the landing helpers that run client-side (``effective_changes``, ``scan_since``, ``resolve``)."""

    def __init__(self, client: ForgeClient, name: str, cache: ObjectStore, *,
                 clock: Callable[[], float] = time.time, mirror: str | None = None) -> None:
        # Repo.__init__ is not called: every part is replaced by its forge-backed counterpart
        self.client = client
        self.store = cache
        self.name = check_repo_name(name)
        self.mirror = mirror  # the host whose repository this forge mirrors (read-only), if any
        self.prefix = repo_api(name, mirror) + "/"
        self.api = repo_api(name, mirror) + "/"
        self.clock = clock
        self.objects = RemoteObjectDB(cache, self.prefix, client, self.api)
        self.mainline = RemoteMainline(cache, self.prefix, client, self.api)
        self.sessions = RemoteSessions(cache, self.prefix, self.objects, client, self.api, clock)
        self.rollups = RemoteRollups(self.mainline, client, self.api)

    @property
    def url(self) -> str:
        if self.mirror:
            return f"{self.client.base_url}/mirrors/{self.mirror}/{self.name}"
        return f"{self.client.base_url}/{self.name}"

    async def meta(self) -> dict[str, Any]:
        meta = self.client.get(self.api.rstrip("/"))
        field_of(meta, "head", int)
        return meta

    async def exists(self) -> bool:
        try:
            await self.meta()
        except NotFound:
            return False
        return True

    async def create(self, **meta: Any) -> dict[str, Any]:
        raise InvalidInput("create forge repositories with: hif repo create NAME")

    async def ensure(self, **meta: Any) -> None:
        await self.meta()

    async def land(self, session: Session) -> LandResult:
        """Land on the forge (idempotent there, so a retry after a lost answer is safe)."""
        await self.objects.flush()
        a = self.client.post(f"{self.api}sessions/{session.id}/land", {}, idempotent=True)
        return LandResult(
            field_of(a, "position", int), field_of(a, "session", str), field_of(a, "tree", bytes),
            merged=list(a.get("merged") or []), already=bool(a.get("already_landed")),
            attempts=int(a.get("attempts") or 1),
        )

    async def abandon(self, session: Session, reason: str, role: str) -> None:
        """The forge appends the abandon event (as the token's user), freezes and closes the session."""
        await self.objects.flush()
        self.client.post(f"{self.api}sessions/{session.id}/abandon", {"reason": reason, "role": role})

    def offer(self, session_id: str, target: str) -> dict[str, Any]:
        """Ask this forge to offer an open session (its events and objects already on the forge) to
        the repository at ``target`` on another forge; the outcome arrives later (:meth:`offers`)."""
        answer = self.client.post(f"{self.api}sessions/{session_id}/offer", {"target": target})
        if not isinstance(answer, dict):
            raise RemoteError(f"{self.client.base_url} sent an answer hif cannot read")
        return answer

    def offers(self, session_id: str) -> list[dict[str, Any]]:
        return field_of(self.client.get(f"{self.api}sessions/{session_id}/offers"), "offers", list)

    def close(self) -> None:
        self.client.close()


def open_remote(meta_dir: Path, config: dict[str, Any]) -> RemoteRepo:
    """The ``RemoteRepo`` of a working copy whose ``config.json`` names a remote."""
    base = normalize_url(config["remote"])
    # no fsync: everything in the cache is verified on read and can be fetched again (see
    # RemoteObjectDB.get_canonical); what only exists here is uploaded before anything refers to it
    cache = EmbeddedStore(config.get("cache") or meta_dir / "cache", create=True, fsync=False)
    return RemoteRepo(ForgeClient(base, token_for(base)), config["repo"], cache,
                      mirror=config.get("mirror"))


"""Offers received from other nodes (the target's side, A): the caps checked before anything is
fetched, the bundle read and verified, the objects its changes reach staged apart from the
repository's, the offered session stored for review; and offers nobody reviewed in time expired.
Reviewing and landing them: :mod:`federation.offers`."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from typing import TYPE_CHECKING, Any

from federation.addressing import addressed_repo, id_of
from federation.envelope import check_signature, unseal
from federation.errors import AnswerTooLarge, OfferTooLarge, TooManyOffers
from federation.layout import OFFER_RATE, OFFERS_IN, load_map, offer_key, shared_offer_id
from federation.mirror import snapshot_refs
from federation.net import http_error
from federation.offers import (
    MAX_BUNDLE,
    OfferObjects,
    delete_prefix,
    expired,
    pending_key,
    pending_prefix,
    tell_offerer,
)
from federation.settings import authority
from hif.errors import (
    CorruptObject,
    HifError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
)
from hif.objects import FILE_KINDS, Entry, ObjectDB, canonical_kind, check_stored, decode, encode
from hif.paths import check_entry_path, check_path
from hif.repo import Repo
from hif.session import ROLES

if TYPE_CHECKING:
    from federation.service import Federation

RATE_WINDOW = 3600.0  # seconds: MICELIO_FEDERATION_OFFERS_PER_HOUR counts offers in this window
BUNDLES_AT_ONCE = 4  # offer bundles read at once per replica (memory: a few copies of 32 MiB each)


async def receive(
    fed: Federation, activity: dict[str, Any], actor: str, local: str | None
) -> dict[str, Any]:
    """Fetch and verify the offered bundle, keep the objects its changes refer to and the offered
    session. Cheap refusals first: the caps per remote actor and host and the hourly rate (429),
    then the bundle is read up to :data:`MAX_BUNDLE` (413 beyond, nothing stored)."""
    name = await addressed_repo(fed, activity.get("target"), local, "Offer")
    obj = activity.get("object")
    obj_id = id_of(obj)
    bundle_url = obj.get("bundle") if isinstance(obj, dict) else None
    if not isinstance(bundle_url, str):
        raise InvalidInput("the Offer does not link its bundle")
    for url in (obj_id, bundle_url):
        if authority(url) != authority(actor):
            raise PermissionDenied(f"{url} is not on the offering actor's host {authority(actor)}")
    repo = fed.local_repo(name)
    lid = shared_offer_id(obj_id)
    key = offer_key(repo.prefix, lid)
    if await fed.store.head(key) is not None:
        return {"offer": lid, "already": True}  # redelivery
    host = authority(actor)
    reservation = await _reserve(fed, host, actor, name, lid)
    try:
        async with _reading(fed):  # a few bundles in memory at once, whoever sends them
            return await _receive(fed, repo, activity, actor, name, obj_id, bundle_url, lid)
    except BaseException:
        with contextlib.suppress(Exception):
            if await fed.store.head(key) is None:  # refused: nothing of it stays
                await delete_prefix(fed.store, OfferObjects(repo, lid).prefix)
                await fed.store.delete(reservation)
        raise


_LOCKS: weakref.WeakKeyDictionary[Federation, dict[str, asyncio.Lock]] = weakref.WeakKeyDictionary()
_READING: weakref.WeakKeyDictionary[Federation, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _reading(fed: Federation) -> asyncio.Semaphore:
    """At most :data:`BUNDLES_AT_ONCE` bundles read and verified at once on a replica: each may hold
    a few copies of up to 32 MiB while it is checked."""
    sem = _READING.get(fed)
    if sem is None:
        sem = _READING[fed] = asyncio.Semaphore(BUNDLES_AT_ONCE)
    return sem


async def _reserve(fed: Federation, host: str, actor: str, name: str, lid: str) -> str:
    """Count the host's and the actor's pending offers and the host's offers of the last hour, and
    refuse with :class:`TooManyOffers` over a cap; otherwise note this one (it counts from now,
    even if its bundle is refused later). One replica checks a host's offers one at a time."""
    st = fed.settings
    locks = _LOCKS.setdefault(fed, {})
    if len(locks) > 4096:
        for h in [h for h, lock in locks.items() if not lock.locked()]:
            del locks[h]
    async with locks.setdefault(host, asyncio.Lock()):
        now = time.time()
        recent = 0
        async for k in fed.store.iter_keys(f"{OFFER_RATE}{host}/"):
            stamp = k.rsplit("/", 1)[1].split("-", 1)[0]
            if not stamp.isdigit() or int(stamp) / 1000 < now - RATE_WINDOW:
                with contextlib.suppress(HifError):
                    await fed.store.delete(k)
                continue
            recent += 1
        if recent >= st.offers_per_hour:
            raise TooManyOffers(
                f"{host} sent {recent} offers in the last hour; this node takes at most "
                f"{st.offers_per_hour} per host and hour (MICELIO_FEDERATION_OFFERS_PER_HOUR): "
                "try again later"
            )

        async def count() -> tuple[int, int]:
            mine = await fed.store.list_page(
                pending_prefix(host, actor), limit=st.offers_per_actor + 1
            )
            theirs = await fed.store.list_page(pending_prefix(host), limit=st.offers_per_host + 1)
            return len(mine), len(theirs)

        mine, theirs = await count()
        if (mine >= st.offers_per_actor or theirs >= st.offers_per_host) and await expire(
            fed, host=host
        ):
            mine, theirs = await count()  # some had expired: their places are free
        if mine >= st.offers_per_actor:
            raise TooManyOffers(
                f"{actor} has {mine} offers waiting for review here; at most "
                f"{st.offers_per_actor} per actor (MICELIO_FEDERATION_OFFERS_PER_ACTOR): try again "
                "when maintainers have landed or rejected some"
            )
        if theirs >= st.offers_per_host:
            raise TooManyOffers(
                f"{host} has {theirs} offers waiting for review here; at most "
                f"{st.offers_per_host} per host (MICELIO_FEDERATION_OFFERS_PER_HOST): try again "
                "when maintainers have landed or rejected some"
            )
        await fed.store.put(f"{OFFER_RATE}{host}/{int(now * 1000):013d}-{lid}", b"")
        key = pending_key(host, actor, lid)
        await fed.store.put(key, encode({"repo": name, "id": lid, "actor": actor, "received": now}))
        return key


async def _receive(
    fed: Federation,
    repo: Repo,
    activity: dict[str, Any],
    actor: str,
    name: str,
    obj_id: str,
    bundle_url: str,
    lid: str,
) -> dict[str, Any]:
    try:
        a = await fed.fetcher.request(
            "GET", bundle_url, headers={"Accept": "application/cbor"}, cap=MAX_BUNDLE
        )
    except AnswerTooLarge:
        raise OfferTooLarge(
            f"the offered bundle is larger than {MAX_BUNDLE} bytes, the most this node takes; "
            "nothing was stored"
        ) from None
    if a.status != 200:
        raise http_error(a, bundle_url)
    sealed = unseal(a.body)
    if authority(sealed.key_id) != authority(actor):
        raise PermissionDenied("the bundle is signed by a key of another host than the offer's")
    check_signature(sealed, (await fed.directory.key(sealed.key_id)).public)
    b = sealed.body
    del a, sealed
    try:
        origin, oid = b["origin"], b["offer"]
        if b.get("kind") != "offer" or authority(origin) != authority(actor):
            raise PermissionDenied("the bundle's origin is not the offering node")
        if obj_id != f"{origin}/ap/offers/{oid}":
            raise InvalidInput("the bundle is for another offer")
        if b["target"] != f"{fed.url}/{name}":
            raise InvalidInput(f"the bundle offers to {b['target']}, not to {fed.url}/{name}")
        snapshot = decode(b["snapshot"])
        if not (
            isinstance(snapshot, list)
            and snapshot[0] == "snapshot"
            and isinstance(snapshot[1], dict)
            and snapshot[1].get("id") == b["session"]
        ):
            raise CorruptObject("the bundle's snapshot is not the offered session's")
        objects: dict[bytes, bytes] = {}
        kids: dict[bytes, list[bytes]] = {}
        for canonical in b["objects"]:
            oid_, _, value = check_stored(bytes([0]) + canonical)
            objects[oid_] = canonical
            kids[oid_] = [row[2] for row in value[1]] if value[0] == "tree" else []
        changes = []
        roots: list[bytes] = []
        held: list[tuple[str, Entry]] = []
        for row in b["changes"]:
            path, bk, bo, nk, no = row
            check_entry_path(path, nk) if nk is not None else check_path(path)
            for kind, ref in ((bk, bo), (nk, no)):
                if (kind is None) != (ref is None) or (kind is not None and kind not in FILE_KINDS):
                    raise InvalidInput(f"malformed change of {path}")
                if ref is not None and ref not in objects and not await repo.objects.has(ref):
                    raise CorruptObject(f"the bundle lacks object {ref.hex()} for {path}")
                if ref is not None and ref in objects and canonical_kind(objects[ref]) != "blob":
                    raise CorruptObject(f"{path}: names object {ref.hex()}, which is not a blob")
                if ref is not None and ref not in objects:
                    held.append((path, Entry(kind, ref)))
                if ref is not None:
                    roots.append(ref)
            changes.append([path, bk, bo, nk, no])
        await repo.objects.check_kinds(held)  # a file names a blob, in the bundle or held here
        goal, author, role = str(b["goal"]), str(b["author"]), str(b["role"])
        source_repo, session = str(b["repo"]), str(b["session"])
        snapshot_bytes: bytes = b["snapshot"]
        kept = _referenced(objects, kids, roots + snapshot_refs(snapshot_bytes))
    except (KeyError, TypeError, ValueError, IndexError):
        raise CorruptObject("malformed offer bundle") from None
    del b, objects
    staged = OfferObjects(repo, lid)
    size = len(snapshot_bytes)
    for canonical in kept:  # children before parents, as the bundle lists them
        await ObjectDB.put_canonical(staged, canonical)
        size += len(canonical)
    snap_id = await ObjectDB.put_canonical(staged, snapshot_bytes)
    doc = await fed.directory.actor(actor)
    endpoints = doc.get("endpoints") if isinstance(doc.get("endpoints"), dict) else {}
    reply = endpoints.get("sharedInbox") or doc.get("inbox")
    if not isinstance(reply, str) or authority(reply) != authority(actor):
        raise InvalidInput(f"the actor {actor} has no inbox on its own host")
    record = {
        "id": lid,
        "state": "offered",
        "from": actor,
        "origin": origin,
        "source_repo": source_repo,
        "session": session,
        "goal": goal,
        "author": author,
        "role": role if role in ROLES else "human",
        "snapshot": snap_id,
        "changes": changes,
        "received": time.time(),
        "reply": reply,
        "object": obj_id,
        "activity": activity.get("id"),
        "size": size,
        "objects": len(kept),
    }
    with contextlib.suppress(PreconditionFailed):
        await fed.store.put(offer_key(repo.prefix, lid), encode(record), if_none_match=True)
    return {"offer": lid, "size": size}


def _referenced(
    objects: dict[bytes, bytes], kids: dict[bytes, list[bytes]], roots: list[bytes]
) -> list[bytes]:
    """The bundle's objects that ``roots`` reach (through trees), in the bundle's order (children
    before parents); everything else a bundle carries is dropped, never stored."""
    reach: set[bytes] = set()
    stack = list(roots)
    while stack:
        oid = stack.pop()
        if oid in reach or oid not in objects:
            continue
        reach.add(oid)
        stack.extend(kids[oid])
    return [c for oid, c in objects.items() if oid in reach]


async def expire(fed: Federation, host: str | None = None) -> int:
    """Remove offers that waited unreviewed longer than ``offer_expiry`` (of one remote ``host``,
    or all): the record and its staged objects go, and the offering node is told with a
    ``Reject``. Runs before each receipt from a host and in the resync loop; returns how many."""
    now = time.time()
    gone = 0
    async for k in fed.store.iter_keys(pending_prefix(host) if host else OFFERS_IN):
        entry = load_map(await fed.store.get_or_none(k))
        received = entry.get("received") if entry else None
        if not isinstance(received, (int, float)) or now - received <= fed.settings.offer_expiry:
            continue
        repo = fed.local_repo(str(entry.get("repo"))) if entry else None
        lid = str(entry.get("id")) if entry else ""
        if repo is not None and len(lid) == 20:
            key = offer_key(repo.prefix, lid)
            try:
                data, etag = await repo.store.get_with_etag(key)
            except NotFound:
                data, etag = None, None
            rec = load_map(data)
            if rec is not None:
                if not expired(rec, fed.settings, now):
                    continue  # being landed, or reviewed already: not ours to remove
                rec["state"] = "expired"  # a compare-and-swap: a maintainer's claim wins or loses
                try:
                    await repo.store.put(key, encode(rec), if_match=etag)
                except PreconditionFailed:
                    continue
            await delete_prefix(fed.store, OfferObjects(repo, lid).prefix)
            if rec is not None:
                with contextlib.suppress(HifError):
                    await _tell_expired(fed, repo, rec)
                await repo.store.delete(key)
        with contextlib.suppress(HifError):
            await fed.store.delete(k)
        gone += 1
    return gone


async def _tell_expired(fed: Federation, repo: Repo, rec: dict[str, Any]) -> None:
    days = fed.settings.offer_expiry / 86400
    await tell_offerer(
        fed,
        repo,
        rec,
        "Reject",
        f"offer-expired-{rec['id']}",
        summary=f"expired: not reviewed within {days:g} days",
    )

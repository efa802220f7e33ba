"""Remote contribution: a session offered from one node to a repository on another.

The contributor's node (B) freezes the open session into a signed **bundle**: its snapshot (goal,
conversation, decisions, every event), its changes with the base version of each file, and every
object those refer to. It sends an ``Offer`` whose object links to the bundle (an unguessable URL,
so a private repository's content is not listed anywhere). The target (A) verifies the request,
refuses over its caps (pending offers per remote actor and host, offers per host and hour) before
fetching anything, reads the bundle up to :data:`MAX_BUNDLE`, verifies its signature (a key of B's
host) and every object's hash, keeps only the objects the offered changes and checkpoint trees reach
(staged apart from the repository's until it lands) and stores an offered session under
``repos/<repo>/offers/<id>``. An offer nobody reviews expires with its objects. A maintainer lands
it: A starts a local session at its head with the contributor's events (authors marked
``name@host``), writes a 3-way merge (with the offered base) for files A changed meanwhile, and
lands it as any session; or rejects it. The outcome goes back as
``Accept`` (with the position) or ``Reject``, and B records it next to the session.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import os
import time
import weakref
from typing import TYPE_CHECKING, Any

from federation.actors import AS, FORGEFED, repo_actor_url
from federation.envelope import check_signature, seal, unseal
from federation.layout import (
    BUNDLES,
    OFFER_RATE,
    OFFERS_IN,
    OFFERS_OUT,
    load_map,
    offer_key,
    offer_sent_key,
)
from federation.mirror import children_first, snapshot_refs
from federation.net import Refused, TooLarge, http_error
from federation.settings import FedSettings, authority
from hif.errors import (
    Conflict,
    ConflictError,
    CorruptObject,
    HifError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    SessionClosed,
)
from hif.landing import land
from hif.merge import is_binary, merge3, unified_diff
from hif.objects import (
    EXEC,
    FILE,
    FILE_KINDS,
    Entry,
    ObjectDB,
    canonical_kind,
    check_stored,
    decode,
    encode,
)
from hif.paths import check_entry_path, check_path
from hif.repo import Repo
from hif.session import ROLES, make_event
from hif.tree import lookup_file

if TYPE_CHECKING:
    from federation.service import Federation

MAX_BUNDLE = 32 << 20  # a signed offer bundle, enforced while it is read (sender and receiver)
MAX_DIFF = 256 << 10
COPIED = ("say", "decide", "write", "delete", "checkpoint")
RATE_WINDOW = 3600.0  # seconds: MICELIO_FEDERATION_OFFERS_PER_HOUR counts offers in this window
BUNDLES_AT_ONCE = 4  # offer bundles read at once per replica (memory: a few copies of 32 MiB each)


class TooManyOffers(HifError):
    """A remote actor or host has too many offers waiting, or sent too many lately (HTTP 429: the
    offering node retries later, when maintainers have reviewed some)."""

    http_status = 429


class OfferTooLarge(HifError):
    """An offered bundle is larger than :data:`MAX_BUNDLE` (HTTP 413: the offering node stops)."""

    http_status = 413


def _new_id() -> str:
    return base64.b32encode(os.urandom(15)).decode().lower()


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def pending_key(host: str, actor: str, lid: str) -> str:
    """An offer waiting for review, indexed by its remote host and actor: counting these is the
    per-actor and per-host cap (a listing, no record read)."""
    return f"{OFFERS_IN}{host}/{_hash(actor)}/{lid}"


class OfferObjects(ObjectDB):
    """An offer's objects, kept apart from the repository's until it lands (so an offer that expires
    takes them with it, and a stranger's bytes never enter the repository unreviewed); reads fall
    through to the repository's objects for what it already holds (base versions, older offers)."""

    def __init__(self, repo: Repo, lid: str) -> None:
        super().__init__(repo.store, f"{repo.prefix}offer-objects/{lid}/")
        self.base = repo.objects

    async def has(self, oid: bytes) -> bool:
        return await super().has(oid) or await self.base.has(oid)

    async def get_canonical(self, oid: bytes) -> bytes:
        try:
            return await super().get_canonical(oid)
        except NotFound:
            return await self.base.get_canonical(oid)


def offer_repo(repo: Repo, lid: str) -> Repo:
    """``repo`` whose objects include offer ``lid``'s (for its diff and its landing)."""
    view = copy.copy(repo)
    view.objects = OfferObjects(repo, lid)
    return view



# -- the contributor's side (B) ----------------------------------------------------------------


async def make_offer(
    fed: Federation, repo: Repo, sid: str, target: str, user: str
) -> dict[str, Any]:
    """Bundle an open session and queue its ``Offer`` to the repository at ``target``."""
    from hif.forge.urls import parse_repo_url

    base, name = parse_repo_url(target)
    target_url = f"{base}/{name}"
    why = fed.settings.refuses(target_url)
    if why:
        raise Refused(why)
    if authority(base) == authority(fed.url):
        raise InvalidInput("offer sessions to repositories of other nodes (here: land them)")
    s = await repo.sessions.load(sid)
    if not s.is_open:
        raise SessionClosed(f"session {sid} was {s.state}; only an open session can be offered")
    base_tree = await repo.mainline.tree_at(s.base)
    changes: list[list[Any]] = []
    effective: dict[str, Entry | None] = {}
    for path, entry in sorted(s.changes.items()):
        was = await lookup_file(repo.objects, base_tree, path)
        if was != entry:
            effective[path] = entry
            changes.append(
                [
                    path,
                    was.kind if was else None,
                    was.oid if was else None,
                    entry.kind if entry else None,
                    entry.oid if entry else None,
                ]
            )
    if not changes:
        raise InvalidInput("the session changes nothing yet: there is nothing to offer")
    snap_id = await repo.sessions.write_snapshot(s, effective)
    snapshot = await repo.objects.get_canonical(snap_id)
    refs = (
        [r[2] for r in changes if r[2]] + [r[4] for r in changes if r[4]] + snapshot_refs(snapshot)
    )
    objects = await _collect(repo, refs)
    oid = _new_id()
    body = {
        "v": 1,
        "kind": "offer",
        "origin": fed.url,
        "repo": repo.name,
        "session": sid,
        "offer": oid,
        "target": target_url,
        "goal": s.goal,
        "author": s.author,
        "role": s.role,
        "snapshot": snapshot,
        "changes": changes,
        "objects": objects,
    }
    bundle = seal(fed.key, body)
    if len(bundle) > MAX_BUNDLE:
        raise InvalidInput(
            f"the session is too large to offer ({len(bundle)} bytes; at most {MAX_BUNDLE})"
        )
    await fed.store.put(BUNDLES + oid, bundle)
    record = {
        "id": oid,
        "repo": repo.name,
        "session": sid,
        "target": target_url,
        "state": "sent",
        "created": time.time(),
        "by": user,
        "goal": s.goal,
    }
    await fed.store.put(offer_sent_key(repo.prefix, sid, oid), encode(record))
    await fed.store.put(OFFERS_OUT + oid, encode({"repo": repo.name, "session": sid}))
    me = fed.key.actor
    await fed.enqueue_activity(
        {
            "@context": [AS, FORGEFED],
            "id": f"{fed.url}/ap/offers/{oid}#offer",
            "type": "Offer",
            "actor": me,
            "target": None,
            "object": {
                "type": "Patch",
                "id": f"{fed.url}/ap/offers/{oid}",
                "attributedTo": me,
                "name": s.goal,
                "mediaType": "application/cbor",
                "bundle": f"{fed.url}/ap/offers/{oid}/bundle",
            },
        },
        target=target_url,
        resolve=["target"],
    )
    return record


async def _collect(repo: Repo, refs: list[bytes]) -> list[bytes]:
    """Canonical bytes of ``refs`` and everything trees among them name, children first."""
    seen: set[bytes] = set()
    out: list[bytes] = []
    size = 0
    stack: list[tuple[bytes, bool]] = [(r, False) for r in reversed(list(dict.fromkeys(refs)))]
    values: dict[bytes, bytes] = {}
    while stack:
        oid, expanded = stack.pop()
        if oid in seen:
            continue
        if expanded:
            seen.add(oid)
            out.append(values.pop(oid))
            continue
        canonical = await repo.objects.get_canonical(oid)
        size += len(canonical)
        if size > MAX_BUNDLE:
            raise InvalidInput(f"the session refers to more than {MAX_BUNDLE} bytes of objects")
        values[oid] = canonical
        stack.append((oid, True))
        value = decode(canonical)
        if value[0] == "tree":
            stack.extend((row[2], False) for row in value[1] if row[2] not in seen)
    return out


async def outcome(
    fed: Federation, activity: dict[str, Any], actor: str, obj: str, accepted: bool
) -> dict[str, Any]:
    """The target answered an offer: record it next to the offered session."""
    oid = obj[len(f"{fed.url}/ap/offers/") :].split("/")[0].split("#")[0]
    pointer = load_map(await fed.store.get_or_none(OFFERS_OUT + oid))
    if pointer is None:
        raise NotFound(f"no offer {oid} was sent from here")
    repo = fed.local_repo(pointer["repo"])
    key = offer_sent_key(repo.prefix, pointer["session"], oid)
    rec = load_map(await fed.store.get_or_none(key))
    if rec is None:
        raise NotFound(f"no offer {oid} was sent from here")
    if authority(actor) != authority(rec["target"]):
        raise PermissionDenied(f"only {authority(rec['target'])} can answer offer {oid}")
    result = activity.get("result") if isinstance(activity.get("result"), dict) else {}
    rec.update(state="landed" if accepted else "rejected", answered=time.time(), answered_by=actor)
    if accepted:
        rec["position"] = (
            result.get("position") if isinstance(result.get("position"), int) else None
        )
        rec["remote_session"] = (
            result.get("session") if isinstance(result.get("session"), str) else None
        )
    else:
        summary = activity.get("summary")
        rec["reason"] = summary if isinstance(summary, str) else ""
    await fed.store.put(key, encode(rec))
    return {"ok": True}


async def sent_offers(repo: Repo, sid: str) -> list[dict[str, Any]]:
    out = []
    async for key in repo.store.iter_keys(f"{repo.prefix}offers-sent/{sid}/"):
        rec = load_map(await repo.store.get_or_none(key))
        if rec is not None:
            out.append(rec)
    return out


# -- the target's side (A) ---------------------------------------------------------------------


async def receive(
    fed: Federation, activity: dict[str, Any], actor: str, local: str | None
) -> dict[str, Any]:
    """Fetch and verify the offered bundle, keep the objects its changes refer to and the offered
    session. Cheap refusals first: the caps per remote actor and host and the hourly rate (429),
    then the bundle is read up to :data:`MAX_BUNDLE` (413 beyond, nothing stored)."""
    from federation.inbox import _id, addressed_repo

    name = await addressed_repo(fed, activity.get("target"), local, "Offer")
    obj = activity.get("object")
    obj_id = _id(obj)
    bundle_url = obj.get("bundle") if isinstance(obj, dict) else None
    if not isinstance(bundle_url, str):
        raise InvalidInput("the Offer does not link its bundle")
    for url in (obj_id, bundle_url):
        if authority(url) != authority(actor):
            raise PermissionDenied(f"{url} is not on the offering actor's host {authority(actor)}")
    repo = fed.local_repo(name)
    lid = hashlib.sha256(obj_id.encode()).hexdigest()[:20]
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
                await _delete_prefix(fed.store, OfferObjects(repo, lid).prefix)
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
                f"{OFFERS_IN}{host}/{_hash(actor)}/", limit=st.offers_per_actor + 1
            )
            theirs = await fed.store.list_page(f"{OFFERS_IN}{host}/", limit=st.offers_per_host + 1)
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
    except TooLarge:
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


async def _delete_prefix(store: Any, prefix: str) -> None:
    keys = [k async for k in store.iter_keys(prefix)]
    for k in keys:
        with contextlib.suppress(NotFound):
            await store.delete(k)


async def _done_pending(fed_store: Any, rec: dict[str, Any]) -> None:
    """An offer was reviewed (landed, rejected) or expired: it no longer counts against its host."""
    actor = rec.get("from")
    if isinstance(actor, str):
        with contextlib.suppress(HifError):
            await fed_store.delete(pending_key(authority(actor), actor, rec["id"]))


def expired(rec: dict[str, Any], settings: FedSettings, now: float | None = None) -> bool:
    """Whether an offer waited unreviewed for longer than the operator allows."""
    received = rec.get("received")
    return (
        rec.get("state") == "offered"
        and isinstance(received, (int, float))
        and (now if now is not None else time.time()) - received > settings.offer_expiry
    )


async def expire(fed: Federation, host: str | None = None) -> int:
    """Remove offers that waited unreviewed longer than ``offer_expiry`` (of one remote ``host``,
    or all): the record and its staged objects go, and the offering node is told with a
    ``Reject``. Runs before each receipt from a host and in the resync loop; returns how many."""
    now = time.time()
    gone = 0
    async for k in fed.store.iter_keys(f"{OFFERS_IN}{host}/" if host else OFFERS_IN):
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
            await _delete_prefix(fed.store, OfferObjects(repo, lid).prefix)
            if rec is not None:
                with contextlib.suppress(HifError):
                    await _tell_expired(fed, repo, rec)
                await repo.store.delete(key)
        with contextlib.suppress(HifError):
            await fed.store.delete(k)
        gone += 1
    return gone


async def _tell_expired(fed: Federation, repo: Repo, rec: dict[str, Any]) -> None:
    me = repo_actor_url(fed.url, repo.name)
    days = fed.settings.offer_expiry / 86400
    await fed.enqueue_activity(
        {
            "@context": AS,
            "id": f"{me}#offer-expired-{rec['id']}",
            "type": "Reject",
            "actor": me,
            "object": rec["object"],
            "summary": f"expired: not reviewed within {days:g} days",
        },
        inbox=rec["reply"],
    )


async def list_offers(repo: Repo, settings: FedSettings | None = None) -> list[dict[str, Any]]:
    """Every offer of ``repo`` with its ``size`` (bytes it keeps); expired ones are left out even
    before the resync loop removes them."""
    st = settings or FedSettings.from_env()
    now = time.time()
    out = []
    async for key in repo.store.iter_keys(f"{repo.prefix}offers/"):
        rec = load_map(await repo.store.get_or_none(key))
        if rec is not None and rec.get("state") != "expired" and not expired(rec, st, now):
            out.append(_summary(rec))
    return out


def total_size(rows: list[dict[str, Any]]) -> int:
    """Bytes kept by the listed offers (what strangers' offers cost the node)."""
    return sum(r["size"] for r in rows if isinstance(r.get("size"), int))


def _summary(rec: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "id",
        "state",
        "from",
        "origin",
        "source_repo",
        "session",
        "goal",
        "author",
        "role",
        "received",
        "position",
        "landed_session",
        "landed_by",
        "reason",
        "error",
        "size",
    )
    return {k: rec.get(k) for k in keep}


async def get_offer(repo: Repo, lid: str) -> dict[str, Any]:
    """An offered session: its summary, every event (conversation, decisions) and its diff."""
    rec = load_map(await repo.store.get_or_none(offer_key(repo.prefix, lid)))
    if rec is None or rec.get("state") == "expired":
        raise NotFound(f"no offer {lid}")
    repo = offer_repo(repo, lid)
    snapshot = decode(await repo.objects.get_canonical(rec["snapshot"]))[1]
    diff = []
    for path, bk, bo, nk, no in rec["changes"]:
        old = await repo.objects.get_blob(bo) if bo else None
        new = await repo.objects.get_blob(no) if no else None
        text = ""
        if len(old or b"") + len(new or b"") <= MAX_DIFF:
            text = unified_diff(old, new, path)
        diff.append(
            {
                "path": path,
                "action": "delete" if nk is None else ("add" if bk is None else "modify"),
                "base": [bk, bo],
                "new": [nk, no],
                "diff": text,
            }
        )
    return {
        **_summary(rec),
        "events": snapshot.get("events", []),
        "changes": rec["changes"],
        "diff": diff,
    }


async def _claim(repo: Repo, lid: str, user: str) -> tuple[dict[str, Any], str]:
    key = offer_key(repo.prefix, lid)
    try:
        data, etag = await repo.store.get_with_etag(key)
    except NotFound:
        raise NotFound(f"no offer {lid}") from None
    rec = decode(data)
    if rec["state"] == "expired":
        raise NotFound(f"no offer {lid} (it expired unreviewed)")
    if rec["state"] in ("landed", "rejected"):
        return rec, ""
    if rec["state"] == "landing" and time.time() - rec.get("claimed", 0) < 300:
        raise InvalidInput(f"offer {lid} is being landed by {rec.get('claimed_by')}")
    rec.update(state="landing", claimed=time.time(), claimed_by=user)
    try:
        etag = await repo.store.put(key, encode(rec), if_match=etag)
    except PreconditionFailed:
        raise InvalidInput(f"offer {lid} changed meanwhile; try again") from None
    return rec, etag


async def land_offer(fed: Federation, repo: Repo, lid: str, user: str) -> dict[str, Any]:
    """Land an offered session as a local one; the outcome is delivered back to its node."""
    rec, etag = await _claim(repo, lid, user)
    if rec["state"] == "landed":
        return _summary(rec)
    if rec["state"] == "rejected":
        raise SessionClosed(f"offer {lid} was rejected")
    key = offer_key(repo.prefix, lid)
    started: list[str] = []
    try:
        result = await _land(repo, rec, user, started)
    except BaseException as e:
        rec.update(state="offered", error=str(e) or type(e).__name__)
        with contextlib.suppress(Exception):
            await repo.store.put(key, encode(rec), if_match=etag)
        for sid in started:  # the local session it did not land: close it, keep its history
            with contextlib.suppress(Exception):
                s = await repo.sessions.load(sid)
                ev = make_event("abandon", user, "human", repo.clock(), reason="offer did not land")
                await repo.sessions.abandon(s, ev, "offer did not land")
        raise
    sid = started[0]
    rec.update(
        state="landed",
        position=result.position,
        landed_session=sid,
        landed_by=user,
        landed_at=time.time(),
        error=None,
    )
    await repo.store.put(key, encode(rec))
    await _done_pending(fed.store, rec)
    await _delete_prefix(repo.store, OfferObjects(repo, lid).prefix)  # promoted by _land
    fed.landed(repo.name)
    me = repo_actor_url(fed.url, repo.name)
    await fed.enqueue_activity(
        {
            "@context": AS,
            "id": f"{me}#offer-accept-{lid}",
            "type": "Accept",
            "actor": me,
            "object": rec["object"],
            "result": {
                "type": "Landing",
                "id": f"{me}/envelopes/{result.position}",
                "position": result.position,
                "session": sid,
                "url": f"{fed.url}/{repo.name}",
            },
        },
        inbox=rec["reply"],
    )
    return _summary(rec)


async def _land(repo: Repo, rec: dict[str, Any], user: str, started: list[str]) -> Any:
    staged = offer_repo(repo, rec["id"])
    snapshot = decode(await staged.objects.get_canonical(rec["snapshot"]))[1]
    head = await repo.mainline.head()
    head_tree = await repo.mainline.tree_at(head)
    merged: list[tuple[str, str, bytes]] = []
    conflicts: list[Conflict] = []
    for path, bk, bo, nk, no in rec["changes"]:
        base = Entry(bk, bo) if bk else None
        new = Entry(nk, no) if nk else None
        theirs = await lookup_file(repo.objects, head_tree, path)
        if theirs in (new, base):
            continue
        if (
            new is None
            or theirs is None
            or new.kind not in (FILE, EXEC)
            or theirs.kind not in (FILE, EXEC)
        ):
            conflicts.append(Conflict(path, [], "changed here and in the offer"))
            continue
        base_bytes = await staged.objects.get_blob(base.oid) if base else b""
        ours = await staged.objects.get_blob(new.oid)
        mine = await staged.objects.get_blob(theirs.oid)
        if any(is_binary(x) for x in (base_bytes, ours, mine)):
            conflicts.append(Conflict(path, [], "binary file changed here and in the offer"))
            continue
        m = merge3(base_bytes, ours, mine, ours_label="offer", theirs_label="mainline")
        if not m.clean:
            conflicts.append(Conflict(path, [], f"{m.conflicts} overlapping change(s)"))
            continue
        merged.append((path, new.kind, await repo.objects.put_blob(m.data)))
    if conflicts:
        raise ConflictError(conflicts)
    await _promote(repo, rec["id"])
    host = authority(rec["origin"])
    s = await repo.sessions.start(rec["goal"], f"{rec['author']}@{host}", rec["role"], head)
    started.append(s.id)
    now = repo.clock()
    events = [
        make_event(
            "say",
            user,
            "human",
            now,
            text=f"offered from {rec['origin']}/{rec['source_repo']} (session {rec['session']})",
            offered_from={
                "origin": rec["origin"],
                "repo": rec["source_repo"],
                "session": rec["session"],
                "offer": rec["object"],
            },
        )
    ]
    for e in snapshot.get("events", []):
        if not isinstance(e, dict) or e.get("type") not in COPIED:
            continue
        copy = {k: v for k, v in e.items() if k not in ("seq", "user")}
        copy["author"] = f"{e.get('author', 'unknown')}@{host}"
        if copy.get("role") not in ROLES:
            copy["role"] = "human"
        if e["type"] in ("write", "delete"):
            check_path(copy.get("path", ""))
        events.append(copy)
    for path, kind, blob in merged:
        events.append(
            make_event("write", user, "human", now, path=path, kind=kind, blob=blob, merged=True)
        )
    for event in events:
        await repo.sessions.append(s.id, event)
    return await land(repo, await repo.sessions.load(s.id))


async def _promote(repo: Repo, lid: str) -> None:
    """Copy an offer's staged objects into the repository, blobs first and each tree after the
    trees it names (a present tree is a complete one), so the landing can refer to them."""
    staged = OfferObjects(repo, lid)
    trees: dict[bytes, tuple[bytes, list[bytes]]] = {}
    async for key in repo.store.iter_keys(staged.prefix):
        oid = bytes.fromhex(key[len(staged.prefix) :])
        canonical = await ObjectDB.get_canonical(staged, oid)
        value = decode(canonical)
        if value[0] == "tree":
            trees[oid] = (canonical, [row[2] for row in value[1]])
        else:
            await repo.objects.put_canonical(canonical)
    for _, canonical in children_first(trees):
        await repo.objects.put_canonical(canonical)


async def reject_offer(
    fed: Federation, repo: Repo, lid: str, user: str, reason: str
) -> dict[str, Any]:
    rec, etag = await _claim(repo, lid, user)
    if rec["state"] == "rejected":
        return _summary(rec)
    if rec["state"] == "landed":
        raise SessionClosed(f"offer {lid} already landed at position {rec.get('position')}")
    rec.update(state="rejected", reason=reason, rejected_by=user, rejected_at=time.time())
    await repo.store.put(offer_key(repo.prefix, lid), encode(rec), if_match=etag)
    await _done_pending(fed.store, rec)  # its objects stay: its page still shows the diff
    me = repo_actor_url(fed.url, repo.name)
    await fed.enqueue_activity(
        {
            "@context": AS,
            "id": f"{me}#offer-reject-{lid}",
            "type": "Reject",
            "actor": me,
            "object": rec["object"],
            "summary": reason,
        },
        inbox=rec["reply"],
    )
    return _summary(rec)


def bundle_key(oid: str) -> str:
    return BUNDLES + oid

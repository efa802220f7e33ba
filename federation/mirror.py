"""Read-only mirrors of remote repositories: verified landing envelopes at the same positions.

A mirror lives under ``mirrors/<host>/<owner>/<name>/`` (the layout of a repository, plus
``envelopes/<position>`` and ``conflicts/``), so it never collides with a local repository. Applying
envelopes checks, in order: each envelope's signature and claims (by the caller), that they continue
the mirror's log (positions and the parent tree chain), then fetches the objects the mirror lacks
from the origin's object API, verifying every hash, and writes objects (children before parents),
the envelope, the landing record (put-if-absent) and the sessions' state markers. Everything is
idempotent: a position already held with the same bytes is skipped; with different bytes it is
refused and recorded, never overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterable, Sequence
from typing import Any

import cbor2

from federation.envelope import Landing
from federation.layout import load_map
from federation.net import CBOR_CAP, Fetcher, http_error
from hif.errors import CorruptObject, HifError, NotFound, PreconditionFailed, RemoteError
from hif.mainline import log_key
from hif.objects import (
    DIR,
    EMPTY_TREE,
    check_stored,
    decode,
    encode,
    pack,
)
from hif.repo import Repo
from hif.store.base import ObjectStore

GET_BATCH = 1000
CBOR_TYPE = "application/cbor"


class MirrorConflict(HifError):
    """An envelope claims a position the mirror holds with other bytes (HTTP 409)."""

    http_status = 409


def mirror_prefix(host: str, name: str) -> str:
    return f"mirrors/{host}/{name}/"


def mirror_repo(store: ObjectStore, host: str, name: str) -> Repo:
    return Repo(store, name, prefix=mirror_prefix(host, name))


def envelope_key(repo: Repo, position: int) -> str:
    return f"{repo.prefix}envelopes/{position:012d}"


async def record_conflict(repo: Repo, position: int, wire: bytes, reason: str) -> None:
    """Keep the refused envelope for the operator (``micelio federation status``, the UI)."""
    h = hashlib.sha256(wire).hexdigest()[:16]
    body = encode({"position": position, "time": time.time(), "reason": reason, "envelope": wire})
    with contextlib.suppress(PreconditionFailed):
        await repo.store.put(
            f"{repo.prefix}conflicts/{position:012d}-{h}", body, if_none_match=True
        )


async def fetch_objects(fetcher: Fetcher, api: str, ids: Sequence[bytes]) -> dict[bytes, bytes]:
    """Objects by id from a node's object API (``<api>/objects/get``), each verified."""
    out: dict[bytes, bytes] = {}
    for i in range(0, len(ids), GET_BATCH):
        batch = list(ids[i : i + GET_BATCH])
        url = f"{api}/objects/get"
        a = await fetcher.request(
            "POST",
            url,
            content=encode({"ids": batch}),
            cap=CBOR_CAP,
            headers={"Content-Type": CBOR_TYPE, "Accept": CBOR_TYPE},
        )
        if a.status != 200:
            raise http_error(a, url)
        try:
            rows = cbor2.loads(a.body)["objects"]
        except Exception:  # cbor2 raises several types; a proxy may answer HTML
            raise RemoteError(f"{url} sent an answer that is not an object list") from None
        asked = set(batch)
        for row in rows:
            if not (isinstance(row, list) and len(row) == 2 and isinstance(row[1], bytes)):
                raise RemoteError(f"{url} sent a malformed object list")
            oid, canonical, _ = check_stored(row[1])
            if oid != row[0] or oid not in asked:
                raise CorruptObject(
                    f"the origin sent object {row[0].hex() if isinstance(row[0], bytes) else '?'}"
                    " whose bytes do not match its id (hash mismatch)"
                )
            out[oid] = canonical
        if not asked <= set(out):
            raise RemoteError(f"{url} left out objects it was asked for")
    return out


def _children(value: Any) -> list[bytes]:
    if value[0] == "tree":
        return [row[2] for row in value[1]]
    return []


def _kinds_named(value: Any) -> list[tuple[bytes, str]]:
    """What a tree says its entries are: a directory a tree, a file a blob."""
    if value[0] == "tree":
        return [(row[2], "tree" if row[1] == DIR else "blob") for row in value[1]]
    return []


def snapshot_refs(canonical: bytes) -> list[bytes]:
    """Objects a snapshot refers to: the blobs of its writes and its checkpoint trees."""
    value = decode(canonical)[1]
    refs: list[bytes] = []
    for e in value.get("events", []) if isinstance(value, dict) else []:
        if not isinstance(e, dict):
            continue
        for name in ("blob", "tree"):
            ref = e.get(name)
            if isinstance(ref, bytes) and len(ref) == 32:
                refs.append(ref)
    for row in value.get("changes", []) if isinstance(value, dict) else []:
        if isinstance(row, list) and len(row) == 3 and isinstance(row[2], bytes):
            refs.append(row[2])
    return refs


async def closure(
    repo: Repo, roots: Iterable[bytes], fetch: Any, known: set[bytes] | None = None,
    kinds: dict[bytes, str] | None = None,
) -> list[tuple[bytes, bytes]]:
    """What the repository lacks of the objects reachable from ``roots``, fetched with
    ``fetch(ids)`` and ordered children before parents (so a present tree always means a complete
    one, even after a crash halfway through writing). ``kinds``: what some roots must be ("tree",
    "blob"); every fetched object must also be what the tree naming it says."""
    have = known if known is not None else set()
    fetched: dict[bytes, bytes] = {}
    values: dict[bytes, Any] = {}
    expect: dict[bytes, str] = dict(kinds or {})  # what the objects that name an id say it is
    frontier = list(dict.fromkeys(roots))
    while frontier:
        missing = []
        for oid in frontier:
            if oid in have or oid in fetched or oid == EMPTY_TREE:
                continue
            if await repo.objects.has(oid):
                have.add(oid)
                continue
            missing.append(oid)
        if not missing:
            break
        got = await fetch(missing)
        nxt: list[bytes] = []
        for oid in missing:
            fetched[oid] = got[oid]
            values[oid] = decode(got[oid])
            want = expect.get(oid)
            if want is not None and values[oid][0] != want:  # a file entry naming a tree, or junk
                raise CorruptObject(f"object {oid.hex()} from the origin is a {values[oid][0]} where "
                                    f"its tree or record says {want}")
            for child, kind in _kinds_named(values[oid]):
                if expect.setdefault(child, kind) != kind or (child in values and values[child][0] != kind):
                    raise CorruptObject(f"the origin's tree {oid.hex()} names object {child.hex()} as a "
                                        f"{kind}, which it is not")
            nxt += _children(values[oid])
        frontier = list(dict.fromkeys(nxt))
    ordered: list[tuple[bytes, bytes]] = []
    done: set[bytes] = set()
    for root in fetched:  # iterative post-order: each object after everything it names
        stack: list[tuple[bytes, bool]] = [(root, False)]
        while stack:
            oid, expanded = stack.pop()
            if oid in done or oid not in fetched:
                continue
            if expanded:
                done.add(oid)
                ordered.append((oid, fetched[oid]))
                continue
            stack.append((oid, True))
            stack.extend((c, False) for c in _children(values[oid]) if c not in done)
    return ordered


async def create_all(store: ObjectStore, items: list[tuple[str, bytes]]) -> None:
    """Put-if-absent of many keys with one durability barrier where the store offers it; keys that
    exist already are left alone (the caller checks the ones that matter)."""
    batch = getattr(store, "create_all", None)
    if batch is not None:
        try:
            await batch(items)
            return
        except PreconditionFailed:
            pass  # someone else wrote some of them: fall back to one at a time
    for key, data in items:
        with contextlib.suppress(PreconditionFailed):
            await store.put(key, data, if_none_match=True)


async def apply(
    repo: Repo, landings: list[Landing], fetcher: Fetcher, api: str, key_info: dict[str, Any]
) -> int:
    """Append verified envelopes (in position order) to the mirror; returns how many were new.

    Positions the mirror holds must match byte for byte (redelivery is a no-op; anything else is a
    :class:`MirrorConflict`). New ones must start at head + 1: the caller backfills gaps first.
    """
    if not landings:
        return 0
    head = await repo.mainline.head()
    fresh: list[Landing] = []
    for e in landings:
        if e.position <= head:
            held = await repo.store.get(log_key(repo.prefix, e.position))
            if held != e.record_bytes:
                reason = f"position {e.position} is already held with other bytes"
                await record_conflict(repo, e.position, e.wire, reason)
                raise MirrorConflict(
                    f"refused: the envelope for {reason} (recorded, not overwritten)"
                )
        else:
            fresh.append(e)
    if not fresh:
        return 0
    expected = head + 1
    parent = await repo.mainline.tree_at(head)
    for e in fresh:
        if e.position != expected:
            raise NotFound(
                f"gap: the mirror holds up to {expected - 1}, the envelope is for {e.position}"
            )
        if e.record.parent_tree != parent:
            await record_conflict(repo, e.position, e.wire, "does not continue the mirror's log")
            raise MirrorConflict(
                f"refused: the record at {e.position} does not continue the mirror's "
                "log (parent tree differs)"
            )
        parent = e.record.tree
        expected += 1

    async def fetch(ids: list[bytes]) -> dict[bytes, bytes]:
        return await fetch_objects(fetcher, api, ids)

    roots: list[bytes] = []
    snapshots: dict[bytes, bytes] = {}
    kinds: dict[bytes, str] = {}
    for e in fresh:
        roots.append(e.record.tree)
        kinds[e.record.tree] = "tree"
        for s in e.record.sessions:
            files = [entry.oid for entry in s.changes.values() if entry is not None]
            roots += files
            kinds.update(dict.fromkeys(files, "blob"))
        for sid, canonical in e.snapshots.items():
            snapshots[sid] = canonical
            roots += snapshot_refs(canonical)
    known: set[bytes] = set(snapshots)
    objects = await closure(repo, roots, fetch, known, kinds)
    items: list[tuple[str, bytes]] = [(repo.objects.key(oid), pack(c)) for oid, c in objects]
    for sid, canonical in snapshots.items():
        if not await repo.objects.has(sid):
            items.append((repo.objects.key(sid), pack(canonical)))
    for e in fresh:
        items.append((envelope_key(repo, e.position), e.wire))
        items.append((log_key(repo.prefix, e.position), e.record_bytes))
    for e in fresh:  # the sessions' state markers, after the records (as landing writes them)
        for s in e.record.sessions:
            items.append(
                (
                    f"{repo.prefix}sessions/{s.session}/state",
                    encode({"state": "landed", "position": e.position, "snapshot": s.snapshot}),
                )
            )
    if key_info and (await read_sync(repo)).get("public") != key_info.get("public"):
        await write_sync(repo, key_info)  # before the records: each one shows as verified at once
    await create_all(repo.store, items)
    for e in fresh:  # a racing replica may have written them: they must be these very bytes
        held = await repo.store.get(log_key(repo.prefix, e.position))
        if held != e.record_bytes:
            await record_conflict(repo, e.position, e.wire, "lost a race to other bytes")
            raise MirrorConflict(f"refused: position {e.position} was written with other bytes")
    last = fresh[-1].position
    await repo.mainline.advance_hint(last)
    await write_sync(repo, {"head": last, "last_sync": time.time(), "error": None})
    return len(fresh)


async def write_sync(repo: Repo, update: dict[str, Any]) -> None:
    """Merge ``update`` into the mirror's sync status (last sync, head, key, last error) with
    compare-and-swap, so concurrent writers (a delivery and a resync) never drop each other's
    fields. Best effort: the status is informative, never the truth."""
    key = f"{repo.prefix}sync"
    for _ in range(8):
        try:
            data, etag = await repo.store.get_with_etag(key)
        except NotFound:
            data, etag = None, None
        current: dict[str, Any] = {}
        if data is not None:
            with contextlib.suppress(CorruptObject):
                v = decode(data)
                current = v if isinstance(v, dict) else {}
        if (
            "head" in update
            and isinstance(current.get("head"), int)
            and current["head"] > update["head"]
        ):
            update = {k: v for k, v in update.items() if k != "head"}
        current.update(update)
        try:
            if etag is None:
                await repo.store.put(key, encode(current), if_none_match=True)
            else:
                await repo.store.put(key, encode(current), if_match=etag)
            return
        except PreconditionFailed:
            continue
        except HifError:
            return


async def read_sync(repo: Repo) -> dict[str, Any]:
    return load_map(await repo.store.get_or_none(f"{repo.prefix}sync")) or {}

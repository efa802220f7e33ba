"""Read-only mirrors of remote repositories: verified landing envelopes at the same positions.

A mirror lives under ``mirrors/<host>/<owner>/<name>/`` (the layout of a repository, plus
``envelopes/<last position>``, a page of envelopes per key, and ``conflicts/``), so it never collides
with a local repository. Applying envelopes checks, in order: each envelope's signature and claims
(by the caller), that they continue the mirror's log (positions and the parent tree chain), then, a
chunk of positions at a time, streams the objects the mirror lacks from the origin's object API
(``objects/stream``: batched by bytes, blobs written in batches as they arrive, so a landing of any
size comes through in bounded memory), verifying every hash, and writes trees (children before
parents), the envelope pages, the landing records (put-if-absent) and the sessions' state markers;
the next chunk is fetched while one is written. Everything is idempotent: a position already held
with the same bytes is skipped; with different bytes it is refused and recorded, never overwritten.
A position that cannot be applied (:class:`MirrorStuck`) is recorded in the mirror's ``sync`` status
with its reason."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from federation.envelope import Landing
from federation.errors import MirrorConflict, MirrorStuck
from federation.layout import load_map
from federation.net import CBOR_CAP, Fetcher, http_error
from federation.settings import authority
from hif.errors import CorruptObject, HifError, NotFound, PreconditionFailed, RemoteError
from hif.forge.client import ObjectStreamReader
from hif.mainline import log_key
from hif.objects import DIR, EMPTY_TREE, check_canonical, decode, digest, encode, pack, unpack
from hif.repo import Repo
from hif.store.base import ObjectStore

STREAM_IDS = 50_000  # ids per objects/stream request (a node accepts 100,000)
HAVE_IDS = 10_000  # ids per objects/have request (a node's limit)
MAX_OBJECT = 128 << 20  # one stored object in a stream (a node takes uploads of 64 MiB)
FLUSH_BYTES = 8 << 20  # blobs written to the store in batches of about this much
CHUNK = 256  # positions whose objects are fetched and written together (see ``apply``)
ENVELOPE_PAGE = 64  # envelopes a mirror keeps in one store key at most ...
ENVELOPE_PAGE_BYTES = 256 << 10  # ... and bytes: a page ends after the envelope that reaches this
CBOR_TYPE = "application/cbor"
CBOR_SEQ = "application/cbor-seq"


def mirror_prefix(host: str, name: str) -> str:
    return f"mirrors/{host}/{name}/"


def mirror_repo(store: ObjectStore, host: str, name: str) -> Repo:
    return Repo(store, name, prefix=mirror_prefix(host, name))


def origin_of(repo: Repo) -> str:
    """The host a mirrored repository comes from ("" for a repository of this node's own)."""
    return repo.prefix.split("/")[1] if repo.prefix.startswith("mirrors/") else ""


def envelope_key(repo: Repo, position: int) -> str:
    """Where the envelopes ending at ``position`` are kept: a page of several (``envelope_pages``)
    or, as mirrors written before pages were, the one envelope of that position."""
    return f"{repo.prefix}envelopes/{position:012d}"


def envelope_pages(repo: Repo, landings: Sequence[Landing]) -> list[tuple[str, bytes]]:
    """The envelopes of consecutive ``landings`` as store items: pages of at most
    ``ENVELOPE_PAGE`` envelopes and about ``ENVELOPE_PAGE_BYTES``, each under the key of its last
    position, holding ``{"first": position, "envelopes": [wire, ...]}``: a file per page, not per
    position, while reading one position back stays a list and a read of one small page."""
    pages: list[tuple[str, bytes]] = []
    page: list[Landing] = []
    size = 0
    for i, e in enumerate(landings):
        page.append(e)
        size += len(e.wire)
        if len(page) == ENVELOPE_PAGE or size >= ENVELOPE_PAGE_BYTES or i == len(landings) - 1:
            body = {"first": page[0].position, "envelopes": [p.wire for p in page]}
            pages.append((envelope_key(repo, e.position), encode(body)))
            page, size = [], 0
    return pages


async def stored_envelopes(repo: Repo, start: int, stop: int) -> dict[int, bytes]:
    """The envelopes the mirror keeps for positions ``start..stop`` (those it has), by position:
    the pages whose last position is ``start`` or later, in order, until each position is found
    (replicas that raced may have written overlapping pages: the first found wins; both are the
    origin's bytes). At most one page more than positions is read, so a missing one costs little."""
    prefix = f"{repo.prefix}envelopes/"
    found: dict[int, bytes] = {}
    want = stop - start + 1
    after = envelope_key(repo, start - 1)
    budget = want + 1
    while len(found) < want and budget > 0:
        keys = await repo.store.list_page(prefix, start_after=after, limit=16)
        if not keys:
            break
        for key in keys:  # one page at a time: most ranges need one or two
            for pos, wire in _page_envelopes(key[len(prefix):], await repo.store.get_or_none(key)):
                if start <= pos <= stop:
                    found.setdefault(pos, wire)
            budget -= 1
            if len(found) == want or budget == 0:
                break
        after = keys[-1]
    return found


def _page_envelopes(name: str, data: bytes | None) -> list[tuple[int, bytes]]:
    """(position, wire) of what one key under ``envelopes/`` holds: a page, or one envelope (the
    layout before pages); nothing when it is neither (the caller reports it as missing)."""
    if data is None or not name.isdigit():
        return []
    try:
        value = decode(data)
    except CorruptObject:
        return []
    if isinstance(value, dict) and "payload" in value:  # one envelope, keyed by its position
        return [(int(name), data)]
    if not isinstance(value, dict):
        return []
    first, wires = value.get("first"), value.get("envelopes")
    if not isinstance(first, int) or not isinstance(wires, list):
        return []
    return [(first + i, w) for i, w in enumerate(wires) if isinstance(w, bytes)]


async def record_conflict(repo: Repo, position: int, wire: bytes, reason: str) -> None:
    """Keep the refused envelope for the operator (``micelio federation status``, the UI)."""
    h = hashlib.sha256(wire).hexdigest()[:16]
    body = encode({"position": position, "time": time.time(), "reason": reason, "envelope": wire})
    with contextlib.suppress(PreconditionFailed):
        await repo.store.put(
            f"{repo.prefix}conflicts/{position:012d}-{h}", body, if_none_match=True
        )


async def stuck(repo: Repo, position: int, cause: HifError) -> MirrorStuck:
    """Record that ``position`` could not be applied (in the mirror's sync status) and return the
    error to raise; an error that already says so is recorded as it is."""
    err = cause if isinstance(cause, MirrorStuck) else MirrorStuck(position, cause)
    await write_sync(repo, {"error": str(err), "error_at": time.time()})
    return err


# what a verified object is handed on as: (id, stored bytes, kind, what a tree names with the
# kind each entry says it is)
Named = list[tuple[bytes, str]]
Take = Callable[[bytes, bytes, str, Named], Awaitable[None]]


_BLOB = b"\x82\x64blob"  # how a blob's canonical bytes begin: ["blob", <bytes>]


def verify_object(stored: bytes, names: set[str] | None = None) -> tuple[bytes, str, Named]:
    """(id, kind, named) of an object as a peer sent it, expanded and hashed once: a tree is checked
    whole (``check_canonical``; ``names``: entry names already found safe) and its rows read once
    for what they name; a blob is only hashed, its content not decoded again (a copy less of what
    may be large)."""
    canonical = unpack(stored)
    if canonical[:6] == _BLOB and len(canonical) > 6 and canonical[6] >> 5 == 2:
        info = canonical[6] & 31
        extra = {24: 1, 25: 2, 26: 4, 27: 8}.get(info, 0) if info >= 24 else 0
        size = info if info < 24 else int.from_bytes(canonical[7 : 7 + extra], "big")
        if info <= 27 and 7 + extra + size == len(canonical):  # exactly one byte string
            return digest(canonical), "blob", []
    oid, value = check_canonical(canonical, names)
    if value[0] == "tree":
        return oid, "tree", [(row[2], "tree" if row[1] == DIR else "blob") for row in value[1]]
    return oid, value[0], []


async def stream_objects(
    fetcher: Fetcher, api: str, ids: Sequence[bytes], take: Take, names: set[str] | None = None
) -> None:
    """Objects by id from a node's object API (``<api>/objects/stream``, a CBOR sequence), each
    verified and handed to ``take(id, stored, kind, named)`` as it arrives: memory holds about one
    object, never a whole answer, so a landing of any size comes through (batched by bytes, not by
    count). ``names``: tree entry names already found safe (see ``parse_tree_rows``)."""
    url = f"{api}/objects/stream"
    for i in range(0, len(ids), STREAM_IDS):
        batch = list(ids[i : i + STREAM_IDS])
        asked = set(batch)
        got: set[bytes] = set()
        reader = ObjectStreamReader(MAX_OBJECT)

        async def sink(chunk: bytes, reader: ObjectStreamReader = reader, asked: set[bytes] = asked,
                       got: set[bytes] = got) -> None:
            for oid, stored in reader.feed(chunk):
                if oid not in asked or oid in got:
                    raise CorruptObject(f"the origin sent object {oid.hex()}, which was not asked for")
                real, kind, named = verify_object(stored, names)
                if real != oid:
                    raise CorruptObject(
                        f"the origin sent object {oid.hex()} whose bytes do not match its id "
                        "(hash mismatch)"
                    )
                got.add(oid)
                await take(oid, stored, kind, named)

        a = await fetcher.request(
            "POST",
            url,
            content=encode({"ids": batch}),
            cap=len(batch) * (MAX_OBJECT + 64) + 4096,
            headers={"Content-Type": CBOR_TYPE, "Accept": CBOR_SEQ},
            sink=sink,
        )
        if a.status != 200:
            if a.status == 404:  # say which object, from our own question (never the peer's body)
                raise await _lacking(fetcher, api, batch, a)
            raise http_error(a, url)
        closing = reader.close()
        if "error" in closing or "message" in closing:
            raise RemoteError(f"{authority(url)}'s object stream ended in an error")
        if got != asked:
            raise RemoteError(f"{url} left out objects it was asked for")


async def _lacking(fetcher: Fetcher, api: str, ids: list[bytes], answer: Any) -> HifError:
    """The origin answered 404 to a stream: ask which of ``ids`` it lacks (``objects/have``, at most
    10,000 ids per request) and name the first, so the mirror's error says what is missing."""
    url = f"{api}/objects/have"
    for i in range(0, len(ids), HAVE_IDS):
        a = await fetcher.request(
            "POST",
            url,
            content=encode({"ids": ids[i : i + HAVE_IDS]}),
            cap=CBOR_CAP,
            headers={"Content-Type": CBOR_TYPE, "Accept": CBOR_TYPE},
        )
        if a.status != 200:
            break
        try:
            missing = [m for m in decode(a.body)["missing"] if isinstance(m, bytes)]
        except Exception:  # cbor2 raises several types; a proxy may answer HTML
            break
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            return NotFound(
                f"the origin {authority(api)} is missing object {missing[0].hex()}{more}"
            )
    return http_error(answer, f"{api}/objects/stream")


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
    repo: Repo,
    roots: Iterable[bytes],
    fetch: Callable[[list[bytes], Take], Awaitable[None]],
    known: set[bytes] | None = None,
    kinds: dict[bytes, str] | None = None,
) -> list[tuple[str, bytes]]:
    """Bring what the repository lacks of the objects reachable from ``roots``: ``fetch(ids,
    take)`` hands over each object as it arrives. Leaves (blobs) are written in batches of about
    ``FLUSH_BYTES`` as they come, so memory holds at most one batch whatever the landing's size;
    trees are kept (small). Returned: the store items still to write, in order (the last blobs,
    then the trees, children before parents), for the caller to write with what names them in one
    batch (a present tree always means a complete one, even after a crash halfway through).
    ``known``: objects the caller knows are stored or being written; what is brought is added to
    it. ``kinds``: what some roots must be ("tree", "blob"); every object fetched must also be what
    the tree naming it says (a file entry naming a tree, or junk, is refused)."""
    have = known if known is not None else set()
    expect: dict[bytes, str] = dict(kinds or {})  # what the objects naming an id say it is
    seen: dict[bytes, str] = {}  # what fetched objects are
    trees: dict[bytes, tuple[bytes, list[bytes]]] = {}
    pending: list[tuple[str, bytes]] = []
    held = 0
    frontier = list(dict.fromkeys(roots))
    while frontier:
        asked = [oid for oid in frontier if oid not in have and oid not in trees and oid != EMPTY_TREE]
        # one store call for all of them (a page of envelopes names thousands)
        missing = []
        for oid, h in zip(asked, await repo.objects.has_many(asked), strict=True):
            if h:
                have.add(oid)
            else:
                missing.append(oid)
        if not missing:
            break
        nxt: list[bytes] = []

        async def take(
            oid: bytes, stored: bytes, kind: str, named: Named, nxt: list[bytes] = nxt
        ) -> None:
            nonlocal held
            want = expect.get(oid)
            if want is not None and kind != want:
                raise CorruptObject(f"object {oid.hex()} from the origin is a {kind} where the "
                                    f"tree or record naming it says {want}")
            seen[oid] = kind
            for child, says in named:
                if expect.setdefault(child, says) != says or seen.get(child, says) != says:
                    raise CorruptObject(f"the origin's tree {oid.hex()} names object {child.hex()} "
                                        f"as a {says}, which it is not")
            if kind == "tree":
                kids = [child for child, _ in named]
                trees[oid] = (stored, kids)
                nxt += kids
                return
            pending.append((repo.objects.key(oid), stored))
            have.add(oid)
            held += len(stored)
            if held >= FLUSH_BYTES:
                await create_all(repo.store, pending)
                pending.clear()
                held = 0

        await fetch(missing, take)
        frontier = list(dict.fromkeys(nxt))
    have.update(trees)
    return pending + [(repo.objects.key(oid), stored) for oid, stored in children_first(trees)]


def children_first(trees: dict[bytes, tuple[bytes, list[bytes]]]) -> list[tuple[bytes, bytes]]:
    """``trees`` (id -> (bytes, the ids each names)) ordered so that each comes after every one of
    them it names (an iterative post-order): the order to write them in."""
    ordered: list[tuple[bytes, bytes]] = []
    done: set[bytes] = set()
    for root in trees:
        stack: list[tuple[bytes, bool]] = [(root, False)]
        while stack:
            oid, expanded = stack.pop()
            if oid in done or oid not in trees:
                continue
            if expanded:
                done.add(oid)
                ordered.append((oid, trees[oid][0]))
                continue
            stack.append((oid, True))
            stack.extend((c, False) for c in trees[oid][1] if c not in done)
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

    names: set[str] = set()  # tree entry names found safe: each checked once, not once per tree
    known: set[bytes] = set()  # objects an earlier chunk brought (written, or being written)

    async def fetch(ids: list[bytes], take: Take) -> None:
        await stream_objects(fetcher, api, ids, take, names)

    if key_info and (await read_sync(repo)).get("public") != key_info.get("public"):
        await write_sync(repo, key_info)  # before the records: each one shows as verified at once
    # a pipeline: while one chunk's records are written (the store's thread, mostly the kernel's
    # work), the next chunk's objects are fetched and verified; each chunk is written only after the
    # one before it, so the log never has a hole
    writing: asyncio.Task[None] | None = None
    applied = 0
    try:
        for at in range(0, len(fresh), CHUNK):
            chunk = fresh[at : at + CHUNK]
            try:
                items = await _bring(repo, chunk, fetch, known)
            except HifError as e:
                if writing is not None:
                    await writing
                    applied, writing = at, None
                if len(fresh) - at == 1:
                    raise await stuck(repo, chunk[0].position, e) from None
                # one at a time: those before the one that cannot be applied land, and the error
                # names it
                return applied + sum([await apply(repo, [one], fetcher, api, {}) for one in fresh[at:]])
            if writing is not None:
                await writing
                applied = at
            writing = asyncio.create_task(_write(repo, chunk, items))
        assert writing is not None
        await writing
        writing = None
    finally:
        if writing is not None:  # an error or a cancellation above: nobody waits for it any more
            writing.cancel()
            with contextlib.suppress(BaseException):
                await writing
    last = fresh[-1].position
    await repo.mainline.advance_hint(last)
    await write_sync(repo, {"head": last, "last_sync": time.time(), "error": None})
    return len(fresh)


async def _bring(
    repo: Repo,
    chunk: list[Landing],
    fetch: Callable[[list[bytes], Take], Awaitable[None]],
    known: set[bytes],
) -> list[tuple[str, bytes]]:
    """Fetch what ``chunk``'s landings need that neither the mirror nor ``known`` has, and return
    everything to write for them, in order: objects (children before parents), snapshots,
    envelopes, records, then the sessions' state markers (as landing writes them)."""
    roots: list[bytes] = []
    snapshots: dict[bytes, bytes] = {}
    kinds: dict[bytes, str] = {}
    for e in chunk:
        roots.append(e.record.tree)
        kinds[e.record.tree] = "tree"
        for s in e.record.sessions:
            files = [entry.oid for entry in s.changes.values() if entry is not None]
            roots += files
            kinds.update(dict.fromkeys(files, "blob"))
        for sid, canonical in e.snapshots.items():
            if sid not in known:
                snapshots[sid] = canonical
            roots += snapshot_refs(canonical)
    known.update(snapshots)
    items = await closure(repo, roots, fetch, known, kinds)
    present = await repo.objects.has_many(list(snapshots))
    items += [(repo.objects.key(sid), pack(canonical))
              for (sid, canonical), there in zip(snapshots.items(), present, strict=True) if not there]
    items += envelope_pages(repo, chunk)
    items += [(log_key(repo.prefix, e.position), e.record_bytes) for e in chunk]
    for e in chunk:
        for s in e.record.sessions:
            state = {"state": "landed", "position": e.position, "snapshot": s.snapshot}
            items.append((repo.sessions.state_key(s.session), encode(state)))
    return items


async def _write(repo: Repo, chunk: list[Landing], items: list[tuple[str, bytes]]) -> None:
    """Write one chunk's items in one batch; a racing replica may have written its records: they
    must be these very bytes (read back in one call)."""
    await create_all(repo.store, items)
    written = await repo.store.get_many([log_key(repo.prefix, e.position) for e in chunk])
    for e, held in zip(chunk, written, strict=True):
        if held != e.record_bytes:
            await record_conflict(repo, e.position, e.wire, "lost a race to other bytes")
            raise MirrorConflict(f"refused: position {e.position} was written with other bytes")


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

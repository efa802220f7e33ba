"""Routes of objects: which are missing, fetching (one batch or streamed) and keeping them, each
verified against its id (docs/api.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import cbor2

from hif.errors import HifError, NotFound, PreconditionFailed
from hif.objects import (
    check_stored,
    stored_kind,
)
from node.api.routing import (
    REPO,
    Ctx,
    route,
)
from node.errors import InvalidInput
from node.wire import (
    CBOR_SEQ,
    Answer,
    MiB,
    error_body,
    field,
)

MAX_HAVE = 10_000
MAX_GET = 1_000
MAX_STREAM = 100_000  # ids per objects/stream (3.4 MB of request body)
STREAM_FIRST = 64  # objects read before the answer starts (so a missing one is still a 404)
STREAM_MAX_BATCH = 512  # objects per read while streaming
STREAM_BYTES = 4 * MiB  # about this much object data read ahead of the connection


def _ids(body: dict[str, Any], most: int) -> list[bytes]:
    ids = field(body, "ids", list)
    if len(ids) > most:
        raise InvalidInput(f"at most {most} ids per request")
    if not all(isinstance(i, bytes) and len(i) == 32 for i in ids):
        raise InvalidInput("ids must be 32-byte strings")
    return ids


@route("POST", REPO + "/objects/have", "read", agent=True)
async def objects_have(ctx: Ctx) -> dict[str, Any]:
    ids = _ids(ctx.body, MAX_HAVE)
    # asked of the store itself, in one call: the answer is what this node can serve now, so
    # no memory of objects once seen through the handle may stand in for it (a damaged store)
    there = await ctx.r.store.has_many([ctx.r.objects.key(i) for i in ids])
    return {"missing": [i for i, ok in zip(ids, there, strict=True) if not ok]}


@route("POST", REPO + "/objects/get", "read", agent=True)
async def objects_get(ctx: Ctx) -> dict[str, Any]:
    ids = _ids(ctx.body, MAX_GET)
    # read concurrently: on S3 each read is a round trip, on disk the store's threads overlap them
    found = await asyncio.gather(*(ctx.r.store.get_or_none(ctx.r.objects.key(oid)) for oid in ids))
    for oid, data in zip(ids, found, strict=True):
        if data is None:
            raise NotFound(f"object {oid.hex()} is missing")
    return {"objects": [[oid, data] for oid, data in zip(ids, found, strict=True)]}


@route("POST", REPO + "/objects/stream", "read", limit=4 * MiB, agent=True)
async def objects_stream(ctx: Ctx) -> Answer:
    """Many objects in one streamed answer (a clone's whole checkout in one request instead of one per
    1,000): read a bounded batch ahead while the last one is sent, so memory stays flat at any size."""
    ids = _ids(ctx.body, MAX_STREAM)
    store, key = ctx.r.store, ctx.r.objects.key

    async def read(batch: list[bytes]) -> list[bytes | None]:
        return await store.get_many([key(oid) for oid in batch])

    first = ids[:STREAM_FIRST]
    found = await read(first)
    _check_found(first, found)  # a missing object still answers 404 before anything is sent

    async def body() -> AsyncIterator[bytes]:
        batch, got, at, sent = first, found, len(first), 0
        while True:
            size = sum(len(d) for d in got if d is not None)
            sent += len(batch)
            # the next batch is read while this one goes out; its length keeps about STREAM_BYTES in hand
            n = max(1, min(STREAM_MAX_BATCH, STREAM_BYTES * len(batch) // max(size, 1)))
            nxt = ids[at:at + n]
            pending = asyncio.ensure_future(read(nxt)) if nxt else None
            try:
                _check_found(batch, got)
                yield b"".join(cbor2.dumps([oid, data]) for oid, data in zip(batch, got, strict=True))
                if pending is None:
                    break
                batch, got, at = nxt, await pending, at + len(nxt)
            except HifError as e:  # too late for a status: the last item says what went wrong
                yield cbor2.dumps(error_body(e.response_status, str(e)))
                return
            finally:
                if pending is not None and not pending.done():
                    pending.cancel()
        yield cbor2.dumps({"count": sent})

    return Answer(body(), 200, CBOR_SEQ)  # streamed: no time limit (a large checkout takes long)


def _check_found(ids: list[bytes], found: list[bytes | None]) -> None:
    for oid, data in zip(ids, found, strict=True):
        if data is None:
            raise NotFound(f"object {oid.hex()} is missing")


@route("POST", REPO + "/objects/put", "write", limit=64 * MiB, agent=True)
async def objects_put(ctx: Ctx) -> dict[str, Any]:
    return {"ids": await _put_objects(ctx, field(ctx.body, "objects", list))}


async def _put_objects(ctx: Ctx, objects: list[Any]) -> list[bytes]:
    """Keep stored objects, each verified against its id first: none is kept if any is bad."""
    checked = check_objects(objects)
    await keep_objects(ctx, checked)
    return [oid for oid, _ in checked]


def check_objects(objects: list[Any]) -> list[tuple[bytes, bytes]]:
    """(id, stored form) of objects a caller sent, each decoded under the expansion limits."""
    if not all(isinstance(o, bytes) for o in objects):
        raise InvalidInput("objects must be byte strings")
    return [(check_stored(o)[0], o) for o in objects]


async def keep_objects(ctx: Ctx, checked: list[tuple[bytes, bytes]]) -> None:
    for oid, stored in checked:
        with contextlib.suppress(PreconditionFailed):
            await ctx.r.store.put(ctx.r.objects.key(oid), stored, if_none_match=True)
        ctx.r.objects.note_kind(oid, stored_kind(stored))  # a write event naming it need not read it

"""Catching a mirror up: envelopes fetched a page at a time from the origin's log, each verified
(signed by a key of the origin's host, for that repository and position) and applied in order.
The resync loop, a Push that skipped positions and ``micelio federation sync`` all come here."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from federation.actors import RemoteKey
from federation.envelope import PAGE_MAX, Landing, check_landing, check_signature, unseal
from federation.layout import following_key
from federation.mirror import apply, read_sync, stuck, write_sync
from federation.net import CBOR_CAP, Answer, http_error
from federation.settings import authority
from hif.errors import CorruptObject, HifError, InvalidInput, RemoteError
from hif.objects import decode, encode
from hif.store.base import ObjectStore

if TYPE_CHECKING:
    from federation.service import Federation


async def backfill(fed: Federation, f: dict[str, Any], until: int | None = None) -> int:
    """(Caller holds the mirror lock.) Append envelopes from head + 1 up to ``until``, a page at
    a time; the next page is asked for while one is applied, so memory holds two pages at most."""
    repo = fed.mirror(f["host"], f["name"])
    envelopes = f.get("envelopes")
    if not isinstance(envelopes, str):
        actor = await fed.directory.repository(f["url"])
        envelopes = actor.envelopes
        await remember_actor(
            fed.store, following_key(f["host"], f["name"]), actor.id, actor.inbox, envelopes
        )
    total = 0
    ahead: tuple[str, asyncio.Task[Answer]] | None = None  # the next page, asked for early
    try:
        while True:
            head = await repo.mainline.head()
            if until is not None and head >= until:
                return total
            url = _page_url(envelopes, head, until)
            if ahead is not None and ahead[0] == url:
                a = await ahead[1]
            else:
                a = await fed.fetcher.request(
                    "GET", url, headers={"Accept": "application/cbor"}, cap=CBOR_CAP
                )
            _drop(ahead)
            ahead = None
            if a.status != 200:
                raise http_error(a, url)
            try:
                page = decode(a.body)  # one CBOR item, nothing after it
                wires = page["envelopes"]
                assert isinstance(wires, list) and all(isinstance(w, bytes) for w in wires)
            except Exception:  # cbor2 raises several types
                raise RemoteError(f"{url} is not an envelope page") from None
            del a
            if not wires:
                if (await read_sync(repo)).get("error"):  # caught up: an old error is gone
                    await write_sync(repo, {"error": None, "last_sync": time.time()})
                return total
            checked: list[tuple[Landing, RemoteKey]] = []
            for i, w in enumerate(wires):
                try:
                    checked.append(await verify_landing(fed, w, f["base"], f["name"], head + 1 + i))
                except HifError as e:
                    if checked:
                        break  # apply what verified; the next page starts at this one
                    raise await stuck(repo, head + 1, e) from None
            whole = len(checked) == len(wires)  # else the next page starts at the one refused
            more = page.get("next") is not None or not whole
            del page, wires
            if more and whole and (until is None or head + len(checked) < until):
                # the origin signs and sends the next page while this one is applied
                nxt = _page_url(envelopes, head + len(checked), until)
                ahead = (nxt, asyncio.create_task(fed.fetcher.request(
                    "GET", nxt, headers={"Accept": "application/cbor"}, cap=CBOR_CAP
                )))
            total += await apply(
                repo,
                [c[0] for c in checked],
                fed.fetcher,
                f"{f['base']}/api/v1/repos/{f['name']}",
                key_info(checked[-1][1]),
            )
            if not more:
                return total
    finally:
        _drop(ahead)


def _page_url(envelopes: str, head: int, until: int | None) -> str:
    """The origin's envelope page after ``head`` (at most ``PAGE_MAX``, and not past ``until``)."""
    limit = PAGE_MAX if until is None else max(1, min(PAGE_MAX, until - head))
    return f"{envelopes}?start={head + 1}&limit={limit}"


def _drop(ahead: tuple[str, asyncio.Task[Answer]] | None) -> None:
    """Forget a page asked for early (not needed, or the backfill ended): cancel it, and keep its
    error, if any, from being reported as never retrieved."""
    if ahead is not None:
        ahead[1].cancel()
        ahead[1].add_done_callback(lambda t: t.cancelled() or t.exception())


async def verify_landing(
    fed: Federation, wire: bytes, base: str, name: str, position: int | None = None
) -> tuple[Landing, RemoteKey]:
    """A landing envelope from ``base``'s node for ``name``: signed by a key of that host."""
    sealed = unseal(wire)
    if authority(sealed.key_id) != authority(base):
        raise InvalidInput(
            f"the envelope is signed by a key of {authority(sealed.key_id)}, "
            f"not of its origin {authority(base)}"
        )
    key = await fed.directory.key(sealed.key_id)
    try:
        check_signature(sealed, key.public)
    except CorruptObject:
        if not fed.directory.may_refetch(sealed.key_id):
            raise
        key = await fed.directory.key(sealed.key_id, fresh=True)
        check_signature(sealed, key.public)
    return check_landing(sealed, origin=base, repo=name, position=position), key

async def fetch_envelope(fed: Federation, url: str, base: str) -> bytes:
    if authority(url) != authority(base):
        raise InvalidInput(f"the envelope {url} is not on its origin {authority(base)}")
    a = await fed.fetcher.request(
        "GET", url, headers={"Accept": "application/cbor"}, cap=CBOR_CAP
    )
    if a.status != 200:
        raise http_error(a, url)
    return a.body


def key_info(key: RemoteKey) -> dict[str, Any]:
    """What a mirror records about the key its envelopes were verified with."""
    return {"key_id": key.key_id, "public": key.public, "verified": time.time()}


async def remember_actor(store: ObjectStore, key: str, actor: str, inbox: str, envelopes: str) -> None:
    """Keep where a followed repository's actor, inbox and envelope log are (in its following
    record under ``key``) when they changed."""
    data = await store.get_or_none(key)
    if data is None:
        return
    v = decode(data)
    if v.get("actor") != actor or v.get("envelopes") != envelopes:
        v.update(actor=actor, inbox=inbox, envelopes=envelopes)
        await store.put(key, encode(v))

"""The durable outbox and the node key over real stores (embedded and the S3 API server): leases
taken by one replica only, the retry schedule ending in ``_fed/failed/``, the per-peer circuit
breaker through the real sending path (a closed loopback port, then a peer that answers), and a
node key agreed on by replicas that start together and never silently replaced."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fedkit import start_peer
from s3server import free_port

from federation import delivery, status
from federation.identity import IDENTITY_KEY, load_node_key
from federation.service import Federation
from federation.settings import FedSettings
from hif.errors import CorruptObject
from hif.repo import Repo
from hif.store import EmbeddedStore, ObjectStore

PEER = "peer.example"


def test_a_lease_is_taken_by_one_replica_and_expires(
    make_store: Callable[[], ObjectStore],
) -> None:
    async def go() -> None:
        store = make_store()
        try:
            key = await delivery.enqueue(
                store, {"kind": "activity", "peer": PEER}, due=time.time() - 1
            )
            assert await delivery.due_items(store, 10) == [key]
            # eight replicas race for the item: the conditional write lets exactly one have it
            taken = await asyncio.gather(*(delivery.lease(store, key, f"r{i}") for i in range(8)))
            winners = [t for t in taken if t is not None]
            assert len(winners) == 1
            assert await delivery.lease(store, key, "late") is None  # still held
            # the holder crashed: once the lease has run out another replica takes the item
            later = time.time() + delivery.LEASE + 1
            again = await delivery.lease(store, key, "late", now=later)
            assert again is not None and again.value["owner"] == "late"
            # and the crashed holder's finish cannot happen twice: the item is one key
            await delivery.done(store, again)
            assert await delivery.due_items(store, 10, now=later) == []
        finally:
            await store.close()

    asyncio.run(go())


def test_a_failed_try_waits_its_turn_and_the_last_one_ends_in_failed(
    make_store: Callable[[], ObjectStore],
) -> None:
    async def go() -> None:
        store = make_store()
        try:
            key = await delivery.enqueue(store, {"kind": "activity", "peer": PEER})
            for n in (1, 2):
                item = await delivery.lease(store, key, "r")
                assert item is not None
                before = time.time()
                new = await delivery.retry(store, item, f"refused {n}", scale=1.0, tries=3)
                assert new is not None and new != key
                key = new
                (row,) = await status.outbox(store)
                assert row["tries"] == n and row["error"] == f"refused {n}"
                # n**4 + 15 + rand(30)·(n+1) seconds later, not before
                assert before + n**4 + 15 - 1 <= row["due"] <= time.time() + n**4 + 15 + 29 * (n + 1)
                assert await delivery.due_items(store, 10) == []  # not due yet
            item = await delivery.lease(store, key, "r")
            assert item is not None
            assert await delivery.retry(store, item, "refused 3", scale=1.0, tries=3) is None
            assert await status.outbox(store) == []
            (gone,) = await status.failed(store)
            assert gone["error"] == "gave up after 3 tries: refused 3" and gone["peer"] == PEER
        finally:
            await store.close()

    asyncio.run(go())


def _federation(store: ObjectStore, retry_scale: float) -> Federation:
    async def repo_info(name: str) -> dict[str, Any] | None:
        return None

    return Federation(
        store,
        "http://127.0.0.1:1",
        FedSettings(allow_private=("127.0.0.1",), retry_scale=retry_scale, timeout=2.0),
        repo_info=repo_info,
        local_repo=lambda name: Repo(store, name),
        node_key=base64.b64encode(os.urandom(32)).decode(),
    )


def test_circuit_breaker_opens_postpones_without_spending_tries_and_closes(tmp_path: Path) -> None:
    """Five failed sends to a peer that is down open its circuit; an item for it is then postponed to
    the end of the break without a connection or a try; when the peer answers again, the delivery
    goes through and the circuit closes."""
    scale = 0.01  # breaks of 0.6 s, 1.2 s, ...
    port = free_port()  # nothing listens here yet
    peer = f"127.0.0.1:{port}"

    async def go() -> None:
        store = EmbeddedStore(tmp_path / "s", create=True)
        fed = _federation(store, scale)
        await fed.start(worker=False)
        try:
            await delivery.enqueue(
                store,
                {
                    "kind": "activity",
                    "peer": peer,
                    "inbox": f"http://{peer}/ap/inbox",
                    "activity": {"id": "$node/ap/test", "type": "Note", "actor": "$node/ap/node"},
                },
            )

            async def take() -> delivery.Item:
                (k,) = await store.list_page(delivery.OUTBOX, limit=10)
                item = await delivery.lease(store, k, fed.replica)
                assert item is not None
                return item

            for n in range(1, delivery.BREAK_AFTER + 1):
                await fed._send_all(peer, [await take()])
                state = await delivery.peer_state(store, peer)
                assert state["consecutive"] == n and "cannot reach" in state["last_error"]
                assert (delivery.circuit_open(state) is not None) == (n == delivery.BREAK_AFTER)
                (row,) = await status.outbox(store)
                assert row["tries"] == n
            state = await delivery.peer_state(store, peer)
            until = delivery.circuit_open(state)
            assert until is not None
            assert until - state["last_failure"] == pytest.approx(60 * scale)
            (shown,) = await status.peers(store)
            assert shown["circuit"] == "open" and shown["consecutive"] == delivery.BREAK_AFTER

            # while open: postponed to the end of the break, no try spent, no new failure
            await fed._send_all(peer, [await take()])
            (row,) = await status.outbox(store)
            assert row["tries"] == delivery.BREAK_AFTER and row["due"] == pytest.approx(until, abs=0.01)
            assert (await delivery.peer_state(store, peer))["failures"] == delivery.BREAK_AFTER

            # the break ends, the peer is still down: one more try, and a break twice as long
            await asyncio.sleep(max(0.0, until - time.time()) + 0.05)
            await fed._send_all(peer, [await take()])
            state = await delivery.peer_state(store, peer)
            assert state["consecutive"] == delivery.BREAK_AFTER + 1
            assert state["open_until"] - state["last_failure"] == pytest.approx(120 * scale)

            # the peer comes back on its port; after the break the item is delivered, signed
            p = start_peer(port=port)
            try:
                await asyncio.sleep(max(0.0, state["open_until"] - time.time()) + 0.05)
                await fed._send_all(peer, [await take()])
                assert [r.path for r in p.received] == ["/ap/inbox"]
                assert b'"id":"http://127.0.0.1:1/ap/test"' in p.received[0].body  # $node filled
                assert any(k.lower() == "signature" for k, _ in p.received[0].headers)
            finally:
                p.close()
            assert await status.outbox(store) == []
            (shown,) = await status.peers(store)
            assert shown["circuit"] == "closed" and shown["consecutive"] == 0
            assert shown["last_success"] is not None
        finally:
            await fed.stop()
            await store.close()

    asyncio.run(go())


def test_circuit_breaks_are_capped_at_an_hour(tmp_path: Path) -> None:
    async def go() -> None:
        store = EmbeddedStore(tmp_path / "s", create=True)
        try:
            for _ in range(40):
                s = await delivery.peer_failed(store, PEER, "down", 1.0)
            assert s["open_until"] - s["last_failure"] == pytest.approx(3600.0)
            assert s["failures"] == 40 and s["failure_days"] == [int(time.time() // 86400)]
            await delivery.peer_ok(store, PEER)
            assert delivery.circuit_open(await delivery.peer_state(store, PEER)) is None
        finally:
            await store.close()

    asyncio.run(go())


def test_node_key_is_created_once_shared_and_never_replaced(
    make_store: Callable[[], ObjectStore],
) -> None:
    async def go() -> None:
        store = make_store()
        try:
            url = "https://a.example"
            # replicas starting together over an empty store agree on one key
            keys = await asyncio.gather(*(load_node_key(store, url) for _ in range(6)))
            assert len({k.public for k in keys}) == 1
            assert (await load_node_key(store, url)).public == keys[0].public  # a restart
            seed = os.urandom(32)
            configured = await load_node_key(store, url, base64.b64encode(seed).decode())
            assert configured.seed == seed  # configuration wins over the store
            # a damaged stored key stops the node; it is not regenerated over the old one
            await store.put(IDENTITY_KEY, b"\x00damaged")
            with pytest.raises(CorruptObject, match="damaged"):
                await load_node_key(store, url)
            assert await store.get(IDENTITY_KEY) == b"\x00damaged"
        finally:
            await store.close()

    asyncio.run(go())

"""The pure parts of federation: schedule, policy, address checks, envelopes, object ordering."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from federation import delivery
from federation.envelope import Landing, check_landing, check_signature, seal, unseal
from federation.errors import Refused
from federation.identity import NodeKey
from federation.mirror import (
    ENVELOPE_PAGE,
    ENVELOPE_PAGE_BYTES,
    closure,
    envelope_key,
    envelope_pages,
    stored_envelopes,
    verify_object,
)
from federation.net import Fetcher
from federation.settings import FedSettings, authority
from hif.errors import CorruptObject, InvalidInput
from hif.objects import DIR, FILE, Entry, blob_bytes, digest, encode, pack, tree_bytes
from hif.repo import Repo
from hif.store import EmbeddedStore


def test_retry_schedule_spans_about_three_days() -> None:
    table = delivery.schedule_table()
    assert len(table) == delivery.TRIES == 17  # the first try and 16 retries, like Mastodon
    assert 2.7 * 86400 < table[-1] < 2.9 * 86400
    rng = random.Random(1)
    for n in (1, 5, 15):
        d = delivery.retry_delay(n, rng=rng)
        assert n**4 + 15 <= d <= n**4 + 15 + 29 * (n + 1)
    assert delivery.retry_delay(3, 0.01, random.Random(1)) < 2


def test_authority_and_domain_policy() -> None:
    assert authority("https://A.example:443/x") == "a.example"
    assert authority("http://a.example:8000/x") == "a.example:8000"
    with pytest.raises(InvalidInput):
        authority("ftp://a.example/")
    s = FedSettings(block=("bad.example",), allow=())
    assert s.refuses("https://bad.example/x") and s.refuses("https://sub.bad.example/x")
    assert s.refuses("https://notbad.example/x") is None
    allow = FedSettings(allow=("good.example",))
    assert allow.refuses("https://good.example/") is None and allow.refuses("https://other.example/")


@pytest.mark.parametrize("url", ["http://0.0.0.0/", "http://127.0.0.1:1/", "http://10.0.0.1/",
                                 "http://169.254.169.254/latest", "http://[::1]/", "http://192.168.1.1/",
                                 "http://[::ffff:10.0.0.1]/", "http://localhost/"])
def test_private_addresses_are_refused_unless_allowed(url: str) -> None:
    async def go(settings: FedSettings) -> str:
        f = Fetcher(settings)
        try:
            return await f.resolve(url)
        finally:
            await f.close()

    with pytest.raises(Refused):
        asyncio.run(go(FedSettings()))
    if "127.0.0.1" in url or "localhost" in url:
        assert asyncio.run(go(FedSettings(allow_private=("127.0.0.1",)))) == "127.0.0.1"


def test_envelope_signature_and_claims(tmp_path: Path) -> None:
    async def go() -> None:
        store = EmbeddedStore(tmp_path / "s", create=True)
        repo = Repo(store, "acme/api")
        key = NodeKey(b"\x01" * 32, "http://a.example")
        from hif.landing import land
        from hif.session import make_event

        s = await repo.sessions.start("goal", "ana", "human", 0)
        blob = await repo.objects.put_blob(b"x\n")
        await repo.sessions.append(s.id, make_event("write", "ana", "human", 1.0, path="f", kind=FILE,
                                                    blob=blob))
        await land(repo, await repo.sessions.load(s.id))
        from federation.envelope import landing_envelope

        wire = await landing_envelope(repo, key, 1)
        sealed = unseal(wire)
        check_signature(sealed, key.public)
        e = check_landing(sealed, origin="http://a.example", repo="acme/api", position=1)
        assert e.record.sessions[0].session == s.id
        with pytest.raises(InvalidInput):  # replayed into another repository
            check_landing(sealed, origin="http://a.example", repo="acme/other")
        with pytest.raises(InvalidInput):  # or claimed by another origin
            check_landing(sealed, origin="http://b.example", repo="acme/api")
        with pytest.raises(CorruptObject):
            check_signature(sealed, NodeKey(b"\x02" * 32, "http://a.example").public)
        forged = seal(NodeKey(b"\x02" * 32, "http://a.example"), sealed.body)
        with pytest.raises(CorruptObject):
            check_signature(unseal(forged), key.public)
        await store.close()

    asyncio.run(go())


def test_closure_writes_children_before_parents(tmp_path: Path) -> None:
    async def go() -> None:
        store = EmbeddedStore(tmp_path / "s", create=True)
        repo = Repo(store, "acme/api", prefix="mirrors/x/acme/api/")
        b1, b2 = blob_bytes(b"1"), blob_bytes(b"2")
        sub = tree_bytes({"b": Entry(FILE, digest(b2))})
        root = tree_bytes({"a": Entry(FILE, digest(b1)), "d": Entry(DIR, digest(sub))})
        objects = {digest(o): o for o in (b1, b2, sub, root)}

        async def fetch(ids: list[bytes], take: Any) -> None:
            for i in ids:
                stored = pack(objects[i])
                await take(i, stored, *verify_object(stored)[1:])

        # what is left to write comes back in order: the blobs, then trees children before parents
        known: set[bytes] = set()
        order = [key for key, _ in await closure(repo, [digest(root)], fetch, known)]
        assert order == [repo.objects.key(digest(o)) for o in (b1, b2, sub, root)]
        assert known == set(objects)  # what was brought, for the caller's next batch
        for oid in objects:
            assert not await repo.objects.has(oid)  # the caller writes them, with what names them
        await store.close()

    asyncio.run(go())


def test_object_stream_reader_refuses_an_item_larger_than_its_limit() -> None:
    """A hostile origin cannot make a follower buffer without end: an object whose header claims
    more than the limit is refused from the header, whatever length spelling it uses."""
    from hif.errors import RemoteError
    from hif.forge.client import ObjectStreamReader

    oid = bytes(32)
    for head in (b"\x5a" + (1 << 30).to_bytes(4, "big"), b"\x5b" + (1 << 40).to_bytes(8, "big"),
                 b"\x59" + (5000).to_bytes(2, "big")):
        reader = ObjectStreamReader(max_item=4096)
        with pytest.raises(RemoteError, match="at most 4096"):
            reader.feed(b"\x82\x58\x20" + oid + head + b"x" * 10)
    ok = ObjectStreamReader(max_item=4096)
    assert ok.feed(b"\x82\x58\x20" + oid + b"\x43abc") == [(oid, b"abc")]


def test_envelopes_are_kept_in_pages_and_read_back_by_position(tmp_path: Path) -> None:
    """A mirror keeps envelopes a page per store key (by count and by bytes, keyed by the last
    position), and reads any range back from pages, from the one-envelope keys of mirrors written
    before pages, and across pages that racing replicas wrote overlapping; what it lacks is absent,
    and junk under the prefix is ignored."""

    def landing(position: int, size: int) -> Landing:
        wire = encode({"key": "k", "sig": bytes(64), "payload": position.to_bytes(4, "big") * (size // 4)})
        return Landing("http://a.example", "acme/api", position, b"", None, {}, wire)  # type: ignore[arg-type]

    async def go() -> None:
        store = EmbeddedStore(tmp_path / "s", create=True)
        repo = Repo(store, "acme/api", prefix="mirrors/a.example/acme/api/")
        small = [landing(p, 100) for p in range(1, 201)]
        pages = envelope_pages(repo, small)
        assert [k for k, _ in pages] == [envelope_key(repo, p) for p in (64, 128, 192, 200)]
        assert ENVELOPE_PAGE == 64
        big = [landing(p, 100 << 10) for p in range(201, 211)]
        by_bytes = envelope_pages(repo, big)  # a page ends after the envelope that reaches the bytes
        per_page = -(-ENVELOPE_PAGE_BYTES // len(big[0].wire))
        assert len(by_bytes) == -(-len(big) // per_page)
        await store.create_all(pages + by_bytes)
        # a mirror written before pages: one envelope per key; a racing replica's overlapping page
        await store.put(envelope_key(repo, 211), landing(211, 100).wire)
        await store.put(envelope_key(repo, 150), encode({"first": 140, "envelopes": [landing(p, 100).wire
                                                                                        for p in range(140, 151)]}))
        await store.put(envelope_key(repo, 213), b"junk")
        await store.put(f"{repo.prefix}envelopes/notaposition", b"junk")
        everything = {e.position: e.wire for e in small + big + [landing(211, 100)]}
        for start, stop in [(1, 211), (1, 1), (60, 70), (64, 65), (140, 150), (199, 203), (205, 211), (190, 230)]:
            got = await stored_envelopes(repo, start, stop)
            assert got == {p: w for p, w in everything.items() if start <= p <= stop}, (start, stop)
        assert await stored_envelopes(repo, 212, 220) == {}
        await store.close()

    asyncio.run(go())

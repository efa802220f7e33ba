"""A hostile origin during a backfill: every page it serves is checked before anything is stored.

A real node A holds a public repository of twelve landings. The origin the follower backfills from
is a small server of this test on loopback (H): it holds its own node key, serves its actor
document, and re-signs A's envelopes as its own (origin H), in pages of at most four, and passes
object requests through to A's API. That is an honest origin until told to cheat: a forged, re-
signed, reordered, cut, padded or oversized page, an envelope for another repository or position,
or an object that is not what it is asked for. The follower is the real ``backfill`` of
``federation`` on an embedded store, in this process, with chunks of three positions (so pages
are applied in several batches, each fetched while the one before is written).

Whatever is refused stores nothing: a page refused from its first envelope leaves the mirror with
its sync status alone; a refusal further on keeps what verified before it, and not one key of the
refused position or after it.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cbor2
import httpx
import pytest
from fedkit import QuietHandler, land, make_repo, node_actor, serve, start_node
from s3server import free_port

from federation import mirror
from federation.backfill import backfill
from federation.envelope import seal, unseal
from federation.identity import NodeKey
from federation.mirror import mirror_prefix, stored_envelopes
from federation.net import CBOR_CAP
from federation.service import Federation
from federation.settings import FedSettings, authority
from hif.errors import HifError
from hif.mainline import LandingRecord, log_key
from hif.objects import blob_bytes, pack
from hif.repo import Repo
from hif.store import EmbeddedStore

REPO = "acme/hostile"
LANDINGS = 12
PAGE = 4  # envelopes per page the hostile origin serves


@dataclass
class Origin:
    """The hostile origin H: ``cheat(page_start, wires) -> wires or raw bytes`` alters a page,
    ``tamper`` names an object id whose bytes it replaces in object streams."""

    a_url: str
    key: NodeKey
    server: ThreadingHTTPServer
    cheat: Callable[[int, list[bytes]], list[bytes] | bytes] | None = None
    tamper: bytes | None = None
    oversized: bool = False
    records: dict[int, bytes] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.key.url

    def resign(self, wire: bytes, **change: Any) -> bytes:
        """One of A's envelopes as H's own, signed with H's key (``change``: other claims)."""
        body = {**unseal(wire).body, "origin": self.url, **change}
        return seal(self.key, body)


def start_origin(a_url: str) -> Origin:
    port = free_port()
    key = NodeKey(os.urandom(32), f"http://127.0.0.1:{port}")
    origin: Origin

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            if parts.path == "/ap/node":
                return self._send(200, node_actor(key), "application/activity+json")
            if parts.path != f"/ap/repos/{REPO}/envelopes":
                return self._send(404, b"{}", "application/json")
            start = int(parse_qs(parts.query)["start"][0])
            real = cbor2.loads(httpx.get(f"{origin.a_url}{self.path}", timeout=30).content)
            wires = [origin.resign(w) for w in real["envelopes"][:PAGE]]
            end = start + len(wires) - 1
            page: list[bytes] | bytes = wires
            if origin.cheat is not None and wires:
                page = origin.cheat(start, wires)
            if isinstance(page, bytes):  # cut or padded bytes, sent as they are
                return self._send(200, page, "application/cbor")
            body = cbor2.dumps({"head": real["head"], "envelopes": page,
                                "next": end + 1 if end < real["head"] else None})
            if origin.oversized:  # announces more than a follower reads: refused before the body
                self.send_response(200)
                self.send_header("Content-Type", "application/cbor")
                self.send_header("Content-Length", str(CBOR_CAP + 1))
                self.end_headers()
                self.wfile.write(body)
                return None
            return self._send(200, body, "application/cbor")

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            a = httpx.post(f"{origin.a_url}{self.path}", content=body, timeout=30,
                           headers={k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")})
            out = a.content
            if origin.tamper is not None and self.path.endswith("/objects/stream") and a.status_code == 200:
                out = swap_object(out, origin.tamper)
            self._send(a.status_code, out, a.headers.get("content-type", "application/cbor"))

    origin = Origin(a_url, key, serve(Handler, port))
    return origin


def swap_object(stream: bytes, oid: bytes) -> bytes:
    """An ``objects/stream`` answer with the bytes of ``oid`` replaced by another blob's."""
    fp = io.BytesIO(stream)
    out = []
    while fp.tell() < len(stream):
        item = cbor2.CBORDecoder(fp).decode()
        if isinstance(item, list) and item[0] == oid:
            item = [oid, pack(blob_bytes(b"not what was asked for\n"))]
        out.append(cbor2.dumps(item))
    return b"".join(out)


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    a = start_node(tmp_path_factory.mktemp("hostile-backfill"))
    try:
        make_repo(a, REPO)
        for i in range(1, LANDINGS + 1):
            land(a, REPO, {f"dir{i % 3}/f{i}.txt": f"{i}\n"}, f"landing {i}")
        h = start_origin(a.url)
        page = cbor2.loads(httpx.get(f"{a.url}/ap/repos/{REPO}/envelopes?start=1&limit=100").content)
        h.records = {p: unseal(w).body["record"] for p, w in enumerate(page["envelopes"], 1)}
        assert len(h.records) == LANDINGS
        try:
            yield h
        finally:
            h.server.shutdown()
            h.server.server_close()
    finally:
        a.stop()


@pytest.fixture(autouse=True)
def honest_again(origin: Origin, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(mirror, "CHUNK", 3)
    yield
    origin.cheat, origin.tamper, origin.oversized = None, None, False


def run_backfill(origin: Origin, root: Path) -> tuple[HifError | None, dict[str, bytes], dict[int, bytes]]:
    """Backfill an empty follower from ``origin``: (the error, every key of the mirror with its
    value, the envelopes kept by position)."""

    async def go() -> tuple[HifError | None, dict[str, bytes], dict[int, bytes]]:
        store = EmbeddedStore(root, create=True)
        fed = Federation(store, "http://127.0.0.1:9", FedSettings.from_env(
            {"MICELIO_FEDERATION_ALLOW_PRIVATE": "127.0.0.1"}), repo_info=None,  # type: ignore[arg-type]
            local_repo=lambda name: Repo(store, name))
        await fed.start(worker=False)
        host = authority(origin.url)
        f = {"host": host, "name": REPO, "url": f"{origin.url}/{REPO}", "base": origin.url,
             "envelopes": f"{origin.url}/ap/repos/{REPO}/envelopes"}
        error = None
        try:
            await backfill(fed, f)
        except HifError as e:
            error = e
        finally:
            await fed.stop()
        prefix = mirror_prefix(host, REPO)
        keys = [k async for k in store.iter_keys(prefix)]
        held = dict(zip(keys, await store.get_many(keys), strict=True))
        envelopes = await stored_envelopes(Repo(store, REPO, prefix=prefix), 1, LANDINGS)
        await store.close()
        return error, {k: v for k, v in held.items() if v is not None}, envelopes

    return asyncio.run(go())


def test_an_honest_origin_is_mirrored_exactly(origin: Origin, tmp_path: Path) -> None:
    error, held, envelopes = run_backfill(origin, tmp_path / "f")
    assert error is None
    prefix = mirror_prefix(authority(origin.url), REPO)
    for p, record in origin.records.items():
        assert held[log_key(prefix, p)] == record
        assert unseal(envelopes[p]).body["position"] == p
    assert log_key(prefix, LANDINGS + 1) not in held


def _flip(wire: bytes, where: str) -> bytes:
    outer = cbor2.loads(wire)
    b = bytearray(outer[where])
    b[len(b) // 2] ^= 1
    return cbor2.dumps({**outer, where: bytes(b)})


def first_page_cheats(origin: Origin) -> dict[str, Callable[[int, list[bytes]], list[bytes] | bytes]]:
    """Ways to spoil a page from its first envelope on."""
    other = NodeKey(os.urandom(32), origin.url)  # H's URL, not H's key
    a_key = NodeKey(os.urandom(32), origin.a_url)  # a key of another host

    def first(change: Callable[[bytes], bytes]) -> Callable[[int, list[bytes]], list[bytes]]:
        return lambda start, wires: [change(wires[0]), *wires[1:]]

    return {
        "signature flipped": first(lambda w: _flip(w, "sig")),
        "payload flipped": first(lambda w: _flip(w, "payload")),
        "signed by another key": first(lambda w: seal(other, unseal(w).body)),
        "signed by a key of another host": first(lambda w: seal(a_key, unseal(w).body)),
        "another repository": first(lambda w: origin.resign(w, repo="acme/other")),
        "another position": first(lambda w: origin.resign(w, position=unseal(w).body["position"] + 1)),
        "another origin": first(lambda w: origin.resign(w, origin=origin.a_url)),
        "a record of another position": lambda start, wires: [
            origin.resign(wires[0], record=unseal(wires[1]).body["record"]), *wires[1:]],
        "reordered": lambda start, wires: [wires[1], wires[0], *wires[2:]],
        "the first left out": lambda start, wires: wires[1:],
        "not bytes": lambda start, wires: [7, *wires[1:]],  # type: ignore[list-item]
        "cut short": lambda start, wires: cbor2.dumps({"envelopes": wires, "next": None})[:-40],
        "bytes after the page": lambda start, wires: cbor2.dumps({"envelopes": wires, "next": None}) + b"\x00",
        "not a page": lambda start, wires: cbor2.dumps(wires),
    }


CHEATS = ["signature flipped", "payload flipped", "signed by another key", "signed by a key of another host",
          "another repository", "another position", "another origin", "a record of another position", "reordered",
          "the first left out", "not bytes", "cut short", "bytes after the page", "not a page", "oversized"]


@pytest.mark.parametrize("cheat", CHEATS)
def test_a_page_spoiled_from_its_first_envelope_stores_nothing(origin: Origin, tmp_path: Path, cheat: str) -> None:
    if cheat == "oversized":
        origin.oversized = True
    else:
        origin.cheat = first_page_cheats(origin)[cheat]
    error, held, envelopes = run_backfill(origin, tmp_path / "f")
    assert error is not None and str(error), cheat
    prefix = mirror_prefix(authority(origin.url), REPO)
    assert set(held) <= {prefix + "sync"}, (cheat, sorted(held))
    assert envelopes == {}


@pytest.mark.parametrize("bad", [5, 7, 11])
def test_a_later_forged_envelope_keeps_what_verified_before_it_and_nothing_after(
    origin: Origin, tmp_path: Path, bad: int
) -> None:
    """Pages of four, chunks of three: a forgery on a later page (its first envelope or inside it)
    leaves exactly the positions before it, their objects and envelopes, and no key of it or after."""

    def cheat(start: int, wires: list[bytes]) -> list[bytes]:
        return [_flip(w, "sig") if start + i == bad else w for i, w in enumerate(wires)]

    origin.cheat = cheat
    error, held, envelopes = run_backfill(origin, tmp_path / "f")
    assert error is not None
    prefix = mirror_prefix(authority(origin.url), REPO)
    for p in range(1, LANDINGS + 1):
        assert (log_key(prefix, p) in held) == (p < bad), (bad, p)
    assert sorted(envelopes) == list(range(1, bad))
    assert_objects_of(held, prefix, origin, range(1, bad), range(bad, LANDINGS + 1))


@pytest.mark.parametrize("bad", [1, 4, 6, 11])
def test_an_object_that_is_not_what_was_asked_for_stops_the_mirror_at_its_position(
    origin: Origin, tmp_path: Path, bad: int
) -> None:
    """The origin answers the object stream with other bytes for the file landed at ``bad``: the
    positions before it land (the batch is retried one position at a time), the error names the
    position and the hash mismatch, and nothing of it or after is stored."""
    record = LandingRecord.from_bytes(origin.records[bad], bad)
    origin.tamper = next(e.oid for s in record.sessions for e in s.changes.values() if e is not None)
    error, held, _ = run_backfill(origin, tmp_path / "f")
    assert error is not None and f"position {bad}" in str(error) and "hash" in str(error), error
    prefix = mirror_prefix(authority(origin.url), REPO)
    for p in range(1, LANDINGS + 1):
        assert (log_key(prefix, p) in held) == (p < bad), (bad, p)
    assert f"{prefix}objects/{origin.tamper.hex()}" not in held
    assert_objects_of(held, prefix, origin, range(1, bad), range(bad, LANDINGS + 1))


def assert_objects_of(held: dict[str, bytes], prefix: str, origin: Origin, kept: range, refused: range) -> None:
    """The files and root trees of positions ``kept`` are stored; those only ``refused`` positions
    name are not, nor their sessions' state markers."""
    def named(positions: range) -> tuple[set[bytes], set[str]]:
        oids, sessions = set(), set()
        for p in positions:
            record = LandingRecord.from_bytes(origin.records[p], p)
            oids.add(record.tree)
            for s in record.sessions:
                sessions.add(s.session)
                oids |= {e.oid for e in s.changes.values() if e is not None}
        return oids, sessions

    kept_oids, kept_sessions = named(kept)
    refused_oids, refused_sessions = named(refused)
    for oid in kept_oids:
        assert f"{prefix}objects/{oid.hex()}" in held
    for oid in refused_oids - kept_oids:
        assert f"{prefix}objects/{oid.hex()}" not in held
    for sid in kept_sessions:
        assert f"{prefix}sessions/{sid}/state" in held
    for sid in refused_sessions:
        assert f"{prefix}sessions/{sid}/state" not in held

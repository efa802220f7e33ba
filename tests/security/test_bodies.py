"""Memory and disk an anonymous caller can take (issue 14, items 5-7 and 12), through a real node.

Bodies are cut at their route's limit while they arrive (not after buffering them), a zstd frame
that expands past the limits is refused without expanding it, a CBOR body must be exactly one item,
a refused request stores nothing, and event times and sequence numbers must be real ones.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import cbor2
import pytest
from abuse_kit import (
    MiB,
    reset_peak,
    send_chunked,
    send_length,
    status_kib,
    together,
    zstd_bomb,
)
from forge import Forge

from hif.objects import blob_bytes, digest, encode, pack

BIG = 60 * MiB
# what a refused body may have cost the node, with room for what the kernel's socket buffers take
# in before the node answers; a node that buffers the body takes 60 MiB per request
MAX_TAKEN = 16 * MiB
MAX_GROWTH_KIB = 32 * 1024  # resident growth allowed for a whole flood of eight


def _blob(content: bytes) -> tuple[bytes, bytes]:
    canonical = blob_bytes(content)
    return digest(canonical), pack(canonical)


def _write(path: str, oid: bytes) -> dict[str, object]:
    return {"type": "write", "path": path, "kind": "f", "blob": oid}


def _repo(forge: Forge, name: str) -> str:
    """The API path of repository ``name``, created unless an earlier test did (one node per module)."""
    r = forge.api("POST", "/api/v1/repos", forge.admin_token, {"name": name})
    assert r.status_code in (201, 409), r.data
    return f"/api/v1/repos/{name}"


def _store_keys(forge: Forge, prefix: str) -> set[str]:
    """Keys of the node's embedded store under ``prefix``, read from the disk."""
    root = Path(forge.store) / "data" / prefix
    return {str(p.relative_to(Path(forge.store) / "data")) for p in root.rglob("*") if p.is_file()} \
        if root.exists() else set()


def _pid(forge: Forge) -> int:
    return forge.procs[0].pid


# -- bodies ----------------------------------------------------------------------------------------

MULTIPART_HEAD = b'--xyz\r\nContent-Disposition: form-data; name="f"; filename="f"\r\n\r\n'
ROUTES = [  # (path, content type, body head, needs the admin token): forms, the API's routes
    ("/login", "application/x-www-form-urlencoded", b"user=", False),
    ("/account/tokens", "application/x-www-form-urlencoded", b"name=", False),
    ("/login", "multipart/form-data; boundary=xyz", MULTIPART_HEAD, False),
    ("/api/v1/login", "application/cbor", b"", False),
    ("/api/v1/repos", "application/cbor", b"", True),
]


@pytest.fixture
def forge(shared_forge: Forge) -> Forge:
    return shared_forge


@pytest.mark.parametrize(("path", "ctype", "head", "token"), ROUTES)
def test_a_chunked_body_is_cut_at_the_routes_limit(forge: Forge, path: str, ctype: str, head: bytes,
                                                    token: bool) -> None:
    headers = {"Authorization": f"Bearer {forge.admin_token}"} if token else {}
    got = send_chunked(forge.url, path, BIG, content_type=ctype, headers=headers, head=head)
    assert got.status == 413, got
    assert got.sent < MAX_TAKEN, f"the node read {got.sent >> 20} MiB before refusing"
    assert forge.api("GET", "/healthz").status_code == 200


@pytest.mark.parametrize("path", ["/login", "/account/tokens", "/logout"])
def test_a_declared_length_over_the_limit_is_refused_before_reading(forge: Forge, path: str) -> None:
    """A Content-Length over the limit is answered at once: the node does not wait for the body."""
    import socket

    host, port = forge.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {2 * MiB}\r\n"
                   f"Authorization: Bearer {forge.admin_token}\r\n"
                   "Content-Type: application/x-www-form-urlencoded\r\n\r\n").encode())
        s.sendall(b"a=" + b"b" * 1000)  # a little of it; the rest never comes
        answer = s.recv(200)
    assert answer.split(b"\r\n", 1)[0].split()[1] == b"413", answer


def test_a_flood_of_oversized_bodies_costs_little_memory(forge: Forge) -> None:
    """Eight anonymous callers at once, each sending 60 MiB chunked to a form, the API's log-in and
    a write route: the node's peak resident memory grows by a few MiB and comes back."""
    pid = _pid(forge)
    repo = _repo(forge, "admin/flood")
    targets = [("/login", "application/x-www-form-urlencoded"), ("/api/v1/login", "application/cbor"),
               (f"{repo}/objects/put", "application/cbor")]
    time.sleep(0.5)
    idle = status_kib(pid, "VmRSS")
    reset_peak(pid)
    results = together(8 * len(targets), lambda i: send_chunked(
        forge.url, targets[i % len(targets)][0], BIG, content_type=targets[i % len(targets)][1]))
    peak = status_kib(pid, "VmHWM")
    assert all(r.status in (401, 413) for r in results), results  # type: ignore[attr-defined]
    assert peak - idle < MAX_GROWTH_KIB, f"grew {(peak - idle) >> 10} MiB over {idle >> 10} MiB idle"
    assert forge.api("GET", "/healthz").status_code == 200


@pytest.mark.parametrize("item", [b"\x80", b"\xa0", b"\x41\x00", b"\xf9\x00\x00", b"\xc1\x80"],
                         ids=["lists", "maps", "bytes", "floats", "tagged"])
@pytest.mark.parametrize(("route", "limit"), [("objects/stream", 4 * MiB), ("objects/have", MiB)])
def test_a_body_of_millions_of_tiny_items_is_refused_before_decoding(forge: Forge, item: bytes,
                                                                      route: str, limit: int) -> None:
    """Each CBOR item becomes a Python object (an empty list: 56 bytes for one byte sent): an
    anonymous body of a million of them is refused by count, before any is built."""
    repo = _repo(forge, "admin/items")
    n = (limit - 64) // len(item)
    body = b"\xa1\x63ids\x9a" + n.to_bytes(4, "big") + item * n
    pid = _pid(forge)
    idle = status_kib(pid, "VmRSS")
    reset_peak(pid)
    statuses = together(2, lambda _: send_length(forge.url, f"{repo}/{route}", body))
    assert statuses == [413] * 2
    assert status_kib(pid, "VmHWM") - idle < MAX_GROWTH_KIB


# -- decompression bombs ---------------------------------------------------------------------------

BOMBS = [
    pytest.param(zstd_bomb(1 << 30), id="1GiB-undeclared"),
    pytest.param(zstd_bomb(1 << 30, declare=True), id="1GiB-declared"),
    pytest.param(zstd_bomb(200 * MiB, kind=b"tree"), id="tree-200MiB"),
    pytest.param(zstd_bomb(8 * MiB), id="ratio-8MiB"),  # small, but no real content compresses so
]


@pytest.mark.parametrize("bomb", BOMBS)
def test_a_decompression_bomb_is_refused_cheaply(forge: Forge, bomb: bytes) -> None:
    assert len(bomb) < 256 * 1024
    repo = _repo(forge, "admin/bombs")
    pid = _pid(forge)
    before = _store_keys(forge, "repos/admin/bombs/objects")
    idle = status_kib(pid, "VmRSS")
    reset_peak(pid)
    t = forge.admin_token
    r = forge.api("POST", f"{repo}/objects/put", t, {"objects": [bomb]})
    assert r.status_code == 413 and "expands" in r.data["message"], r.data
    ida, sa = _blob(b"a\n")
    r = forge.api("POST", f"{repo}/land", t, {"goal": "bomb", "objects": [sa, bomb],
                                               "events": [_write("a.txt", ida)]})
    assert r.status_code == 413, r.data
    assert status_kib(pid, "VmHWM") - idle < MAX_GROWTH_KIB
    assert _store_keys(forge, "repos/admin/bombs/objects") == before  # nothing kept


def test_a_bomb_in_the_store_is_an_error_not_a_crash(forge: Forge) -> None:
    """Stored data written by others is hostile too: a bomb placed in the store where a file's blob
    should be is refused when read (422), without expanding it."""
    repo = _repo(forge, "admin/stored")
    t = forge.admin_token
    ida, sa = _blob(b"hello\n")
    assert forge.api("POST", f"{repo}/land", t, {"goal": "g", "objects": [sa],
                                                  "events": [_write("a.txt", ida)]}).status_code == 200
    (Path(forge.store) / "data" / f"repos/admin/stored/objects/{ida.hex()}").write_bytes(zstd_bomb(1 << 30))
    pid = _pid(forge)
    idle = status_kib(pid, "VmRSS")
    reset_peak(pid)
    page = forge.api("GET", "/admin/stored/blob/a.txt")
    raw = forge.api("GET", "/admin/stored/raw/a.txt")
    assert page.status_code == 422 and raw.status_code == 422, (page.status_code, raw.status_code)
    assert status_kib(pid, "VmHWM") - idle < MAX_GROWTH_KIB


# -- one CBOR item, nothing after it ---------------------------------------------------------------


@pytest.mark.parametrize("tail", [b"\x00", b"\xff", b"\xa0", b"garbage", encode({"name": "x/y"})])
def test_bytes_after_the_cbor_body_are_refused(forge: Forge, tail: bytes) -> None:
    body = cbor2.dumps({"name": "admin/trailing"}) + tail
    status = send_length(forge.url, "/api/v1/repos", body,
                         headers={"Authorization": f"Bearer {forge.admin_token}"})
    assert status == 400
    assert forge.api("GET", "/api/v1/repos/admin/trailing", forge.admin_token).status_code == 404


@pytest.mark.parametrize("tail", [b"\x00", b"\xf6", b"junk"])
def test_bytes_after_an_objects_cbor_are_refused(forge: Forge, tail: bytes) -> None:
    repo = _repo(forge, "admin/objtail")
    before = _store_keys(forge, "repos/admin/objtail/objects")
    stored = b"\x00" + blob_bytes(b"x") + tail
    r = forge.api("POST", f"{repo}/objects/put", forge.admin_token, {"objects": [stored]})
    assert r.status_code == 422, r.data
    assert _store_keys(forge, "repos/admin/objtail/objects") == before


# -- a refused request stores nothing --------------------------------------------------------------


@pytest.mark.parametrize("length", [1001, 5000, 100_000])
def test_a_refused_repository_leaves_no_meta(forge: Forge, length: int) -> None:
    name = f"admin/wordy{length}"
    r = forge.api("POST", "/api/v1/repos", forge.admin_token, {"name": name, "description": "d" * length})
    assert r.status_code == 400, r.data
    assert _store_keys(forge, f"repos/{name}") == set()
    r = forge.api("POST", "/api/v1/repos", forge.admin_token, {"name": name})
    assert r.status_code == 201, r.data  # and the name is still free


BAD_EVENTS = [
    {"type": "say", "text": "hi", "time": math.nan},
    {"type": "shout", "text": "hi"},
    {"type": "say", "text": 7},
    {"type": "checkpoint", "note": "n", "tree": b"\x01" * 32, "iteration": 1},  # a missing object
    {"type": "say", "text": "hi", "time": -5.0},
]


@pytest.mark.parametrize("bad", BAD_EVENTS, ids=lambda e: str(e.get("type")) + str(e.get("time", "")))
def test_a_refused_landing_keeps_no_objects(forge: Forge, bad: dict[str, object]) -> None:
    repo = _repo(forge, "admin/landing")
    before = _store_keys(forge, "repos/admin/landing/objects")
    ida, sa = _blob(b"a " + os.urandom(8))
    idb, sb = _blob(b"b " + os.urandom(8))
    r = forge.api("POST", f"{repo}/land", forge.admin_token, {
        "goal": "refused", "objects": [sa, sb], "events": [_write("a.txt", ida), bad]})
    assert r.status_code in (400, 422), r.data
    assert _store_keys(forge, "repos/admin/landing/objects") == before
    missing = forge.api("POST", f"{repo}/objects/have", forge.admin_token, {"ids": [ida, idb]})
    assert missing.data["missing"] == [ida, idb]


# -- event times and sequence numbers --------------------------------------------------------------

BAD_TIMES = [math.nan, math.inf, -math.inf, -1.0, -1e9, time.time() + 3 * 86400, 32503680000.0,
             10**30, 1e308]


@pytest.mark.parametrize("when", BAD_TIMES, ids=repr)
def test_absurd_event_times_are_refused(forge: Forge, when: float) -> None:
    repo = _repo(forge, "admin/times")
    t = forge.admin_token
    sid = forge.api("POST", f"{repo}/sessions", t, {"goal": "g"}).data["id"]
    r = forge.api("POST", f"{repo}/sessions/{sid}/events", t,
                  {"events": [{"type": "say", "text": "hi", "time": when}]})
    assert r.status_code == 400, r.data
    r = forge.api("POST", f"{repo}/land", t, {"goal": "g", "events": [{"type": "say", "text": "x",
                                                                          "time": when}]})
    assert r.status_code == 400, r.data
    events = forge.api("GET", f"{repo}/sessions/{sid}", t).data["events"]
    assert [e["type"] for e in events] == ["start"]
    ok = forge.api("POST", f"{repo}/sessions/{sid}/events", t,
                   {"events": [{"type": "say", "text": "hi", "time": time.time() - 3600}]})
    assert ok.status_code == 200, ok.data


@pytest.mark.parametrize("seq", [100_000_000, 10**12, 2**64])
def test_sequence_numbers_beyond_the_key_width_are_refused(forge: Forge, seq: int) -> None:
    repo = _repo(forge, "admin/seqs")
    t = forge.admin_token
    sid = forge.api("POST", f"{repo}/sessions", t, {"goal": "g"}).data["id"]
    r = forge.api("POST", f"{repo}/sessions/{sid}/events", t,
                  {"events": [{"type": "say", "text": "hi"}], "next_seq": seq})
    assert r.status_code == 400, r.data
    assert _store_keys(forge, f"repos/admin/seqs/sessions/{sid}/events") == \
        {f"repos/admin/seqs/sessions/{sid}/events/00000000"}

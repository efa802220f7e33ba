"""Signed envelopes: what a node vouches for, in canonical CBOR, signed with its Ed25519 key.

Wire form: ``{"payload": bytes, "sig": bytes, "key": key id}``; the signature covers a domain tag
and the payload, so it cannot be confused with any other signature the key makes (HTTP requests).

A **landing envelope** names its origin node, its repository and its position, and carries the
landing record's exact bytes and the canonical bytes of the session snapshot(s) it lands (several
under group landing), so it cannot be replayed into another repository or position and a follower
can check every byte against the record. An **offer bundle** carries an open session's snapshot,
its changes with their base versions, and every object they refer to (see ``federation.offers``).
Ed25519 is deterministic: the origin signs again on demand instead of storing signatures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from federation.identity import NodeKey, verify
from federation.settings import authority
from hif.errors import CorruptObject, InvalidInput, NotFound
from hif.mainline import LandingRecord, log_key
from hif.objects import decode, digest, encode
from hif.repo import Repo

DOMAIN = b"micelio-envelope-v1\x00"
PAGE = 100  # envelopes per page of a repository's envelope log when a request names no limit
PAGE_MAX = 2000  # envelopes a page holds at most (what a backfill asks for) ...
PAGE_BYTES = 1 << 20  # ... and bytes: a page ends after the envelope that reaches this many


@dataclass(frozen=True)
class Sealed:
    """A parsed envelope whose signature is not checked yet."""

    body: dict[str, Any]
    payload: bytes
    sig: bytes
    key_id: str
    wire: bytes


def seal(key: NodeKey, body: dict[str, Any]) -> bytes:
    payload = encode(body)
    return encode({"payload": payload, "sig": key.sign(DOMAIN + payload), "key": key.key_id})


def unseal(wire: bytes) -> Sealed:
    """Parse the wire form (bounded shapes only); the caller checks the signature with the key."""
    try:
        outer = decode(wire)
        payload, sig, key_id = outer["payload"], outer["sig"], outer["key"]
        if not (
            isinstance(payload, bytes)
            and isinstance(sig, bytes)
            and len(sig) == 64
            and isinstance(key_id, str)
        ):
            raise TypeError
        body = decode(payload)
        if not isinstance(body, dict) or body.get("v") != 1:
            raise TypeError
    except (CorruptObject, KeyError, TypeError):
        raise CorruptObject("malformed envelope") from None
    return Sealed(body, payload, sig, key_id, wire)


def check_signature(sealed: Sealed, public: bytes) -> None:
    if not verify(public, DOMAIN + sealed.payload, sealed.sig):
        raise CorruptObject("the envelope's signature does not verify (tampered or wrong key)")


# -- landing envelopes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Landing:
    """A verified landing envelope."""

    origin: str
    repo: str
    position: int
    record_bytes: bytes
    record: LandingRecord
    snapshots: dict[bytes, bytes]  # snapshot id -> canonical bytes
    wire: bytes


async def landing_envelope(repo: Repo, key: NodeKey, position: int) -> bytes:
    """Sign the landing at ``position`` of a local repository."""
    try:
        record_bytes = await repo.store.get(log_key(repo.prefix, position))
    except NotFound:
        raise NotFound(f"no landing at position {position}") from None
    record = LandingRecord.from_bytes(record_bytes, position)
    snapshots = [await repo.objects.get_canonical(s.snapshot) for s in record.sessions]
    return seal(
        key,
        {
            "v": 1,
            "kind": "landing",
            "origin": key.url,
            "repo": repo.name,
            "position": position,
            "record": record_bytes,
            "snapshots": snapshots,
        },
    )


def check_landing(
    sealed: Sealed, *, origin: str, repo: str, position: int | None = None
) -> Landing:
    """The envelope's claims, checked against what the receiver expects (after the signature)."""
    b = sealed.body
    try:
        if b.get("kind") != "landing":
            raise InvalidInput("not a landing envelope")
        if not isinstance(b["origin"], str) or authority(b["origin"]) != authority(origin):
            raise InvalidInput(f"the envelope's origin {b['origin']!r} is not {origin}")
        if b["repo"] != repo:
            raise InvalidInput(f"the envelope is for repository {b['repo']!r}, not {repo}")
        pos = b["position"]
        if not isinstance(pos, int) or isinstance(pos, bool) or pos < 1:
            raise InvalidInput("the envelope's position is invalid")
        if position is not None and pos != position:
            raise InvalidInput(f"the envelope claims position {pos}, expected {position}")
        record_bytes = b["record"]
        if not isinstance(record_bytes, bytes):
            raise InvalidInput("the envelope's record is not bytes")
        record = LandingRecord.from_bytes(record_bytes, pos)
        snaps: dict[bytes, bytes] = {}
        for canonical in b["snapshots"]:
            value = decode(canonical)
            if not (
                isinstance(value, list)
                and len(value) == 2
                and value[0] == "snapshot"
                and isinstance(value[1], dict)
            ):
                raise CorruptObject("an envelope snapshot is not a snapshot object")
            snaps[digest(canonical)] = canonical
        if set(snaps) != {s.snapshot for s in record.sessions}:
            raise CorruptObject("the envelope's snapshots do not match its record (hash mismatch)")
    except (KeyError, TypeError):
        raise CorruptObject("malformed landing envelope") from None
    return Landing(b["origin"], repo, pos, record_bytes, record, snaps, sealed.wire)

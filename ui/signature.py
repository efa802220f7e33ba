"""Whether a landing record's node signature verifies.

A node signs its own landings on demand (Ed25519 is deterministic, so nothing is stored): the page
builds the very envelope followers receive and checks it with the node's public key, and checks that
it carries the record shown and intact session snapshots. A mirror keeps the origin's signed envelope
for every position and the page checks it again (``federation.status.mirror_positions``).
"""

from __future__ import annotations

from dataclasses import dataclass

from federation import status as federation_status
from federation.envelope import check_landing, check_signature, landing_envelope, unseal
from federation.identity import NodeKey
from hif.errors import HifError
from hif.mainline import LandingRecord
from hif.repo import Repo
from hif.store.base import ObjectStore


@dataclass(frozen=True)
class Verdict:
    """``state`` is ``unsigned``, ``verified`` or ``failed``; ``detail`` says by whom or why."""

    state: str
    detail: str = ""


async def verify_record(record: LandingRecord, *, store: ObjectStore | None = None,
                        mirror: tuple[str, str] | None = None, repo: Repo | None = None,
                        key: NodeKey | None = None) -> Verdict:
    """Check the origin's signature on a mirrored record (``mirror`` = (host, owner/name)), or this
    node's signature (``key``) on a record of its own ``repo``. A badge never claims more than was
    verified."""
    if mirror is not None and store is not None:
        return await verify_mirrored(store, mirror[0], mirror[1], record.position)
    if repo is None or key is None:
        return Verdict("unsigned", "federation is not running on this node, so nothing signs its landings")
    try:
        sealed = unseal(await landing_envelope(repo, key, record.position))
        check_signature(sealed, key.public)
        landing = check_landing(sealed, origin=key.url, repo=repo.name, position=record.position)
        if landing.record != record:
            return Verdict("failed", "the signed record differs from the one shown")
    except HifError as e:  # a missing or damaged snapshot, a record that does not parse
        return Verdict("failed", str(e))
    return Verdict("verified", f"signed by {sealed.key_id}")


async def verify_mirrored(store: ObjectStore, host: str, name: str, position: int) -> Verdict:
    """The origin's stored envelope for ``position`` of a mirror, checked again (three reads)."""
    rows = await federation_status.mirror_positions(store, host, name, position, 1)
    if rows and rows[0]["verified"]:
        return Verdict("verified", f"signed by {rows[0]['key_id']}")
    return Verdict("failed", (rows[0]["error"] if rows else None) or "no signed envelope")

"""Whether a landing record's node signature verifies.

A node's own records are signed when they are sent to followers (the envelope is made on demand), so
locally they show as "signed on delivery". A mirror keeps the origin's signed envelope for every
position and the page checks it again (``federation.status.mirror_positions``).
"""

from __future__ import annotations

from dataclasses import dataclass

from federation import status as federation_status
from hif.mainline import LandingRecord
from hif.store.base import ObjectStore


@dataclass(frozen=True)
class Verdict:
    """``state`` is ``unsigned``, ``verified`` or ``failed``; ``detail`` says by whom or why."""

    state: str
    detail: str = ""


async def verify_record(record: LandingRecord, *, store: ObjectStore | None = None,
                        mirror: tuple[str, str] | None = None) -> Verdict:
    """Check the origin's signature on a mirrored record (``mirror`` = (host, owner/name)); a local
    record is signed by this node when it federates. A badge never claims more than was verified."""
    if mirror is None or store is None:
        return Verdict("unsigned", "this node's own landing: signed when sent to followers")
    rows = await federation_status.mirror_positions(store, mirror[0], mirror[1], record.position, 1)
    if rows and rows[0]["verified"]:
        return Verdict("verified", f"signed by {rows[0]['key_id']}")
    return Verdict("failed", (rows[0]["error"] if rows else None) or "no signed envelope")

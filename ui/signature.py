"""Whether a landing record's node signature verifies: the one seam the federation work fills in.

Records are not signed yet. Federation will add a ``signature`` field to the record's extra fields
and implement :func:`verify_record`; the pages already render its three outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass

from hif.mainline import LandingRecord


@dataclass(frozen=True)
class Verdict:
    """``state`` is ``unsigned``, ``verified`` or ``failed``; ``detail`` says by whom or why."""

    state: str
    detail: str = ""


async def verify_record(record: LandingRecord) -> Verdict:
    """Check the node signature on ``record``.

    Until federation implements verification, a present signature cannot be checked and so is
    reported as failed: a badge must never claim more than was verified.
    """
    signature = record.extra.get("signature")
    if signature is None:
        return Verdict("unsigned", "records are not signed yet")
    return Verdict("failed", "this node cannot verify signatures yet")

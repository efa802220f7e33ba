"""Data that breaks pages (issue 14, item 12): stored data is written by others (another node's
process, a tool with store access, a bug) and is hostile. A malformed event shows as an unreadable
one and the rest of the page works; no page or API view answers 500 because of it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cbor2
import pytest
from forge import Forge

from hif.objects import encode

GOOD = {"author": "admin", "role": "human", "user": "admin"}
BAD_EVENTS: list[Any] = [
    {**GOOD, "type": "say", "text": "bad time", "time": math.nan},
    {**GOOD, "type": "say", "text": "infinite", "time": math.inf},
    {**GOOD, "type": "say", "text": "far", "time": 1e300},
    {**GOOD, "type": "say", "text": 42, "time": 1.0},
    {**GOOD, "type": "decide", "time": 1.0},
    {**GOOD, "type": "checkpoint", "note": "n", "tree": "nope", "iteration": "x", "time": 1.0},
    {"type": "say"},
    [1, 2, 3],
    "just a string",
    {**GOOD, "type": "write", "path": 7, "kind": "f", "blob": b"", "time": 1.0},
    b"\xff\xfe not cbor",
]


@pytest.fixture
def forge(shared_forge: Forge) -> Forge:
    return shared_forge


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else encode(value)


@pytest.mark.parametrize("n", range(len(BAD_EVENTS)), ids=lambda n: repr(BAD_EVENTS[n])[:48])
def test_a_corrupt_stored_event_does_not_break_pages(forge: Forge, n: int) -> None:
    bad, repo = BAD_EVENTS[n], f"r{n}"
    t = forge.admin_token
    assert forge.api("POST", "/api/v1/repos", t, {"name": f"admin/{repo}"}).status_code == 201
    api = f"/api/v1/repos/admin/{repo}"
    sid = forge.api("POST", f"{api}/sessions", t, {"goal": "a goal"}).data["id"]
    assert forge.api("POST", f"{api}/sessions/{sid}/events", t,
                     {"events": [{"type": "say", "text": "before the bad one"}]}).status_code == 200
    events = Path(forge.store) / "data" / f"repos/admin/{repo}/sessions/{sid}/events"
    if isinstance(bad, dict) and len(bad) > 1:  # ({"type": "say"} stays without its seq)
        bad = {**bad, "seq": 2}
    (events / f"{2:08d}").write_bytes(_raw(bad))
    (events / f"{3:08d}").write_bytes(cbor2.dumps({**GOOD, "type": "say", "text": "after the bad one",
                                                   "time": 1_700_000_000.0, "seq": 3}))

    page = forge.api("GET", f"/admin/{repo}/sessions/{sid}")
    assert page.status_code == 200, page.text[-500:]
    assert "before the bad one" in page.text and "after the bad one" in page.text
    assert "Unreadable event" in page.text
    live = forge.api("GET", f"/admin/{repo}/sessions/{sid}/events?since=1")
    assert live.status_code == 200 and "after the bad one" in live.text
    for path in (f"/admin/{repo}", f"/admin/{repo}/sessions", "/"):
        assert forge.api("GET", path).status_code == 200, path
    view = forge.api("GET", f"{api}/sessions/{sid}", t)
    assert view.status_code in (200, 422), view.data  # a typed answer, never a crash
    listing = forge.api("GET", f"{api}/sessions", t)
    assert listing.status_code == 200

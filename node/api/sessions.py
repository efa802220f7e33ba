"""Routes of sessions: starting, events, landing (streamed or in one request), abandoning, agent
tokens (docs/api.md)."""

from __future__ import annotations

import math
from typing import Any

from hif.errors import CorruptObject, HifError
from hif.landing import land
from hif.objects import (
    DIR,
    EXEC,
    FILE,
    FILE_KINDS,
    LINK,
    Entry,
    stored_kind,
)
from hif.paths import check_no_collisions, check_path
from hif.session import PROVENANCE, SEQ_WIDTH, Session, check_text, make_event
from node.api.objects import check_objects, keep_objects
from node.api.routing import (
    REPO,
    SESSION,
    Ctx,
    check_open,
    expires_days,
    load_session,
    route,
    session_role,
)
from node.errors import InvalidInput
from node.principal import Inherit
from node.wire import (
    MiB,
    field,
    query_int,
)

AGENT_DAYS = 7  # an agent token's lifetime when the request names none (capped at the creator's)
EVENT_TYPES = ("say", "decide", "write", "delete", "checkpoint", "sync")
FUTURE_SLACK = 86400.0  # an event's time may be at most a day ahead of the node's clock
MAX_SEQ = 10**SEQ_WIDTH - 1  # sequence numbers are keys of SEQ_WIDTH digits


@route("GET", REPO + "/sessions", "read", agent=True)
async def list_sessions(ctx: Ctx) -> dict[str, Any]:
    out = []
    for sid in (await ctx.r.sessions.list_open())[:1000]:
        marker = await ctx.r.sessions.open_marker(sid)
        if marker is None:
            continue  # closed meanwhile
        out.append({"id": sid, "goal": marker.get("goal"), "author": marker.get("author"),
                    "started": marker.get("time")})
    return {"sessions": out}


@route("POST", REPO + "/sessions", "write", status=201)
async def start_session(ctx: Ctx) -> dict[str, Any]:
    opening = await _opening(ctx)
    s = await ctx.r.sessions.start(*opening, provenance=provenance_fields(ctx.body))
    ctx.node.open_sessions.put(ctx.r.name, s)
    _searchable(ctx)
    return {"id": s.id, "event": s.events[0]}


def provenance_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """The provenance fields (hif.session.PROVENANCE) a request names, checked by make_event."""
    return {k: raw[k] for k in PROVENANCE if k in raw}


async def _opening(ctx: Ctx) -> tuple[str, str, str, int]:
    """The checked goal, author, role and base of a session the request starts."""
    goal = check_text(field(ctx.body, "goal", str), "goal")
    base = field(ctx.body, "base", int, default=None)
    top = await ctx.r.mainline.head()
    base = top if base is None else base
    if not 0 <= base <= top:
        raise InvalidInput(f"base must be between 0 and the head ({top})")
    role = session_role(ctx)
    author = field(ctx.body, "author", str, default=ctx.user)
    check_text(author, "author")
    return goal, author, role, base


@route("GET", SESSION, "read", agent=True)
async def get_session(ctx: Ctx, sid: str) -> dict[str, Any]:
    s = await load_session(ctx, sid)
    since = query_int("since", -1, lo=-1, args=ctx.args)
    after = since if since is not None else -1
    events = [e for e in s.events if not isinstance(e, dict) or not isinstance(e.get("seq", 0), int)
              or e.get("seq", 0) > after]  # stored data: a malformed event is passed on, not a crash
    return {
        "id": s.id, "goal": s.goal, "author": s.author, "role": s.role, "base": s.base,
        "state": s.state, "position": s.position, "snapshot": s.snapshot, "events": events,
        "changes": [[p, e.kind if e else None, e.oid if e else None] for p, e in sorted(s.changes.items())],
    }


async def _check_event(ctx: Ctx, raw: Any, top: int, known: frozenset[bytes]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidInput("each event is a map")
    etype = field(raw, "type", str)
    if etype not in EVENT_TYPES:
        raise InvalidInput(f"event type must be one of {', '.join(EVENT_TYPES)}")
    author = field(raw, "author", str, default=ctx.user)
    check_text(author, "author")
    fields: dict[str, Any] = {}
    if etype == "say":
        fields["text"] = check_text(field(raw, "text", str), "message")
        fields["kind"] = field(raw, "kind", str, default=None)
    elif etype == "decide":
        fields["decision"] = check_text(field(raw, "decision", str), "decision")
        fields["why"] = check_text(field(raw, "why", str), "rationale")
        alts = field(raw, "alternatives", list, default=[])
        fields["alternatives"] = [check_text(a, "alternative") for a in alts if isinstance(a, str)]
        if len(fields["alternatives"]) != len(alts):
            raise InvalidInput("alternatives are strings")
    elif etype in ("write", "delete"):
        fields["path"] = field(raw, "path", str)
        if etype == "write":
            fields["kind"] = field(raw, "kind", str)
            if fields["kind"] not in FILE_KINDS:
                raise InvalidInput(f"kind must be {FILE}, {EXEC} or {LINK}")
            fields["blob"] = await _existing(ctx, field(raw, "blob", bytes), known)
    elif etype == "checkpoint":
        fields["note"] = check_text(field(raw, "note", str), "checkpoint note")
        fields["tree"] = await _existing(ctx, field(raw, "tree", bytes), known)
        fields["iteration"] = field(raw, "iteration", int)
    elif etype == "sync":
        fields["base"] = field(raw, "base", int)
        if not 0 <= fields["base"] <= top:
            raise InvalidInput(f"sync base must be between 0 and the head ({top})")
        fields["merged"] = [check_path(p) for p in field(raw, "merged", list, default=[])]
        fields["conflicts"] = [check_path(p) for p in field(raw, "conflicts", list, default=[])]
    fields.update(provenance_fields(raw))
    now = ctx.r.clock()
    when = field(raw, "time", (int, float), default=None)
    event = make_event(etype, author, session_role(ctx, raw), now if when is None else _check_time(when, now),
                       **fields)
    event["user"] = ctx.user
    return event


def _check_time(when: float, now: float) -> float:
    """An event's time as a caller states it: a real moment from 1970 to a day ahead of the node."""
    if isinstance(when, bool):
        raise InvalidInput("an event's time is a number of seconds since 1970")
    try:
        t = float(when)
    except OverflowError:  # an integer too large for a float
        t = float("inf")
    if not math.isfinite(t) or t < 0 or t > now + FUTURE_SLACK:
        raise InvalidInput("an event's time is seconds since 1970, at most a day ahead of the node's clock")
    return t


async def _existing(ctx: Ctx, oid: bytes, known: frozenset[bytes]) -> bytes:
    if len(oid) != 32:
        raise InvalidInput("object ids are 32 bytes")
    if oid not in known and not await ctx.r.objects.has(oid):
        raise CorruptObject(f"the event refers to object {oid.hex()}, which the node does not have")
    return oid


@route("POST", SESSION + "/events", "write", agent=True)
async def append_events(ctx: Ctx, sid: str) -> dict[str, Any]:
    await check_open(ctx, sid)  # not load_session: that reads every event of the session, each time
    events = await _checked_events(ctx, field(ctx.body, "events", list), at_least=1)
    next_seq = field(ctx.body, "next_seq", int, default=None)  # None: after the last one stored
    if next_seq is not None and not 1 <= next_seq <= MAX_SEQ:
        raise InvalidInput(f"next_seq is between 1 (0 is the start event) and {MAX_SEQ}")
    return {"events": await _append(ctx, sid, events, next_seq)}


async def _checked_events(ctx: Ctx, raw: list[Any], *, at_least: int,
                          known: dict[bytes, str] | None = None) -> list[dict[str, Any]]:
    """Every event checked before any is appended, so a bad one leaves the session as it was.
    ``known``: objects the request itself carries, with their kinds (no need to ask the store)."""
    if not at_least <= len(raw) <= 1000:
        raise InvalidInput(f"send between {at_least} and 1000 events")
    syncs = any(isinstance(e, dict) and e.get("type") == "sync" for e in raw)
    top = await ctx.r.mainline.head() if syncs else 0  # only a sync names a position
    carried = frozenset(known or ())
    events = [await _check_event(ctx, e, top, carried) for e in raw]
    # a file names a blob, a checkpoint a tree: read together, only those not seen stored here
    await ctx.r.objects.check_kinds(
        [(e["path"], Entry(e["kind"], e["blob"])) for e in events if e["type"] == "write"]
        + [(f"checkpoint {e['note']!r}", Entry(DIR, e["tree"])) for e in events if e["type"] == "checkpoint"],
        known)
    return events


def _searchable(ctx: Ctx) -> None:
    """Mark the repository for the replica's search index: the next query catches it up."""
    searcher = ctx.node.extensions.get("search")
    if searcher is not None:
        searcher.landed(ctx.r)


async def _append(ctx: Ctx, sid: str, events: list[dict[str, Any]], next_seq: int | None) -> list[dict[str, Any]]:
    """Append ``events`` in order from ``next_seq`` (None: after the last one); the store refuses
    them if the session closed meanwhile (``Sessions.append_many`` asks while it writes)."""
    out = await ctx.r.sessions.append_many(sid, events, next_seq)
    ctx.node.open_sessions.appended(ctx.r.name, sid, out)
    _searchable(ctx)
    return out


@route("POST", SESSION + "/land", "write", agent=True)
async def land_session(ctx: Ctx, sid: str) -> dict[str, Any]:
    s = await _written_here(ctx, sid) or await load_session(ctx, sid)
    ctx.node.open_sessions.drop(ctx.r.name, sid)  # landed or refused, the store says what it is now
    return await _land(ctx, s)


async def _written_here(ctx: Ctx, sid: str) -> Session | None:
    """The session as this replica wrote it, if no event was added since (one listing, where loading
    it reads every event); whether it is still open, ``land`` asks itself."""
    s = ctx.node.open_sessions.get(ctx.r.name, sid)
    if s is None or await ctx.r.sessions.event_keys(sid, since=s.next_seq - 1):
        return None
    return s


async def _land(ctx: Ctx, s: Session) -> dict[str, Any]:
    result = await land(ctx.r, s)
    fed = ctx.node.extensions.get("federation")
    if fed is not None:  # deliver to followers now, not at the next poll
        fed.landed(ctx.r.name)
    _searchable(ctx)  # searchable at the next query here, not at the next poll
    return {"position": result.position, "session": result.session, "tree": result.tree,
            "merged": result.merged, "already_landed": result.already, "attempts": result.attempts}


@route("POST", REPO + "/land", "write", limit=64 * MiB)
async def land_whole(ctx: Ctx) -> dict[str, Any]:
    """A whole session in one request (start, objects, events, land): for an agent that worked
    offline and has nothing to stream, one round trip instead of four. Everything is checked before
    the session starts; a refused landing (a conflict) leaves it open and names it (``session``) for a
    sync or an abandon."""
    opening = await _opening(ctx)
    objects = check_objects(field(ctx.body, "objects", list, default=[]))
    events = await _checked_events(ctx, field(ctx.body, "events", list, default=[]), at_least=0,
                                   known={oid: stored_kind(stored) for oid, stored in objects})
    written: dict[str, bool] = {}
    for e in events:
        if e["type"] in ("write", "delete"):
            written[e["path"]] = e["type"] == "write"
    check_no_collisions(p for p, w in written.items() if w)  # refused before the session starts
    await keep_objects(ctx, objects)  # only once the whole request is checked: a refusal keeps nothing
    # the start and the events: one round trip
    s = await ctx.r.sessions.start(*opening, events=events, provenance=provenance_fields(ctx.body))
    try:
        return await _land(ctx, s)
    except HifError as e:  # refused (a conflict, missing checks) or failed: the session stays open
        e.session = s.id
        raise


@route("POST", SESSION + "/abandon", "write", agent=True)
async def abandon_session(ctx: Ctx, sid: str) -> dict[str, Any]:
    s = await load_session(ctx, sid, open_only=True)
    reason = check_text(field(ctx.body, "reason", str, default="abandoned"), "reason")
    event = make_event("abandon", ctx.user, session_role(ctx), ctx.r.clock(), reason=reason,
                       **provenance_fields(ctx.body))
    event["user"] = ctx.user
    await ctx.r.sessions.abandon(s, event, reason)
    return {"id": sid, "state": "abandoned"}


@route("POST", SESSION + "/tokens", "write", status=201)
async def agent_token(ctx: Ctx, sid: str) -> dict[str, Any]:
    await load_session(ctx, sid, open_only=True)
    days = expires_days(ctx.body)
    # unspecified: a week, but never past the creator's own expiry; asked for longer: refused
    lifetime = Inherit(most=AGENT_DAYS * 86400) if days is None else days * 86400
    tid, secret = await ctx.node.auth.create_token(ctx.user, scope="write", repo=ctx.r.name, session=sid,
                                                   name=f"agent for {sid}", expires_in=lifetime,
                                                   by=ctx.principal)
    return {"id": tid, "token": secret, "session": sid}

"""Sessions: an append-only event log per open session, folded into a view on read.

Each event is a put-if-absent of the next sequence number (``sessions/<id>/events/<seq>``), so several
agents can append to one session without a lock: a lost race just takes the next number. While a
session is open a marker ``open/<id>`` lists it cheaply; when it lands or is abandoned its whole log is
frozen into an immutable snapshot object and ``sessions/<id>/state`` records the outcome.

A large batch of events from a working copy's record (thousands of files) is stored as *groups*: one value, a CBOR
list of up to ``GROUP_EVENTS`` consecutive events, under the key of its first event's number. The
put-if-absent of that key claims the whole run of numbers: a writer only ever takes the number after
the last event it has read, and a group is read whole, so no one takes a number inside it (the one
writer that looks at key names alone, :meth:`SessionStore._last_seq`, reads the last value too).
A reader expands a group into its events; a cursor (``since``) inside a group is found by looking
back at most ``GROUP_EVENTS`` numbers (:meth:`SessionStore.events_after`).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hif.aio import together
from hif.errors import (
    CorruptObject,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    SessionClosed,
    StoreError,
)
from hif.objects import FILE_KINDS, Entry, ObjectDB, decode, encode
from hif.paths import check_entry_path, check_path
from hif.store.base import ObjectStore

ROLES = ("human", "agent", "imported")  # imported: written outside hif, brought in by hif import git
EVENT_TYPES = ("start", "say", "decide", "write", "delete", "checkpoint", "sync", "abandon", "attest")
SEQ_WIDTH = 8
EVENTS_TOGETHER = 64  # a session's events read at once
GROUP_MIN = 64  # a batch of this many events or more is stored in groups...
GROUP_EVENTS = 512  # ...of at most this many events (a cursor looks back this far: one listing)...
GROUP_BYTES = 1 << 20  # ...or this many bytes (a larger event is a group of its own)
MAX_TEXT = 1 << 20
# who produced an event, when a coding agent did (docs/agents.md): the agent, its model, the agent's
# own session id, and for what a tool call did, the tool and the call's id. Optional on every event.
PROVENANCE = ("agent", "model", "agent_session", "tool", "tool_call")
MAX_PROVENANCE = 200  # characters of one provenance field
SAY_KINDS = ("plan", "todo", "note", "agent-trace")  # a say without a kind is a message
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ID = re.compile(r"^[a-z2-7]{16}$")

Clock = Callable[[], float]


def new_session_id(now: float | None = None) -> str:
    """Time-ordered ids (48-bit milliseconds + 32 random bits), so listings come out oldest first."""
    ms = int((time.time() if now is None else now) * 1000)
    raw = ms.to_bytes(6, "big") + os.urandom(4)
    return base64.b32encode(raw).decode().lower().rstrip("=")


def is_session_id(text: str) -> bool:
    """Whether ``text`` has the form of a session id (a ref that may be one, or something else)."""
    return _ID.match(text) is not None


def check_session_id(text: str) -> str:
    if not _ID.match(text):
        raise InvalidInput(f"not a session id: {text!r}")
    return text


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def check_text(text: str, what: str) -> str:
    if not text or not text.strip():
        raise InvalidInput(f"{what} must not be empty")
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"{what} is too long ({len(text)} characters)")
    return text


def check_provenance(fields: dict[str, Any]) -> dict[str, str]:
    """The provenance fields of ``fields`` (absent or None ones left out), each a short printable
    string: they are shown beside the event and signed with it, so a follower sees who said what."""
    out: dict[str, str] = {}
    for key in PROVENANCE:
        value = fields.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"{key} must be a non-empty string")
        if len(value) > MAX_PROVENANCE:
            raise InvalidInput(f"{key} is too long ({len(value)} characters, at most {MAX_PROVENANCE})")
        if _CONTROL.search(value):
            raise InvalidInput(f"{key} must not hold control characters")
        out[key] = value
    return out


def clean_provenance(value: object) -> str | None:
    """A provenance value from a source that is not refused but trusted only so far (an MCP client's
    self-given name): control characters dropped, spaces collapsed, cut to ``MAX_PROVENANCE``; None
    when nothing printable is left, so the event records no agent rather than a broken one."""
    if not isinstance(value, str):
        return None
    text = " ".join(_CONTROL.sub(" ", value[: MAX_PROVENANCE * 4]).split())[:MAX_PROVENANCE].strip()
    return text or None


def provenance_of(event: dict[str, Any]) -> dict[str, Any]:
    """The provenance an event (stored data) carries, for display: only string values."""
    return {k: event[k] for k in PROVENANCE if isinstance(event.get(k), str)}


@dataclass
class Session:
    """The folded view of a session's events."""

    id: str
    goal: str
    base: int
    author: str
    role: str
    started: float
    events: list[dict[str, Any]]
    state: str = "open"  # open | landed | abandoned
    position: int | None = None
    snapshot: bytes | None = None
    changes: dict[str, Entry | None] = field(default_factory=dict)

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    @property
    def next_seq(self) -> int:
        return self.events[-1]["seq"] + 1 if self.events else 0

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] in types]

    def to_json(self, *, events: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "goal": self.goal,
            "base": self.base,
            "author": self.author,
            "role": self.role,
            "started": self.started,
            "state": self.state,
            "position": self.position,
            "snapshot": self.snapshot.hex() if self.snapshot else None,
            "files": sorted(self.changes),
        }
        if events:
            out["events"] = [event_json(e) for e in self.events]
        return out


def event_json(event: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in event.items()}


def fold(session_id: str, events: list[dict[str, Any]]) -> Session:
    if not events or not isinstance(events[0], dict) or events[0].get("type") != "start":
        raise CorruptObject(f"session {session_id} has no start event")
    try:  # events are stored data: a malformed one is a typed error, never a crash
        start = events[0]
        s = Session(
            id=session_id,
            goal=start["goal"],
            base=start["base"],
            author=start["author"],
            role=start["role"],
            started=start["time"],
            events=events,
        )
        for e in events:
            t = e["type"]
            if t == "write":
                if not isinstance(e["path"], str) or not isinstance(e["blob"], bytes) or len(e["blob"]) != 32:
                    raise TypeError("a write event names a path and a blob")
                s.changes[e["path"]] = Entry(e["kind"], e["blob"])
            elif t == "delete":
                if not isinstance(e["path"], str):
                    raise TypeError("a delete event names a path")
                s.changes[e["path"]] = None
            elif t == "sync":
                if not isinstance(e["base"], int):
                    raise TypeError("a sync event names a position")
                s.base = e["base"]
    except (KeyError, TypeError, AttributeError) as e:
        raise CorruptObject(f"session {session_id} has a malformed event ({e!r})") from None
    return s


def expand(value: Any) -> list[Any]:
    """The events one stored value holds: a group (a list) or one event."""
    return value if isinstance(value, list) else [value]


def _grouped(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive events in groups of at most ``GROUP_EVENTS`` events and ``GROUP_BYTES`` bytes."""
    out: list[list[dict[str, Any]]] = []
    size = 0
    for e in events:
        n = len(encode(e))
        if not out or len(out[-1]) >= GROUP_EVENTS or size + n > GROUP_BYTES:
            out.append([])
            size = 0
        out[-1].append(e)
        size += n
    return out


def make_event(etype: str, author: str, role: str, now: float, **fields: Any) -> dict[str, Any]:
    if etype not in EVENT_TYPES:
        raise InvalidInput(f"unknown event type {etype!r}")
    check_role(role)
    if not author:
        raise InvalidInput("author must not be empty")
    if etype == "write":
        if fields.get("kind") not in FILE_KINDS:
            raise InvalidInput(f"a write's kind must be one of {', '.join(FILE_KINDS)}")
        check_entry_path(fields["path"], fields["kind"])
    elif etype == "delete":
        check_path(fields["path"])
    elif etype == "say" and fields.get("kind") is not None and fields["kind"] not in SAY_KINDS:
        raise InvalidInput(f"a message's kind is one of {', '.join(SAY_KINDS)}")
    prov = check_provenance(fields)  # absent (None) provenance and kind are left out of the event
    rest = {k: v for k, v in fields.items() if k not in PROVENANCE and not (k == "kind" and v is None)}
    return {"type": etype, "author": author, "role": role, "time": now, **rest, **prov}


class SessionStore:
    """Sessions of one repository, under ``<prefix>sessions/`` and ``<prefix>open/``."""

    def __init__(self, store: ObjectStore, prefix: str, objects: ObjectDB, clock: Clock = time.time) -> None:
        self.store = store
        self.prefix = prefix
        self.objects = objects
        self.clock = clock

    def _events(self, sid: str) -> str:
        return f"{self.prefix}sessions/{sid}/events/"

    def _state(self, sid: str) -> str:
        return f"{self.prefix}sessions/{sid}/state"

    def state_key(self, sid: str) -> str:
        """Where a closed session's outcome lives (bulk writers create it themselves)."""
        return self._state(sid)

    def _open(self, sid: str) -> str:
        return f"{self.prefix}open/{sid}"

    async def start(self, goal: str, author: str, role: str, base: int,
                    events: Sequence[dict[str, Any]] = (), provenance: dict[str, str] | None = None) -> Session:
        """Create the session: its start event (with ``provenance``: who opened it, PROVENANCE), its
        open marker and any first ``events`` (numbered from 1), written together: one round trip. Every write is put-if-absent, so an id collision
        (astronomically unlikely) never overwrites; what a crash between them leaves without the
        start event is no session to its readers (``load`` says not found, listings skip it)."""
        check_text(goal, "goal")
        now = self.clock()
        for _ in range(5):
            sid = new_session_id(now)
            event = make_event("start", author, role, now, goal=goal.strip(), base=base, seq=0, **(provenance or {}))
            stamped = [{**e, "seq": i} for i, e in enumerate(events, 1)]
            writes = [(self._events(sid) + f"{0:0{SEQ_WIDTH}d}", encode(event)),
                      (self._open(sid), encode({"goal": goal.strip(), "author": author, "time": now})),
                      *((self._events(sid) + f"{e['seq']:0{SEQ_WIDTH}d}", encode(e)) for e in stamped)]
            results = await together([self.store.put(key, data, if_none_match=True) for key, data in writes])
            failed = [r for r in results if isinstance(r, BaseException)]
            if not failed:
                return fold(sid, [event, *stamped])
            # undo what this attempt created, best effort (a PreconditionFailed means the key was not ours)
            await together([self.store.delete(key) for (key, _), r in zip(writes, results, strict=True)
                            if not isinstance(r, BaseException)])
            if not all(isinstance(r, PreconditionFailed) for r in failed):
                raise next(r for r in failed if not isinstance(r, PreconditionFailed))
        raise InvalidInput("could not allocate a session id")

    async def append(self, sid: str, event: dict[str, Any], next_seq: int | None = None) -> dict[str, Any]:
        """Append ``event`` at the next free sequence number; returns it with its ``seq``.

        With ``next_seq`` known, whether the session is still open is asked while the event is
        written (one round trip); an event that reached a closed session is taken back."""
        state = self._state(sid)
        if next_seq is None:
            closed, last = await together([self.store.head(state), self._last_seq(sid)])
            for r in (closed, last):
                if isinstance(r, BaseException):
                    raise r
            if closed is not None:
                raise SessionClosed(f"session {sid} is closed")
            seq, ask = int(last) + 1, False  # type: ignore[call-overload]
        else:
            seq, ask = next_seq, True
        for _ in range(1000):
            stamped = {**event, "seq": seq}
            key = self._events(sid) + f"{seq:0{SEQ_WIDTH}d}"
            written, *asked = await together([self.store.put(key, encode(stamped), if_none_match=True),
                                              *([self.store.head(state)] if ask else [])])
            if ask:  # asked once; a question left unanswered leaves the write to speak
                ask, closed = False, asked[0]
                if closed is not None and not isinstance(closed, BaseException):
                    if not isinstance(written, BaseException):
                        with contextlib.suppress(StoreError):
                            await self.store.delete(key)
                    raise SessionClosed(f"session {sid} is closed")
            if not isinstance(written, BaseException):
                return stamped
            if not isinstance(written, PreconditionFailed):
                raise written
            seq = max(seq + 1, await self._last_seq(sid) + 1)
        raise InvalidInput(f"session {sid}: too much contention appending events")

    async def append_many(self, sid: str, events: Sequence[dict[str, Any]],
                          next_seq: int | None = None, *, group: bool = False) -> list[dict[str, Any]]:
        """Append ``events`` in order; returns them with their ``seq``. With ``next_seq`` known they
        go to the store as one ``create_all`` batch (on the embedded store two file-system syncs in
        all, not two fsyncs per event: a large session records one write event per file), and from
        ``GROUP_MIN`` events on, with ``group``, in groups (one stored value per ``GROUP_EVENTS``:
        see the module's docstring; only for a writer whose ``next_seq`` comes from reading the log,
        such as a working copy's record, never one a client names); whether the session is still open is asked after, and the batch taken back if it
        closed meanwhile. If another writer took one of those numbers first, what the batch did not
        write is appended one by one (:meth:`append`)."""
        if next_seq is None or len(events) < 2:
            out = []
            for event in events:
                out.append(await self.append(sid, event, next_seq))
                next_seq = out[-1]["seq"] + 1
            return out
        stamped = [{**e, "seq": seq} for seq, e in enumerate(events, next_seq)]
        values = _grouped(stamped) if group and len(stamped) >= GROUP_MIN else [[e] for e in stamped]
        writes = [(self._events(sid) + f"{v[0]['seq']:0{SEQ_WIDTH}d}", encode(v if len(v) > 1 else v[0]))
                  for v in values]
        try:
            await self.store.create_all(writes)
        except PreconditionFailed:  # raced: keep what this batch wrote (a prefix), append the rest
            out = []
            for (key, data), value in zip(writes, values, strict=True):
                if await self.store.get_or_none(key) == data:  # (the bytes hold time and seq)
                    out += value
                else:
                    out += [await self.append(sid, {k: v for k, v in e.items() if k != "seq"}) for e in value]
            return out
        if await self.store.head(self._state(sid)) is not None:
            with contextlib.suppress(StoreError):
                for key, _ in writes:
                    await self.store.delete(key)
            raise SessionClosed(f"session {sid} is closed")
        return stamped

    async def _last_seq(self, sid: str) -> int:
        last_key = None
        async for key in self.store.iter_keys(self._events(sid)):
            last_key = key
        if last_key is None:
            raise NotFound(f"no session {sid}")
        last = int(last_key.rsplit("/", 1)[1])
        # the last value may be a group: its last event holds the last number
        with contextlib.suppress(NotFound, CorruptObject):
            value = decode(await self.store.get(last_key))
            if isinstance(value, list) and value and isinstance(value[-1], dict) \
                    and isinstance(value[-1].get("seq"), int):
                last = max(last, value[-1]["seq"])
        return last

    async def events(self, sid: str) -> list[dict[str, Any]]:
        """The session's events in order, read a page at a time, each page's values together."""
        out: list[dict[str, Any]] = []
        keys: list[str] = []
        async for key in self.store.iter_keys(self._events(sid)):
            keys.append(key)
            if len(keys) == EVENTS_TOGETHER:
                out += await self._read_events(keys)
                keys = []
        return out + await self._read_events(keys)

    async def event_keys(self, sid: str, since: int = -1) -> list[str]:
        """The keys of a session's stored values after ``since`` (a group is listed by its first
        number): whether anything was appended after a writer's own last event."""
        after = self._events(sid) + f"{since:0{SEQ_WIDTH}d}" if since >= 0 else None
        return [k async for k in self.store.iter_keys(self._events(sid)) if after is None or k > after]

    async def _read_events(self, keys: list[str]) -> list[dict[str, Any]]:
        out = []
        for r in await together([self.store.get(k) for k in keys]):
            if isinstance(r, BaseException):
                raise r
            out += expand(decode(r))
        return out

    async def events_after(self, sid: str, since: int = -1, *, limit: int | None = None,
                           lenient: bool = False) -> list[Any]:
        """A session's events with ``seq`` > ``since``, oldest first: one listing from the cursor and
        one read per stored value, so watching a session live costs what is new. Values are returned
        whole, so at most a group beyond ``limit`` events, and the last event is a cursor that misses
        nothing. A cursor inside a group is found by listing back ``GROUP_EVENTS`` numbers, that
        group read too. ``lenient`` (a page showing a log with malformed events, the search index):
        a value taken back since the listing is skipped and one that does not decode is a None."""
        prefix = self._events(sid)
        after = prefix + f"{since - GROUP_EVENTS:0{SEQ_WIDTH}d}" if since - GROUP_EVENTS >= 0 else None
        mark = prefix + f"{since:0{SEQ_WIDTH}d}" if since >= 0 else None
        back: list[str] = []  # the last key at or before the cursor: a group there may reach past it
        out: list[Any] = []
        page = EVENTS_TOGETHER + (GROUP_EVENTS if since >= 0 else 0)  # the first: one S3 listing
        while True:
            keys = await self.store.list_page(prefix, start_after=after, limit=page)
            mine = [k for k in keys if mark is None or k > mark]
            if len(mine) < len(keys):
                back = [keys[len(keys) - len(mine) - 1]]
            if mine or len(keys) < page:
                if limit is not None:
                    mine = mine[: max(limit - len(out), 0)]
                await self._read_lenient([*back, *mine], out, since if back else None, lenient)
                back = []
            if len(keys) < page or limit is not None and len(out) >= limit:
                return out
            after, page = keys[-1], EVENTS_TOGETHER

    async def _read_lenient(self, keys: list[str], out: list[Any], since: int | None, lenient: bool) -> None:
        """Read ``keys`` together onto ``out``, groups expanded; the first value only past ``since``
        (when not None); see :meth:`events_after` for ``lenient``."""
        for i, r in enumerate(await together([self.store.get(k) for k in keys])):
            try:
                if isinstance(r, BaseException):
                    raise r
                value = decode(r)
            except NotFound:
                if lenient or i == 0 and since is not None:
                    continue  # taken back (an event that reached a closed session)
                raise
            except CorruptObject:
                if not lenient:
                    raise
                if i or since is None:
                    out.append(None)
                continue
            if i == 0 and since is not None:  # only what lies past the cursor
                out.extend(e for e in expand(value)
                           if isinstance(e, dict) and isinstance(e.get("seq"), int) and e["seq"] > since)
            else:
                out.extend(expand(value))

    async def state(self, sid: str) -> dict[str, Any] | None:
        data = await self.store.get_or_none(self._state(sid))
        return None if data is None else decode(data)

    async def load(self, sid: str) -> Session:
        check_session_id(sid)
        state = await self.state(sid)
        if state is not None and state.get("snapshot"):
            snap = await self.objects.get_value("snapshot", state["snapshot"])
            s = fold(sid, snap["events"])
            s.changes = {p: (Entry(k, o) if k else None) for p, k, o in snap["changes"]}
        else:
            events = await self.events(sid)
            if not events or events[0].get("seq") != 0:  # none, or a start that never completed
                raise NotFound(f"no session {sid}")
            s = fold(sid, events)
        if state is not None:
            s.state = state["state"]
            s.position = state.get("position")
            s.snapshot = state.get("snapshot")
        return s

    async def list_open(self) -> list[str]:
        return [n for n in await self.store.list_children(self.prefix + "open/") if _ID.match(n)]

    async def open_marker(self, sid: str) -> dict[str, Any] | None:
        """An open session's marker (``goal``, ``author``, ``time``): one small read, where loading
        the session would read all its events; None once it is closed. The key stays here."""
        data = await self.store.get_or_none(self._open(sid))
        value = decode(data) if data is not None else None
        return value if isinstance(value, dict) else None

    async def start_event(self, sid: str) -> dict[str, Any] | None:
        """A session's ``start`` event alone (its role, base, goal): one read, whatever its length."""
        data = await self.store.get_or_none(self._events(sid) + f"{0:0{SEQ_WIDTH}d}")
        value = decode(data) if data is not None else None
        return value if isinstance(value, dict) else None

    @staticmethod
    def snapshot_bytes(s: Session, changes: dict[str, Entry | None]) -> bytes:
        """The canonical bytes of the session's snapshot (its id is their digest): a lander can name
        the snapshot, or hand it to another lander in its intent, before it is stored."""
        value = {
            "id": s.id,
            "goal": s.goal,
            "base": s.base,
            "author": s.author,
            "role": s.role,
            "started": s.started,
            "events": s.events,
            "changes": [[p, e.kind if e else None, e.oid if e else None] for p, e in sorted(changes.items())],
        }
        return encode(["snapshot", value])

    async def write_snapshot(self, s: Session, changes: dict[str, Entry | None]) -> bytes:
        """Freeze the session: its events and its effective changes, as one immutable object."""
        return await self.objects.put_canonical(self.snapshot_bytes(s, changes))

    async def abandon(self, s: Session, event: dict[str, Any], reason: str) -> Session:
        """Append the ``abandon`` event, freeze the session and record the outcome."""
        s.events.append(await self.append(s.id, event, s.next_seq))
        snap = await self.write_snapshot(s, s.changes)
        await self.close(s.id, {"state": "abandoned", "snapshot": snap, "reason": reason})
        s.state, s.snapshot = "abandoned", snap
        return s

    async def close(self, sid: str, state: dict[str, Any]) -> None:
        """Record the outcome (first writer wins) and drop the open marker; best effort after landing."""
        # together: one round trip. The marker only lists open sessions; a session whose state is
        # written is closed whatever became of its marker
        recorded, dropped = await together([self.store.put(self._state(sid), encode(state), if_none_match=True),
                                            self.store.delete(self._open(sid))])
        for r in (recorded, dropped):
            if isinstance(r, BaseException) and not isinstance(r, PreconditionFailed):
                raise r

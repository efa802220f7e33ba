"""Agent Trace (https://agent-trace.dev, version 0.1.0): the open attribution record of which lines of
a change an AI wrote, with which model and in which conversation. The schema is vendored beside this
module (``schema/trace-record.json``, CC BY 4.0, see its README).

A landing's record (:func:`landing_record`) lists each text file the landing wrote, with the line
ranges of the landed file that the landing added or changed, grouped under the landed session (the
conversation, at its forge URL when known). The contributor follows the session's write events of
that file: only an agent's (role ``agent``) is ``ai`` with the model its provenance names, only a
person's is ``human``, both is ``mixed``; with no write event, the session's role decides. The
record's id is derived from the repository and position, so the same landing always gives the same
record. hif is not among the specification's ``vcs`` types, so ``vcs`` is left out and the position
is in ``metadata["dev.micelio"]``.

:func:`check_record` reads a record from outside: the parts of the schema hif relies on, checked by
hand (the library stays free of a JSON-Schema dependency; the tests validate with ``jsonschema``).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from hif.errors import InvalidInput, TooLarge
from hif.history import blob_or_none, landed_session, session_changes
from hif.merge import changed_ranges, is_binary
from hif.objects import LINK

if TYPE_CHECKING:
    from hif.mainline import LandingRecord
    from hif.repo import Repo
    from hif.session import Session

VERSION = "0.1.0"
MIME = "application/vnd.agent-trace.record+json"
MAX_RECORD = 1 << 20  # bytes of a record read from outside (it is kept as a session event's text)
MAX_FILES = 10_000  # files of one record read from outside
_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
_CONTRIBUTORS = ("human", "ai", "mixed", "unknown")
PROVIDERS = {"claude-code": "anthropic", "gemini-cli": "google", "codex": "openai"}  # whose models they run
_NAMESPACE = uuid.UUID("6f1f6c2e-8d7e-4c1e-9a57-2d7f3b0c9e11")  # hif's namespace for record ids


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def contributor(s: Session, path: str) -> dict[str, str]:
    """Who wrote ``path`` in session ``s``, from its write events' roles and provenance."""
    writes = [e for e in s.events if e.get("type") in ("write", "delete") and e.get("path") == path]
    roles = {e.get("role") for e in writes} or {s.role}
    # an imported git commit says nothing of who (or what) typed it: "unknown", the format's word for it
    kind = ("mixed" if len(roles) > 1 else "ai" if roles == {"agent"}
            else "unknown" if roles == {"imported"} else "human")
    models = [model_id(e) for e in writes if e.get("role") == "agent" and isinstance(e.get("model"), str)]
    if not models and kind in ("ai", "mixed"):
        models = [model_id(e) for e in s.events if isinstance(e.get("model"), str)]
    out = {"type": kind}
    if models and kind in ("ai", "mixed"):
        out["model_id"] = models[-1][:250]
    return out


def model_id(event: dict[str, Any]) -> str:
    """An event's model in the models.dev convention the format asks for (``provider/model``): the
    provider is added from the agent when the agent named the model alone."""
    model = str(event["model"])
    provider = PROVIDERS.get(str(event.get("agent")))
    return f"{provider}/{model}" if provider and "/" not in model else model


async def landing_record(repo: Repo, rec: LandingRecord, *, conversation_url: str | None = None,
                         tool_version: str | None = None) -> dict[str, Any]:
    """The Agent Trace record of the landing ``rec``. ``conversation_url``: the forge page of a session,
    with ``{session}`` where its id goes (None: no URL)."""
    files: dict[str, list[dict[str, Any]]] = {}
    for landed in rec.sessions:
        s = await landed_session(repo, rec, landed.session)
        for change in await session_changes(repo, s, rec):
            if change.new is None or change.new.kind == LINK:
                continue  # a deletion has no lines; a link's target is not code
            new = await blob_or_none(repo, change.new)
            if new is None or is_binary(new):
                continue
            old = await blob_or_none(repo, change.old)
            ranges = [{"start_line": a, "end_line": b} for a, b in changed_ranges(old, new)]
            if not ranges:
                continue
            conv: dict[str, Any] = {"contributor": contributor(s, change.path), "ranges": ranges}
            if conversation_url:
                url = conversation_url.format(session=s.id)
                conv["url"] = url
                conv["related"] = [{"type": "session", "url": url}]
            files.setdefault(change.path, []).append(conv)
    tool: dict[str, str] = {"name": "hif"}
    if tool_version:
        tool["version"] = tool_version
    return {
        "version": VERSION,
        "id": str(uuid.uuid5(_NAMESPACE, f"{repo.name}\0{rec.position}\0{rec.tree.hex()}")),
        "timestamp": rfc3339(rec.time),
        "tool": tool,
        "files": [{"path": p, "conversations": c} for p, c in sorted(files.items())],
        "metadata": {"dev.micelio": {
            "repository": repo.name, "position": rec.position, "tree": rec.tree.hex(),
            "sessions": [{"id": x.session, "goal": x.goal} for x in rec.sessions]}},
    }


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise InvalidInput(f"not an Agent Trace record: {what}")


def _check_contributor(c: Any, where: str) -> None:
    _need(isinstance(c, dict) and c.get("type") in _CONTRIBUTORS,
          f"{where}: contributor type is one of {', '.join(_CONTRIBUTORS)}")
    model = c.get("model_id")
    _need(model is None or (isinstance(model, str) and len(model) <= 250), f"{where}: model_id is a short string")


def check_record(data: bytes) -> dict[str, Any]:
    """A record read from outside (a file, a peer): JSON within :data:`MAX_RECORD` bytes, of the
    schema's shape in what hif relies on; anything else is ``InvalidInput`` naming what is wrong."""
    if len(data) > MAX_RECORD:
        raise TooLarge(f"an Agent Trace record is at most {MAX_RECORD} bytes (this one has {len(data)})")
    try:
        rec = json.loads(data)
    except ValueError as e:
        raise InvalidInput(f"not an Agent Trace record: not JSON ({e})") from None
    _need(isinstance(rec, dict), "not a JSON object")
    for key in ("version", "id", "timestamp", "files"):
        _need(key in rec, f"no {key!r}")
    _need(isinstance(rec["version"], str) and bool(_VERSION.match(rec["version"])), "version is X.Y.Z")
    try:
        uuid.UUID(str(rec["id"]))
    except ValueError:
        raise InvalidInput("not an Agent Trace record: id is not a UUID") from None
    _need(isinstance(rec["timestamp"], str), "timestamp is an RFC 3339 time")
    files = rec["files"]
    _need(isinstance(files, list) and len(files) <= MAX_FILES, f"files is a list of at most {MAX_FILES}")
    for i, f in enumerate(files):
        _need(isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("conversations"), list),
              f"files[{i}] has a path and conversations")
        for j, c in enumerate(f["conversations"]):
            where = f"files[{i}].conversations[{j}]"
            _need(isinstance(c, dict) and isinstance(c.get("ranges"), list), f"{where} has ranges")
            if "contributor" in c:
                _check_contributor(c["contributor"], where)
            for r in c["ranges"]:
                ok = isinstance(r, dict) and all(
                    isinstance(r.get(k), int) and not isinstance(r.get(k), bool) and r[k] >= 1
                    for k in ("start_line", "end_line"))
                _need(ok, f"{where}: a range has start_line and end_line of at least 1")
                if "contributor" in r:
                    _check_contributor(r["contributor"], where)
    _need(isinstance(rec.get("metadata", {}), dict), "metadata is an object")
    return rec


def summary(rec: dict[str, Any]) -> str:
    """One line saying what a record attributes (the note an imported record is kept under)."""
    kinds: dict[str, int] = {}
    for f in rec["files"]:
        for c in f["conversations"]:
            t = c.get("contributor", {}).get("type", "unknown")
            kinds[t] = kinds.get(t, 0) + sum(r["end_line"] - r["start_line"] + 1 for r in c["ranges"])
    who = ", ".join(f"{n} line(s) {k}" for k, n in sorted(kinds.items())) or "no lines"
    return f"Agent Trace record {rec['id']} ({len(rec['files'])} file(s): {who})"

"""``hif agent hook AGENT EVENT``: what a coding agent's hook runs at each event (docs/agents.md).

It reads the agent's hook input (one JSON document on stdin) and records into the working copy's
open session: the person's prompt (role human; a session is opened at the first prompt when none is),
the agent's reply at the end of a turn (role agent; read from the new tail of the agent's transcript
when the input does not carry it), each file a tool wrote (a write event naming the tool and its call
id), plan and todo updates (a say of kind ``plan``/``todo``), all with the agent's provenance.

It never gets in the agent's way: the exit code is always 0, stdout stays empty (Claude Code adds
a hook's stdout to the model's context for some events) or, for Gemini CLI, holds ``{}`` (its hooks
must print JSON only), and anything that goes wrong is appended to ``.hif/agent-hook.log``. It is
run by :mod:`hif.__main__` before click and the SDK are imported, and over a working copy whose
store is the embedded one (``hif init``) it uses only the plumbing (start-up time: it runs for every
prompt and every edit). A clone of a forge or a store on S3 goes through :class:`hif.Repository`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hif.agents.formats import (
    AGENTS,
    Counts,
    Item,
    claude_transcript,
    goal_of,
    hook_items,
    json_lines,
    short,
)
from hif.agents.redact import redact

MAX_INPUT = 16 << 20  # bytes of hook input read; beyond, the call is logged and ignored
MAX_TAIL = 8 << 20  # bytes of a transcript's new tail a Stop hook reads (the newest, if more)
MAX_LOG = 1 << 20  # the log is cut to its newer half beyond this
MAX_TRACKED = 64  # agent sessions whose transcript offset and model are remembered
LOG = "agent-hook.log"
STATE = "agent-hooks.json"


def run(args: list[str]) -> int:
    """Record one hook call; always 0 (a hook's failure must never stop the agent)."""
    agent = args[0] if args else ""
    root: Path | None = None
    try:
        data, note = _read_input()
        cwd = data.get("cwd") if isinstance(data.get("cwd"), str) else None
        root = _root(Path(cwd) if cwd else Path.cwd())
        if root is None:
            return 0  # not a hif working copy: nothing to record, nothing to say
        if note:
            _log(root, agent, note)
        elif len(args) != 2 or agent not in AGENTS:
            _log(root, agent, f"usage: hif agent hook {{{','.join(AGENTS)}}} EVENT (got {args!r})")
        else:
            Recorder(root, agent, data).handle(hook_items(agent, args[1], data))
    except BaseException as e:  # noqa: BLE001 - everything, KeyboardInterrupt included, is logged
        if root is not None:
            _log(root, agent, f"{type(e).__name__}: {e}")
    finally:
        if agent == "gemini-cli":  # its hooks' stdout must be JSON
            sys.stdout.write("{}\n")
        sys.stdout.flush()
    return 0


def _read_input() -> tuple[dict[str, Any], str | None]:
    """The hook input, read in chunks up to :data:`MAX_INPUT` (the rest drained, not kept, so the
    agent's write never fails); a problem is the second value, never raised."""
    chunks, size = [], 0
    stdin = sys.stdin.buffer
    while True:
        chunk = stdin.read(1 << 16)
        if not chunk:
            break
        size += len(chunk)
        if size <= MAX_INPUT:
            chunks.append(chunk)
    if size > MAX_INPUT:
        return {}, f"hook input of {size} bytes is over {MAX_INPUT}: ignored"
    try:
        data = json.loads(b"".join(chunks))
    except ValueError as e:
        return {}, f"hook input is not JSON ({e})"
    if not isinstance(data, dict):
        return {}, "hook input is not a JSON object"
    return data, None


def _root(start: Path) -> Path | None:
    # the hook imports only what it uses, when it uses it (start-up time)
    from hif.errors import NotARepository
    from hif.worktree.workspace import find_root  # (start-up time, as above)

    try:
        return find_root(start)
    except (NotARepository, OSError):
        return None


def _log(root: Path, agent: str, message: str) -> None:
    """Append one line to ``.hif/agent-hook.log`` (best effort: a log that cannot be written is let be)."""
    path = root / ".hif" / LOG
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {agent or '-'} {message}".replace("\n", " ")
    try:
        if path.exists() and path.stat().st_size > MAX_LOG:
            keep = path.read_bytes()[-MAX_LOG // 2:]
            path.write_bytes(keep[keep.find(b"\n") + 1:])
        with open(path, "a", encoding="utf-8") as f:
            f.write(line[:4000] + "\n")
    except OSError:
        pass


class Recorder:
    """One hook call's recording into the working copy at ``root``."""

    def __init__(self, root: Path, agent: str, data: dict[str, Any]) -> None:
        from hif.worktree.workspace import WorkTree  # (start-up time, as above)

        self.root, self.agent, self.data = root, agent, data
        self.work = WorkTree(root)
        self.config = self.work.config()
        self.agent_session = short(data.get("session_id"))
        self.key = f"{agent}:{self.agent_session or '-'}"
        self.tracked = self._load_tracked()
        self.sdk: Any = None  # hif.Repository, for a working copy the plumbing path does not serve
        self.repo: Any = None

    # -- what the agent said and did -------------------------------------------------------------

    def handle(self, items: list[Item]) -> None:
        try:
            for item in items:
                self._one(item)
        finally:
            self._close()

    def _one(self, item: Item) -> None:
        mine = self.tracked.setdefault(self.key, {})
        if item.model:
            mine["model"] = item.model
        if item.what == "begin":
            mine["offset"] = self._transcript_size()
            self._save_tracked()
        elif item.what == "end":
            self.tracked.pop(self.key, None)
            self._save_tracked()
        elif item.what == "prompt":
            if "offset" not in mine:
                mine["offset"] = self._transcript_size()
                self._save_tracked()
            text = redact(item.text)
            if self._session() is None:
                self._start(goal_of(text))
            self._say(text, role="human", kind=None, item=item)
        elif item.what == "reply":
            if self._session() is not None:
                self._say(redact(item.text), role="agent", kind=None, item=item)
        elif item.what == "tail":
            self._tail(mine)
        elif item.what == "note":
            if self._session() is not None:
                self._say(redact(item.text), role="agent", kind=item.kind, item=item)
        elif item.what == "write" and item.path and self._session() is not None:
            self._write(item)

    def _provenance(self, item: Item | None) -> dict[str, str]:
        out = {"agent": self.agent}
        model = (item.model if item else None) or self.tracked.get(self.key, {}).get("model")
        for key, value in (("model", model), ("agent_session", self.agent_session),
                           ("tool", item.tool if item else None), ("tool_call", item.tool_call if item else None)):
            if value:
                out[key] = value
        return out

    def _tail(self, mine: dict[str, Any]) -> None:
        """The agent's reply: the text of its messages in the transcript's new tail."""
        path = self.data.get("transcript_path")
        if not isinstance(path, str) or not path:
            return
        lines, mine["offset"] = read_tail(Path(path), mine.get("offset"))
        self._save_tracked()
        replies = list(claude_transcript(json_lines(lines, Counts()), replies_only=True))
        if replies and self._session() is not None:
            model = next((r.model for r in reversed(replies) if r.model), None)
            if model:
                mine["model"] = model
                self._save_tracked()
            text = "\n\n".join(r.text.strip() for r in replies)
            self._say(redact(text), role="agent", kind=None, item=Item("reply", model=model))

    def _transcript_size(self) -> int:
        path = self.data.get("transcript_path")
        try:
            return os.stat(path).st_size if isinstance(path, str) and path else 0
        except OSError:
            return 0

    # -- the session ---------------------------------------------------------------------------

    def _plain(self) -> bool:
        """Whether the plumbing path serves this working copy: a local embedded store."""
        store = self.config.get("store")
        return "remote" not in self.config and isinstance(store, str) and "://" not in store

    def _session(self) -> str | None:
        return self.work.state().session

    def _open(self) -> Any:
        if self._plain():
            if self.repo is None:
                # the plumbing alone, without hif.repo's mainline and rollups (start-up time)
                from hif.objects import ObjectDB
                from hif.session import SessionStore  # (start-up time, as above)
                from hif.store import open_store  # (start-up time, as above)

                store, prefix = open_store(self.config["store"]), f"repos/{self.config['repo']}/"
                objects = ObjectDB(store, prefix)
                self.repo = Plumbing(store, objects, SessionStore(store, prefix, objects))
            return self.repo
        if self.sdk is None:
            # a forge clone or S3 store: the SDK (slower start)
            from hif.porcelain import Repository

            self.sdk = Repository.open(self.root)
        return self.sdk

    def _author(self, role: str) -> str:
        from hif.worktree.workspace import default_author  # (start-up time, as above)

        return default_author() if role == "human" else self.agent

    def _start(self, goal: str) -> None:
        target = self._open()
        if not self._plain():
            target.start_session(goal, author=self._author("human"), role="human")
            return
        from hif.store.base import drive  # the plumbing runs without an event loop (start-up time)

        state = self.work.state()
        s = drive(target.sessions.start(goal, self._author("human"), "human", state.position))
        state.session = s.id
        self.work.write_state(state)

    def _say(self, text: str, *, role: str, kind: str | None, item: Item) -> None:
        if not text.strip():
            return
        prov = self._provenance(item) if role == "agent" else {
            k: v for k, v in self._provenance(None).items() if k in ("agent", "agent_session")}
        target = self._open()
        if not self._plain():
            target.say(text, role=role, author=self._author(role), kind=kind, provenance=prov)
            return
        self._append("say", role, text=text, kind=kind, **prov)

    def _append(self, etype: str, role: str, **fields: Any) -> None:
        from hif.session import make_event  # (start-up time, as above)
        from hif.store.base import drive  # (as above)

        sid = self._session()
        event = make_event(etype, self._author(role), role, time.time(), **fields)
        drive(self.repo.sessions.append(sid, event))

    def _write(self, item: Item) -> None:
        cwd = self.data.get("cwd") if isinstance(self.data.get("cwd"), str) else str(self.root)
        full = os.path.normpath(os.path.join(cwd, item.path or ""))
        rel = self.work.to_repo_path(full, self.root)
        target = self._open()
        if not self._plain():
            target.record_file(rel, role="agent", author=self.agent, provenance=self._provenance(item))
            return
        try:
            entry, content = self.work.read_file(rel)
        except FileNotFoundError:
            return  # gone again: the next recording (say, checkpoint, land) notes it
        if entry is None:
            return
        from hif.store.base import drive  # (start-up time, as above)

        drive(self.repo.objects.put_blob(content))  # the blob is stored before the event naming it
        self._append("write", "agent", path=rel, kind=entry.kind, blob=entry.oid, **self._provenance(item))

    def _close(self) -> None:
        if self.sdk is not None:
            self.sdk.close()
        if self.repo is not None:
            from hif.store.base import drive  # (start-up time, as above)

            drive(self.repo.store.close())

    # -- what the hook remembers between calls ------------------------------------------------

    def _load_tracked(self) -> dict[str, dict[str, Any]]:
        try:
            value = json.loads((self.work.meta / STATE).read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in value.items() if isinstance(v, dict)} if isinstance(value, dict) else {}

    def _save_tracked(self) -> None:
        mine = self.tracked.pop(self.key, None)
        kept = dict(list(self.tracked.items())[-(MAX_TRACKED - 1):])
        if mine is not None:
            kept[self.key] = mine  # the newest last: the oldest is forgotten first
        self.tracked = kept
        tmp = self.work.meta / f"{STATE}.{os.getpid()}"
        tmp.write_text(json.dumps(kept))
        os.replace(tmp, self.work.meta / STATE)


class Plumbing:
    """What the hook uses of a repository: its store, objects and sessions (``hif.repo.Repo``'s
    layout, ``repos/<owner>/<name>/``, without importing the mainline it does not read)."""

    __slots__ = ("objects", "sessions", "store")

    def __init__(self, store: Any, objects: Any, sessions: Any) -> None:
        self.store, self.objects, self.sessions = store, objects, sessions


def read_tail(path: Path, offset: Any) -> tuple[list[bytes], int]:
    """The complete lines of ``path`` after ``offset`` (its newest :data:`MAX_TAIL` bytes at most) and
    the offset after them; a file shorter than ``offset`` was replaced and is read from its start."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        start = offset if isinstance(offset, int) and 0 <= offset <= size else 0
        skip = size - start > MAX_TAIL
        if skip:
            start = size - MAX_TAIL
        f.seek(start)
        data = f.read(size - start)
    end = data.rfind(b"\n") + 1  # a line still being written is left for the next call
    first = data.find(b"\n") + 1 if skip else 0  # a line cut by the bound is not read
    return data[first:end].split(b"\n") if end > first else [], start + end

"""Sessions through :class:`hif.Repository`: start one, record the working copy into it, the
conversation (say, decide, checkpoint), land it, sync it onto the mainline, run its checks."""

from __future__ import annotations

import contextlib
import json
from types import TracebackType
from typing import TYPE_CHECKING, Any

from hif.errors import (
    InvalidInput,
    InvalidPath,
    NoOpenSession,
    NotFound,
    SessionClosed,
    TooLarge,
)
from hif.objects import FILE, Entry
from hif.paths import CHECKS_CONFIG
from hif.porcelain.base import (
    FileChange,
    SyncResult,
    action_of,
    default_author,
    default_role,
    fold_in,
)
from hif.porcelain.workcopy import WorkingCopy
from hif.repo import Repo
from hif.session import MAX_PROVENANCE, MAX_TEXT, Session, check_session_id, check_text, make_event
from hif.tree import apply, lookup_file
from hif.worktree.workspace import WorkState

BLOB_BATCH = 64  # recording this many changed files or more stores their blobs in batches...
BLOB_BATCH_FILES = 4096  # ...of at most this many blobs...
BLOB_BATCH_BYTES = 32 << 20  # ...or this many bytes of content (what a batch holds in memory)
SCAN_KEEP = 4 << 20  # contents a record's scan keeps (beyond that a file is read again when stored)

if TYPE_CHECKING:
    from hif.landing import LandResult
    from hif.porcelain.checks import CheckRun


MAX_IMPORT_EVENTS = 20_000  # events one transcript import appends


class SessionHandle:
    """An open session as a context manager: leaving the block normally lands it; an exception leaves it
    open (nothing is lost; fix things and land, or abandon)."""

    def __init__(self, repo: Sessions, session_id: str) -> None:
        self.repo = repo
        self.id = session_id
        self.result: LandResult | None = None

    def say(self, text: str, *, role: str | None = None, author: str | None = None) -> None:
        self.repo.say(text, role=role, author=author)

    def decide(self, decision: str, *, why: str, alternatives: list[str] | None = None,
               role: str | None = None, author: str | None = None) -> None:
        self.repo.decide(decision, why=why, alternatives=alternatives or [], role=role, author=author)

    def write(self, path: str, content: bytes | str) -> None:
        self.repo.write(path, content)

    def delete(self, path: str) -> None:
        self.repo.delete(path)

    def checkpoint(self, note: str, *, role: str | None = None, author: str | None = None) -> None:
        self.repo.checkpoint(note, role=role, author=author)

    def land(self) -> LandResult:
        self.result = self.repo.land()
        return self.result

    def __enter__(self) -> SessionHandle:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if et is None and self.result is None and self.repo.session_id == self.id:
            self.land()




class Sessions(WorkingCopy):
    """The open session of a working copy: its events, landing and syncing it."""

    landed: Session | None = None  # the session the last land() landed
    # who records through this object (hif.session.PROVENANCE), stamped on every event it makes
    # unless the call names its own: an MCP server sets its client's, for one tool call
    provenance: dict[str, str] | None = None

    # -- sessions ----------------------------------------------------------------------------

    def start_session(self, goal: str, *, author: str | None = None, role: str | None = None) -> SessionHandle:
        st = self.state
        if st.session is not None:
            raise InvalidInput(f"session {st.session} is already open here; land or abandon it first")
        check_text(goal, "goal")
        # edits made before the session started are adopted: they are recorded at its first event
        session = self._run(self.repo.sessions.start(goal, author or default_author(), role or default_role(),
                                                     st.position, provenance=self.provenance))
        st.session = session.id
        self.work.write_state(st)
        return SessionHandle(self, session.id)

    def session(self) -> SessionHandle | None:
        sid = self.session_id
        return SessionHandle(self, sid) if sid else None

    def _open_session(self) -> Session:
        sid = self.session_id
        if sid is None:
            raise NoOpenSession("no open session here (start one with: hif session start GOAL)")
        s = self._run(self.repo.sessions.load(sid))
        if not s.is_open:
            raise SessionClosed(f"session {sid} was {s.state}")
        return s

    def _append(self, s: Session, etype: str, *, author: str | None, role: str | None, **fields: Any) -> dict[str, Any]:
        event = make_event(etype, author or default_author(), role or default_role(), self.repo.clock(),
                           **{**(self.provenance or {}), **fields})
        stamped = self._run(self.repo.sessions.append(s.id, event, s.next_seq))
        fold_in(s, stamped)
        return stamped

    def _append_all(self, s: Session, items: list[tuple[str, dict[str, Any]]], *, author: str | None,
                    role: str | None) -> None:
        """Append several events in one batch (see :meth:`_append_made`)."""
        who, as_role = author or default_author(), role or default_role()
        stamp = self.provenance or {}
        self._append_made(s, [make_event(etype, who, as_role, self.repo.clock(), **{**stamp, **fields})
                              for etype, fields in items])

    def _append_made(self, s: Session, events: list[dict[str, Any]]) -> None:
        """Append events already made (each with its own author and role), in order, in one batch: a
        forge gets them in one request (after the blobs they name), the store in one ``create_all``."""
        if not events:
            return
        if self.remote is not None:
            appended = self._run(self.remote.sessions.append_many(s.id, events, s.next_seq))
        else:  # s.next_seq comes from reading the log: the events may be stored in groups
            appended = self._run(self.repo.sessions.append_many(s.id, events, s.next_seq, group=True))
        for stamped in appended:
            fold_in(s, stamped)

    def record(self, *, author: str | None = None, role: str | None = None) -> list[FileChange]:
        """Append write/delete events for every working-copy change the session has not seen yet."""
        s = self._open_session()
        return self._record(s, author=author, role=role)

    def _record(self, s: Session, *, author: str | None = None, role: str | None = None) -> list[FileChange]:
        """Append write/delete events for the working-copy changes the session has not seen. Many
        files are streamed: their blobs stored in batches (each durable with one store sync, see
        put_blobs), each batch's events appended right after its blobs, so memory holds one batch of
        contents, never the session's (the scan keeps at most ``SCAN_KEEP`` bytes of them)."""
        base_tree = self._run(self.repo.mainline.tree_at(s.base))
        scanned = self.work.scan(keep=SCAN_KEEP)
        base = self.work.index.base_entries()
        known: dict[str, Entry | None] = {**base, **s.changes}
        changed = [(path, entry, content) for path, (entry, content) in sorted(scanned.items())
                   if known.get(path) != entry]
        deleted = [path for path, entry in sorted(known.items()) if entry is not None and path not in scanned]
        del scanned
        if self.cone is not None:  # before anything is stored
            self.cone.check([p for p, _, _ in changed] + deleted)
        who, as_role, stamp = author or default_author(), role or default_role(), self.provenance or {}
        out: list[FileChange] = []
        events: list[dict[str, Any]] = []
        batch: list[bytes] | None = [] if len(changed) >= BLOB_BATCH else None  # else one put each
        size = 0
        for path, entry, content in changed:
            if content is None:
                entry2, content = self.work.read_file(path)
                if entry2 is None or content is None:
                    continue
                entry = entry2
            if batch is None:
                self._run(self.repo.objects.put_blob(content))
            else:
                batch.append(content)
                size += len(content)
            events.append(make_event("write", who, as_role, self.repo.clock(), path=path, kind=entry.kind,
                                     blob=entry.oid, **stamp))
            out.append(FileChange(path, action_of(base.get(path), entry), base.get(path), entry))
            if batch is not None and (len(batch) >= BLOB_BATCH_FILES or size >= BLOB_BATCH_BYTES):
                self._run(self.repo.objects.put_blobs(batch))  # every blob is stored before its event
                self._append_made(s, events)
                batch, events, size = [], [], 0
        if batch:
            self._run(self.repo.objects.put_blobs(batch))
        for path in deleted:
            events.append(make_event("delete", who, as_role, self.repo.clock(), path=path, **stamp))
            out.append(FileChange(path, "deleted", base.get(path), None))
        self._append_made(s, events)
        self.work.save_index()
        del base_tree
        return out

    def record_file(self, path: str, *, role: str | None = None, author: str | None = None,
                    provenance: dict[str, str] | None = None) -> dict[str, Any] | None:
        """Append a write event for one working file as it is now, with ``provenance`` (the tool call
        of a coding agent that wrote it); None when the session holds it so already or it is gone."""
        s = self._open_session()
        rel = self.work.to_repo_path(path, self.root)
        try:
            entry, content = self.work.read_file(rel)
        except FileNotFoundError:
            return None  # gone again: the next recording notes what became of it
        if entry is None or s.changes.get(rel) == entry:
            return None
        self._run(self.repo.objects.put_blob(content))  # every blob is stored before its event
        self._append_all(s, [("write", {"path": rel, "kind": entry.kind, "blob": entry.oid, **(provenance or {})})],
                         author=author, role=role)
        return s.events[-1]

    def import_transcript(self, fmt: str, path: str, *, goal: str | None = None) -> dict[str, Any]:
        """Append an agent's transcript (``fmt``: hif.agents.formats.TRANSCRIPTS) to the open session,
        opening one (goal: ``goal`` or the first prompt) when none is: the person's prompts, the
        agent's replies and notes, redacted, and the files it wrote whole as writes. The whole file is
        read and checked before anything is appended."""
        # transcripts are read by this command only (start-up time)
        from hif.agents.formats import Counts, goal_of, json_lines, read_lines, transcript_items
        from hif.agents.redact import redact  # (start-up time, as above)

        counts = Counts()
        items = []
        for item in transcript_items(fmt, json_lines(read_lines(path, counts), counts)):
            items.append(item)
            if len(items) > MAX_IMPORT_EVENTS:
                raise TooLarge(f"{path} holds more than {MAX_IMPORT_EVENTS} events; import it in parts")
        if not any(i.what in ("prompt", "reply") for i in items):
            raise InvalidInput(f"{path} holds no conversation a {fmt} transcript would ({counts.read} line(s), "
                               f"{counts.malformed} malformed)")
        me, now = default_author(), self.repo.clock()
        events: list[dict[str, Any]] = []
        outside = 0
        for it in items:
            prov = {"agent": fmt, "model": it.model, "tool": it.tool, "tool_call": it.tool_call}
            when = it.time if it.time is not None and 0 <= it.time <= now else now
            if it.what == "write":
                rel = self._inside(it.path or "")
                if rel is None or it.content is None:
                    outside += 1
                    continue
                oid = self._run(self.repo.objects.put_blob(it.content))  # stored before its event
                events.append(make_event("write", fmt, "agent", when, path=rel, kind=FILE, blob=oid, **prov))
                continue
            text = redact(it.text)
            if len(text) > MAX_TEXT:
                text = text[: MAX_TEXT - 20] + " … [truncated]"
            if it.what == "prompt":
                events.append(make_event("say", me, "human", when, text=text, agent=fmt))
            else:
                events.append(make_event("say", fmt, "agent", when, text=text, kind=it.kind, **prov))
        if self.session_id is None:
            first = next((i.text for i in items if i.what == "prompt"), "") or f"imported {fmt} transcript"
            self.start_session(goal or goal_of(redact(first)), author=me, role="human")
        s = self._open_session()
        self._append_made(s, events)
        return {"session": s.id, "events": len(events), "skipped_writes": outside, **counts.to_json()}

    def _inside(self, path: str) -> str | None:
        """A path an agent named (absolute, or relative to the root) as a repository path, or None
        when it is outside this working copy or not one a repository may hold."""
        try:
            return self.work.to_repo_path(path, self.root) or None
        except InvalidPath:
            return None

    def import_agent_trace(self, data: bytes, *, role: str | None = None, author: str | None = None) -> dict[str, Any]:
        """Attach an Agent Trace record to the open session: a say of kind ``agent-trace`` whose text
        is the record's JSON (checked first: hif.agents.trace.check_record)."""
        # only this command reads records (start-up time)
        from hif.agents.trace import check_record, summary

        rec = check_record(data)
        text = json.dumps(rec, indent=2, sort_keys=True)
        s = self._open_session()
        tool = rec.get("tool") if isinstance(rec.get("tool"), dict) else {}
        prov = {"agent": tool.get("name")} if isinstance(tool.get("name"), str) and tool["name"].strip() else {}
        e = self._append(s, "say", author=author, role=role, text=text, kind="agent-trace",
                         **{k: v[:MAX_PROVENANCE] for k, v in prov.items()})
        return {"session": s.id, "seq": e["seq"], "record": rec["id"], "summary": summary(rec)}

    def say(self, text: str, *, role: str | None = None, author: str | None = None, kind: str | None = None,
            provenance: dict[str, str] | None = None) -> dict[str, Any]:
        """A message (or, with ``kind``, a plan, todo list or note); ``provenance`` says which agent,
        model and agent session produced it (hif.session.PROVENANCE)."""
        check_text(text, "message")
        s = self._open_session()
        self._record(s, author=author, role=role)
        return self._append(s, "say", author=author, role=role, text=text, kind=kind, **(provenance or {}))

    def decide(self, decision: str, *, why: str, alternatives: list[str] | None = None,
               role: str | None = None, author: str | None = None,
               provenance: dict[str, str] | None = None) -> dict[str, Any]:
        check_text(decision, "decision")
        check_text(why, "rationale (--why)")
        for alt in alternatives or []:
            check_text(alt, "alternative")
        s = self._open_session()
        self._record(s, author=author, role=role)
        return self._append(s, "decide", author=author, role=role, decision=decision, why=why,
                            alternatives=list(alternatives or []), **(provenance or {}))

    def checkpoint(self, note: str, *, role: str | None = None, author: str | None = None) -> dict[str, Any]:
        check_text(note, "checkpoint note")
        s = self._open_session()
        self._record(s, author=author, role=role)
        tree = self._run(self._session_tree(s))
        n = len(s.of_type("checkpoint")) + 1
        return self._append(s, "checkpoint", author=author, role=role, note=note, tree=tree, iteration=n)

    async def _session_tree(self, s: Session) -> bytes:
        base_tree = await self.repo.mainline.tree_at(s.base)
        return await apply(self.repo.objects, base_tree, s.changes)

    def write(self, path: str, content: bytes | str) -> None:
        """SDK convenience: write a file in the working copy (recorded at the next event)."""
        rel = self.work.to_repo_path(path, self.root)
        if not rel:
            raise InvalidPath("a file path is required")
        full = self.work._safe_parent(rel)
        full.write_bytes(content.encode() if isinstance(content, str) else content)

    def delete(self, path: str) -> None:
        """SDK convenience: remove a file from the working copy (recorded at the next event)."""
        rel = self.work.to_repo_path(path, self.root)
        if not rel or not (self.root / rel).is_file() and not (self.root / rel).is_symlink():
            raise NotFound(f"no file {path} in the working copy")
        (self.root / rel).unlink()

    def abandon(self, reason: str = "abandoned", *, role: str | None = None, author: str | None = None) -> Session:
        s = self._open_session()
        self._record(s, author=author, role=role)
        if self.remote is not None:  # the forge appends the abandon event and closes the session
            self._run(self.remote.abandon(s, reason, role or default_role(), self.provenance))
        else:
            self._append(s, "abandon", author=author, role=role, reason=reason)
            snap = self._run(self.repo.sessions.write_snapshot(s, s.changes))
            self._run(self.repo.sessions.close(s.id, {"state": "abandoned", "snapshot": snap, "reason": reason}))
        # the working copy goes back to its base, so nothing of the abandoned work is mixed into the next one
        st = self.state
        st.session = None
        self.work.write_state(st)
        self._run(self._checkout_changes(self.work.index.base_entries(), self._changes_vs_base(), restore=True))
        s.state = "abandoned"
        return s

    def sessions(self) -> list[Session]:
        out = []
        for sid in self._run(self.repo.sessions.list_open()):
            with contextlib.suppress(NotFound):  # a marker whose first event is missing (a crash)
                out.append(self._run(self.repo.sessions.load(sid)))
        return out

    def load_session(self, sid: str) -> Session:
        return self._run(self.repo.sessions.load(check_session_id(sid)))


    # -- landing, sync, goto -----------------------------------------------------------------

    def land(self, *, role: str | None = None, author: str | None = None) -> LandResult:
        """Land the open session; ``self.landed`` is then the session as it landed (its events: the
        CLI and the MCP server say when it records no decision)."""
        sid = self.session_id
        fm = self.finished_move
        if sid is None and fm is not None and fm.op == "land" and fm.session is not None:
            # a `hif land` killed while moving the files: opening the working copy finished the move,
            # and this rerun reports that landing (once), as below
            self.finished_move = None
            done = self._run(self.repo.sessions.load(fm.session))
            if done.state == "landed":
                self.landed = done
                return self._run(self._land(done))
        if sid is not None:
            done = self._run(self.repo.sessions.load(sid))
            if done.state == "landed":
                # an earlier `hif land` was interrupted after landing: report that landing (once) and
                # finish moving the working copy, so a rerun completes the job instead of failing
                self._ensure_index()
                self.landed = done
                old_tree = self._run(self._session_tree(done))
                result = self._run(self._land(done))
                self._run(self._move_to(old_tree, result.tree, result.position, session=None, op="land"))
                return result
        s = self._open_session()
        self._ensure_index()
        self._record(s, author=author, role=role)
        self._refuse_markers(s)
        old_tree = self._run(self._session_tree(s))
        result = self._run(self._land(s))
        self.landed = s
        self._run(self._move_to(old_tree, result.tree, result.position, session=None, op="land"))
        return result

    async def _land(self, s: Session) -> LandResult:
        """The one seam between local and forge landing: a forge lands on its side."""
        if self.remote is not None:
            return await self.remote.land(s)
        # landing and its scans: only land and sync load them (start-up time)
        from hif.landing import land

        return await land(self.repo, s, policy=_local_policy)

    def check(self, names: list[str] | None = None, *, role: str | None = None,
              author: str | None = None) -> CheckRun:
        """Run the declared checks on the open session's tree (cached), attesting each result."""
        # subprocess, tempfile and the check runner: only ``hif check`` needs them (start-up time)
        from hif.porcelain.checks import run_checks

        s = self._open_session()
        self._ensure_index()
        self._record(s, author=author, role=role)
        tree = self._run(self._session_tree(s))

        def attest(att: dict[str, Any], sig: bytes) -> None:
            if self.remote is not None:
                answer = self.remote.client.post(f"{self.remote.api}sessions/{s.id}/attest",
                                                 {"attestation": att, "signature": sig})
                fold_in(s, answer["event"])
            else:
                self._append(s, "attest", author=author or default_author(), role=role or default_role(),
                             attestation=att, signature=sig)

        return run_checks(self, s, tree, names, author=author or default_author(), run=self._run,
                          attest=attest)


    def sync(self, *, role: str | None = None, author: str | None = None) -> SyncResult:
        """Bring the open session onto the head: clean merges applied, conflicts written with markers."""
        s = self._open_session()
        self._ensure_index()
        self._record(s, author=author, role=role)
        try:
            result = self._run(self._sync(s, author=author, role=role))
        except BaseException:
            self._release_move()  # a move begun stays journalled: finished or undone at the next open
            raise
        # record outside the event loop (_record runs coroutines itself): merged/conflicted files
        # are now part of the session's changes
        self._record(s, author=author, role=role)
        return result

    async def _sync(self, s: Session, *, author: str | None, role: str | None) -> SyncResult:
        # landing and its scans: only land and sync load them (start-up time)
        from hif.landing import Scan, effective_changes, resolve, scan_since

        head = await self.repo.mainline.head()
        if head == s.base:
            return SyncResult(head)
        ours = await effective_changes(self.repo, s)
        scan = Scan(checked=s.base, paths=list(ours))
        await scan_since(self.repo, s.id, scan, head)
        if scan.landed_at is not None:
            raise SessionClosed(f"session {s.id} already landed at position {scan.landed_at}")
        base_tree = await self.repo.mainline.tree_at(s.base)
        head_tree = await self.repo.mainline.tree_at(head)
        # what the merge and the rebase read (within the cone, for a sparse working copy)
        await self.repo.objects.prefetch_diff(await self._view(base_tree), await self._view(head_tree))
        final, merged, conflicts = await resolve(
            self.repo, ours, base_tree, head_tree, scan.touched, write_markers=True
        )
        session_tree = await apply(self.repo.objects, base_tree, ours)
        target = await apply(self.repo.objects, head_tree, final)
        # the journal stays until the sync event is recorded: an interruption before that is undone
        updated = await self._move_to(session_tree, target, head, session=s.id, op="sync", finish=False)
        # the stat cache's base is now the head tree; the session's changes are re-expressed against it
        await self._rebase_index(head_tree)
        event = make_event("sync", author or default_author(), role or default_role(), self.repo.clock(),
                           base=head, merged=merged, conflicts=sorted({c.path for c in conflicts}),
                           **(self.provenance or {}))
        stamped = await self.repo.sessions.append(s.id, event, s.next_seq)
        s.events.append(stamped)
        s.base = head
        self.work.write_state(WorkState(head, s.id))
        self._end_move()
        return SyncResult(head, [p for p in updated if p not in ours], merged, [c.to_json() for c in conflicts])



async def _local_policy(repo: Repo, s: Session, ours: dict[str, Entry | None], base_tree: bytes) -> bool:
    """Landing in a local store: ``require_checks`` in the base tree's hif.toml
    (:func:`hif.checks.local_policy`). hif.checks is imported only for a base tree that has one."""
    if await lookup_file(repo.objects, base_tree, CHECKS_CONFIG) is None:
        return False
    # the checks plumbing: only a base tree with a hif.toml needs it (start-up time)
    from hif.checks import local_policy

    return await local_policy()(repo, s, ours, base_tree)



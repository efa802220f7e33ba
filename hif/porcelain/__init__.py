"""The user-level API: ``hif.Repository`` over a working copy. The CLI is a thin shell around it.

Everything here is synchronous for callers (agents' scripts, the CLI); underneath, each call runs the
async plumbing on the repository's own event loop.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from hif.errors import (
    DirtyWorkingCopy,
    HifError,
    InvalidInput,
    InvalidPath,
    NoOpenSession,
    NotARepository,
    NotFound,
    SessionClosed,
)
from hif.objects import DIR, EMPTY_TREE, LINK, Entry
from hif.paths import CHECKS_CONFIG
from hif.repo import Repo, check_repo_name
from hif.session import Session, check_role, check_session_id, check_text, make_event
from hif.sparse import Cone, parse_cones
from hif.store import EmbeddedStore, ObjectStore, open_store
from hif.store.base import drive
from hif.tree import apply, lookup, lookup_file, read_dir, walk
from hif.tree import diff as tree_diff
from hif.worktree.workspace import META, Move, WorkState, WorkTree, ensure_clean, find_root

# Imported where used, not here (each command is a process of its own, and start-up is most of a
# short one's CPU): hif.landing and hif.merge (landing, sync, diffs), hif.checks (a repository whose
# hif.toml declares checks), hif.remote (forge clones), blame, gitinterop, checkout, getpass.
if TYPE_CHECKING:
    from hif.blame import BlameLine
    from hif.forge.remote import RemoteRepo
    from hif.git.exporter import ExportResult
    from hif.git.importer import ImportResult
    from hif.landing import LandResult
    from hif.mainline import LandingRecord
    from hif.porcelain.checks import CheckRun

T = TypeVar("T")
MARKER = b"<<<<<<< "
CLONE_MARKER = "clone-incomplete.json"  # in .hif/ while a clone has not finished its checkout


class _Runner:
    """Runs the async plumbing for synchronous callers. Over the embedded store no operation ever
    waits, so coroutines are driven directly, without an event loop (and without importing asyncio,
    a third of the CLI's start-up); other stores (S3) get a real event loop."""

    def __init__(self, store: ObjectStore) -> None:
        self._loop: Any = None
        if not isinstance(store, EmbeddedStore):
            import asyncio

            self._loop = asyncio.Runner()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is not None:
            return self._loop.run(coro)
        return drive(coro)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()


# (each dataclass has a docstring: without one, @dataclass builds one from inspect.signature, a
# cost every command would pay at import)
@dataclass
class FileChange:
    """One file's change against the base: added, modified or deleted, with both entries."""

    path: str
    action: str  # added | modified | deleted
    old: Entry | None
    new: Entry | None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "action": self.action,
            "old": self.old.to_json() if self.old else None,
            "new": self.new.to_json() if self.new else None,
        }


@dataclass
class Status:
    """``hif status``: the position, the open session (if any) and the working copy's changes."""

    position: int
    session: Session | None
    changes: list[FileChange]

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "session": self.session.to_json(events=False) if self.session else None,
            "changes": [c.to_json() for c in self.changes],
        }


@dataclass
class MoveReport:
    """A move of the working copy that a killed or failed command left half done, finished when the
    working copy was next opened: carried forward to its target (``hif goto``/``pull``/``land``), or
    back to its source for a ``hif sync`` whose event was not recorded. ``kept`` are the paths found
    at neither tree's content (changed by someone after the move began): left as they were."""

    op: str  # goto | land | sync | unknown (a journal that could not be read)
    position: int  # where the working copy is now
    session: str | None  # the session of the interrupted command (a land's: landed)
    undone: bool
    kept: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "position": self.position, "session": self.session, "undone": self.undone,
                "kept": self.kept}


@dataclass
class SyncResult:
    """``hif sync``: the new base position and the files updated, merged and in conflict."""

    position: int
    updated: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "updated": self.updated, "merged": self.merged, "conflicts": self.conflicts}


def fold_in(s: Session, stamped: dict[str, Any]) -> None:
    """Keep the folded view current: land() right after _record() must see the new writes."""
    s.events.append(stamped)
    if stamped["type"] == "write":
        s.changes[stamped["path"]] = Entry(stamped["kind"], stamped["blob"])
    elif stamped["type"] == "delete":
        s.changes[stamped["path"]] = None


def _action(old: Entry | None, new: Entry | None) -> str:
    return "added" if old is None else "deleted" if new is None else "modified"


def default_author() -> str:
    author = os.environ.get("HIF_AUTHOR")
    if author:
        return author
    import getpass

    return getpass.getuser()


def default_role() -> str:
    return check_role(os.environ.get("HIF_ROLE", "human"))


class SessionHandle:
    """An open session as a context manager: leaving the block normally lands it; an exception leaves it
    open (nothing is lost; fix things and land, or abandon)."""

    def __init__(self, repo: Repository, session_id: str) -> None:
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


class Repository:
    """A hif working copy and the repository it works on."""

    def __init__(self, root: Path) -> None:
        self.work = WorkTree(root)
        self.root = root
        cfg = self.work.config()
        self.config = cfg
        # a clone of a forge repository: the forge holds the truth, .hif/cache a verified copy
        self.remote: RemoteRepo | None = None
        if "remote" in cfg:
            # imported lazily: httpx costs 0.1 s of start-up
            from hif.forge.remote import open_remote

            self.remote = open_remote(self.work.meta, cfg)
            self.repo: Repo = self.remote
            self.store = self.remote.store
        else:
            self.store = open_store(cfg["store"])
            self.repo = Repo(self.store, cfg["repo"])
        self._runner = _Runner(self.store)
        self.cone = Cone(cfg["sparse"]) if cfg.get("sparse") else None
        self.resumed = False  # set by clone() when it finished an interrupted clone
        self._moving: Move | None = None  # the journal of the move this process is making
        # a move that a killed (or failed) command left half done is finished before anything else
        self.finished_move: MoveReport | None = None
        if self.work.move_pending():  # one stat on the common path
            try:
                self.finished_move = self._finish_move()
            except BaseException:
                self.close()
                raise

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str] = ".") -> Repository:
        return cls(find_root(Path(path)))

    @classmethod
    def init(cls, path: str | os.PathLike[str], *, store: str | None = None, name: str | None = None) -> Repository:
        root = Path(os.path.abspath(path))  # absolute and without ".." components
        if (root / META / "config.json").exists():
            raise InvalidInput(f"{root} is already a hif working copy")
        if root.exists() and not root.is_dir():
            raise InvalidInput(f"{root} exists and is not a directory")
        name = check_repo_name(name or f"local/{_slug(root.name)}")
        meta = root / META
        created_dir = not root.exists()
        try:
            meta.mkdir(parents=True, exist_ok=True)
            store_url = store or str(meta / "store")
            s = open_store(store_url, create=True)
            runner = _Runner(s)
            try:
                runner.run(Repo(s, name).ensure())
                from hif import keys  # the user's signing key, trusted by this store (hif check)

                runner.run(keys.trust(s, default_author(), keys.public_key()))
                runner.run(s.close())
            finally:
                runner.close()
            wt = WorkTree(root)
            wt.write_config({"store": store_url, "repo": name})
            wt.write_state(WorkState())
        except HifError:
            if created_dir:
                _remove_tree(root)
            raise
        return cls(root)

    @classmethod
    def clone(cls, url: str, path: str | os.PathLike[str] | None = None, *,
              progress: Callable[[str, int, int], None] | None = None,
              sparse: list[str] | None = None) -> Repository:
        """A working copy of the forge repository at ``url`` (``<forge>/<owner>/<name>``), at its head.

        Objects land in ``.hif/cache`` as they arrive and a marker stays in ``.hif`` until the files
        are checked out, so running the same clone again after an interruption fetches only what is
        missing. Counts of this run's transfers are in ``repo.remote.objects``.
        """
        from hif.forge.client import ForgeClient
        from hif.forge.credentials import token_for
        from hif.forge.urls import parse_clone_url, repo_api

        base, name, mirror = parse_clone_url(url)  # mirror: a forge's read-only copy of a remote one
        ident = f"{base}/mirrors/{mirror}/{name}" if mirror else f"{base}/{name}"
        root = Path(os.path.abspath(path if path is not None else name.split("/")[1]))
        marker = root / META / CLONE_MARKER
        resumed = marker.exists()
        if resumed:
            try:
                was = json.loads(marker.read_text()).get("url")
            except (OSError, ValueError, AttributeError):
                was = None
            if was != ident:
                raise InvalidInput(f"{root} holds an unfinished clone of {was or 'another repository'}")
        elif (root / META / "config.json").exists():
            raise InvalidInput(f"{root} is already a hif working copy")
        elif root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise InvalidInput(f"{root} exists and is not empty")
        if not resumed:  # ask first, so a wrong URL or token leaves nothing behind
            with ForgeClient(base, token_for(base)) as client:
                try:
                    client.get(repo_api(name, mirror))
                except NotFound:
                    raise NotFound(f"repository {name} not found at {base}"
                                   + (f" (mirror of {mirror})" if mirror else "")) from None
        created_dir = not root.exists()
        try:
            (root / META).mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({"url": ident}) + "\n")
            wt = WorkTree(root)
            config: dict[str, Any] = {"remote": base, "repo": name}
            if mirror:
                config["mirror"] = mirror
            if sparse:
                config["sparse"] = parse_cones(sparse)
            wt.write_config(config)
            wt.write_state(WorkState())
        except OSError:
            if created_dir:
                _remove_tree(root)
            raise
        r = cls(root)
        if not resumed and r.remote is not None:
            r.remote.objects.cache_is_new = True
        try:
            r.set_progress(progress)
            head = r.head()
            tree = r._run(r.repo.mainline.tree_at(head))
            from hif.worktree.checkout import paused_gc

            with paused_gc():
                r._run(r._clone_checkout(tree, head))
            marker.unlink()
        except BaseException:
            r.close()
            raise
        r.resumed = resumed
        return r

    def close(self) -> None:
        self._release_move()
        self._runner.run(self.store.close())
        self._runner.close()
        if self.remote is not None:
            self.remote.close()

    def set_progress(self, progress: Callable[[str, int, int], None] | None) -> None:
        """Report object transfers with a forge, ``(direction, objects, bytes)`` per batch."""
        if self.remote is not None:
            self.remote.objects.progress = progress

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    @property
    def name(self) -> str:
        return self.repo.name

    @property
    def state(self) -> WorkState:
        return self.work.state()

    @property
    def position(self) -> int:
        return self.state.position

    @property
    def session_id(self) -> str | None:
        return self.state.session

    # -- sessions ----------------------------------------------------------------------------

    def start_session(self, goal: str, *, author: str | None = None, role: str | None = None) -> SessionHandle:
        st = self.state
        if st.session is not None:
            raise InvalidInput(f"session {st.session} is already open here; land or abandon it first")
        check_text(goal, "goal")
        # edits made before the session started are adopted: they are recorded at its first event
        session = self._run(self.repo.sessions.start(goal, author or default_author(), role or default_role(), st.position))
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
        event = make_event(etype, author or default_author(), role or default_role(), self.repo.clock(), **fields)
        stamped = self._run(self.repo.sessions.append(s.id, event, s.next_seq))
        fold_in(s, stamped)
        return stamped

    def _append_all(self, s: Session, items: list[tuple[str, dict[str, Any]]], *, author: str | None,
                    role: str | None) -> None:
        """Append several events; a forge gets them in one request (after the blobs they name)."""
        if self.remote is None:
            for etype, fields in items:
                self._append(s, etype, author=author, role=role, **fields)
            return
        if not items:
            return
        who, as_role = author or default_author(), role or default_role()
        events = [make_event(etype, who, as_role, self.repo.clock(), **fields) for etype, fields in items]
        for stamped in self._run(self.remote.sessions.append_many(s.id, events, s.next_seq)):
            fold_in(s, stamped)

    def record(self, *, author: str | None = None, role: str | None = None) -> list[FileChange]:
        """Append write/delete events for every working-copy change the session has not seen yet."""
        s = self._open_session()
        return self._record(s, author=author, role=role)

    def _record(self, s: Session, *, author: str | None = None, role: str | None = None) -> list[FileChange]:
        base_tree = self._run(self.repo.mainline.tree_at(s.base))
        scanned = self.work.scan()
        base = self.work.index.base_entries()
        known: dict[str, Entry | None] = {**base, **s.changes}
        out: list[FileChange] = []
        events: list[tuple[str, dict[str, Any]]] = []
        for path, (entry, content) in sorted(scanned.items()):
            if known.get(path) == entry:
                continue
            if content is None:
                entry2, content = self.work.read_file(path)
                if entry2 is None or content is None:
                    continue
                entry = entry2
            self._run(self.repo.objects.put_blob(content))  # every blob is stored before its event
            events.append(("write", {"path": path, "kind": entry.kind, "blob": entry.oid}))
            out.append(FileChange(path, _action(base.get(path), entry), base.get(path), entry))
        for path, entry in sorted(known.items()):
            if entry is not None and path not in scanned:
                events.append(("delete", {"path": path}))
                out.append(FileChange(path, "deleted", base.get(path), None))
        if self.cone is not None:
            self.cone.check([e["path"] for _, e in events])
        self._append_all(s, events, author=author, role=role)
        self.work.save_index()
        del base_tree
        return out

    def say(self, text: str, *, role: str | None = None, author: str | None = None) -> dict[str, Any]:
        check_text(text, "message")
        s = self._open_session()
        self._record(s, author=author, role=role)
        return self._append(s, "say", author=author, role=role, text=text)

    def decide(self, decision: str, *, why: str, alternatives: list[str] | None = None,
               role: str | None = None, author: str | None = None) -> dict[str, Any]:
        check_text(decision, "decision")
        check_text(why, "rationale (--why)")
        for alt in alternatives or []:
            check_text(alt, "alternative")
        s = self._open_session()
        self._record(s, author=author, role=role)
        return self._append(s, "decide", author=author, role=role, decision=decision, why=why,
                            alternatives=list(alternatives or []))

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
            self._run(self.remote.abandon(s, reason, role or default_role()))
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

    # -- status and diff ---------------------------------------------------------------------

    def _changes_vs_base(self) -> dict[str, Entry | None]:
        self._ensure_index()
        changes = self.work.changes_vs_index()  # one pass; scan() + changes_against() build 2 big dicts
        self.work.save_index()
        return changes

    def _ensure_index(self) -> None:
        """Rebuild the base part of the stat cache if it is missing or for another position."""
        idx = self.work.index
        pos = self.position
        if idx.position == pos and idx.tree and not idx.dirty:
            return
        tree = self._run(self._view(self.repo.mainline.tree_at(pos)))
        if idx.position == pos and idx.tree == tree:
            return

        async def fill() -> None:
            for p in [p for p, e in idx.entries.items() if e.base is not None]:
                idx.set_base(p, None)
            async for path, entry in walk(self.repo.objects, tree):
                idx.set_base(path, entry)

        self._run(fill())
        idx.position, idx.tree, idx.dirty = pos, tree, True

    def status(self) -> Status:
        changes = self._changes_vs_base()
        idx = self.work.index
        base = {p: idx.base_of(p) for p in changes}  # only the changed paths: the cache stays packed
        sid = self.session_id
        session = self._run(self.repo.sessions.load(sid)) if sid else None
        return Status(
            self.position,
            session,
            [FileChange(p, _action(base[p], e), base[p], e) for p, e in sorted(changes.items())],
        )

    def diff(self) -> list[tuple[FileChange, str, tuple[int, int]]]:
        """Working copy against its base: (change, unified diff, (added, removed)) per file."""
        from hif.merge import diffstat, unified_diff

        out = []
        for ch in self.status().changes:
            old = self._run(self.repo.objects.get_blob(ch.old.oid)) if ch.old else None
            new = self.work.read_file(ch.path)[1] if ch.new else None
            out.append((ch, unified_diff(old, new, ch.path), diffstat(old, new)))
        return out

    # -- landing, sync, goto -----------------------------------------------------------------

    def land(self, *, role: str | None = None, author: str | None = None) -> LandResult:
        sid = self.session_id
        fm = self.finished_move
        if sid is None and fm is not None and fm.op == "land" and fm.session is not None:
            # a `hif land` killed while moving the files: opening the working copy finished the move,
            # and this rerun reports that landing (once), as below
            self.finished_move = None
            done = self._run(self.repo.sessions.load(fm.session))
            if done.state == "landed":
                return self._run(self._land(done))
        if sid is not None:
            done = self._run(self.repo.sessions.load(sid))
            if done.state == "landed":
                # an earlier `hif land` was interrupted after landing: report that landing (once) and
                # finish moving the working copy, so a rerun completes the job instead of failing
                self._ensure_index()
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
        self._run(self._move_to(old_tree, result.tree, result.position, session=None, op="land"))
        return result

    async def _land(self, s: Session) -> LandResult:
        """The one seam between local and forge landing: a forge lands on its side."""
        if self.remote is not None:
            return await self.remote.land(s)
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

    def _refuse_markers(self, s: Session) -> None:
        syncs = s.of_type("sync")
        if not syncs:
            return
        from hif.merge import split_lines

        for path in syncs[-1].get("conflicts", []):
            entry = s.changes.get(path)
            if entry is None:
                continue
            data = self._run(self.repo.objects.get_blob(entry.oid))
            if any(line.startswith(MARKER) for line in split_lines(data)):
                raise InvalidInput(f"{path} still has conflict markers; resolve them, then land")

    async def _clone_checkout(self, tree: bytes, position: int) -> None:
        """A clone's first checkout: the trees level by level, then every file's blob in one streamed
        answer (per 50,000 files), written straight to the working copy on other threads while the
        next ones arrive; the files are then the only local copy of those blobs (a later read, say for
        a diff, fetches one again). The stat cache is saved along the way, so a resumed clone skips
        the files an interrupted one already wrote."""
        assert self.remote is not None
        db = self.remote.objects
        tree = await self._view(tree)
        await db.prefetch_trees(EMPTY_TREE, tree)
        idx = self.work.index
        todo: list[tuple[str, Entry]] = []
        seen: set[str] = set()
        async for path, entry in walk(db, tree):
            seen.add(path)
            idx.set_base(path, entry)
            e = idx.entries[path]
            if e.work == entry and e.stat is not None:
                try:
                    st = os.lstat(self.root / path)
                except FileNotFoundError:
                    pass
                else:
                    if e.stat == (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode):
                        continue  # written by the interrupted clone
            todo.append((path, entry))
        for path in [p for p in idx.entries if p not in seen]:  # the head moved since the interruption
            self.work.remove_file(path)
            idx.forget_work(path)
            idx.set_base(path, None)
        from hif.worktree.checkout import check_out

        check_out(self.work, todo, db.stream_blobs)  # streamed; files written on other threads
        idx.position, idx.tree, idx.dirty = position, tree, True
        self.work.save_index()
        self.work.write_state(WorkState(position, None))

    async def _view(self, tree: bytes | Coroutine[Any, Any, bytes]) -> bytes:
        """The tree as this working copy holds it: all of it, or its sparse projection."""
        if not isinstance(tree, bytes):
            tree = await tree
        return tree if self.cone is None else await self.cone.project(self.repo.objects, tree)

    async def _move_to(self, old_tree: bytes, new_tree: bytes, position: int, *, session: str | None,
                       op: str = "goto", finish: bool = True) -> list[str]:
        """Bring the working files from ``old_tree`` to ``new_tree`` and the stat cache with them.

        Crash-safe: the journal (``.hif/move.json``: both trees and positions) is on disk before the
        first file changes and goes after the state is saved (with ``finish``; else the caller ends
        it), so a move cut short anywhere is finished when the working copy is next opened
        (:meth:`_finish_move`)."""
        idx = self.work.index
        old_tree, new_tree = await self._view(old_tree), await self._view(new_tree)
        await self.repo.objects.prefetch_diff(old_tree, new_tree)  # a forge clone: batched fetches
        if old_tree != new_tree:
            st = self.state
            self._moving = self.work.begin_move({
                "op": op,
                "from": {"position": st.position, "session": st.session, "tree": old_tree.hex()},
                "to": {"position": position, "session": session, "tree": new_tree.hex()},
            })
        try:
            changed, _ = await self._apply_move(old_tree, new_tree, verify=False)
            async for path, _old, new in tree_diff(self.repo.objects, idx.tree or old_tree, new_tree):
                idx.set_base(path, new)
            idx.position, idx.tree = position, new_tree
            idx.dirty = True
            self.work.save_index()
            self.work.write_state(WorkState(position, session))
        except BaseException:
            self._release_move()  # the journal stays: the next command finishes the move
            raise
        if finish:
            self._end_move()
        return changed

    def _end_move(self) -> None:
        if self._moving is not None:
            self._moving.done()
            self._moving = None

    def _release_move(self) -> None:
        if self._moving is not None:
            self._moving.release()
            self._moving = None

    async def _apply_move(self, old_tree: bytes, new_tree: bytes, *, verify: bool) -> tuple[list[str], list[str]]:
        """Write and remove the files that differ between the two trees; return (the paths changed,
        the paths kept). A move trusts the files to be at ``old_tree`` (it refused local changes, or
        they are the session's); finishing an interrupted one (``verify``) checks each file first:
        at the target it stays, at the source or missing it is written, anything else is kept."""
        db = self.repo.objects
        changed: list[str] = []
        kept: list[str] = []
        async for path, old, new in tree_diff(db, old_tree, new_tree):
            changed.append(path)
            if verify:
                verdict, content = self.work.settle(path, old, new)
                if (verdict == "kept" and old is None and new is not None and new.kind != LINK
                        and content is not None and (await db.get_blob(new.oid)).startswith(content)):
                    verdict = "source"  # a new file whose writing the kill cut short (nothing to lose)
                if verdict == "kept":
                    kept.append(path)
                    continue
                if verdict == "target":
                    if new is None:
                        self.work.prune_dirs(path)
                    continue
            if new is None:
                self.work.remove_file(path)
            else:
                self.work.write_file(path, new, await db.get_blob(new.oid))
        return changed, kept

    def _finish_move(self) -> MoveReport | None:
        """Finish the move an interrupted command left (its journal's lock is free): run when the
        working copy is opened, before any command looks at its files."""
        move = self.work.claim_move()
        if move is None:
            return None
        try:
            report = self._run(self._settle_move(move.doc))
        except BaseException:
            move.release()
            raise
        move.done()
        return report

    async def _settle_move(self, doc: dict[str, Any]) -> MoveReport:
        idx = self.work.index
        trusted = bool(idx.tree) and not idx.dirty  # its bases are those of idx.tree
        try:
            op = str(doc["op"])
            ends = [(int(e["position"]), e["session"], bytes.fromhex(e["tree"])) for e in (doc["from"], doc["to"])]
        except (KeyError, TypeError, ValueError):  # not a journal hif wrote: nothing known to finish;
            idx.position, idx.dirty = -1, True  # the stat cache is rebuilt, status shows the files as they are
            self.work.save_index()
            return MoveReport("unknown", self.position, self.session_id, False)
        undone = False
        if op == "sync":  # finished only if the sync event was recorded (the session's base moved)
            s = await self.repo.sessions.load(check_session_id(str(ends[0][1])))
            undone = s.base != ends[1][0]
        (_, _, source), (position, session, target) = reversed(ends) if undone else ends
        _, kept = await self._apply_move(source, target, verify=True)
        base = await self._view(self.repo.mainline.tree_at(position))  # the stat cache's base entries
        if trusted:
            async for path, _old, new in tree_diff(self.repo.objects, idx.tree, base):
                idx.set_base(path, new)
        else:
            for p in [p for p, e in idx.entries.items() if e.base is not None]:
                idx.set_base(p, None)
            async for path, entry in walk(self.repo.objects, base):
                idx.set_base(path, entry)
        idx.position, idx.tree, idx.dirty = position, base, True
        self.work.save_index()
        self.work.write_state(WorkState(position, session))
        return MoveReport(op, position, ends[0][1], undone, kept)

    async def _checkout_changes(self, base: dict[str, Entry], changes: dict[str, Entry | None], *, restore: bool) -> None:
        for path in changes:
            entry = base.get(path)
            if entry is None:
                self.work.remove_file(path)
            else:
                self.work.write_file(path, entry, await self.repo.objects.get_blob(entry.oid))
        self.work.save_index()

    def goto(self, position: int) -> list[str]:
        if self.session_id is not None:
            raise InvalidInput("cannot move while a session is open; land or abandon it first")
        head = self._run(self.repo.mainline.head())
        if position < 0 or position > head:
            raise NotFound(f"no position {position} (the mainline is at {head})")
        if position == self.position:  # already there: nothing moves, so local changes are no obstacle
            return []
        ensure_clean(self._changes_vs_base(), "cannot move")
        old = self._run(self.repo.mainline.tree_at(self.position))
        new = self._run(self.repo.mainline.tree_at(position))
        return self._run(self._move_to(old, new, position, session=None))

    def pull(self) -> list[str]:
        """Move a working copy without an open session to the head of the mainline."""
        return self.goto(self._run(self.repo.mainline.head()))

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
                           base=head, merged=merged, conflicts=sorted({c.path for c in conflicts}))
        stamped = await self.repo.sessions.append(s.id, event, s.next_seq)
        s.events.append(stamped)
        s.base = head
        self.work.write_state(WorkState(head, s.id))
        self._end_move()
        return SyncResult(head, [p for p in updated if p not in ours], merged, [c.to_json() for c in conflicts])

    async def _rebase_index(self, tree: bytes) -> None:
        idx = self.work.index
        tree = await self._view(tree)
        for p in [p for p, e in idx.entries.items() if e.base is not None]:
            idx.set_base(p, None)
        async for path, entry in walk(self.repo.objects, tree):
            idx.set_base(path, entry)
        idx.tree = tree
        self.work.save_index()

    # -- history -----------------------------------------------------------------------------

    def head(self) -> int:
        return self._run(self.repo.mainline.head())

    def log(self, *, limit: int | None = None, path: str | None = None) -> list[LandingRecord]:
        return self._run(self._log(limit, path))

    async def _log(self, limit: int | None, path: str | None) -> list[LandingRecord]:
        head = await self.repo.mainline.head()
        out: list[LandingRecord] = []
        async for rec in self.repo.mainline.iter_back(head):
            if path and not any(p == path or p.startswith(path + "/") for p in rec.paths):
                continue
            out.append(rec)
            if limit is not None and len(out) >= limit:
                break
        return out

    def record_at(self, position: int) -> LandingRecord:
        return self._run(self.repo.mainline.record(position))

    def resolve_ref(self, ref: str) -> tuple[Session, LandingRecord | None]:
        """A position number or a session id -> (session, landing record if landed)."""
        if ref.isdigit():
            rec = self.record_at(int(ref))
            sess = self._run(self._session_of(rec.sessions[0].session, rec))
            return sess, rec
        s = self.load_session(ref)
        rec = self.record_at(s.position) if s.position else None
        return s, rec

    async def _session_of(self, sid: str, rec: LandingRecord) -> Session:
        landed = next(x for x in rec.sessions if x.session == sid)
        snap = await self.repo.objects.get_value("snapshot", landed.snapshot)
        from hif.session import fold

        s = fold(sid, snap["events"])
        s.state, s.position, s.snapshot = "landed", rec.position, landed.snapshot
        s.changes = dict(landed.changes)
        return s

    def session_diffs(self, s: Session, rec: LandingRecord | None) -> list[tuple[FileChange, str]]:
        return self._run(self._session_diffs(s, rec))

    async def _session_diffs(self, s: Session, rec: LandingRecord | None) -> list[tuple[FileChange, str]]:
        from hif.merge import unified_diff

        db = self.repo.objects
        if rec is not None:
            before = rec.parent_tree
            changes = next(x.changes for x in rec.sessions if x.session == s.id)
        else:
            before = await self.repo.mainline.tree_at(s.base)
            changes = s.changes
        out = []
        for path, new in sorted(changes.items()):
            old = await lookup_file(db, before, path)
            if old == new:
                continue
            a = await db.get_blob(old.oid) if old else None
            b = await db.get_blob(new.oid) if new else None
            out.append((FileChange(path, _action(old, new), old, new), unified_diff(a, b, path)))
        return out

    def iteration_diff(self, s: Session, a: int, b: int) -> list[tuple[str, str]]:
        """Diff between two iterations (checkpoints) of a session; 0 is the session's base."""
        return self._run(self._iteration_diff(s, a, b))

    async def _iteration_diff(self, s: Session, a: int, b: int) -> list[tuple[str, str]]:
        from hif.merge import unified_diff

        cps = s.of_type("checkpoint")
        start = s.events[0]["base"]

        async def tree_of(i: int) -> bytes:
            if i == 0:
                return await self.repo.mainline.tree_at(start)
            if not 1 <= i <= len(cps):
                raise NotFound(f"no iteration {i} (the session has {len(cps)})")
            return cps[i - 1]["tree"]

        ta, tb = await tree_of(a), await tree_of(b)
        db = self.repo.objects
        out = []
        async for path, old, new in tree_diff(db, ta, tb):
            x = await db.get_blob(old.oid) if old else None
            y = await db.get_blob(new.oid) if new else None
            out.append((path, unified_diff(x, y, path)))
        return out

    def _tree_at(self, at: int | None) -> bytes:
        pos = self.position if at is None else at
        head = self.head()
        if pos < 0 or pos > head:
            raise NotFound(f"no position {pos} (the mainline is at {head})")
        return self._run(self.repo.mainline.tree_at(pos))

    def cat(self, path: str, *, at: int | None = None) -> bytes:
        if not path:
            raise InvalidInput("the top directory is not a file (use hif ls)")
        tree = self._tree_at(at)
        entry = self._run(lookup(self.repo.objects, tree, path))
        if entry is None:
            raise NotFound(f"no file {path} at position {self.position if at is None else at}")
        if entry.kind == DIR:
            raise InvalidInput(f"{path} is a directory (use hif ls)")
        return self._run(self.repo.objects.get_blob(entry.oid))

    def ls(self, path: str = "", *, at: int | None = None, recursive: bool = False) -> list[tuple[str, Entry]]:
        tree = self._tree_at(at)
        return self._run(self._ls(tree, path, recursive))

    async def _ls(self, tree: bytes, path: str, recursive: bool) -> list[tuple[str, Entry]]:
        db = self.repo.objects
        prefix = path + "/" if path else ""
        if recursive:
            entry = await lookup(db, tree, path) if path else Entry(DIR, tree)
            if entry is None:
                raise NotFound(f"no directory {path}")
            if entry.kind != DIR:
                return [(path, entry)]
            return [(p, e) async for p, e in walk(db, entry.oid, prefix)]
        entries = await read_dir(db, tree, path)
        if entries is None:
            entry = await lookup(db, tree, path)
            if entry is None:
                raise NotFound(f"no such path: {path}")
            return [(path, entry)]
        return [(prefix + n, entries[n]) for n in sorted(entries, key=str.encode)]

    def blame(self, path: str, *, at: int | None = None) -> list[BlameLine]:
        # imported here: starting or landing a session does not need the history walk
        from hif.blame import blame

        return self._run(blame(self.repo, path, self.position if at is None else at))

    # -- git interop -------------------------------------------------------------------------

    @classmethod
    def import_git(cls, source: str, path: str | os.PathLike[str] | None = None, *,
                   branch: str | None = None, name: str | None = None, store: str | None = None,
                   checkout: bool = True, max_sessions: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> tuple[Repository, ImportResult]:
        """Import the history of a Git repository (a path or URL) as landed sessions, into the
        working copy at ``path`` (created like ``init`` on the first run; a later run continues the
        import with the new commits). Bad input is refused before anything is created."""
        from hif.git.importer import import_git
        from hif.git.source import GitSource, is_url

        root = Path(os.path.abspath(path if path is not None else _git_dir_name(source)))
        existing = (root / META / "config.json").exists()
        src: GitSource | None = None
        if not existing:  # (a .hif without config.json is a first run killed while initialising)
            if root.exists() and (not root.is_dir() or any(p.name != META for p in root.iterdir())):
                raise InvalidInput(f"{root} exists and is not empty (and is not a hif working copy)")
            if not is_url(source):
                src = GitSource.open(source, branch)
        created_dir = not root.exists()
        r = cls(root) if existing else cls.init(root, store=store, name=name)
        try:
            if r.remote is not None:
                raise InvalidInput(f"{root} is a clone of a forge repository; import into a local "
                                   "repository (or on the forge: micelio admin repo import)")
            if existing and name is not None and name != r.name:
                raise InvalidInput(f"{root} holds {r.name}, not {name}")
            if src is None:
                src = GitSource.open(source, branch, mirror=r.work.meta / "git-source.git")
            result = r._run(import_git(r.repo, src, progress=progress, max_sessions=max_sessions))
        except BaseException:
            landed = not existing and r._run(r.repo.mainline.head()) > 0
            r.close()
            if not existing and not landed:  # a first run that landed nothing leaves nothing
                _remove_tree(root if created_dir else root / META)
            raise
        if checkout:
            result.checked_out = r._checkout_head()
        return r, result

    def _checkout_head(self) -> bool:
        """Move to the head if nothing is in the way (no open session, no local changes)."""
        if self.session_id is not None:
            return False
        try:
            self.pull()
        except DirtyWorkingCopy:
            return False
        return True

    def export_git(self, path: str | os.PathLike[str], *, branch: str | None = None, bare: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> ExportResult:
        """Write the mainline as a new Git repository at ``path`` (see ``hif.git``)."""
        from hif.git.exporter import export_git

        return self._run(export_git(self.repo, path, branch=branch, bare=bare, progress=progress))

    # -- workspaces --------------------------------------------------------------------------

    def add_workspace(self, path: str | os.PathLike[str]) -> Repository:
        root = Path(os.path.abspath(path))  # absolute and without ".." components
        if root.exists() and any(root.iterdir()):
            raise InvalidInput(f"{root} exists and is not empty")
        (root / META).mkdir(parents=True, exist_ok=True)
        wt = WorkTree(root)
        if self.remote is not None:  # same forge, and the same cache: nothing is fetched twice
            cache = self.config.get("cache") or str(self.work.meta / "cache")
            cfg = {"remote": self.config["remote"], "repo": self.name, "cache": cache}
            if self.config.get("mirror"):
                cfg["mirror"] = self.config["mirror"]
            wt.write_config(cfg)
        else:
            store = self.config["store"]
            if "://" not in store:
                store = str(Path(store).absolute())
            wt.write_config({"store": store, "repo": self.name})
        wt.write_state(WorkState())
        other = Repository(root)
        other.goto(other.head())
        return other


async def _local_policy(repo: Repo, s: Session, ours: dict[str, Entry | None], base_tree: bytes) -> bool:
    """Landing in a local store: ``require_checks`` in the base tree's hif.toml
    (:func:`hif.checks.local_policy`). hif.checks is imported only for a base tree that has one."""
    if await lookup_file(repo.objects, base_tree, CHECKS_CONFIG) is None:
        return False
    from hif.checks import local_policy

    return await local_policy()(repo, s, ours, base_tree)


def _slug(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip("-.") or "repo"
    return cleaned[:100]


def _git_dir_name(source: str) -> str:
    """``git clone``'s choice of directory: the last path component without ``.git``."""
    from hif.git.source import is_url

    if not is_url(source):
        local = Path(os.path.abspath(source))
        source = str(local.parent if local.name == ".git" else local)
    parts = [p for p in source.replace("\\", "/").rstrip("/").split("/") if p not in ("", ".git")]
    last = parts[-1].rsplit(":", 1)[-1] if parts else "repo"
    return _slug(last.removesuffix(".git"))


def _remove_tree(root: Path) -> None:
    import shutil

    shutil.rmtree(root, ignore_errors=True)


__all__ = ["BlameLine", "FileChange", "MoveReport", "NotARepository", "Repository", "SessionHandle", "Status", "SyncResult"]

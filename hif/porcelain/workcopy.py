"""The working copy's side of :class:`hif.Repository`: status and diff against the position, the
stat cache (index), and moving the files between positions under a journal that a killed command
leaves for the next one to finish (goto, pull, a clone's checkout)."""

from __future__ import annotations

import os
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hif.errors import (
    InvalidInput,
    NotFound,
)
from hif.objects import EMPTY_TREE, LINK, Entry
from hif.porcelain.base import FileChange, MoveReport, RepositoryBase, Status, action_of
from hif.session import Session, check_session_id
from hif.tree import diff as tree_diff
from hif.tree import walk
from hif.worktree.workspace import JOURNAL, META, Move, WorkState, ensure_clean

if TYPE_CHECKING:
    pass


class WorkingCopy(RepositoryBase):
    """Status, diff and moves of the files of a working copy."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._moving: Move | None = None  # the journal of the move this process is making
        # a move that a killed (or failed) command left half done is finished before anything else
        self.finished_move: MoveReport | None = None
        if self.work.move_pending():  # one stat on the common path
            try:
                self.finished_move = self._finish_move()
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        self._release_move()
        super().close()

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
            [FileChange(p, action_of(base[p], e), base[p], e) for p, e in sorted(changes.items())],
        )

    def diff(self) -> list[tuple[FileChange, str, tuple[int, int]]]:
        """Working copy against its base: (change, unified diff, (added, removed)) per file."""
        # diffing and merging: only diffs, syncs and landings load them (start-up time)
        from hif.merge import diffstat, unified_diff

        out = []
        for ch in self.status().changes:
            old = self._run(self.repo.objects.get_blob(ch.old.oid)) if ch.old else None
            new = self.work.read_file(ch.path)[1] if ch.new else None
            out.append((ch, unified_diff(old, new, ch.path), diffstat(old, new)))
        return out


    def _refuse_markers(self, s: Session) -> None:
        # landing and merging: only land loads them (start-up time)
        from hif.landing import refuse_markers

        self._run(refuse_markers(self.repo, s))

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
        # the parallel checkout's threads and queues: only moves load them (start-up time)
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
            fresh = old_tree == EMPTY_TREE and not idx.tree  # a new workspace: its writers set the bases
            changed, _ = await self._apply_move(old_tree, new_tree, verify=False, bases=fresh)
            if not fresh:
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

    async def _apply_move(self, old_tree: bytes, new_tree: bytes, *, verify: bool,
                          bases: bool = False) -> tuple[list[str], list[str]]:
        """Write and remove the files that differ between the two trees; return (the paths changed,
        the paths kept). A move trusts the files to be at ``old_tree`` (it refused local changes, or
        they are the session's); finishing an interrupted one (``verify``) checks each file first:
        at the target it stays, at the source or missing it is written, anything else is kept."""
        db = self.repo.objects
        changed: list[str] = []
        kept: list[str] = []
        if old_tree == EMPTY_TREE and not verify:  # every file new (a new workspace): as a clone does
            await self._write_all(new_tree, changed, bases=bases)
            return changed, kept
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

    async def _write_all(self, tree: bytes, changed: list[str], *, bases: bool = False) -> None:
        """Check ``tree`` out into an empty working copy: the files are created on writer threads
        while the next blobs are read (:class:`FileWriter`), each path noted in ``changed`` (and,
        with ``bases``, noted as the stat cache's base: no second walk of the tree for it)."""
        # the writer threads: only a checkout into an empty working copy needs them (start-up time)
        from hif.worktree.checkout import FileWriter, paused_gc

        db = self.repo.objects
        writer = FileWriter(self.work, base=bases)
        try:
            with paused_gc():
                async for path, entry in walk(db, tree):
                    changed.append(path)
                    writer.write(path, entry, await db.get_blob(entry.oid))
        except BaseException:
            writer.close(raise_error=False)
            raise
        writer.close()

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
        for _, _, tree in ends:  # two heads: a journal naming what the store lacks cannot be finished
            if tree != EMPTY_TREE and not await self.repo.objects.has(tree):
                journal = f"{META}/{JOURNAL}"
                raise NotFound(f"the interrupted move in {journal} names tree {tree.hex()}, which the store "
                               f"lacks, so it cannot be finished; remove {journal} to give up the move (files "
                               "it had already changed then show in `hif status`)")
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


    async def _rebase_index(self, tree: bytes) -> None:
        idx = self.work.index
        tree = await self._view(tree)
        for p in [p for p, e in idx.entries.items() if e.base is not None]:
            idx.set_base(p, None)
        async for path, entry in walk(self.repo.objects, tree):
            idx.set_base(path, entry)
        idx.tree = tree
        self.work.save_index()


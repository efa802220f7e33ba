"""The ground every topic of :class:`hif.Repository` stands on: the working copy and its
repository opened, the coroutine runner, the result types, and the defaults of author and role.

Everything is synchronous for callers (agents' scripts, the CLI); underneath, each call runs the
async plumbing on the repository's own event loop."""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from hif.errors import (
    HifError,
    InvalidInput,
)
from hif.objects import Entry
from hif.repo import Repo, check_repo_name
from hif.session import Session, check_role
from hif.sparse import Cone
from hif.store import EmbeddedStore, ObjectStore, open_store
from hif.store.base import drive
from hif.worktree.workspace import META, WorkState, WorkTree, default_author, find_root

# Imported where used, not here (each command is a process of its own, and start-up is most of a
# short one's CPU): hif.landing and hif.merge (landing, sync, diffs), hif.checks (a repository whose
# hif.toml declares checks), hif.forge (forge clones), blame, hif.git, checkout, getpass.
if TYPE_CHECKING:
    from hif.forge.remote import RemoteRepo


T = TypeVar("T")
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


def action_of(old: Entry | None, new: Entry | None) -> str:
    return "added" if old is None else "deleted" if new is None else "modified"


def default_role() -> str:
    return check_role(os.environ.get("HIF_ROLE", "human"))



class RepositoryBase:
    """A working copy and the repository it works on: opening, creating, the coroutine runner."""

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

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str] = ".") -> Self:
        return cls(find_root(Path(path)))

    @classmethod
    def init(cls, path: str | os.PathLike[str], *, store: str | None = None, name: str | None = None) -> Self:
        root = Path(os.path.abspath(path))  # absolute and without ".." components
        if (root / META / "config.json").exists():
            raise InvalidInput(f"{root} is already a hif working copy")
        if root.exists() and not root.is_dir():
            raise InvalidInput(f"{root} exists and is not a directory")
        name = check_repo_name(name or f"local/{slug(root.name)}")
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
                remove_tree(root)
            raise
        return cls(root)


    def set_progress(self, progress: Callable[[str, int, int], None] | None) -> None:
        """Report object transfers with a forge, ``(direction, objects, bytes)`` per batch."""
        if self.remote is not None:
            self.remote.objects.progress = progress

    def close(self) -> None:
        self._runner.run(self.store.close())
        self._runner.close()
        if self.remote is not None:
            self.remote.close()

    def __enter__(self) -> Self:
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



def slug(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip("-.") or "repo"
    return cleaned[:100]



def remove_tree(root: Path) -> None:
    import shutil

    shutil.rmtree(root, ignore_errors=True)

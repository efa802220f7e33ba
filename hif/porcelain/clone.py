"""Repositories made from elsewhere through :class:`hif.Repository`: a clone of a forge
repository, a git import and export, another working copy of the same store."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from hif.errors import (
    DirtyWorkingCopy,
    InvalidInput,
    NotFound,
)
from hif.porcelain.base import CLONE_MARKER, remove_tree, slug
from hif.porcelain.workcopy import WorkingCopy
from hif.sparse import parse_cones
from hif.worktree.workspace import META, WorkState, WorkTree

if TYPE_CHECKING:
    from hif.git.exporter import ExportResult
    from hif.git.importer import ImportResult


class Cloning(WorkingCopy):
    """Clones, git interop and workspaces."""

    @classmethod
    def clone(cls, url: str, path: str | os.PathLike[str] | None = None, *,
              progress: Callable[[str, int, int], None] | None = None,
              sparse: list[str] | None = None) -> Self:
        """A working copy of the forge repository at ``url`` (``<forge>/<owner>/<name>``), at its head.

        Objects land in ``.hif/cache`` as they arrive and a marker stays in ``.hif`` until the files
        are checked out, so running the same clone again after an interruption fetches only what is
        missing. Counts of this run's transfers are in ``repo.remote.objects``.
        """
        # httpx costs about 30 ms of start-up: only what talks to a forge loads it
        from hif.forge.client import ForgeClient
        from hif.forge.credentials import token_for  # (as above)
        from hif.forge.urls import parse_clone_url, repo_api  # (as above)

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
                remove_tree(root)
            raise
        r = cls(root)
        if not resumed and r.remote is not None:
            r.remote.objects.cache_is_new = True
        try:
            r.set_progress(progress)
            head = r.head()
            tree = r._run(r.repo.mainline.tree_at(head))
            # the parallel checkout's threads and queues: only moves load them (start-up time)
            from hif.worktree.checkout import paused_gc

            with paused_gc():
                r._run(r._clone_checkout(tree, head))
            marker.unlink()
        except BaseException:
            r.close()
            raise
        r.resumed = resumed
        return r


    # -- git interop -------------------------------------------------------------------------

    @classmethod
    def import_git(cls, source: str, path: str | os.PathLike[str] | None = None, *,
                   branch: str | None = None, name: str | None = None, store: str | None = None,
                   checkout: bool = True, max_sessions: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> tuple[Self, ImportResult]:
        """Import the history of a Git repository (a path or URL) as landed sessions, into the
        working copy at ``path`` (created like ``init`` on the first run; a later run continues the
        # git interop (subprocess, tempfile): only its commands load it (start-up time)
        import with the new commits). Bad input is refused before anything is created."""
        from hif.git.importer import import_git  # (as above)
        from hif.git.source import GitSource, is_url  # (as above)

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
                remove_tree(root if created_dir else root / META)
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
        # git interop (subprocess, tempfile): only its commands load it (start-up time)
        from hif.git.exporter import export_git

        return self._run(export_git(self.repo, path, branch=branch, bare=bare, progress=progress))

    # -- workspaces --------------------------------------------------------------------------

    def add_workspace(self, path: str | os.PathLike[str]) -> Self:
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
        other = type(self)(root)
        other.goto(other.head())
        return other



def _git_dir_name(source: str) -> str:
    """``git clone``'s choice of directory: the last path component without ``.git``."""
    # git interop (subprocess, tempfile): only its commands load it (start-up time)
    from hif.git.source import is_url

    if not is_url(source):
        local = Path(os.path.abspath(source))
        source = str(local.parent if local.name == ".git" else local)
    parts = [p for p in source.replace("\\", "/").rstrip("/").split("/") if p not in ("", ".git")]
    last = parts[-1].rsplit(":", 1)[-1] if parts else "repo"
    return slug(last.removesuffix(".git"))


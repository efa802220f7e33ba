"""Importing a git repository into a node's store: shared by ``micelio admin repo import`` and the
web UI's import form for site admins."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from hif.errors import NotFound, PreconditionFailed
from hif.repo import Repo
from hif.store.base import ObjectStore
from node.accounts import Accounts
from node.principal import check_description, check_repo


async def import_repository(
    accounts: Accounts, store: ObjectStore, name: str, source: str, *, branch: str | None = None,
    private: bool = False, owner_user: str | None = None, description: str = "",
    max_commits: int | None = None, progress: Any = None,
) -> dict[str, Any]:
    """Create and register ``name`` if needed, then import (or continue importing) ``source``.

    Everything that can be refused is checked before the store changes: the namespace, the owner,
    and the source (a path or URL that is not a usable git repository)."""
    # lazily (both): git interop is needed by imports only, not by the node's start
    from hif.git.importer import import_git
    from hif.git.source import GitSource  # lazily, as above

    check_repo(name)
    namespace = name.split("/")[0]
    meta = await accounts.get_repo(name)
    is_user = False
    if meta is None:
        check_description(description)
        is_user = await accounts.get_user(namespace) is not None
        if not is_user and await accounts.get_org(namespace) is None:
            raise NotFound(f"no user or organisation {namespace}")
        if owner_user is not None and await accounts.get_user(owner_user) is None:
            raise NotFound(f"no user {owner_user}")
    with tempfile.TemporaryDirectory(prefix="micelio-import-") as tmp:
        # a URL is cloned afresh into a temporary directory; a bad source is refused here
        src = GitSource.open(source, branch, mirror=Path(tmp) / "source.git")
        r = Repo(store, name)
        if meta is None:
            with contextlib.suppress(PreconditionFailed):  # the store part exists: register only
                await r.create(private=private, description=description)
            owner = owner_user if owner_user is not None else (namespace if is_user else None)
            meta = await accounts.register_repo(name, private=private, owner_user=owner,
                                                description=description)
        result = await import_git(r, src, progress=progress, max_sessions=max_commits)
    return {**meta, "import": result.to_json()}

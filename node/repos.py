"""Creating, changing and deleting repositories: one code path for the API (``node.api.repos``)
and the web UI (``ui.repo``), so both check and store exactly the same things."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from federation.layout import FOLLOWERS, announced_key
from hif.errors import HifError, PreconditionFailed
from hif.repo import check_repo_name
from node.context import Node
from node.errors import Exists, InvalidInput, NotFound, PermissionDenied
from node.principal import Principal, check_description, role_rank

DELETE_BATCH = 64  # store keys deleted at once while a repository is removed


async def create_repository(node: Node, p: Principal, name: str, *, private: bool = False,
                            description: str = "") -> dict[str, Any]:
    """Create ``owner/name`` for ``p`` (their namespace, an organisation they maintain, anywhere
    for a site admin) and return its registry row. A refused request stores nothing."""
    name = check_repo_name(name)
    description = check_description(description)
    if not await node.auth.can_create_repo(p, name):
        raise PermissionDenied(f"you cannot create repositories under {name.split('/')[0]}")
    owner = name.split("/")[0]
    if p.admin and owner != p.user and await node.auth.get_user(owner) is None:
        with contextlib.suppress(Exists):
            await node.auth.create_org(owner, p.user or "")
    if await node.auth.get_repo(name) is not None:
        raise Exists(f"repository {name} already exists")
    repo = node.repo(name)
    # the store part first: a crash between the two leaves an unlisted repository that a retry adopts
    created = False
    with contextlib.suppress(PreconditionFailed):
        await repo.create(description=description)
        created = True
    try:
        return await node.auth.register_repo(name, private=private, owner_user=p.user,
                                             description=description)
    except HifError:  # refused after all (a name taken meanwhile): a refused request stores nothing
        if created:
            await repo.uncreate()
        raise


async def update_repository(node: Node, name: str, *, description: str | None = None,
                            private: bool | None = None) -> dict[str, Any]:
    """Change a repository's description and/or visibility (the caller checked the admin role)."""
    if description is not None:
        check_description(description)
    await node.auth.update_repo(name, description=description, private=private)
    info = await node.auth.get_repo(name)
    if info is None:
        raise NotFound(f"no repository {name}")
    return info


def is_owner(p: Principal, role: str | None) -> bool:
    """Owners (and site admins) delete a repository; maintainers change everything else."""
    return p.admin or role_rank(role) >= role_rank("owner")


def check_owner(p: Principal, role: str | None, name: str) -> None:
    if not is_owner(p, role):
        raise PermissionDenied(f"only owners of {name} delete it")


async def delete_repository(node: Node, name: str, confirm: str) -> int:
    """Delete ``name`` and everything the store holds under it; ``confirm`` must repeat the name
    (a typed confirmation). The store goes first and the registry row last: an interrupted
    deletion leaves a listed repository its owner can delete again, never stored history that
    a new repository of the same name would adopt. Returns the number of keys removed."""
    if confirm.strip() != name:
        raise InvalidInput(f"type the repository's full name, {name}, to delete it")
    if await node.auth.get_repo(name) is None:
        raise NotFound(f"no repository {name}")
    repo = node.repo(name)
    # its followers on other nodes and what was announced to them: a new repository of this name
    # starts with none (its followers follow again)
    removed = await _delete_under(node, FOLLOWERS + name + "/")
    await node.store.delete(announced_key(name))  # absent: not an error
    removed += await _delete_under(node, repo.prefix, keep=repo.meta_key)
    await node.store.delete(repo.meta_key)
    await node.auth.unregister_repo(name)
    node.forget_repo(name)
    return removed + 1


async def _delete_under(node: Node, prefix: str, keep: str | None = None) -> int:
    """Delete every key under ``prefix`` (but ``keep``), a batch at a time; how many went."""
    removed = 0
    batch: list[str] = []
    async for key in node.store.iter_keys(prefix):
        if key == keep:
            continue  # last: while it exists the name cannot be re-created over leftovers
        batch.append(key)
        if len(batch) >= DELETE_BATCH:
            await asyncio.gather(*(node.store.delete(k) for k in batch))
            removed += len(batch)
            batch = []
    await asyncio.gather(*(node.store.delete(k) for k in batch))
    return removed + len(batch)

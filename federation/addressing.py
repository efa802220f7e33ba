"""Ids and repository URLs: how an activity names things and how those names map to this node's
repositories. Kept apart from the handlers (the inbox, offers) so that each reads ids the same way
and none of them imports another to do it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from federation.settings import authority
from hif.errors import InvalidInput, NotFound
from hif.forge.urls import parse_repo_url
from hif.repo import check_repo_name

if TYPE_CHECKING:
    from federation.service import Federation


def repo_actor_url(base: str, name: str) -> str:
    """The actor of repository ``name`` on the node at ``base``."""
    return f"{base}/ap/repos/{name}"


def parse_target(url: str) -> tuple[str, str, str]:
    """``https://host/owner/name`` -> (node base URL, host, ``owner/name``)."""
    base, name = parse_repo_url(url)
    return base, authority(base), name


def id_of(value: Any) -> str:
    """An activity field that is an id or an object with one."""
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise InvalidInput("the activity lacks an id where one is needed")
    return value


def local_repo_of(fed: Federation, actor_url: str) -> str:
    """The name of this node's repository whose actor is ``actor_url`` (404 for anything else)."""
    prefix = repo_actor_url(fed.url, "")
    if not actor_url.startswith(prefix):
        raise NotFound(f"{actor_url} is not a repository of this node")
    try:
        return check_repo_name(actor_url[len(prefix) :])
    except InvalidInput:
        raise NotFound(f"{actor_url} is not a repository of this node") from None


async def public_repo(fed: Federation, name: str) -> dict[str, Any]:
    """The repository's record, if it is public (private ones are not there to strangers)."""
    info = await fed.repo_info(name)
    if info is None or info.get("private"):
        raise NotFound(f"no public repository {name} here")
    return info


async def addressed_repo(fed: Federation, ref: Any, local: str | None, what: str) -> str:
    """The public repository an activity addresses (``ref``: its object or target), which must be
    the inbox's own when it came to a repository's inbox."""
    name = local_repo_of(fed, id_of(ref))
    if local is not None and name != local:
        raise InvalidInput(f"the {what} is for another repository than this inbox's")
    await public_repo(fed, name)
    return name

"""Following and unfollowing remote repositories: store-only, so the ``micelio federation`` CLI (no
server), the API and the UI share it. The node's delivery worker sends what these queue; activities
name the node as ``$node`` because the store does not know the node's URL (the worker fills it in).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from federation import delivery
from federation.actors import AS
from federation.layout import following_key
from federation.mirror import mirror_repo
from federation.settings import FedSettings, authority
from hif.errors import NotFound, PermissionDenied, PreconditionFailed
from hif.objects import decode, encode
from hif.store.base import ObjectStore


def parse_target(url: str) -> tuple[str, str, str]:
    """``https://host/owner/name`` -> (node base URL, host, ``owner/name``)."""
    from hif.forge.urls import parse_repo_url

    base, name = parse_repo_url(url)
    return base, authority(base), name


async def follow(
    store: ObjectStore, url: str, settings: FedSettings | None = None
) -> dict[str, Any]:
    """Start following a remote repository: a pending entry, an empty mirror, a queued Follow."""
    base, host, name = parse_target(url)
    why = (settings or FedSettings.from_env()).refuses(base)
    if why:
        raise PermissionDenied(why)
    key = following_key(host, name)
    existing = await store.get_or_none(key)
    if existing is not None:
        v = decode(existing)
        if v.get("state") in ("pending", "accepted"):
            return v
    entry = {
        "url": f"{base}/{name}",
        "base": base,
        "host": host,
        "name": name,
        "state": "pending",
        "requested": time.time(),
    }
    await store.put(key, encode(entry))
    with contextlib.suppress(PreconditionFailed):
        await mirror_repo(store, host, name).create(
            origin=base, url=f"{base}/{name}", host=host, mirror=True
        )
    await delivery.enqueue(
        store,
        {
            "kind": "activity",
            "peer": host,
            "target": f"{base}/{name}",
            "resolve": ["object"],
            "following": key,
            "activity": {
                "@context": AS,
                "id": f"$node/ap/follows/{host}/{name}",
                "type": "Follow",
                "actor": "$node/ap/node",
                "object": None,
            },
        },
    )
    return entry


async def unfollow(store: ObjectStore, url: str) -> dict[str, Any]:
    """Stop following: the mirror stays (read-only, frozen); the origin is sent an Undo."""
    base, host, name = parse_target(url)
    key = following_key(host, name)
    data = await store.get_or_none(key)
    if data is None:
        raise NotFound(f"this node does not follow {name} on {host}")
    entry = decode(data)
    entry.update(state="unfollowed", unfollowed=time.time())
    await store.put(key, encode(entry))
    if entry.get("actor"):  # the origin knows us as a follower only if it ever answered
        await delivery.enqueue(
            store,
            {
                "kind": "activity",
                "peer": host,
                "target": f"{base}/{name}",
                "resolve": [],
                "activity": {
                    "@context": AS,
                    "id": f"$node/ap/follows/{host}/{name}#undo-{int(time.time())}",
                    "type": "Undo",
                    "actor": "$node/ap/node",
                    "object": {
                        "type": "Follow",
                        "id": f"$node/ap/follows/{host}/{name}",
                        "actor": "$node/ap/node",
                        "object": entry["actor"],
                    },
                },
            },
        )
    return entry

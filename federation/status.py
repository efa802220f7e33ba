"""Read models of federation state for the UI, the API and ``micelio federation status``.

Plain functions over the store (no running worker needed), each bounded by a ``limit``:

- :func:`mirrors` — followed repositories with origin, state, head, last sync, key and last error;
- :func:`mirror_positions` — per position of a mirror: signed by which key, verified or not;
- :func:`outbox`, :func:`failed`, :func:`peers` — pending and failed deliveries, circuit breakers;
- :func:`followers` — who follows a local repository;
- :func:`summary` — all of the above in one document (the status page / command).
"""

from __future__ import annotations

import time
from typing import Any

from federation import delivery
from federation.envelope import check_landing, check_signature, unseal
from federation.layout import FOLLOWERS, FOLLOWING, load_map
from federation.mirror import mirror_repo, read_sync, stored_envelopes
from hif.errors import CorruptObject, HifError
from hif.mainline import log_key
from hif.store.base import ObjectStore


async def mirrors(store: ObjectStore, limit: int = 500) -> list[dict[str, Any]]:
    """Every followed repository: ``host``, ``name``, ``url``, ``origin``, ``state`` (pending,
    accepted, rejected, failed, unfollowed), ``reason`` (why it failed or was rejected, or the last
    error while pending), ``head``, ``last_sync``, ``key_id``, ``error``,
    ``conflicts``."""
    out = []
    async for key in store.iter_keys(FOLLOWING):
        f = load_map(await store.get_or_none(key))
        if f is None:
            continue
        repo = mirror_repo(store, f["host"], f["name"])
        sync = await read_sync(repo)
        conflicts = await store.list_page(f"{repo.prefix}conflicts/", limit=100)
        out.append(
            {
                "host": f["host"],
                "name": f["name"],
                "url": f.get("url"),
                "origin": f.get("base"),
                "state": f.get("state"),
                # why a Follow failed or was rejected (or its last error while still pending)
                "reason": f.get("reason") or f.get("error"),
                "requested": f.get("requested"),
                "head": await repo.mainline.head(),
                "last_sync": sync.get("last_sync"),
                "key_id": sync.get("key_id"),
                "verified": sync.get("verified"),
                "error": sync.get("error"),
                "error_at": sync.get("error_at"),
                "conflicts": len(conflicts),
                "path": f"mirrors/{f['host']}/{f['name']}",
            }
        )
        if len(out) >= limit:
            break
    return out


async def mirror_positions(
    store: ObjectStore, host: str, name: str, start: int = 1, limit: int = 100
) -> list[dict[str, Any]]:
    """Verification status of positions ``start..``: the stored envelope is checked again against
    the key the mirror recorded and against the landing record it holds."""
    repo = mirror_repo(store, host, name)
    sync = await read_sync(repo)
    public = sync.get("public")
    head = await repo.mainline.head()
    first, last = max(1, start), min(head, start + limit - 1)
    wires = await stored_envelopes(repo, first, last) if first <= last else {}
    out = []
    for pos in range(first, last + 1):
        row: dict[str, Any] = {"position": pos, "verified": False, "key_id": None, "error": None}
        wire = wires.get(pos)
        if wire is None:
            row["error"] = "no envelope"
        else:
            try:
                sealed = unseal(wire)
                row["key_id"] = sealed.key_id
                if not isinstance(public, bytes):
                    raise CorruptObject("the mirror recorded no key")
                check_signature(sealed, public)
                landing = check_landing(
                    sealed, origin=sealed.body["origin"], repo=name, position=pos
                )
                if landing.record_bytes != await store.get(log_key(repo.prefix, pos)):
                    raise CorruptObject("the record differs from the signed one")
                row["verified"] = True
            except HifError as e:
                row["error"] = str(e)
        out.append(row)
    return out


async def outbox(store: ObjectStore, limit: int = 100) -> list[dict[str, Any]]:
    """Pending deliveries, soonest first: kind, peer, tries, due time, last error."""
    out = []
    for key in await store.list_page(delivery.OUTBOX, limit=limit):
        v = load_map(await store.get_or_none(key))
        if v is None:
            continue
        out.append(_delivery(v, due=int(key[len(delivery.OUTBOX) :].split("-", 1)[0]) / 1000))
    return out


async def failed(store: ObjectStore, limit: int = 100) -> list[dict[str, Any]]:
    """Deliveries that gave up (newest last)."""
    keys = await store.list_page(delivery.FAILED, limit=10_000)
    out = []
    for key in keys[-limit:]:
        v = load_map(await store.get_or_none(key))
        if v is not None:
            out.append(_delivery(v, due=None))
    return out


def _delivery(v: dict[str, Any], due: float | None) -> dict[str, Any]:
    activity = v.get("activity") if isinstance(v.get("activity"), dict) else {}
    what = activity.get("type") or ("Push" if v.get("kind") == "push" else v.get("kind"))
    if v.get("kind") == "push":
        what = f"Push {v.get('repo')} {v.get('start')}..{v.get('end')}"
    return {
        "id": v.get("id"),
        "kind": v.get("kind"),
        "what": what,
        "peer": v.get("peer"),
        "target": v.get("inbox") or v.get("target"),
        "tries": v.get("tries", 0),
        "due": due,
        "created": v.get("created"),
        "error": v.get("error"),
        "failed": v.get("failed"),
        # a replica holds it now (a landing's claim, or an item being sent): due is when its lease ends
        "sending": due is not None
        and isinstance(v.get("lease"), (int, float))
        and v["lease"] > time.time(),
    }


async def peers(store: ObjectStore) -> list[dict[str, Any]]:
    """Per peer: consecutive and total failures, last error, whether the circuit is open."""
    out = []
    for name in await store.list_children(delivery.PEERS):
        s = await delivery.peer_state(store, name)
        until = delivery.circuit_open(s)
        out.append(
            {
                "peer": name,
                "consecutive": s.get("consecutive", 0),
                "failures": s.get("failures", 0),
                "last_error": s.get("last_error"),
                "last_failure": s.get("last_failure"),
                "last_success": s.get("last_success"),
                "circuit": "open" if until else "closed",
                "open_until": until,
                "failure_days": len(s.get("failure_days", [])),
            }
        )
    return out


async def followers(store: ObjectStore, repo: str) -> list[dict[str, Any]]:
    out = []
    async for key in store.iter_keys(f"{FOLLOWERS}{repo}/"):
        v = load_map(await store.get_or_none(key))
        if v is not None:
            out.append(
                {
                    "actor": v.get("actor"),
                    "host": v.get("host"),
                    "inbox": v.get("inbox"),
                    "since": v.get("since"),
                }
            )
    return out


async def follower_count(store: ObjectStore, repo: str) -> int:
    """How many actors follow a local repository (keys only: no entry is read)."""
    count = 0
    async for _ in store.iter_keys(f"{FOLLOWERS}{repo}/"):
        count += 1
    return count


async def summary(store: ObjectStore, limit: int = 50) -> dict[str, Any]:
    """Everything an operator looks at first."""
    return {
        "time": time.time(),
        "following": await mirrors(store, limit),
        "outbox": await outbox(store, limit),
        "failed": await failed(store, limit),
        "peers": await peers(store),
        "schedule": delivery.schedule_table(),
    }

"""Incoming activities: verified before anything else happens, then dispatched by type.

Order of checks, each refusing before the next step costs anything, and everything that needs no
outgoing request before the one that does: body size (by the route, while reading) → the signature
headers' form (one RFC 9421 signature, ed25519, the covered components, ``created`` within ±5
minutes, 64 bytes; a draft-cavage header is told which scheme to use) → the key's host, normalised,
is not blocked and is allowed (403) → the body is JSON within depth and size limits (400) → the
activity's actor is on the key's host (401) → only then the key is fetched, through the directory's
guards (cache, per-host slots, deadline, own pool) and bound to its owner on the same host → the
signature verifies (components, recomputed digest) → it was not seen before (replay, keyed on the
signature's bytes) → the actor publishes that key → the activity's id and the objects it carries
are on that host too. Only then is anything stored.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from federation import boundedjson, offer_inbox, offers
from federation.actors import AS
from federation.addressing import addressed_repo, id_of, local_repo_of, repo_actor_url
from federation.backfill import backfill, fetch_envelope, key_info, verify_landing
from federation.errors import BadSignature, Busy, Refused
from federation.httpsig import claim, remember, verify_request
from federation.layout import FOLLOWERS, announced_key, follower_key, following_key, load_map
from federation.mirror import apply
from federation.service import PUSH_MAX, unb64
from federation.settings import authority
from hif.errors import (
    HifError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    TooLarge,
)
from hif.objects import decode, encode
from hif.repo import check_repo_name

if TYPE_CHECKING:
    from federation.service import Federation

MAX_BODY = 1 << 20


async def receive(
    fed: Federation, url: str, headers: list[tuple[str, str]], body: bytes, local: str | None = None
) -> dict[str, Any]:
    """Verify and handle one POST to an inbox (``local``: the repository whose inbox it is)."""
    if len(body) > MAX_BODY:
        raise TooLarge(f"an activity is at most {MAX_BODY} bytes")
    claimed = claim(headers)
    key_id = claimed.key_id
    why = fed.settings.refuses(key_id)
    if why:
        raise Refused(why)
    activity = boundedjson.loads(body, "the activity")
    if not isinstance(activity, dict) or not isinstance(activity.get("type"), str):
        raise InvalidInput("an activity is a JSON object with a type")
    actor = id_of(activity.get("actor"))
    try:
        same_host = authority(actor) == authority(key_id)
    except InvalidInput:
        same_host = False
    if not same_host:
        raise BadSignature(f"the key {key_id} does not belong to the activity's actor {actor}")
    public = await _public(fed, key_id)
    try:
        verify_request("POST", url, headers, body, key_id, public)
    except BadSignature:
        if not fed.directory.may_refetch(key_id):
            raise
        verify_request(
            "POST", url, headers, body, key_id, await _public(fed, key_id, fresh=True)
        )
    await remember(fed.store, claimed)
    if not await fed.directory.actor_uses_key(actor, key_id):
        raise BadSignature(f"the key {key_id} does not belong to the activity's actor {actor}")
    aid = activity.get("id")
    if isinstance(aid, str) and authority(aid) != authority(actor):
        raise PermissionDenied(f"the activity {aid} is not on its actor's host {authority(actor)}")
    kind = activity["type"]
    if kind == "Follow":
        return await _follow(fed, activity, actor, local)
    if kind == "Undo":
        return await _undo(fed, activity, actor, local)
    if kind in ("Accept", "Reject"):
        return await _answer(fed, activity, actor, kind == "Accept")
    if kind == "Push":
        return await _push(fed, activity, actor, key_id)
    if kind == "Offer":
        return await offer_inbox.receive(fed, activity, actor, local)
    raise InvalidInput(f"this node does not handle {kind} activities")


async def _public(fed: Federation, key_id: str, *, fresh: bool = False) -> bytes:
    try:
        return (await fed.directory.key(key_id, fresh=fresh)).public
    except (Refused, Busy):
        raise
    except HifError as e:
        raise BadSignature(f"cannot use the signing key {key_id}: {e}") from None


async def _follow(
    fed: Federation, activity: dict[str, Any], actor: str, local: str | None
) -> dict[str, Any]:
    name = await addressed_repo(fed, activity.get("object"), local, "Follow")
    doc = await fed.directory.actor(actor)
    endpoints = doc.get("endpoints") if isinstance(doc.get("endpoints"), dict) else {}
    inbox = endpoints.get("sharedInbox") or doc.get("inbox")
    if not isinstance(inbox, str) or authority(inbox) != authority(actor):
        raise InvalidInput(f"the actor {actor} has no inbox on its own host")
    follow_id = activity.get("id") if isinstance(activity.get("id"), str) else None
    me = repo_actor_url(fed.url, name)
    why = await _over_follower_cap(fed, name, actor)
    if why is not None:  # stored nothing; the peer is told why
        await fed.enqueue_activity(
            {
                "@context": AS,
                "id": f"{me}#reject-{int(time.time() * 1000)}",
                "type": "Reject",
                "actor": me,
                "summary": why,
                "object": {"id": follow_id, "type": "Follow", "actor": actor, "object": me},
            },
            inbox=inbox,
        )
        return {"accepted": False, "repository": name, "reason": why}
    await fed.store.put(
        follower_key(name, actor),
        encode(
            {
                "actor": actor,
                "inbox": inbox,
                "host": authority(actor),
                "since": time.time(),
                "follow": follow_id,
            }
        ),
    )
    head = await fed.local_repo(name).mainline.head()
    with contextlib.suppress(PreconditionFailed):  # later followers backfill up to the mark
        await fed.store.put(announced_key(name), encode(head), if_none_match=True)
    await fed.enqueue_activity(
        {
            "@context": AS,
            "id": f"{me}#accept-{int(time.time() * 1000)}",
            "type": "Accept",
            "actor": me,
            "object": {"id": follow_id, "type": "Follow", "actor": actor, "object": me},
        },
        inbox=inbox,
    )
    return {"accepted": True, "repository": name, "head": head}


async def _over_follower_cap(fed: Federation, name: str, actor: str) -> str | None:
    """Why a new follower from ``actor``'s host is one too many for ``name``, or None. An actor
    that already follows may follow again (a repeated Follow is not a new follower)."""
    cap = fed.settings.max_followers_per_host
    host = authority(actor)
    mine = follower_key(name, actor)
    count = 0
    async for key in fed.store.iter_keys(f"{FOLLOWERS}{name}/"):
        if key == mine:
            return None
        v = load_map(await fed.store.get_or_none(key))
        if v is not None and v.get("host") == host:
            count += 1
    if count >= cap:
        return f"{host} already has {count} followers of {name} (at most {cap} per host)"
    return None


async def _undo(
    fed: Federation, activity: dict[str, Any], actor: str, local: str | None
) -> dict[str, Any]:
    inner = activity.get("object")
    if not isinstance(inner, dict) or inner.get("type") != "Follow":
        raise InvalidInput("only an Undo of a Follow is understood")
    if inner.get("actor") not in (None, actor):
        raise PermissionDenied("an actor can only undo its own Follow")
    name = local_repo_of(fed, id_of(inner.get("object")))
    await fed.store.delete(follower_key(name, actor))
    return {"unfollowed": name}


async def _answer(
    fed: Federation, activity: dict[str, Any], actor: str, accepted: bool
) -> dict[str, Any]:
    obj = id_of(activity.get("object"))
    follows = f"{fed.url}/ap/follows/"
    if obj.startswith(follows):
        rest = obj[len(follows) :]
        host, _, name = rest.partition("/")
        key = following_key(host, check_repo_name(name))
        if authority(actor) != host:
            raise PermissionDenied(f"only {host} can answer that Follow")
        data = await fed.store.get_or_none(key)
        if data is None:
            raise NotFound(f"this node does not follow {name} on {host}")
        v = decode(data)
        if v.get("state") in ("accepted", "rejected") and (v["state"] == "accepted") == accepted:
            return {"ok": True}
        v.update(state="accepted" if accepted else "rejected", answered=time.time(), actor=actor)
        reason = activity.get("summary")
        if not accepted and isinstance(reason, str):
            v["reason"] = reason[:500]  # shown to the operator: why the origin said no
        await fed.store.put(key, encode(v))
        if accepted:
            fed.resync_soon(host, name)
        return {"ok": True}
    if obj.startswith(f"{fed.url}/ap/offers/"):
        return await offers.outcome(fed, activity, actor, obj, accepted)
    raise NotFound(f"{obj} is nothing this node sent")


async def _push(
    fed: Federation, activity: dict[str, Any], actor: str, key_id: str
) -> dict[str, Any]:
    obj = activity.get("object")
    items = obj.get("orderedItems") if isinstance(obj, dict) else None
    if not isinstance(items, list) or not items or len(items) > PUSH_MAX:
        raise InvalidInput(f"a Push carries between 1 and {PUSH_MAX} landings")
    wires: list[tuple[int, bytes | None, str]] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("position"), int):
            raise InvalidInput("each landing names its position")
        env = item.get("envelope")
        wires.append((item["position"], unb64(env) if isinstance(env, str) else None, id_of(item)))
    # the repository: from the actor's name on our side (what we follow), never from the body alone
    follow = await _following_by_actor(fed, actor)
    if follow is None:
        raise PermissionDenied(f"this node does not follow {actor}")
    host, name, base = follow["host"], follow["name"], follow["base"]
    if authority(key_id) != host or authority(actor) != host:
        raise PermissionDenied("the Push is not signed by the repository's own host")
    checked = []
    for pos, wire, ref in sorted(wires, key=lambda w: w[0]):
        if wire is None:
            wire = await fetch_envelope(fed, ref, base)
        checked.append(await verify_landing(fed, wire, base, name, pos))
    if follow.get("state") != "accepted":  # the origin pushes only to followers it accepted
        follow["state"] = "accepted"
        key = follow.pop("key")
        await fed.store.put(key, encode(follow))
    repo = fed.mirror(host, name)
    async with fed.mirror_lock(host, name):
        head = await repo.mainline.head()
        first = checked[0][0].position
        if first > head + 1:  # missed deliveries: fetch the gap from the origin's log first
            await backfill(fed, follow, until=first - 1)
        added = await apply(
            repo,
            [c[0] for c in checked],
            fed.fetcher,
            f"{base}/api/v1/repos/{name}",
            key_info(checked[-1][1]),
        )
    return {"applied": added, "head": await repo.mainline.head()}


async def _following_by_actor(fed: Federation, actor: str) -> dict[str, Any] | None:
    for f in await fed.following():
        if f.get("actor") == actor and f.get("state") != "unfollowed":
            return f
    return None

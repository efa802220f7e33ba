"""Remote contribution: a session offered from one node to a repository on another.

The contributor's node (B) freezes the open session into a signed **bundle**: its snapshot (goal,
conversation, decisions, every event), its changes with the base version of each file, and every
object those refer to. It sends an ``Offer`` whose object links to the bundle (an unguessable URL,
so a private repository's content is not listed anywhere). The target (A) verifies the request, the
bundle's signature (a key of B's host) and every object's hash, and stores an offered session under
``repos/<repo>/offers/<id>``. A maintainer lands it: A starts a local session at its head with the
contributor's events (authors marked ``name@host``), writes a 3-way merge (with the offered base)
for files A changed meanwhile, and lands it as any session; or rejects it. The outcome goes back as
``Accept`` (with the position) or ``Reject``, and B records it next to the session.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import time
from typing import TYPE_CHECKING, Any

from federation.actors import AS, FORGEFED, repo_actor_url
from federation.envelope import check_signature, seal, unseal
from federation.layout import BUNDLES, OFFERS_OUT, load_map, offer_key, offer_sent_key
from federation.mirror import snapshot_refs
from federation.net import CBOR_CAP, Refused, http_error
from federation.settings import authority
from hif.errors import (
    Conflict,
    ConflictError,
    CorruptObject,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    SessionClosed,
)
from hif.landing import land
from hif.merge import is_binary, merge3, unified_diff
from hif.objects import EXEC, FILE, FILE_KINDS, Entry, canonical_kind, check_stored, decode, encode
from hif.paths import check_entry_path, check_path
from hif.repo import Repo
from hif.session import ROLES, make_event
from hif.tree import lookup_file

if TYPE_CHECKING:
    from federation.service import Federation

MAX_BUNDLE = 32 << 20
MAX_DIFF = 256 << 10
COPIED = ("say", "decide", "write", "delete", "checkpoint")


def _new_id() -> str:
    return base64.b32encode(os.urandom(15)).decode().lower()




# -- the contributor's side (B) ----------------------------------------------------------------


async def make_offer(
    fed: Federation, repo: Repo, sid: str, target: str, user: str
) -> dict[str, Any]:
    """Bundle an open session and queue its ``Offer`` to the repository at ``target``."""
    from hif.remote import parse_repo_url

    base, name = parse_repo_url(target)
    target_url = f"{base}/{name}"
    why = fed.settings.refuses(target_url)
    if why:
        raise Refused(why)
    if authority(base) == authority(fed.url):
        raise InvalidInput("offer sessions to repositories of other nodes (here: land them)")
    s = await repo.sessions.load(sid)
    if not s.is_open:
        raise SessionClosed(f"session {sid} was {s.state}; only an open session can be offered")
    base_tree = await repo.mainline.tree_at(s.base)
    changes: list[list[Any]] = []
    effective: dict[str, Entry | None] = {}
    for path, entry in sorted(s.changes.items()):
        was = await lookup_file(repo.objects, base_tree, path)
        if was != entry:
            effective[path] = entry
            changes.append(
                [
                    path,
                    was.kind if was else None,
                    was.oid if was else None,
                    entry.kind if entry else None,
                    entry.oid if entry else None,
                ]
            )
    if not changes:
        raise InvalidInput("the session changes nothing yet: there is nothing to offer")
    snap_id = await repo.sessions.write_snapshot(s, effective)
    snapshot = await repo.objects.get_canonical(snap_id)
    refs = (
        [r[2] for r in changes if r[2]] + [r[4] for r in changes if r[4]] + snapshot_refs(snapshot)
    )
    objects = await _collect(repo, refs)
    oid = _new_id()
    body = {
        "v": 1,
        "kind": "offer",
        "origin": fed.url,
        "repo": repo.name,
        "session": sid,
        "offer": oid,
        "target": target_url,
        "goal": s.goal,
        "author": s.author,
        "role": s.role,
        "snapshot": snapshot,
        "changes": changes,
        "objects": objects,
    }
    bundle = seal(fed.key, body)
    if len(bundle) > MAX_BUNDLE:
        raise InvalidInput(
            f"the session is too large to offer ({len(bundle)} bytes; at most {MAX_BUNDLE})"
        )
    await fed.store.put(BUNDLES + oid, bundle)
    record = {
        "id": oid,
        "repo": repo.name,
        "session": sid,
        "target": target_url,
        "state": "sent",
        "created": time.time(),
        "by": user,
        "goal": s.goal,
    }
    await fed.store.put(offer_sent_key(repo.prefix, sid, oid), encode(record))
    await fed.store.put(OFFERS_OUT + oid, encode({"repo": repo.name, "session": sid}))
    me = fed.key.actor
    await fed.enqueue_activity(
        {
            "@context": [AS, FORGEFED],
            "id": f"{fed.url}/ap/offers/{oid}#offer",
            "type": "Offer",
            "actor": me,
            "target": None,
            "object": {
                "type": "Patch",
                "id": f"{fed.url}/ap/offers/{oid}",
                "attributedTo": me,
                "name": s.goal,
                "mediaType": "application/cbor",
                "bundle": f"{fed.url}/ap/offers/{oid}/bundle",
            },
        },
        target=target_url,
        resolve=["target"],
    )
    return record


async def _collect(repo: Repo, refs: list[bytes]) -> list[bytes]:
    """Canonical bytes of ``refs`` and everything trees among them name, children first."""
    seen: set[bytes] = set()
    out: list[bytes] = []
    size = 0
    stack: list[tuple[bytes, bool]] = [(r, False) for r in reversed(list(dict.fromkeys(refs)))]
    values: dict[bytes, bytes] = {}
    while stack:
        oid, expanded = stack.pop()
        if oid in seen:
            continue
        if expanded:
            seen.add(oid)
            out.append(values.pop(oid))
            continue
        canonical = await repo.objects.get_canonical(oid)
        size += len(canonical)
        if size > MAX_BUNDLE:
            raise InvalidInput(f"the session refers to more than {MAX_BUNDLE} bytes of objects")
        values[oid] = canonical
        stack.append((oid, True))
        value = decode(canonical)
        if value[0] == "tree":
            stack.extend((row[2], False) for row in value[1] if row[2] not in seen)
    return out


async def outcome(
    fed: Federation, activity: dict[str, Any], actor: str, obj: str, accepted: bool
) -> dict[str, Any]:
    """The target answered an offer: record it next to the offered session."""
    oid = obj[len(f"{fed.url}/ap/offers/") :].split("/")[0].split("#")[0]
    pointer = load_map(await fed.store.get_or_none(OFFERS_OUT + oid))
    if pointer is None:
        raise NotFound(f"no offer {oid} was sent from here")
    repo = fed.local_repo(pointer["repo"])
    key = offer_sent_key(repo.prefix, pointer["session"], oid)
    rec = load_map(await fed.store.get_or_none(key))
    if rec is None:
        raise NotFound(f"no offer {oid} was sent from here")
    if authority(actor) != authority(rec["target"]):
        raise PermissionDenied(f"only {authority(rec['target'])} can answer offer {oid}")
    result = activity.get("result") if isinstance(activity.get("result"), dict) else {}
    rec.update(state="landed" if accepted else "rejected", answered=time.time(), answered_by=actor)
    if accepted:
        rec["position"] = (
            result.get("position") if isinstance(result.get("position"), int) else None
        )
        rec["remote_session"] = (
            result.get("session") if isinstance(result.get("session"), str) else None
        )
    else:
        summary = activity.get("summary")
        rec["reason"] = summary if isinstance(summary, str) else ""
    await fed.store.put(key, encode(rec))
    return {"ok": True}


async def sent_offers(repo: Repo, sid: str) -> list[dict[str, Any]]:
    out = []
    async for key in repo.store.iter_keys(f"{repo.prefix}offers-sent/{sid}/"):
        rec = load_map(await repo.store.get_or_none(key))
        if rec is not None:
            out.append(rec)
    return out


# -- the target's side (A) ---------------------------------------------------------------------


async def receive(
    fed: Federation, activity: dict[str, Any], actor: str, local: str | None
) -> dict[str, Any]:
    """Fetch and verify the offered bundle, keep its objects and the offered session."""
    from federation.inbox import _id, addressed_repo

    name = await addressed_repo(fed, activity.get("target"), local, "Offer")
    obj = activity.get("object")
    obj_id = _id(obj)
    bundle_url = obj.get("bundle") if isinstance(obj, dict) else None
    if not isinstance(bundle_url, str):
        raise InvalidInput("the Offer does not link its bundle")
    for url in (obj_id, bundle_url):
        if authority(url) != authority(actor):
            raise PermissionDenied(f"{url} is not on the offering actor's host {authority(actor)}")
    repo = fed.local_repo(name)
    lid = hashlib.sha256(obj_id.encode()).hexdigest()[:20]
    key = offer_key(repo.prefix, lid)
    if await fed.store.head(key) is not None:
        return {"offer": lid, "already": True}  # redelivery
    a = await fed.fetcher.request(
        "GET", bundle_url, headers={"Accept": "application/cbor"}, cap=CBOR_CAP
    )
    if a.status != 200:
        raise http_error(a, bundle_url)
    sealed = unseal(a.body)
    if authority(sealed.key_id) != authority(actor):
        raise PermissionDenied("the bundle is signed by a key of another host than the offer's")
    check_signature(sealed, (await fed.directory.key(sealed.key_id)).public)
    b = sealed.body
    try:
        origin, oid = b["origin"], b["offer"]
        if b.get("kind") != "offer" or authority(origin) != authority(actor):
            raise PermissionDenied("the bundle's origin is not the offering node")
        if obj_id != f"{origin}/ap/offers/{oid}":
            raise InvalidInput("the bundle is for another offer")
        if b["target"] != f"{fed.url}/{name}":
            raise InvalidInput(f"the bundle offers to {b['target']}, not to {fed.url}/{name}")
        snapshot = decode(b["snapshot"])
        if not (
            isinstance(snapshot, list)
            and snapshot[0] == "snapshot"
            and isinstance(snapshot[1], dict)
            and snapshot[1].get("id") == b["session"]
        ):
            raise CorruptObject("the bundle's snapshot is not the offered session's")
        objects = {}
        for canonical in b["objects"]:
            oid_, _, _ = check_stored(bytes([0]) + canonical)
            objects[oid_] = canonical
        changes = []
        held: list[tuple[str, Entry]] = []
        for row in b["changes"]:
            path, bk, bo, nk, no = row
            check_entry_path(path, nk) if nk is not None else check_path(path)
            for kind, ref in ((bk, bo), (nk, no)):
                if (kind is None) != (ref is None) or (kind is not None and kind not in FILE_KINDS):
                    raise InvalidInput(f"malformed change of {path}")
                if ref is not None and ref not in objects and not await repo.objects.has(ref):
                    raise CorruptObject(f"the bundle lacks object {ref.hex()} for {path}")
                if ref is not None and ref in objects and canonical_kind(objects[ref]) != "blob":
                    raise CorruptObject(f"{path}: names object {ref.hex()}, which is not a blob")
                if ref is not None and ref not in objects:
                    held.append((path, Entry(kind, ref)))
            changes.append([path, bk, bo, nk, no])
        await repo.objects.check_kinds(held)  # a file names a blob, in the bundle or held here
        goal, author, role = str(b["goal"]), str(b["author"]), str(b["role"])
    except (KeyError, TypeError, ValueError, IndexError):
        raise CorruptObject("malformed offer bundle") from None
    for canonical in objects.values():
        await repo.objects.put_canonical(canonical)
    snap_id = await repo.objects.put_canonical(b["snapshot"])
    doc = await fed.directory.actor(actor)
    endpoints = doc.get("endpoints") if isinstance(doc.get("endpoints"), dict) else {}
    reply = endpoints.get("sharedInbox") or doc.get("inbox")
    if not isinstance(reply, str) or authority(reply) != authority(actor):
        raise InvalidInput(f"the actor {actor} has no inbox on its own host")
    record = {
        "id": lid,
        "state": "offered",
        "from": actor,
        "origin": origin,
        "source_repo": b["repo"],
        "session": b["session"],
        "goal": goal,
        "author": author,
        "role": role if role in ROLES else "human",
        "snapshot": snap_id,
        "changes": changes,
        "received": time.time(),
        "reply": reply,
        "object": obj_id,
        "activity": activity.get("id"),
    }
    with contextlib.suppress(PreconditionFailed):
        await fed.store.put(key, encode(record), if_none_match=True)
    return {"offer": lid}


async def list_offers(repo: Repo) -> list[dict[str, Any]]:
    out = []
    async for key in repo.store.iter_keys(f"{repo.prefix}offers/"):
        rec = load_map(await repo.store.get_or_none(key))
        if rec is not None:
            out.append(_summary(rec))
    return out


def _summary(rec: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "id",
        "state",
        "from",
        "origin",
        "source_repo",
        "session",
        "goal",
        "author",
        "role",
        "received",
        "position",
        "landed_session",
        "landed_by",
        "reason",
        "error",
    )
    return {k: rec.get(k) for k in keep}


async def get_offer(repo: Repo, lid: str) -> dict[str, Any]:
    """An offered session: its summary, every event (conversation, decisions) and its diff."""
    rec = load_map(await repo.store.get_or_none(offer_key(repo.prefix, lid)))
    if rec is None:
        raise NotFound(f"no offer {lid}")
    snapshot = decode(await repo.objects.get_canonical(rec["snapshot"]))[1]
    diff = []
    for path, bk, bo, nk, no in rec["changes"]:
        old = await repo.objects.get_blob(bo) if bo else None
        new = await repo.objects.get_blob(no) if no else None
        text = ""
        if len(old or b"") + len(new or b"") <= MAX_DIFF:
            text = unified_diff(old, new, path)
        diff.append(
            {
                "path": path,
                "action": "delete" if nk is None else ("add" if bk is None else "modify"),
                "base": [bk, bo],
                "new": [nk, no],
                "diff": text,
            }
        )
    return {
        **_summary(rec),
        "events": snapshot.get("events", []),
        "changes": rec["changes"],
        "diff": diff,
    }


async def _claim(repo: Repo, lid: str, user: str) -> tuple[dict[str, Any], str]:
    key = offer_key(repo.prefix, lid)
    try:
        data, etag = await repo.store.get_with_etag(key)
    except NotFound:
        raise NotFound(f"no offer {lid}") from None
    rec = decode(data)
    if rec["state"] in ("landed", "rejected"):
        return rec, ""
    if rec["state"] == "landing" and time.time() - rec.get("claimed", 0) < 300:
        raise InvalidInput(f"offer {lid} is being landed by {rec.get('claimed_by')}")
    rec.update(state="landing", claimed=time.time(), claimed_by=user)
    try:
        etag = await repo.store.put(key, encode(rec), if_match=etag)
    except PreconditionFailed:
        raise InvalidInput(f"offer {lid} changed meanwhile; try again") from None
    return rec, etag


async def land_offer(fed: Federation, repo: Repo, lid: str, user: str) -> dict[str, Any]:
    """Land an offered session as a local one; the outcome is delivered back to its node."""
    rec, etag = await _claim(repo, lid, user)
    if rec["state"] == "landed":
        return _summary(rec)
    if rec["state"] == "rejected":
        raise SessionClosed(f"offer {lid} was rejected")
    key = offer_key(repo.prefix, lid)
    started: list[str] = []
    try:
        result = await _land(repo, rec, user, started)
    except BaseException as e:
        rec.update(state="offered", error=str(e) or type(e).__name__)
        with contextlib.suppress(Exception):
            await repo.store.put(key, encode(rec), if_match=etag)
        for sid in started:  # the local session it did not land: close it, keep its history
            with contextlib.suppress(Exception):
                s = await repo.sessions.load(sid)
                ev = make_event("abandon", user, "human", repo.clock(), reason="offer did not land")
                await repo.sessions.abandon(s, ev, "offer did not land")
        raise
    sid = started[0]
    rec.update(
        state="landed",
        position=result.position,
        landed_session=sid,
        landed_by=user,
        landed_at=time.time(),
        error=None,
    )
    await repo.store.put(key, encode(rec))
    fed.landed(repo.name)
    me = repo_actor_url(fed.url, repo.name)
    await fed.enqueue_activity(
        {
            "@context": AS,
            "id": f"{me}#offer-accept-{lid}",
            "type": "Accept",
            "actor": me,
            "object": rec["object"],
            "result": {
                "type": "Landing",
                "id": f"{me}/envelopes/{result.position}",
                "position": result.position,
                "session": sid,
                "url": f"{fed.url}/{repo.name}",
            },
        },
        inbox=rec["reply"],
    )
    return _summary(rec)


async def _land(repo: Repo, rec: dict[str, Any], user: str, started: list[str]) -> Any:
    snapshot = decode(await repo.objects.get_canonical(rec["snapshot"]))[1]
    head = await repo.mainline.head()
    head_tree = await repo.mainline.tree_at(head)
    merged: list[tuple[str, str, bytes]] = []
    conflicts: list[Conflict] = []
    for path, bk, bo, nk, no in rec["changes"]:
        base = Entry(bk, bo) if bk else None
        new = Entry(nk, no) if nk else None
        theirs = await lookup_file(repo.objects, head_tree, path)
        if theirs in (new, base):
            continue
        if (
            new is None
            or theirs is None
            or new.kind not in (FILE, EXEC)
            or theirs.kind not in (FILE, EXEC)
        ):
            conflicts.append(Conflict(path, [], "changed here and in the offer"))
            continue
        base_bytes = await repo.objects.get_blob(base.oid) if base else b""
        ours, mine = await repo.objects.get_blob(new.oid), await repo.objects.get_blob(theirs.oid)
        if any(is_binary(x) for x in (base_bytes, ours, mine)):
            conflicts.append(Conflict(path, [], "binary file changed here and in the offer"))
            continue
        m = merge3(base_bytes, ours, mine, ours_label="offer", theirs_label="mainline")
        if not m.clean:
            conflicts.append(Conflict(path, [], f"{m.conflicts} overlapping change(s)"))
            continue
        merged.append((path, new.kind, await repo.objects.put_blob(m.data)))
    if conflicts:
        raise ConflictError(conflicts)
    host = authority(rec["origin"])
    s = await repo.sessions.start(rec["goal"], f"{rec['author']}@{host}", rec["role"], head)
    started.append(s.id)
    now = repo.clock()
    events = [
        make_event(
            "say",
            user,
            "human",
            now,
            text=f"offered from {rec['origin']}/{rec['source_repo']} (session {rec['session']})",
            offered_from={
                "origin": rec["origin"],
                "repo": rec["source_repo"],
                "session": rec["session"],
                "offer": rec["object"],
            },
        )
    ]
    for e in snapshot.get("events", []):
        if not isinstance(e, dict) or e.get("type") not in COPIED:
            continue
        copy = {k: v for k, v in e.items() if k not in ("seq", "user")}
        copy["author"] = f"{e.get('author', 'unknown')}@{host}"
        if copy.get("role") not in ROLES:
            copy["role"] = "human"
        if e["type"] in ("write", "delete"):
            check_path(copy.get("path", ""))
        events.append(copy)
    for path, kind, blob in merged:
        events.append(
            make_event("write", user, "human", now, path=path, kind=kind, blob=blob, merged=True)
        )
    for event in events:
        await repo.sessions.append(s.id, event)
    return await land(repo, await repo.sessions.load(s.id))


async def reject_offer(
    fed: Federation, repo: Repo, lid: str, user: str, reason: str
) -> dict[str, Any]:
    rec, etag = await _claim(repo, lid, user)
    if rec["state"] == "rejected":
        return _summary(rec)
    if rec["state"] == "landed":
        raise SessionClosed(f"offer {lid} already landed at position {rec.get('position')}")
    rec.update(state="rejected", reason=reason, rejected_by=user, rejected_at=time.time())
    await repo.store.put(offer_key(repo.prefix, lid), encode(rec), if_match=etag)
    me = repo_actor_url(fed.url, repo.name)
    await fed.enqueue_activity(
        {
            "@context": AS,
            "id": f"{me}#offer-reject-{lid}",
            "type": "Reject",
            "actor": me,
            "object": rec["object"],
            "summary": reason,
        },
        inbox=rec["reply"],
    )
    return _summary(rec)


def bundle_key(oid: str) -> str:
    return BUNDLES + oid

"""Remote contribution: a session offered from one node to a repository on another.

The contributor's node (B) freezes the open session into a signed **bundle**: its snapshot (goal,
conversation, decisions, every event), its changes with the base version of each file, and every
object those refer to. It sends an ``Offer`` whose object links to the bundle (an unguessable URL,
so a private repository's content is not listed anywhere). The target (A) verifies the request,
refuses over its caps (pending offers per remote actor and host, offers per host and hour) before
fetching anything, reads the bundle up to :data:`MAX_BUNDLE`, verifies its signature (a key of B's
host) and every object's hash, keeps only the objects the offered changes and checkpoint trees reach
(staged apart from the repository's until it lands) and stores an offered session under
``repos/<repo>/offers/<id>``. An offer nobody reviews expires with its objects. A maintainer lands
it: A starts a local session at its head with the contributor's events (authors marked
``name@host``), writes a 3-way merge (with the offered base) for files A changed meanwhile, and
lands it as any session; or rejects it. The outcome goes back as
``Accept`` (with the position) or ``Reject``, and B records it next to the session.

This module holds B's side, the offer records both sides read, and A's review (listing, landing,
rejecting); receiving offers and expiring unreviewed ones is :mod:`federation.offer_inbox`.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import os
import time
from typing import TYPE_CHECKING, Any

from federation.actors import AS, FORGEFED
from federation.addressing import parse_target, repo_actor_url
from federation.envelope import seal
from federation.errors import Refused
from federation.layout import (
    BUNDLES,
    OFFERS_IN,
    OFFERS_OUT,
    load_map,
    offer_key,
    offer_sent_key,
    shared_offer_id,
)
from federation.mirror import children_first, snapshot_refs
from federation.settings import FedSettings, authority
from hif.errors import (
    Conflict,
    ConflictError,
    HifError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    SessionClosed,
)
from hif.landing import land
from hif.merge import is_binary, merge3, unified_diff
from hif.objects import EXEC, FILE, Entry, ObjectDB, decode, encode
from hif.paths import check_path
from hif.repo import Repo
from hif.session import ROLES, make_event
from hif.tree import lookup_file

if TYPE_CHECKING:
    from federation.service import Federation

MAX_BUNDLE = 32 << 20  # a signed offer bundle, enforced while it is read (sender and receiver)
MAX_DIFF = 256 << 10
COPIED = ("say", "decide", "write", "delete", "checkpoint")


def _new_id() -> str:
    return base64.b32encode(os.urandom(15)).decode().lower()


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def pending_prefix(host: str, actor: str | None = None) -> str:
    """Where the offers waiting for review from a remote host (and one of its actors) are listed."""
    return f"{OFFERS_IN}{host}/" if actor is None else f"{OFFERS_IN}{host}/{_hash(actor)}/"


def pending_key(host: str, actor: str, lid: str) -> str:
    """An offer waiting for review, indexed by its remote host and actor: counting these is the
    per-actor and per-host cap (a listing, no record read)."""
    return pending_prefix(host, actor) + lid


class OfferObjects(ObjectDB):
    """An offer's objects, kept apart from the repository's until it lands (so an offer that expires
    takes them with it, and a stranger's bytes never enter the repository unreviewed); reads fall
    through to the repository's objects for what it already holds (base versions, older offers)."""

    def __init__(self, repo: Repo, lid: str) -> None:
        super().__init__(repo.store, f"{repo.prefix}offer-objects/{lid}/")
        self.base = repo.objects

    async def has(self, oid: bytes) -> bool:
        return await super().has(oid) or await self.base.has(oid)

    async def get_canonical(self, oid: bytes) -> bytes:
        try:
            return await super().get_canonical(oid)
        except NotFound:
            return await self.base.get_canonical(oid)


def offer_repo(repo: Repo, lid: str) -> Repo:
    """``repo`` whose objects include offer ``lid``'s (for its diff and its landing)."""
    view = copy.copy(repo)
    view.objects = OfferObjects(repo, lid)
    return view



# -- the contributor's side (B) ----------------------------------------------------------------


async def make_offer(
    fed: Federation, repo: Repo, sid: str, target: str, user: str
) -> dict[str, Any]:
    """Bundle an open session and queue its ``Offer`` to the repository at ``target``."""
    base, _, name = parse_target(target)
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
    object_url = f"{fed.url}/ap/offers/{oid}"
    record = {
        "id": shared_offer_id(object_url),  # the id the target shows too
        "object": object_url,
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


# -- the target's side (A): offers kept for review (receiving them: federation.offer_inbox) ------


async def delete_prefix(store: Any, prefix: str) -> None:
    """Remove every key under ``prefix`` (an offer's staged objects)."""
    keys = [k async for k in store.iter_keys(prefix)]
    for k in keys:
        with contextlib.suppress(NotFound):
            await store.delete(k)


async def done_pending(fed_store: Any, rec: dict[str, Any]) -> None:
    """An offer was reviewed (landed, rejected) or expired: it no longer counts against its host."""
    actor = rec.get("from")
    if isinstance(actor, str):
        with contextlib.suppress(HifError):
            await fed_store.delete(pending_key(authority(actor), actor, rec["id"]))


async def tell_offerer(
    fed: Federation, repo: Repo, rec: dict[str, Any], kind: str, tag: str, **fields: Any
) -> None:
    """Queue the ``Accept`` or ``Reject`` that tells the offering node what became of its offer
    (landed, rejected, expired), to the inbox it named, from the repository's actor."""
    me = repo_actor_url(fed.url, repo.name)
    await fed.enqueue_activity(
        {
            "@context": AS,
            "id": f"{me}#{tag}",
            "type": kind,
            "actor": me,
            "object": rec["object"],
            **fields,
        },
        inbox=rec["reply"],
    )


def expired(rec: dict[str, Any], settings: FedSettings, now: float | None = None) -> bool:
    """Whether an offer waited unreviewed for longer than the operator allows."""
    received = rec.get("received")
    return (
        rec.get("state") == "offered"
        and isinstance(received, (int, float))
        and (now if now is not None else time.time()) - received > settings.offer_expiry
    )


async def list_offers(repo: Repo, settings: FedSettings | None = None) -> list[dict[str, Any]]:
    """Every offer of ``repo`` with its ``size`` (bytes it keeps); expired ones are left out even
    before the resync loop removes them."""
    st = settings or FedSettings.from_env()
    now = time.time()
    out = []
    async for key in repo.store.iter_keys(f"{repo.prefix}offers/"):
        rec = load_map(await repo.store.get_or_none(key))
        if rec is not None and rec.get("state") != "expired" and not expired(rec, st, now):
            out.append(_summary(rec))
    return out


def total_size(rows: list[dict[str, Any]]) -> int:
    """Bytes kept by the listed offers (what strangers' offers cost the node)."""
    return sum(r["size"] for r in rows if isinstance(r.get("size"), int))


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
        "size",
    )
    return {k: rec.get(k) for k in keep}


async def get_offer(repo: Repo, lid: str) -> dict[str, Any]:
    """An offered session: its summary, every event (conversation, decisions) and its diff."""
    rec = load_map(await repo.store.get_or_none(offer_key(repo.prefix, lid)))
    if rec is None or rec.get("state") == "expired":
        raise NotFound(f"no offer {lid}")
    repo = offer_repo(repo, lid)
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
    if rec["state"] == "expired":
        raise NotFound(f"no offer {lid} (it expired unreviewed)")
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
    await done_pending(fed.store, rec)
    await delete_prefix(repo.store, OfferObjects(repo, lid).prefix)  # promoted by _land
    fed.landed(repo.name)
    me = repo_actor_url(fed.url, repo.name)
    await tell_offerer(
        fed,
        repo,
        rec,
        "Accept",
        f"offer-accept-{lid}",
        result={
            "type": "Landing",
            "id": f"{me}/envelopes/{result.position}",
            "position": result.position,
            "session": sid,
            "url": f"{fed.url}/{repo.name}",
        },
    )
    return _summary(rec)


async def _land(repo: Repo, rec: dict[str, Any], user: str, started: list[str]) -> Any:
    staged = offer_repo(repo, rec["id"])
    snapshot = decode(await staged.objects.get_canonical(rec["snapshot"]))[1]
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
        base_bytes = await staged.objects.get_blob(base.oid) if base else b""
        ours = await staged.objects.get_blob(new.oid)
        mine = await staged.objects.get_blob(theirs.oid)
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
    await _promote(repo, rec["id"])
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


async def _promote(repo: Repo, lid: str) -> None:
    """Copy an offer's staged objects into the repository, blobs first and each tree after the
    trees it names (a present tree is a complete one), so the landing can refer to them."""
    staged = OfferObjects(repo, lid)
    trees: dict[bytes, tuple[bytes, list[bytes]]] = {}
    async for key in repo.store.iter_keys(staged.prefix):
        oid = bytes.fromhex(key[len(staged.prefix) :])
        canonical = await ObjectDB.get_canonical(staged, oid)
        value = decode(canonical)
        if value[0] == "tree":
            trees[oid] = (canonical, [row[2] for row in value[1]])
        else:
            await repo.objects.put_canonical(canonical)
    for _, canonical in children_first(trees):
        await repo.objects.put_canonical(canonical)


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
    await done_pending(fed.store, rec)  # its objects stay: its page still shows the diff
    await tell_offerer(fed, repo, rec, "Reject", f"offer-reject-{lid}", summary=reason)
    return _summary(rec)


def bundle_key(oid: str) -> str:
    return BUNDLES + oid

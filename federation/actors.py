"""Discovery documents (WebFinger, NodeInfo 2.1, ActivityStreams actors) and remote key lookup.

The node is an ``Application`` actor at ``/ap/node``; each public repository is a ForgeFed
``Repository`` actor at ``/ap/repos/<owner>/<name>``. Both carry the node's key (a repository has no
key of its own), owned by the node actor.

Key lookup binds key → actor → host: the document at the key id must be the actor that owns the key,
on the key's host. Results are cached per replica for an hour and refetched once when a signature
fails (so a peer can rotate its key).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from federation.identity import NodeKey, public_from_pem
from federation.net import Fetcher
from federation.settings import authority
from hif.errors import HifError, InvalidInput, RemoteError

AS = "https://www.w3.org/ns/activitystreams"
SEC = "https://w3id.org/security/v1"
FORGEFED = "https://forgefed.org/ns"
CONTEXT = [AS, SEC, FORGEFED]
ACTIVITY_JSON = "application/activity+json"
NODEINFO_21 = "http://nodeinfo.diaspora.software/ns/schema/2.1"
ACTOR_TYPES = {"Application", "Service", "Person", "Group", "Organization", "Repository"}
KEY_TTL = 3600.0
VERSION = "0.1.0"


def repo_actor_url(base: str, name: str) -> str:
    return f"{base}/ap/repos/{name}"


def public_key_doc(key: NodeKey) -> dict[str, Any]:
    return {"id": key.key_id, "owner": key.actor, "publicKeyPem": key.public_pem()}


def node_actor(key: NodeKey) -> dict[str, Any]:
    u = key.url
    return {
        "@context": CONTEXT,
        "id": key.actor,
        "type": "Application",
        "preferredUsername": "node",
        "name": f"micelio node {authority(u)}",
        "url": u,
        "inbox": f"{u}/ap/inbox",
        "outbox": f"{u}/ap/outbox",
        "endpoints": {"sharedInbox": f"{u}/ap/inbox"},
        "publicKey": public_key_doc(key),
    }


def repository_actor(key: NodeKey, name: str, description: str = "") -> dict[str, Any]:
    actor = repo_actor_url(key.url, name)
    return {
        "@context": CONTEXT,
        "id": actor,
        "type": "Repository",
        "name": name,
        "preferredUsername": name.replace("/", "."),
        "summary": description,
        "url": f"{key.url}/{name}",
        "attributedTo": key.actor,
        "inbox": f"{actor}/inbox",
        "outbox": f"{actor}/outbox",
        "followers": f"{actor}/followers",
        "envelopes": f"{actor}/envelopes",
        "api": f"{key.url}/api/v1/repos/{name}",
        "vcs": "hif",
        "publicKey": public_key_doc(key),
    }


def webfinger(subject: str, actor: str, aliases: list[str]) -> dict[str, Any]:
    return {
        "subject": subject,
        "aliases": aliases,
        "links": [{"rel": "self", "type": ACTIVITY_JSON, "href": actor}],
    }


def nodeinfo_links(url: str) -> dict[str, Any]:
    return {"links": [{"rel": NODEINFO_21, "href": f"{url}/nodeinfo/2.1"}]}


def nodeinfo(repositories: int, open_registrations: bool = False) -> dict[str, Any]:
    return {
        "version": "2.1",
        "software": {
            "name": "micelio",
            "version": VERSION,
            "repository": "https://github.com/micelio/micelio",
        },
        "protocols": ["activitypub"],
        "services": {"inbound": [], "outbound": []},
        "openRegistrations": open_registrations,
        "usage": {"users": {}},
        "metadata": {"vcs": "hif", "followedRepositories": repositories},
    }


@dataclass(frozen=True)
class RemoteKey:
    key_id: str
    public: bytes
    owner: str  # the actor that owns the key
    fetched: float


@dataclass(frozen=True)
class RemoteRepoActor:
    """What a follower needs of a remote repository: where to talk and what to call it."""

    id: str
    inbox: str
    name: str
    base: str  # the origin node's URL (its API and envelopes live there)
    envelopes: str


class Directory:
    """Remote actors and keys, fetched through the guarded :class:`Fetcher`, cached per replica."""

    def __init__(self, fetcher: Fetcher, own: NodeKey) -> None:
        self.fetcher = fetcher
        self.own = own
        self._keys: dict[str, RemoteKey] = {}
        self._actors: dict[str, tuple[float, dict[str, Any]]] = {}
        self._refetched: dict[str, float] = {}
        self.fetches = 0

    async def actor(self, url: str, *, fresh: bool = False) -> dict[str, Any]:
        if url == self.own.actor:
            return {
                "id": self.own.actor,
                "inbox": f"{self.own.url}/ap/inbox",
                "publicKey": public_key_doc(self.own),
            }
        hit = self._actors.get(url)
        now = time.monotonic()
        if hit is not None and hit[0] > now and not fresh:
            return hit[1]
        self.fetches += 1
        doc = await self.fetcher.get_json(url)
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
            raise RemoteError(f"{url} is not an actor document")
        if doc["id"] != url.split("#")[0]:
            raise InvalidInput(f"the document at {url} claims to be {doc['id']}")
        if len(self._actors) > 4096:
            self._actors.clear()
        self._actors[url] = (now + KEY_TTL, doc)
        return doc

    async def key(self, key_id: str, *, fresh: bool = False) -> RemoteKey:
        """The public key ``key_id`` names, bound to its owner on the same host."""
        if key_id == self.own.key_id:
            return RemoteKey(key_id, self.own.public, self.own.actor, time.time())
        hit = self._keys.get(key_id)
        if hit is not None and not fresh and time.time() - hit.fetched < KEY_TTL:
            return hit
        doc = await self.actor(key_id.split("#")[0], fresh=fresh)
        entries = doc.get("publicKey")
        entries = entries if isinstance(entries, list) else [entries]
        entry = next((e for e in entries if isinstance(e, dict) and e.get("id") == key_id), None)
        if entry is None:
            raise InvalidInput(f"the actor at {doc['id']} does not list the key {key_id}")
        owner = entry.get("owner")
        if owner != doc["id"] or authority(owner) != authority(key_id):
            raise InvalidInput(f"the key {key_id} is not owned by the actor that serves it")
        pem = entry.get("publicKeyPem")
        if not isinstance(pem, str):
            raise InvalidInput(f"the key {key_id} has no publicKeyPem")
        found = RemoteKey(key_id, public_from_pem(pem), owner, time.time())
        if len(self._keys) > 4096:
            self._keys.clear()
        self._keys[key_id] = found
        return found

    def may_refetch(self, key_id: str) -> bool:
        """At most one forced refetch of a key per minute (a failed signature may mean rotation)."""
        now = time.monotonic()
        if now - self._refetched.get(key_id, -1e9) < 60:
            return False
        self._refetched[key_id] = now
        return True

    async def actor_uses_key(self, actor: str, key_id: str) -> bool:
        """Whether ``actor`` (on the key's host) publishes ``key_id`` as its key."""
        if authority(actor) != authority(key_id):
            return False
        if actor == key_id.split("#")[0]:
            return True
        doc = await self.actor(actor)
        entries = doc.get("publicKey")
        entries = entries if isinstance(entries, list) else [entries]
        return any(isinstance(e, dict) and e.get("id") == key_id for e in entries)

    async def repository(self, url: str) -> RemoteRepoActor:
        """The actor of a repository's web URL (``https://host/owner/name``), by WebFinger."""
        from hif.remote import parse_repo_url

        base, name = parse_repo_url(url)
        finger = f"{base}/.well-known/webfinger?resource={quote(f'{base}/{name}', safe='')}"
        jrd = await self.fetcher.get_json(finger, accept="application/jrd+json")
        links = jrd.get("links") if isinstance(jrd, dict) else None
        href = next(
            (
                x.get("href")
                for x in links or []
                if isinstance(x, dict) and x.get("rel") == "self" and isinstance(x.get("href"), str)
            ),
            None,
        )
        if href is None:
            raise RemoteError(f"{base} does not say where the actor of {name} is (WebFinger)")
        if authority(href) != authority(base):
            raise InvalidInput(f"the actor of {url} is on another host ({href})")
        doc = await self.actor(href)
        inbox, envelopes = doc.get("inbox"), doc.get("envelopes")
        if (
            doc.get("type") != "Repository"
            or not isinstance(inbox, str)
            or not isinstance(envelopes, str)
        ):
            raise RemoteError(f"{href} is not a micelio repository actor")
        for u in (inbox, envelopes):
            if authority(u) != authority(base):
                raise InvalidInput(f"the repository actor {href} points to another host ({u})")
        return RemoteRepoActor(href, inbox, name, base, envelopes)


def is_error_permanent(e: HifError) -> bool:
    """Errors a retry cannot fix: refusals, bad documents, missing actors."""
    status = getattr(e, "status", None)
    if isinstance(status, int):
        return 400 <= status < 500 and status not in (408, 425, 429)
    return e.http_status in (400, 401, 403, 404, 409, 413, 422)

"""Discovery documents (WebFinger, NodeInfo 2.1, ActivityStreams actors) and remote key lookup.

The node is an ``Application`` actor at ``/ap/node``; each public repository is a ForgeFed
``Repository`` actor at ``/ap/repos/<owner>/<name>``. Both carry the node's key (a repository has no
key of its own), owned by the node actor.

Key lookup binds key → actor → host: the document at the key id must be the actor that owns the key,
on the key's host. Results are cached per replica for an hour and refetched once when a signature
fails (so a peer can rotate its key).

Any stranger can make the node look up a key or an actor (by naming it in a signed request), so
every lookup here goes through one guarded path: a cache of documents (an hour) and of failures
(``key_fail_ttl``, 30 s), each least-recently-used (:class:`LRU`); one fetch in flight per URL,
shared by everyone who asks; at most ``key_per_host`` (4) fetches in flight per host,
``key_per_address`` (8) per resolved address (many ports or names of one machine count once) and
``key_in_flight`` (16) in all (half the ``keys`` pool); a request that waits longer than
:data:`SLOT_WAIT` for its slots is refused with :class:`~federation.errors.Busy` (503 +
Retry-After), and neither that nor a full pool is cached as the peer's failure; an overall
``key_deadline`` (5 s) for each fetch however slowly the peer drips its answer; and its own
connection pool (``keys``), apart from object fetches and deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from federation.addressing import parse_target, repo_actor_url
from federation.errors import Busy, PoolFull
from federation.identity import NodeKey, public_from_pem
from federation.net import Fetcher, authority_or
from federation.settings import authority
from hif.errors import HifError, InvalidInput, RemoteError

AS = "https://www.w3.org/ns/activitystreams"
SEC = "https://w3id.org/security/v1"
FORGEFED = "https://forgefed.org/ns"
CONTEXT_PATH = "/ns"  # the node's JSON-LD context for micelio's own terms
TERMS: dict[str, Any] = {  # micelio's terms; everything else we emit is AS2, security or ForgeFed
    "Landing": "mic:Landing",  # one position of a repository's mainline
    "position": {"@id": "mic:position", "@type": "xsd:nonNegativeInteger"},
    "envelope": "mic:envelope",  # a landing's signed envelope, base64url CBOR (inline in a Push)
    "envelopes": {"@id": "mic:envelopes", "@type": "@id"},  # a repository's envelope log
    "session": "mic:session",  # the session a landing or an accepted offer landed
    "bundle": {"@id": "mic:bundle", "@type": "@id"},  # an offer's signed bundle
    "api": {"@id": "mic:api", "@type": "@id"},  # a repository's CBOR API
    "vcs": "mic:vcs",  # the version control system ("hif")
}
ACTIVITY_JSON = "application/activity+json"
NODEINFO_21 = "http://nodeinfo.diaspora.software/ns/schema/2.1"
ACTOR_TYPES = {"Application", "Service", "Person", "Group", "Organization", "Repository"}
KEY_TTL = 3600.0
SLOT_WAIT = 1.0  # seconds a lookup may wait for its slots (host, address, all) before a 503
CACHE_MAX = 4096  # entries per cache (documents, keys, failures); past it the least recently used go
VERSION = "0.1.0"


def context_url(base: str) -> str:
    return f"{base}{CONTEXT_PATH}"


def context(base: str) -> list[Any]:
    """The ``@context`` of every document and activity the node at ``base`` emits."""
    return [AS, SEC, FORGEFED, context_url(base)]


def context_document(base: str) -> dict[str, Any]:
    """The published JSON-LD context (at :data:`CONTEXT_PATH`): our terms expand to IRIs under
    ``<node>/ns#`` instead of becoming blank nodes."""
    return {
        "@context": {
            "mic": f"{context_url(base)}#",
            "xsd": "http://www.w3.org/2001/XMLSchema#",
            **TERMS,
        }
    }


def with_context(activity: dict[str, Any], base: str) -> dict[str, Any]:
    """``activity`` with the node's full ``@context`` (what every outgoing activity carries)."""
    return {"@context": context(base), **{k: v for k, v in activity.items() if k != "@context"}}


def public_key_doc(key: NodeKey) -> dict[str, Any]:
    return {"id": key.key_id, "owner": key.actor, "publicKeyPem": key.public_pem()}


def node_actor(key: NodeKey) -> dict[str, Any]:
    u = key.url
    return {
        "@context": context(u),
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
        "@context": context(key.url),
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


V = TypeVar("V")


class LRU(OrderedDict[str, V], Generic[V]):
    """A cache of at most ``cap`` entries that drops the least recently used one at a time, so a
    peer with endless valid keys pushes out only entries nobody has asked for lately."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def get(self, key: str, default: Any = None) -> Any:
        """The entry (now the most recently used), or ``default``."""
        if key not in self:
            return default
        self.move_to_end(key)
        return self[key]

    def put(self, key: str, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.cap:
            self.popitem(last=False)


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
        self.settings = fetcher.settings
        self._keys: LRU[RemoteKey] = LRU(CACHE_MAX)
        self._actors: LRU[tuple[float, dict[str, Any]]] = LRU(CACHE_MAX)
        self._failed: LRU[tuple[float, HifError]] = LRU(CACHE_MAX)
        self._inflight: dict[str, asyncio.Task[Any]] = {}
        self._slots: dict[tuple[str, str], tuple[asyncio.Semaphore, list[int]]] = {}
        self._refetched: dict[str, float] = {}
        self.fetches = 0

    async def fetch_json(self, url: str, accept: str = ACTIVITY_JSON) -> Any:
        """A document a stranger may have named, through the guards of this module: the failure
        cache, one fetch per URL in flight, the per-host slots, the deadline and the keys pool."""
        now = time.monotonic()
        failed = self._failed.get(url)
        if failed is not None and failed[0] > now:
            raise type(failed[1])(f"{failed[1]} (cached failure)")
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.ensure_future(self._fetch_json(url, accept))
            self._inflight[url] = task
            task.add_done_callback(lambda t: self._done(url, t))
        return await asyncio.shield(task)

    def forget_failures(self, host: str) -> None:
        """Drop the cached failures of lookups on ``host``: an operator asked again on purpose (a
        new explicit follow), so the cause may be gone."""
        for url in [u for u in self._failed if authority_or(u) == host]:
            self._failed.pop(url, None)

    def _done(self, url: str, task: asyncio.Task[Any]) -> None:
        self._inflight.pop(url, None)
        if not task.cancelled():
            task.exception()  # retrieved here: nobody may be waiting any more

    async def _fetch_json(self, url: str, accept: str) -> Any:
        s = self.settings
        until = asyncio.get_running_loop().time() + SLOT_WAIT  # one wait for all three slots
        try:
            async with contextlib.AsyncExitStack() as slots:
                host = authority(url)
                await slots.enter_async_context(
                    self._slot(("host", host), s.key_per_host, until, f"for {host}")
                )
                try:  # cached for a minute: get_json reuses the answer
                    async with asyncio.timeout(s.key_deadline):
                        address = await self.fetcher.resolve(url)
                except TimeoutError:
                    raise RemoteError(
                        f"cannot resolve {host} within {s.key_deadline:g} s (the deadline)"
                    ) from None
                await slots.enter_async_context(  # many ports or names of one machine count once
                    self._slot(("address", address), s.key_per_address, until, f"to {host}'s address")
                )
                await slots.enter_async_context(self._slot(("all", ""), s.key_in_flight, until, ""))
                self.fetches += 1
                return await self.fetcher.get_json(
                    url, accept=accept, deadline=s.key_deadline, pool="keys"
                )
        except (Busy, PoolFull):
            raise  # our own saturation: the peer did nothing wrong, ask again shortly
        except HifError as e:
            self._failed.put(url, (time.monotonic() + s.key_fail_ttl, e))
            raise

    @contextlib.asynccontextmanager
    async def _slot(
        self, key: tuple[str, str], cap: int, until: float, what: str
    ) -> AsyncIterator[None]:
        """One of ``cap`` slots for ``key``, waited for until ``until`` (loop time), else
        :class:`Busy`. The semaphore lives while someone uses it (no table of every host seen)."""
        sem, users = self._slots.setdefault(key, (asyncio.Semaphore(cap), [0]))
        users[0] += 1
        try:
            try:
                async with asyncio.timeout_at(until):
                    await sem.acquire()
            except TimeoutError:
                raise Busy(
                    f"too many lookups in flight{' ' + what if what else ''} "
                    f"(at most {cap}); try again shortly"
                ) from None
            try:
                yield
            finally:
                sem.release()
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._slots.pop(key, None)

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
        doc = await self.fetch_json(url)
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
            raise RemoteError(f"{url} is not an actor document")
        if doc["id"] != url.split("#")[0]:
            raise InvalidInput(f"the document at {url} claims to be {doc['id']}")
        self._actors.put(url, (now + KEY_TTL, doc))
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
        self._keys.put(key_id, found)
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
        base, _, name = parse_target(url)
        finger = f"{base}/.well-known/webfinger?resource={quote(f'{base}/{name}', safe='')}"
        jrd = await self.fetch_json(finger, accept="application/jrd+json")
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

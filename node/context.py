"""The node every route is handed (``node_of``): configuration, the store and what is derived from
it. No state that another replica lacks.

Everything a replica holds in memory (the auth database copy, a tree cache per repository, the login
rate limiter) is a cache or a per-replica guard; the store is the only source of truth.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, cast

from quart import Quart, current_app, request

from federation.service import Federation
from hif.checks import Policy
from hif.errors import NotFound
from hif.repo import Repo
from hif.session import Session, fold
from hif.store import EmbeddedStore, ObjectStore, open_store
from hif.store.threaded import ThreadedStore
from node.accounts import Accounts
from node.authdb import AuthDB
from node.config import Config
from node.ratelimit import LoginLimiter, client_address, parse_networks

# Repository handles kept per replica (each caches trees and records; bounded so that memory does not
# grow with the number of repositories served).
REPO_HANDLES = 32
# Events of open sessions kept per replica (SessionCache): a few MB at most.
CACHED_EVENTS = 20_000


class SessionCache:
    """Open sessions as this replica wrote them (started, then appended to), so that landing one
    need not read every event back: the land route lists the events after the last one kept here
    (one listing) and uses the copy only when there are none, that is when no other writer (another
    replica, a working copy) added one. A cache: a miss, or any doubt, reads the session from the
    store. Bounded by :data:`CACHED_EVENTS` events, least recently used first out."""

    def __init__(self, most: int = CACHED_EVENTS) -> None:
        self._most = most
        self._kept: OrderedDict[tuple[str, str], Session] = OrderedDict()
        self._events = 0

    def put(self, repo: str, s: Session) -> None:
        self.drop(repo, s.id)
        if len(s.events) > self._most // 4:
            return  # a long session is read from the store (rarely landed through this route anyway)
        self._kept[(repo, s.id)] = s
        self._events += len(s.events)
        while self._events > self._most:
            _, old = self._kept.popitem(last=False)
            self._events -= len(old.events)

    def appended(self, repo: str, sid: str, stamped: list[dict[str, Any]]) -> None:
        """Events this replica appended: kept only if they follow the copy's last one without a gap."""
        s = self._kept.get((repo, sid))
        if s is None:
            return
        seqs = [e.get("seq") for e in stamped]
        if seqs != list(range(s.next_seq, s.next_seq + len(stamped))):
            self.drop(repo, sid)  # another append of ours came between: the store has the truth
            return
        self.put(repo, fold(sid, [*s.events, *stamped]))

    def get(self, repo: str, sid: str) -> Session | None:
        return self._kept.get((repo, sid))

    def drop(self, repo: str, sid: str) -> None:
        s = self._kept.pop((repo, sid), None)
        if s is not None:
            self._events -= len(s.events)

    def forget_repo(self, repo: str) -> None:
        for key in [k for k in self._kept if k[0] == repo]:
            self.drop(*key)


class Node:
    """What the routes share: configuration, the store and caches derived from it."""

    def __init__(self, config: Config, store: ObjectStore | None = None, *,
                 land_policy: Policy | None = None) -> None:
        self.config = config
        self.land_policy = land_policy  # every landing through this node (require_checks: node.api.checks)
        self._store = store
        self.accounts: Accounts | None = None
        self.limiter = LoginLimiter()
        self.trusted_proxies = parse_networks(config.trusted_proxies)  # a typo stops the start
        self._repos: OrderedDict[str, Repo] = OrderedDict()
        self.open_sessions = SessionCache()
        # the app's extensions (search, federation): what handlers reach without Quart's globals
        self.extensions: dict[str, Any] = {}

    async def start(self) -> None:
        if self._store is None:
            store = open_store(self.config.store, create=True)
            # the embedded store blocks on the disk: in threads, requests overlap instead of queueing
            self._store = ThreadedStore(store) if isinstance(store, EmbeddedStore) else store
        self.accounts = Accounts(AuthDB(self.store, self.config.cache_dir, max_age=self.config.auth_max_age))

    async def stop(self) -> None:
        if self._store is not None:
            await self._store.close()

    @property
    def store(self) -> ObjectStore:
        assert self._store is not None, "the node has not started"
        return self._store

    @property
    def auth(self) -> Accounts:
        assert self.accounts is not None, "the node has not started"
        return self.accounts

    def client_address(self) -> str:
        """The current request's client: the TCP peer, or behind a trusted proxy the address it
        forwarded (``MICELIO_TRUSTED_PROXIES``)."""
        return client_address(request.remote_addr, request.headers.getlist("X-Forwarded-For"),
                              self.trusted_proxies)

    def repo(self, name: str) -> Repo:
        """A plumbing handle per repository, kept for its tree cache (bounded)."""
        repo = self._repos.get(name)
        if repo is None:
            repo = self._repos[name] = Repo(self.store, name)
            repo.land_policy = self.land_policy
            if len(self._repos) > REPO_HANDLES:
                self._repos.popitem(last=False)
        else:
            self._repos.move_to_end(name)
        return repo


    def forget_repo(self, name: str) -> None:
        """Drop the handle of a deleted repository: a new one of that name starts with no cache."""
        self._repos.pop(name, None)
        self.open_sessions.forget_repo(name)


def node_of(app: Quart) -> Node:
    return cast(Node, app.extensions["micelio"])


def fed_of(app: Quart | Node | None = None) -> Federation:
    """The replica's running federation (node.api.federation starts it with the app); ``app``: the
    app or its node (whose ``extensions`` are the app's), by default the current app."""
    fed = (app or current_app).extensions.get("federation")  # type: ignore[union-attr]
    if fed is None:
        raise NotFound("federation is not running on this node")
    return cast(Federation, fed)

"""The node's why-search: one index per replica, in its cache directory, over every repository the
node serves and every mirror it keeps (:mod:`hif.search` does the indexing and the querying).

The index is derived and per replica (a SQLite file in WAL mode; replicas never share or coordinate
it): a background task catches every repository up by position and takes in the open sessions' new
events every ``search_poll`` seconds (0.5 by default) (landings through other replicas, replication into mirrors), and a
landing through this replica marks its repository, which the next query catches up before it runs, so
a landing is searchable at once here and within a poll everywhere else. A damaged or deleted file is
started anew and filled again from the store.

Access is decided before anything is counted: a query is confined, in SQL, to the repositories the
caller may read (``Accounts.visible_repos``, the same rule as every page) plus the mirrors (public
copies), so a private repository's sessions never show in results, totals, facets or snippets.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from quart import Quart

from federation.mirror import mirror_repo, origin_of
from federation.search import PeerAnswer, ask_peers
from federation.service import Federation
from hif.errors import BadQuery, HifError, IndexDamaged
from hif.repo import Repo
from hif.search import (
    MAX_LIMIT,
    MAX_OFFSET,
    CommitHit,
    Query,
    Results,
    SearchIndex,
    check_kinds,
    commit_prefix,
    one_commit,
)
from hif.session import ROLES
from node.context import Node
from node.principal import Principal

INDEX_FILE = "search.sqlite"
NAMES_PAGE = 1000  # repository names read from the auth database at a time
log = logging.getLogger("micelio.search")
T = TypeVar("T")


class NodeSearch:
    """The replica's index and what keeps it current."""

    def __init__(self, node: Node, fed: Callable[[], Federation | None]) -> None:
        self.node = node
        self._fed = fed
        self.poll = node.config.search_poll  # 0: no background catch-up, each query catches up first
        self.index: SearchIndex | None = None
        self.dirty: set[str] = set()  # prefixes landed on through this replica, caught up at the next query
        self._lock = asyncio.Lock()  # one catch-up at a time in this process
        self._task: asyncio.Task[None] | None = None
        self._rebuilt = 0  # the index's restarts already filled again

    async def start(self) -> None:
        self.index = await asyncio.to_thread(SearchIndex, self.node.config.cache_dir / INDEX_FILE)
        self._rebuilt = self.index.rebuilt  # found damaged at start: the background pass fills it
        if self.poll > 0:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.index is not None:
            self.index.close()

    @property
    def idx(self) -> SearchIndex:
        assert self.index is not None, "search has not started"
        return self.index

    def landed(self, repo: Repo) -> None:
        """A landing (or a new event) through this replica: the next query catches the repository up."""
        self.dirty.add(repo.prefix)

    # -- keeping it current -----------------------------------------------------------------------

    async def sources(self) -> list[tuple[Repo, str]]:
        """Every repository (fresh handles: the catch-up's records are not kept in memory) and every
        mirror, with its origin ("" for local)."""
        out: list[tuple[Repo, str]] = []
        after = None
        while True:
            names = await self.node.auth.repo_names(limit=NAMES_PAGE, after=after)
            out += [(Repo(self.node.store, n), "") for n in names]
            if len(names) < NAMES_PAGE:
                break
            after = names[-1]
        fed = self._fed()
        if fed is not None:
            for f in await fed.following():
                host, name = f.get("host"), f.get("name")
                if isinstance(host, str) and isinstance(name, str):
                    with contextlib.suppress(HifError):
                        out.append((mirror_repo(self.node.store, host, name), host))
        return out

    async def refresh(self, only: set[str] | None = None) -> None:
        """Catch up every source (or those whose prefix is in ``only``); one failing repository
        (a store error, a damaged record) is logged and the others go on."""
        async with self._lock:
            for repo, origin in await self.sources():
                if only is not None and repo.prefix not in only:
                    continue
                try:
                    await self.idx.refresh(repo, origin)
                except HifError as e:
                    log.warning("search: cannot index %s: %s", repo.prefix, e)

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a pass that fails is retried at the next poll, never the end of search
                log.exception("search: a catch-up pass failed")
            await asyncio.sleep(self.poll)

    # -- asking -----------------------------------------------------------------------------------

    async def scope(self, p: Principal, *, local_only: bool = False) -> list[str]:
        """The prefixes ``p`` may read: its readable repositories and, unless the token is bound to
        one repository, every mirror (mirrors are public copies)."""
        out: list[str] = []
        after = None
        while True:
            infos = await self.node.auth.visible_repos(p, limit=NAMES_PAGE, after=after)
            out += [f"repos/{i['name']}/" for i in infos]
            if len(infos) < NAMES_PAGE:
                break
            after = infos[-1]["name"]
        if not local_only and p.repo is None:
            out += [prefix for prefix in self.idx.indexed() if prefix.startswith("mirrors/")]
        return out

    async def search(self, p: Principal, q: Query, *, local_only: bool = False) -> Results:
        """``q`` over what ``p`` may read; repositories landed on through this replica are caught
        up first. A damaged index is started anew, caught up and asked again."""
        q.scope = await self.scope(p, local_only=local_only)
        return await self._answer(q)

    async def search_in(self, repo: Repo, q: Query) -> Results:
        """``q`` over one repository the caller was already let read (a sessions list)."""
        q.scope = [repo.prefix]
        return await self._answer(q)

    async def _answer(self, q: Query) -> Results:
        assert q.scope is not None
        if self.poll <= 0:  # no background catch-up: the repositories asked about, now
            self.dirty |= set(q.scope) if not q.repo else {p for p in q.scope if p.endswith(f"/{q.repo}/")}
        return await self._read(functools.partial(self.idx.query, q))

    async def _read(self, ask: Callable[[], T]) -> T:
        """``ask`` the index in a worker thread, once the repositories marked dirty are caught up; a
        deleted or damaged index is filled again first, so it never answers wrong or fails."""
        if self.dirty:
            dirty, self.dirty = self.dirty, set()
            await self.refresh(dirty)
        self.idx.check_file()
        if self.idx.rebuilt != self._rebuilt:  # deleted or damaged under the node: fill it before answering
            self._rebuilt = self.idx.rebuilt
            await self.refresh()
        try:
            return await asyncio.to_thread(ask)
        except IndexDamaged:
            self.idx.damaged()
            self._rebuilt = self.idx.rebuilt
            await self.refresh()
            return await asyncio.to_thread(ask)

    async def commit(self, repo: Repo, text: str) -> CommitHit:
        """The git commit of ``repo`` (one the caller was let read, or a mirror) whose id starts
        with ``text``: BadQuery (400) for a malformed id, before the index is asked; NotFound or
        Ambiguous (409, the candidates listed) else. A miss catches the repository up and asks
        again, so a commit imported a moment ago is found; a hit is final (records never change)."""
        prefix = commit_prefix(text)
        hits = await self._read(functools.partial(self.idx.commits, repo.prefix, prefix))
        if not hits:  # this repository alone, now (not every source, as a pass does)
            async with self._lock:
                await self.idx.catch_up(repo, origin_of(repo))
            hits = await self._read(functools.partial(self.idx.commits, repo.prefix, prefix))
        return one_commit(hits, prefix, repo.name)

    async def commit_known(self, repo: Repo, commit: str) -> CommitHit | None:
        """The index's row of the whole commit id ``commit``, as far as it has caught up (no wait:
        what a page shows beside the commit; None when not indexed yet or not a commit id)."""
        try:
            hits = await self._read(functools.partial(self.idx.commits, repo.prefix, commit))
        except BadQuery:
            return None
        return next((h for h in hits if h.commit == commit.lower()), None)

    async def federated(self, params: dict[str, Any]) -> list[PeerAnswer]:
        """The followed nodes' public matches (none without federation)."""
        fed = self._fed()
        return await ask_peers(fed, params) if fed is not None else []


def search_of(app: Quart | Node) -> NodeSearch:
    return app.extensions["search"]  # type: ignore[no-any-return]


def install(app: Quart, node: Node, fed: Callable[[], Federation | None]) -> NodeSearch:
    """Run the replica's search while the app serves (after the store and federation start)."""
    s = NodeSearch(node, fed)
    app.extensions["search"] = s

    @app.while_serving
    async def _search() -> Any:
        await s.start()
        try:
            yield
        finally:
            await s.stop()

    return s


# -- the query a request asks -----------------------------------------------------------------------


def _day(text: str, what: str, *, end: bool = False) -> float | None:
    """A date (YYYY-MM-DD, UTC) as seconds; ``end``: the end of that day."""
    if not text:
        return None
    try:
        t = time.strptime(text, "%Y-%m-%d")
    except ValueError:
        raise BadQuery(f"{what} is a date written YYYY-MM-DD, not {text[:40]!r}") from None
    return calendar.timegm(t) + (86400.0 if end else 0.0)


def _int(args: Any, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = args.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"{name} is a whole number, not {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise BadQuery(f"{name} is between {lo} and {hi}")
    return value


def query_of(args: Any, *, limit: int = 20) -> Query:
    """The search a request's arguments ask for (API and UI alike); anything unreadable is a
    BadQuery (400) naming the argument."""
    role = args.get("role", "")
    if role and role not in ROLES:
        raise BadQuery(f"role is one of {', '.join(ROLES)}")
    state = args.get("state", "")
    if state and state not in ("landed", "open"):
        raise BadQuery("state is landed or open")
    origin = args.get("origin")
    return Query(
        text=args.get("q", ""),
        kinds=check_kinds(k for k in args.getlist("kind") if k),
        repo=args.get("repo", "").strip(),
        origin=None if origin is None or origin == "" else ("" if origin == "local" else origin),
        author=args.get("author", "").strip(),
        role=role,
        state=state,
        since=_day(args.get("since", ""), "since"),
        until=_day(args.get("until", ""), "until", end=True),
        pos_from=_int(args, "from", None, 1, 10**12),
        pos_to=_int(args, "to", None, 1, 10**12),
        limit=_int(args, "limit", limit, 1, MAX_LIMIT) or limit,
        offset=_int(args, "offset", 0, 0, MAX_OFFSET) or 0,
    )


async def with_peers(local: Awaitable[Results], peers: Awaitable[list[PeerAnswer]] | None
                     ) -> tuple[Results, list[PeerAnswer]]:
    """Local results and the peers' answers, asked at the same time (the peers' deadline bounds the
    wait; a failing peer is an answer with an error, never an exception)."""
    if peers is None:
        return await local, []
    got = await asyncio.gather(local, peers)
    return got[0], got[1]

"""``hif search``: find sessions by what was said and decided.

In a working copy over a local store the index lives in ``.hif/search.sqlite``, derived from the
repository and caught up (by position, plus the open sessions' new events) before each query; it may
be deleted at any time. A clone of a forge repository asks the forge (its history lives there, and
the forge's index has it already); so does ``remote`` (its index covers every repository it
serves, mirrors included, filtered by what the caller may read); ``everywhere`` widens that to all of
them. :func:`search` is the one entry the CLI and the MCP server call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from hif.errors import IndexDamaged, InvalidInput, RemoteError
from hif.porcelain.base import RepositoryBase

# hif.search (and sqlite3 with it) is imported where used: every hif command imports the porcelain,
# and start-up is most of a short command's CPU
if TYPE_CHECKING:
    from collections.abc import Callable

    from hif.search import CommitHit, Results, SearchIndex

INDEX_FILE = "search.sqlite"
T = TypeVar("T")


class Searching(RepositoryBase):
    """Search over the working copy's repository, or through its forge."""

    def search(self, query: str, *, kinds: tuple[str, ...] = (), remote: bool = False,
               everywhere: bool = False, limit: int = 20, offset: int = 0, author: str = "",
               role: str = "", state: str = "") -> Results:
        from hif.search import (  # start-up: see above
            Query,
            check_kinds,
            fts_expression,
        )

        fts_expression(query)  # a bad query is refused before anything is read or asked
        kinds = check_kinds(kinds)
        if remote or everywhere or self.remote is not None:  # a clone's history lives on its forge
            return self._remote_search(query, kinds=kinds, everywhere=everywhere, limit=limit,
                                       offset=offset, author=author, role=role, state=state)
        q = Query(query, kinds=kinds, limit=limit, offset=offset, author=author, role=role, state=state,
                  facets=False)
        return self._ask_index(lambda index: index.query(q), landings_only=False)

    def find_commit(self, text: str) -> CommitHit:
        """The landing the imported git commit ``text`` (its id, or at least 7 of its first hex
        digits, any case) became: from the working copy's index, caught up first (only landings
        carry commits), or, in a clone, from its forge. BadQuery for what is no commit id,
        NotFound, or Ambiguous listing the commits a short prefix names."""
        from hif.search import commit_prefix, one_commit  # start-up: see above

        prefix = commit_prefix(text)
        if self.remote is not None:  # a clone: its forge's index has the history already
            return commit_of(self.remote.client.get(f"{self.remote.api}commits/{prefix}"))
        hits = self._ask_index(lambda index: index.commits(self.repo.prefix, prefix), landings_only=True)
        return one_commit(hits, prefix, self.name)

    def _ask_index(self, ask: Callable[[SearchIndex], T], *, landings_only: bool) -> T:
        """``ask`` the working copy's index once it has caught up with the repository (landings, and
        the open sessions unless ``landings_only``); an index found damaged starts anew."""
        from hif.search import SearchIndex  # start-up: see above

        index = SearchIndex(self.work.meta / INDEX_FILE)

        def catch_up() -> None:
            self._run(index.catch_up(self.repo) if landings_only else index.refresh(self.repo))

        try:
            catch_up()
            try:
                return ask(index)
            except IndexDamaged:  # damaged since it was opened: start anew from the store
                index.damaged()
                catch_up()
                return ask(index)
        finally:
            index.close()

    def _remote_search(self, query: str, *, kinds: tuple[str, ...], everywhere: bool, limit: int,
                       offset: int, author: str, role: str, state: str) -> Results:
        if self.remote is None:
            raise InvalidInput("this working copy is not a clone of a forge repository: "
                               "--remote and --all need one (search it locally without them)")
        doc = self.remote.client.get("search", q=query, kind=list(kinds) or None,
                                     repo=None if everywhere else self.name, limit=limit,
                                     offset=offset or None, author=author or None, role=role or None,
                                     state=state or None)
        return results_of(doc)


def search(repo: Searching, query: str, **options: Any) -> Results:
    """Sessions of ``repo`` (or, with ``remote``/``everywhere``, of its forge) matching ``query``,
    best first: the porcelain entry for the CLI and the MCP server. Options are those of
    :meth:`Searching.search` (``kinds``, ``limit``, ``offset``, ``author``, ``role``, ``state``)."""
    return repo.search(query, **options)


def results_of(doc: Any) -> Results:
    """The forge's answer (``GET /api/v1/search``) as results; a malformed one is a RemoteError."""
    from hif.search import KINDS, Hit, Results  # start-up: see the imports above

    try:
        hits = [Hit(repo=str(h["repo"]), origin=str(h.get("origin") or ""), session=str(h["session"]),
                    state=str(h["state"]), position=h.get("position"), time=float(h["time"]),
                    author=str(h["author"]), role=str(h["role"]), goal=str(h["goal"]),
                    kind=h["kind"] if h["kind"] in KINDS else "goal", seq=h.get("seq"),
                    snippet=[(str(t), bool(m)) for t, m in h["snippet"]], score=float(h.get("score", 0)))
                for h in doc["results"]]
        facets = {str(k): [(str(v), int(n)) for v, n in vs] for k, vs in (doc.get("facets") or {}).items()}
        return Results(str(doc["query"]), int(doc["total"]), bool(doc["capped"]), hits,
                       int(doc.get("offset") or 0), facets)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RemoteError(f"the forge sent a search answer that does not read ({e!r})") from None


def commit_of(doc: Any) -> CommitHit:
    """The forge's answer (``GET .../commits/<sha>``) as a commit; a malformed one is a RemoteError."""
    from hif.search import CommitHit  # start-up: see the imports above

    try:
        hit = CommitHit(str(doc["commit"]), int(doc["position"]), str(doc["session"]),
                        int(doc.get("iteration") or 0), bool(doc.get("exact")))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RemoteError(f"the forge sent a commit answer that does not read ({e!r})") from None
    if hit.position < 1:
        raise RemoteError(f"the forge sent a commit at position {hit.position}")
    return hit

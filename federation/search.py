"""Federated search: ask the nodes this node follows for their public matches.

Each peer (the distinct origin of the repositories followed, at most :data:`PEERS_ASKED`) gets one
signed GET of its search endpoint (``/api/v1/search?...&local=1``: its own repositories only, never
its mirrors, so questions do not travel in circles). A peer answers it as it would an anonymous
caller, so only public sessions come back; the signature tells it which node asks. All peers are asked
at once under one deadline; a peer that is slow, refuses, or answers something unreadable is
reported with why, and never delays the local results (the caller runs this beside its own query).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from federation.httpsig import sign_headers
from federation.net import http_error
from federation.service import Federation
from hif.errors import HifError

PEERS_ASKED = 8  # followed nodes asked per search
DEADLINE = 2.0  # seconds for every peer's answer (DNS and a dripping peer included)
PEER_CAP = 256 * 1024  # bytes of one peer's answer
PEER_RESULTS = 20  # results taken from one peer


@dataclass
class PeerAnswer:
    """One peer's part of a federated search: its results (labelled with its host) or why none."""

    node: str
    base: str  # the node's URL, for links to its sessions
    results: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "url": self.base, "results": self.results, "total": self.total, "error": self.error}


async def peers(fed: Federation) -> list[tuple[str, str]]:
    """(host, base URL) of the nodes whose repositories this node follows, at most PEERS_ASKED."""
    out: dict[str, str] = {}
    for f in await fed.following():
        host, base = f.get("host"), f.get("base")
        if isinstance(host, str) and isinstance(base, str) and host not in out:
            out[host] = base
    return sorted(out.items())[:PEERS_ASKED]


async def ask_peers(fed: Federation, params: dict[str, Any], *, deadline: float = DEADLINE,
                    limit: int = PEER_RESULTS) -> list[PeerAnswer]:
    """Every followed node's public matches for ``params`` (q, kind, author, role, state...)."""
    query = {k: v for k, v in params.items() if v not in (None, "", ())}
    query.update(local="1", limit=str(min(limit, PEER_RESULTS)))
    asked = await peers(fed)
    answers = await asyncio.gather(*(_ask(fed, host, base, query, deadline) for host, base in asked))
    return list(answers)


async def _ask(fed: Federation, host: str, base: str, query: dict[str, Any], deadline: float) -> PeerAnswer:
    url = f"{base.rstrip('/')}/api/v1/search?{urlencode(query, doseq=True)}"
    try:
        headers = sign_headers(fed.key, "GET", url, None, {"Accept": "application/json"})
        a = await fed.fetcher.request("GET", url, headers=headers, cap=PEER_CAP, deadline=deadline,
                                      timeout=deadline, pool="objects")
        if a.status != 200:
            raise http_error(a, url)
        return _answer(host, base, a.json())
    except HifError as e:
        return PeerAnswer(host, base, error=str(e))


def _answer(host: str, base: str, doc: Any) -> PeerAnswer:
    """A peer's JSON answer, field by field (it is a stranger's); results are labelled with the
    peer's host, whatever the peer says of itself."""
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        return PeerAnswer(host, base, error="the node sent an answer that is not a search result")
    out = []
    for h in doc["results"][:PEER_RESULTS]:
        if not isinstance(h, dict):
            continue
        row = {k: h.get(k) for k in ("repo", "session", "state", "position", "time", "author", "role",
                                     "goal", "kind", "seq", "text")}
        if not all(isinstance(row[k], str) for k in ("repo", "session", "goal", "author", "role")):
            continue
        snippet = h.get("snippet")
        row["snippet"] = [[t, bool(m)] for t, m in (p for p in snippet if isinstance(p, list) and len(p) == 2)
                          if isinstance(t, str)] if isinstance(snippet, list) else []
        row["origin"] = host
        out.append(row)
    total = doc.get("total")
    return PeerAnswer(host, base, out, total if isinstance(total, int) and total >= 0 else len(out))

"""``GET /api/v1/search``: sessions found by what was said and decided, across every repository the
caller may read and every mirror (docs/api.md); CBOR, or JSON when asked for."""

from __future__ import annotations

from typing import Any

from node.api.routing import Ctx, cbor_or_json, route
from node.search import query_of, search_of, with_peers


@route("GET", "/api/v1/search", "public", agent=True)
async def search(ctx: Ctx) -> Any:
    """``q`` with the filters of :func:`node.search.query_of`; ``local=1`` leaves mirrors out (what a
    peer asks), ``remote=1`` also asks the followed nodes (their public matches, labelled)."""
    args = ctx.args
    q = query_of(args)
    searcher = search_of(ctx.node)
    local_only = args.get("local") == "1"
    remote = args.get("remote") == "1" and not local_only
    params = {"q": q.text, "kind": list(q.kinds), "author": q.author, "role": q.role, "state": q.state}
    found, peers = await with_peers(searcher.search(ctx.principal, q, local_only=local_only),
                                    searcher.federated(params) if remote else None)
    doc = found.to_json()
    if remote:
        doc["remote"] = [a.to_json() for a in peers]
    return cbor_or_json(ctx, doc)

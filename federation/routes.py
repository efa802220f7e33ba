"""The federation HTTP surface: discovery, actors, inboxes, outboxes and signed envelopes.

JSON (ActivityStreams, JRD, NodeInfo) where the ecosystem expects it; landing envelopes, envelope
pages and offer bundles are CBOR. Errors are JSON ``{"error", "message"}`` with the error's status
(and ``Retry-After`` when the error says when to come back). WebFinger follows RFC 7033: a request
without ``resource`` is a 400, and every answer, errors included, carries
``Access-Control-Allow-Origin: *``. The node's JSON-LD context for its own terms is at ``/ns``.
The blueprint reaches the node's ``Federation`` through a callback, so this package never imports
the node.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from quart import Blueprint, Response, request

from federation import inbox
from federation.actors import (
    ACTIVITY_JSON,
    CONTEXT_PATH,
    context,
    context_document,
    node_actor,
    nodeinfo,
    nodeinfo_links,
    repository_actor,
    webfinger,
)
from federation.addressing import repo_actor_url
from federation.envelope import PAGE, PAGE_BYTES, PAGE_MAX, landing_envelope
from federation.layout import BUNDLES, FOLLOWING
from federation.service import Federation
from federation.settings import authority
from federation.status import follower_count
from hif.aio import read_capped
from hif.errors import HifError, InvalidInput, NotFound
from hif.objects import encode
from hif.repo import check_repo_name

CBOR = "application/cbor"
OUTBOX_PAGE = 50
WEBFINGER = "/.well-known/webfinger"
_CODES = {
    400: "bad_request",
    401: "auth_required",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "too_large",
    422: "unprocessable",
    502: "bad_gateway",
    503: "unavailable",
}


def _json(doc: Any, status: int = 200, content_type: str = ACTIVITY_JSON) -> Response:
    return Response(json.dumps(doc), status=status, content_type=content_type)


def _cbor(value: Any) -> Response:
    return Response(encode(value) if not isinstance(value, bytes) else value, content_type=CBOR)


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    if not re.fullmatch(r"\d{1,12}", raw):
        raise InvalidInput(f"{name} must be a non-negative integer")
    return max(lo, min(hi, int(raw)))


async def _read_body(limit: int) -> bytes:
    """The activity's bytes, refused (413) while reading once past ``limit`` (hif.aio.read_capped)."""
    return await read_capped(request.body, limit, declared=request.content_length, what="an activity")


def blueprint(get: Callable[[], Federation]) -> Blueprint:
    bp = Blueprint("federation", __name__)

    @bp.errorhandler(HifError)
    async def _error(e: HifError) -> Response:
        status = e.response_status
        resp = _json(
            {"error": _CODES.get(status, "error"), "message": str(e)}, status, "application/json"
        )
        retry = getattr(e, "retry_after", None)
        if isinstance(retry, int):
            resp.headers["Retry-After"] = str(retry)
        if request.path == WEBFINGER:
            resp.headers["Access-Control-Allow-Origin"] = "*"
        return resp

    async def public_repo(owner: str, name: str) -> tuple[Federation, str, dict[str, Any]]:
        fed = get()
        try:
            full = check_repo_name(f"{owner}/{name}")
        except InvalidInput:
            raise NotFound(f"no repository {owner}/{name}") from None
        info = await fed.repo_info(full)
        if info is None or info.get("private"):
            raise NotFound(f"no public repository {full}")
        return fed, full, info

    @bp.get(WEBFINGER)
    async def finger() -> Response:
        fed = get()
        resource = request.args.get("resource", "").strip()
        if not resource:
            raise InvalidInput("WebFinger needs a resource parameter (RFC 7033)")
        host = authority(fed.url)
        if resource in (f"acct:node@{host}", fed.url, fed.key.actor):
            doc = webfinger(resource, fed.key.actor, [fed.url, fed.key.actor])
        else:
            name = resource[len(fed.url) + 1 :] if resource.startswith(fed.url + "/") else ""
            if resource.startswith(f"{fed.url}/ap/repos/"):
                name = resource[len(f"{fed.url}/ap/repos/") :]
            if not name:
                raise NotFound(f"no resource {resource!r} here")
            owner, _, rest = name.partition("/")
            _, full, _ = await public_repo(owner, rest)
            actor = repo_actor_url(fed.url, full)
            doc = webfinger(resource, actor, [f"{fed.url}/{full}", actor])
        resp = _json(doc, content_type="application/jrd+json")
        resp.headers["Access-Control-Allow-Origin"] = "*"
        return resp

    @bp.get(CONTEXT_PATH)
    async def json_ld_context() -> Response:
        resp = _json(context_document(get().url), content_type="application/ld+json")
        resp.headers["Access-Control-Allow-Origin"] = "*"
        return resp

    @bp.get("/.well-known/nodeinfo")
    async def nodeinfo_index() -> Response:
        return _json(nodeinfo_links(get().url), content_type="application/json")

    @bp.get("/nodeinfo/2.1")
    async def nodeinfo_doc() -> Response:
        fed = get()
        following = len(await fed.store.list_page(FOLLOWING, limit=10_000))
        return _json(
            nodeinfo(following),
            content_type=(
                'application/json; profile="http://nodeinfo.diaspora.software/ns/schema/2.1#"'
            ),
        )

    @bp.get("/ap/node")
    async def node_doc() -> Response:
        return _json(node_actor(get().key))

    @bp.get("/ap/outbox")
    async def node_outbox() -> Response:
        fed = get()
        return _json(
            {
                "@context": context(fed.url),
                "id": f"{fed.url}/ap/outbox",
                "type": "OrderedCollection",
                "totalItems": 0,
                "orderedItems": [],
            }
        )

    @bp.post("/ap/inbox")
    async def shared_inbox() -> Response:
        fed = get()
        body = await _read_body(inbox.MAX_BODY)
        result = await inbox.receive(fed, _url(fed), list(request.headers.items()), body)
        return _json(result, 202, "application/json")

    @bp.get("/ap/repos/<owner>/<name>")
    async def repo_doc(owner: str, name: str) -> Response:
        fed, full, info = await public_repo(owner, name)
        return _json(repository_actor(fed.key, full, info.get("description") or ""))

    @bp.post("/ap/repos/<owner>/<name>/inbox")
    async def repo_inbox(owner: str, name: str) -> Response:
        fed = get()
        body = await _read_body(inbox.MAX_BODY)
        try:
            full = check_repo_name(f"{owner}/{name}")
        except InvalidInput:
            raise NotFound(f"no repository {owner}/{name}") from None
        result = await inbox.receive(fed, _url(fed), list(request.headers.items()), body, full)
        return _json(result, 202, "application/json")

    @bp.get("/ap/repos/<owner>/<name>/outbox")
    async def repo_outbox(owner: str, name: str) -> Response:
        fed, full, _ = await public_repo(owner, name)
        actor = repo_actor_url(fed.url, full)
        head = await fed.local_repo(full).mainline.head()
        pages = max(1, -(-head // OUTBOX_PAGE))
        if "page" not in request.args:
            return _json(
                {
                    "@context": context(fed.url),
                    "id": f"{actor}/outbox",
                    "type": "OrderedCollection",
                    "totalItems": head,
                    "first": f"{actor}/outbox?page=1",
                    "last": f"{actor}/outbox?page={pages}",
                }
            )
        page = _int_arg("page", 1, 1, pages)
        top = head - (page - 1) * OUTBOX_PAGE
        items = [
            {
                "@context": context(fed.url),
                "id": f"{actor}/pushes/{p}-{p}",
                "type": "Push",
                "actor": actor,
                "target": actor,
                "object": {"type": "Landing", "id": f"{actor}/envelopes/{p}", "position": p},
            }
            for p in range(top, max(0, top - OUTBOX_PAGE), -1)
        ]
        doc: dict[str, Any] = {
            "@context": context(fed.url),
            "id": f"{actor}/outbox?page={page}",
            "type": "OrderedCollectionPage",
            "partOf": f"{actor}/outbox",
            "orderedItems": items,
        }
        if page < pages:
            doc["next"] = f"{actor}/outbox?page={page + 1}"
        if page > 1:
            doc["prev"] = f"{actor}/outbox?page={page - 1}"
        return _json(doc)

    @bp.get("/ap/repos/<owner>/<name>/followers")
    async def repo_followers(owner: str, name: str) -> Response:
        # only the count: who follows (actors of other nodes) is not for strangers to list; the
        # node's operator sees them with ``micelio federation followers``
        fed, full, _ = await public_repo(owner, name)
        actor = repo_actor_url(fed.url, full)
        return _json(
            {
                "@context": context(fed.url),
                "id": f"{actor}/followers",
                "type": "OrderedCollection",
                "totalItems": await follower_count(fed.store, full),
            }
        )

    @bp.get("/ap/repos/<owner>/<name>/envelopes")
    async def envelope_page(owner: str, name: str) -> Response:
        fed, full, _ = await public_repo(owner, name)
        repo = fed.local_repo(full)
        head = await repo.mainline.head()
        start = _int_arg("start", 1, 1, 1 << 40)
        limit = _int_arg("limit", PAGE, 1, PAGE_MAX)
        end = min(head, start + limit - 1)
        # batched by bytes as well as by count: a page stays about PAGE_BYTES whatever the landings
        wires: list[bytes] = []
        size = 0
        for p in range(start, end + 1):
            wires.append(await fed.envelope(full, p))
            size += len(wires[-1])
            if size >= PAGE_BYTES:
                end = p
                break
        return _cbor({"head": head, "envelopes": wires, "next": end + 1 if end < head else None})

    @bp.get("/ap/repos/<owner>/<name>/envelopes/<int:position>")
    async def envelope(owner: str, name: str, position: int) -> Response:
        fed, full, _ = await public_repo(owner, name)
        return _cbor(await landing_envelope(fed.local_repo(full), fed.key, position))

    @bp.get("/ap/offers/<oid>/bundle")
    async def offer_bundle(oid: str) -> Response:
        fed = get()
        if not re.fullmatch(r"[a-z2-7]{24}", oid):
            raise NotFound("no such offer")
        data = await fed.store.get_or_none(BUNDLES + oid)
        if data is None:
            raise NotFound("no such offer")
        return _cbor(data)

    return bp


def _url(fed: Federation) -> str:
    """The target URI the sender signed: the node's public URL and the request's path and query."""
    query = request.query_string.decode("latin-1")
    return fed.url + request.path + (f"?{query}" if query else "")

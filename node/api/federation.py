"""Federation in the node: starting it with the app, and its part of the CBOR API (docs/api.md).

- ``install`` registers the federation blueprint (``federation.routes``) and runs one
  ``Federation`` per replica while the app serves (after the store opens, before it closes).
- Mirrors are served read-only under ``/api/v1/mirrors/<host>/<owner>/<name>/...`` with the same
  handlers as local repositories; any write there is refused (403).
- Offers: a maintainer lists, reads, lands or rejects sessions offered by other nodes; a writer
  offers a local open session to a remote repository and reads the outcome.
- Site admins follow and unfollow remote repositories and read the federation status.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from quart import Quart

from federation import control, offers, status
from federation.mirror import read_sync
from federation.routes import blueprint
from federation.service import Federation
from federation.settings import FedSettings
from hif.errors import InvalidInput, NotFound, PermissionDenied
from hif.session import check_text, is_session_id
from node.api import objects, repos, sessions
from node.api.routing import REPO, SESSION, Ctx, route
from node.context import Node, fed_of
from node.principal import role_rank
from node.wire import cbor_response, error_body, field, query_int

MIRROR = "/api/v1/mirrors/<host>/<owner>/<name>"


def install(app: Quart, node: Node) -> None:
    app.register_blueprint(blueprint(lambda: fed_of(app)))

    async def repo_info(name: str) -> dict[str, Any] | None:
        info = await node.auth.get_repo(name)
        if info is None:  # registered through another replica a moment ago?
            await node.auth.db.refresh()
            info = await node.auth.get_repo(name)
        return info

    @app.while_serving
    async def _federation() -> AsyncIterator[None]:
        fed = Federation(
            node.store,
            node.config.url,
            FedSettings.from_env(),
            repo_info=repo_info,
            local_repo=node.repo,
            node_key=os.environ.get("MICELIO_NODE_KEY"),
        )
        await fed.start()
        app.extensions["federation"] = fed
        try:
            yield
        finally:
            app.extensions.pop("federation", None)
            await fed.stop()

    @app.route("/api/v1/mirrors/<path:rest>", methods=["POST", "PUT", "DELETE", "PATCH"])
    async def _mirror_writes(rest: str) -> Any:
        return cbor_response(
            error_body(403, "mirrors are read-only: offer sessions to the origin (hif offer URL)"),
            403,
        )


def _host(ctx: Ctx) -> str:
    return ctx.r.prefix.split("/")[1]


# -- mirrors (read-only) -----------------------------------------------------------------------


@route("GET", "/api/v1/mirrors", "public")
async def list_mirrors(ctx: Ctx) -> dict[str, Any]:
    rows = await status.mirrors(ctx.node.store)
    return {
        "mirrors": [
            {
                k: r[k]
                for k in (
                    "host",
                    "name",
                    "url",
                    "origin",
                    "state",
                    "reason",
                    "head",
                    "last_sync",
                    "key_id",
                    "error",
                    "conflicts",
                )
            }
            for r in rows
        ]
    }


@route("GET", MIRROR, "public")
async def mirror_meta(ctx: Ctx) -> dict[str, Any]:
    meta = await ctx.r.meta()
    sync = await read_sync(ctx.r)
    host = _host(ctx)
    f = await fed_of(ctx.node).get_following(host, ctx.r.name) or {}
    return {
        "name": ctx.r.name,
        "mirror": True,
        "host": host,
        "origin": meta.get("origin"),
        "url": meta.get("url"),
        "private": False,
        "description": "",
        "created": meta.get("created"),
        "head": await ctx.r.mainline.head(),
        "state": f.get("state"),
        "reason": f.get("reason") or f.get("error"),  # why the Follow failed (or its last error)
        "last_sync": sync.get("last_sync"),
        "key_id": sync.get("key_id"),
        "error": sync.get("error"),
    }


def _alias(fn: Any, name: str) -> Any:
    async def handler(ctx: Ctx, **kw: Any) -> Any:
        return await fn(ctx, **kw)

    handler.__name__ = handler.__qualname__ = name
    return handler


for _method, _suffix, _fn in (
    ("GET", "/head", repos.head),
    ("GET", "/log", repos.log),
    ("GET", "/tree", repos.tree),
    ("GET", "/blame", repos.blame_route),
    ("GET", "/commits/<sha>", repos.commit),
    ("POST", "/objects/have", objects.objects_have),
    ("POST", "/objects/get", objects.objects_get),
    ("POST", "/objects/stream", objects.objects_stream),
    ("GET", "/sessions/<sid>", sessions.get_session),
):
    route(_method, MIRROR + _suffix, "public")(_alias(_fn, f"mirror_{_fn.__name__}"))


@route("GET", MIRROR + "/verify", "public")
async def mirror_verify(ctx: Ctx) -> dict[str, Any]:
    start = query_int("start", 1, lo=1, args=ctx.args) or 1
    limit = query_int("limit", 100, lo=1, hi=500, args=ctx.args) or 100
    rows = await status.mirror_positions(ctx.node.store, _host(ctx), ctx.r.name, start, limit)
    return {"positions": rows}


# -- offers ------------------------------------------------------------------------------------


def _maintainer(ctx: Ctx) -> None:
    if role_rank(ctx.role) < role_rank("maintainer"):
        raise PermissionDenied("landing or rejecting an offered session needs the maintainer role")


@route("GET", REPO + "/offers", "read", agent=True)
async def list_offers(ctx: Ctx) -> dict[str, Any]:
    """Offers with the bytes each keeps (``size``) and their ``total_size``, for whoever reviews
    them to see what strangers' offers cost."""
    rows = await offers.list_offers(ctx.r, fed_of(ctx.node).settings)
    return {"offers": rows, "total_size": offers.total_size(rows)}


@route("GET", REPO + "/offers/<oid>", "read", agent=True)
async def get_offer(ctx: Ctx, oid: str) -> dict[str, Any]:
    return await offers.get_offer(ctx.r, offer_id(oid))


@route("POST", REPO + "/offers/<oid>/land", "write")
async def land_offer(ctx: Ctx, oid: str) -> dict[str, Any]:
    _maintainer(ctx)
    return await offers.land_offer(fed_of(ctx.node), ctx.r, offer_id(oid), ctx.user)


@route("POST", REPO + "/offers/<oid>/reject", "write")
async def reject_offer(ctx: Ctx, oid: str) -> dict[str, Any]:
    _maintainer(ctx)
    reason = check_text(field(ctx.body, "reason", str, default="rejected"), "reason")
    return await offers.reject_offer(fed_of(ctx.node), ctx.r, offer_id(oid), ctx.user, reason)


def offer_id(oid: str) -> str:
    if not (len(oid) == 20 and all(c in "0123456789abcdef" for c in oid)):
        raise NotFound(f"no offer {oid}")
    return oid


@route("POST", SESSION + "/offer", "write", agent=True, status=201)
async def offer_session(ctx: Ctx, sid: str) -> dict[str, Any]:
    target = field(ctx.body, "target", str)
    if not is_session_id(sid):
        raise NotFound(f"no session {sid}")
    return await offers.make_offer(fed_of(ctx.node), ctx.r, sid, target, ctx.user)


@route("GET", SESSION + "/offers", "read", agent=True)
async def session_offers(ctx: Ctx, sid: str) -> dict[str, Any]:
    if not is_session_id(sid):
        raise NotFound(f"no session {sid}")
    return {"offers": await offers.sent_offers(ctx.r, sid)}


# -- federation administration ---------------------------------------------------------------


def _admin(ctx: Ctx) -> None:
    if not ctx.principal.admin:
        raise PermissionDenied("federation settings are for site admins")


@route("GET", "/api/v1/federation", "user")
async def federation_status(ctx: Ctx) -> dict[str, Any]:
    _admin(ctx)
    fed = fed_of(ctx.node)
    return {
        "node": fed.url,
        "actor": fed.key.actor,
        "key_id": fed.key.key_id,
        **await status.summary(ctx.node.store),
    }


@route("POST", "/api/v1/federation/follow", "user", status=201)
async def follow(ctx: Ctx) -> dict[str, Any]:
    _admin(ctx)
    url = field(ctx.body, "url", str)
    fed = fed_of(ctx.node)
    entry = await control.follow(ctx.node.store, url, fed.settings)
    fed.wake_outbox()
    return entry


@route("POST", "/api/v1/federation/unfollow", "user")
async def unfollow(ctx: Ctx) -> dict[str, Any]:
    _admin(ctx)
    url = field(ctx.body, "url", str)
    if not url.strip():
        raise InvalidInput("url must not be empty")
    entry = await control.unfollow(ctx.node.store, url)
    fed_of(ctx.node).wake_outbox()
    return entry

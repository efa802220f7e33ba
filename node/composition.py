"""The composition root: ``create_app`` assembles the API, the web UI and federation into one Quart
app over one store (in the datasette manner). The only module that sees every layer, so nothing
imports it but the server, the ``micelio`` CLI and tests.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from quart import Quart, Response, g, request

from hif.errors import HifError
from hif.store import ObjectStore
from node import api, heavy, mcp, search
from node.api import asgi, checks, federation
from node.api.asgi import access_log, log_request
from node.config import Config
from node.context import Node
from node.wire import cap_bodies, error_log, failure_answer, to_response
from ui import views

VERSION = "0.1.0"


def create_app(config: Config | None = None, *, store: ObjectStore | None = None) -> Quart:
    """Build a node app; ``store`` lets tests and embedders hand in an already open store."""
    config = config or Config.from_env()
    app = Quart("micelio", static_folder=None)  # the UI serves its own assets
    cap_bodies(app)  # every body read under its route's limit, while it arrives (node.wire)
    node = Node(config, store, land_policy=checks.land_policy(lambda: node.auth))
    app.extensions["micelio"] = node
    node.extensions = app.extensions  # one dict: handlers find search and federation without Quart
    app.register_blueprint(api.bp)
    app.register_blueprint(views.bp)  # the web UI: pages, cookie sessions, HTML error pages

    @app.before_serving
    async def _start() -> None:
        await node.start()

    @app.after_serving
    async def _stop() -> None:
        await node.stop()

    @app.before_request
    async def _clock() -> None:
        g.started = time.perf_counter()
        g.user = None

    @app.after_request
    async def _log(response: Response) -> Response:
        log_request(node, request.method, request.path, response.status_code, getattr(g, "started", None),
                    getattr(g, "user", None), node.client_address())
        return response

    @app.errorhandler(Exception)
    async def _error(e: Exception) -> Response:  # the API's one error path (node.wire.failure_answer)
        return to_response(failure_answer(e, request.method, request.path))

    @app.get("/healthz")
    async def healthz() -> tuple[dict[str, Any], int]:
        kind = "s3" if config.store.startswith("s3://") else "embedded"
        try:
            await node.store.head("_node/health")
        except HifError as e:
            return {"ok": False, "version": VERSION, "store": kind, "error": str(e)}, 503
        return {"ok": True, "version": VERSION, "store": kind}, 200

    federation.install(app, node)  # after the store's start-up, before its close
    search.install(app, node, lambda: app.extensions.get("federation"))  # after federation: mirrors
    mcp.install(app, node)  # /api/v1/mcp beside Quart, at the ASGI level
    heavy.install(app)  # work deferred until a response is sent (background highlighting)
    asgi.install(app, node)  # the API's routes straight from the server, in front of the rest
    return app


def configure_logging() -> None:
    """One JSON line per request on stdout; errors with tracebacks on stderr (for operators only)."""
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(out)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
    err = logging.StreamHandler(sys.stderr)
    error_log.addHandler(err)
    error_log.setLevel(logging.INFO)

"""The node's app factory: one Quart app over one store; no state that another replica lacks.

Everything a replica holds in memory (the auth database copy, a tree cache per repository, the login
rate limiter) is a cache or a per-replica guard; the store is the only source of truth.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import OrderedDict
from typing import Any, cast

from quart import Quart, Response, g, request
from werkzeug.exceptions import HTTPException

from hif.errors import HifError
from hif.repo import Repo
from hif.store import EmbeddedStore, ObjectStore, open_store
from hif.store.threaded import ThreadedStore
from node.accounts import Accounts
from node.authdb import AuthDB
from node.config import Config
from node.ratelimit import LoginLimiter, client_address, parse_networks
from node.wire import cap_bodies, cbor_response, error_body, error_response

VERSION = "0.1.0"
# Repository handles kept per replica (each caches trees and records; bounded so that memory does not
# grow with the number of repositories served).
REPO_HANDLES = 32
access_log = logging.getLogger("micelio.access")
error_log = logging.getLogger("micelio.error")


class Node:
    """What the routes share: configuration, the store and caches derived from it."""

    def __init__(self, config: Config, store: ObjectStore | None = None) -> None:
        self.config = config
        self._store = store
        self.accounts: Accounts | None = None
        self.limiter = LoginLimiter()
        self.trusted_proxies = parse_networks(config.trusted_proxies)  # a typo stops the start
        self._repos: OrderedDict[str, Repo] = OrderedDict()

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
            repo.land_policy = getattr(self, "land_policy", None)  # node.checks_api
            if len(self._repos) > REPO_HANDLES:
                self._repos.popitem(last=False)
        else:
            self._repos.move_to_end(name)
        return repo


def node_of(app: Quart) -> Node:
    return cast(Node, app.extensions["micelio"])


def create_app(config: Config | None = None, *, store: ObjectStore | None = None) -> Quart:
    """Build a node app; ``store`` lets tests and embedders hand in an already open store."""
    from node.api import bp as api_bp
    from ui.views import bp as ui_bp  # the web UI: pages, cookie sessions, HTML error pages

    config = config or Config.from_env()
    app = Quart("micelio", static_folder=None)  # the UI serves its own assets
    cap_bodies(app)  # every body read under its route's limit, while it arrives (node.wire)
    node = Node(config, store)
    app.extensions["micelio"] = node
    app.register_blueprint(api_bp)
    app.register_blueprint(ui_bp)

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
        if config.access_log:
            started = getattr(g, "started", None)
            # the query string and headers are left out on purpose: tokens must never reach a log
            access_log.info(json.dumps({
                "time": round(time.time(), 3),
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
                "user": getattr(g, "user", None),
                "remote": node.client_address(),
            }))
        return response

    @app.errorhandler(HifError)
    async def _hif_error(e: HifError) -> Response:
        return error_response(e)

    @app.errorhandler(HTTPException)
    async def _http_error(e: HTTPException) -> Response:
        status = e.code or 500
        return cbor_response(error_body(status, e.description or e.name), status)

    @app.errorhandler(Exception)
    async def _unexpected(e: Exception) -> Response:
        error_log.exception("unhandled error on %s %s", request.method, request.path)
        return cbor_response(error_body(500, "internal error (see the node's log)"), 500)

    @app.get("/healthz")
    async def healthz() -> tuple[dict[str, Any], int]:
        kind = "s3" if config.store.startswith("s3://") else "embedded"
        try:
            await node.store.head("_node/health")
        except HifError as e:
            return {"ok": False, "version": VERSION, "store": kind, "error": str(e)}, 503
        return {"ok": True, "version": VERSION, "store": kind}, 200

    from node.federation_api import install as install_federation  # after the store's start-up

    install_federation(app, node)
    __import__("node.checks_api").checks_api.install(app, node)  # require_checks on landing
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

"""Shared fixtures: a moto S3 server for the session and a factory of fresh stores of each kind."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from forge import Forge, start_forge
from s3server import start_s3_server, stop_s3_server

from hif.store import EmbeddedStore, ObjectStore
from hif.store.threaded import ThreadedStore

# The suite runs hif as a subprocess thousands of times, mostly as ``python -m hif`` from a fresh
# directory (which is on the search path, so part of the warm server's key): with the server on,
# each test directory would start a server of its own. It stays off unless a test turns it on
# (tests/test_warm_server.py, which stops every server it starts); the plain path is what the
# other tests are about.
os.environ["HIF_NO_SERVER"] = "1"


@pytest.fixture(autouse=True)
def _hif_config(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep hif's config (credentials, the signing key ``hif init`` creates) out of the real home."""
    monkeypatch.setenv("HIF_CONFIG_DIR", str(tmp_path_factory.getbasetemp() / "hif-config"))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server shared by the whole test session."""
    proc, endpoint = start_s3_server()
    try:
        yield endpoint
    finally:
        stop_s3_server(proc)


@pytest.fixture(params=["embedded", "threaded", "s3"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], ObjectStore]:
    """A factory of fresh, empty stores; the test's coroutine uses each store and closes it.

    Only constructs (no I/O), so it can be called outside the event loop; the S3 server is started
    only when an S3 case actually runs. ``threaded`` is the embedded store as a node serves it, its
    calls run by worker threads.
    """
    if request.param in ("embedded", "threaded"):
        threaded = request.param == "threaded"

        def make_embedded() -> ObjectStore:
            store = EmbeddedStore(tmp_path / f"store-{uuid.uuid4().hex}", create=True)
            return ThreadedStore(store) if threaded else store

        return make_embedded

    endpoint: str = request.getfixturevalue("s3_server")
    from hif.store.s3 import S3Store  # imported lazily: aiobotocore is slow to import

    def make_s3() -> ObjectStore:
        return S3Store.from_url(
            f"s3://hif-test-{uuid.uuid4().hex}/pfx",
            create=True,
            endpoint_url=endpoint,
            access_key="test",
            secret_key="test",
            region="us-east-1",
        )

    return make_s3


@pytest.fixture
def forge(tmp_path: Path) -> Iterator[Forge]:
    """A running forge node (``micelio serve`` on loopback) over a fresh embedded store, with a site
    admin ``admin`` whose admin-scope token is ``forge.admin_token``."""
    node = start_forge(tmp_path / "forge")
    try:
        yield node
    finally:
        node.stop()

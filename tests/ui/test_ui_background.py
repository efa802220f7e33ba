"""Background work a page asks for (highlighting a big file for its next view) starts only once the
page has been sent: the page's own compression and writing never share the CPU (or the GIL) with it.

The node's real app runs in-process and is driven through its ASGI interface, so the moment the
last byte of the response is handed to the server is seen exactly (a client over a socket could not
tell when the server started the work)."""

from __future__ import annotations

import asyncio
import gzip
import time
from pathlib import Path
from typing import Any

import pytest

from hif.landing import land
from hif.repo import Repo
from hif.session import make_event
from hif.store.embedded import EmbeddedStore
from node import heavy
from node.accounts import Accounts
from node.authdb import AuthDB
from node.composition import create_app
from node.config import Config
from ui.render import HIGHLIGHT_MAX, HIGHLIGHT_PAGE

# more than a page may newly highlight, less than the most ever highlighted: shown plain, warmed later
BIG_PY = "".join(f"def function_{n}(value: int) -> int:\n    return value * {n}\n\n" for n in range(2500)).encode()


async def seed(store: EmbeddedStore, setup: Path) -> None:
    accounts = Accounts(AuthDB(store, setup))
    await accounts.create_user("ana", "a password long enough")
    await accounts.register_repo("ana/big", private=False, owner_user=None)
    repo = Repo(store, "ana/big")
    await repo.create()
    s = await repo.sessions.start("a big file", "ana", "human", 0)
    for path in ("src/big.py", "src/other.py"):
        blob = await repo.objects.put_blob(BIG_PY + path.encode())
        await repo.sessions.append(s.id, make_event("write", "ana", "human", 1.0, path=path, kind="f", blob=blob))
    await land(repo, await repo.sessions.load(s.id))


async def asgi_get(app: Any, path: str) -> tuple[int, bytes, list[tuple[int, bool]]]:
    """GET ``path`` through the app's ASGI interface: status, body, and for each body event the
    number of heavy jobs at the moment it was sent and whether more body was to follow."""
    status = 0
    body = b""
    seen: list[tuple[int, bool]] = []
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(event: dict[str, Any]) -> None:
        nonlocal status, body
        if event["type"] == "http.response.start":
            status = event["status"]
        elif event["type"] == "http.response.body":
            body += event.get("body", b"")
            seen.append((heavy.pending(), event.get("more_body", False)))

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"localhost"), (b"accept-encoding", b"gzip")],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80), "extensions": {}}
    await app(scope, receive, send)
    return status, body, seen


@pytest.mark.parametrize("kind, path", [("blob", "src/big.py"), ("blame", "src/other.py")])
def test_a_big_files_highlighting_starts_after_its_page_is_sent(tmp_path: Path, kind: str, path: str) -> None:
    assert HIGHLIGHT_PAGE < len(BIG_PY) < HIGHLIGHT_MAX

    async def main() -> None:
        store = EmbeddedStore(tmp_path / "store", create=True, fsync=False)
        await seed(store, tmp_path / "setup")
        cache = tmp_path / "cache"
        app = create_app(Config(store=str(tmp_path / "store"), cache_dir=cache, access_log=False, search_poll=0),
                         store=store)
        async with app.test_app():
            while heavy.pending():  # nothing of an earlier test still running
                await asyncio.sleep(0.05)
            status, _, seen = await asgi_get(app, f"/ana/big/{kind}/{path}")
            assert status == 200
            # while the page was being sent, no heavy job ran: the warming had not started
            assert seen and all(jobs == 0 for jobs, _ in seen), seen
            assert seen[-1][1] is False  # (the last body event was seen)
            # and it does start once the page is out: the file is highlighted for the next view
            deadline = time.monotonic() + 60
            while not list((cache / "ui" / "highlight").glob("*/*")):
                assert time.monotonic() < deadline, "the big file was never highlighted"
                await asyncio.sleep(0.05)
            status, again, _ = await asgi_get(app, f"/ana/big/{kind}/{path}")
            assert status == 200
            # (a long blame continues on a next page: an early line is on this one)
            assert b'<span class="k">def</span> <span class="nf">function_7</span>' in gzip.decompress(again)

    asyncio.run(main())

"""Remote pages: a second node follows the seeded node's public repository and serves it as a
read-only mirror, showing its origin, when it last synced, and each landing's signature status."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from forge import Forge, start_forge
from ui_seed import FED_ENV, PUBLIC, Seeded

from federation.mirror import mirror_repo
from hif.objects import decode, encode
from hif.store.embedded import EmbeddedStore


def wait_for(check: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def follower(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forge]:
    """A node that follows ``acme/widgets`` on the seeded node, with its three landings mirrored."""
    node = start_forge(tmp_path_factory.mktemp("ui-follower"), env=FED_ENV)
    try:
        r = node.api("POST", "/api/v1/federation/follow", node.admin_token, {"url": f"{seeded.forge.url}/{PUBLIC}"})
        assert r.status_code == 201, r.data
        path = f"/api/v1/mirrors/{origin_host(seeded)}/{PUBLIC}/head"
        wait_for(lambda: (node.api("GET", path).data or {}).get("position") == 3, "the mirror to backfill")
        yield node
    finally:
        node.stop()


def origin_host(seeded: Seeded) -> str:
    return urlsplit(seeded.forge.url).netloc


def test_mirror_pages_show_origin_sync_and_signatures(seeded: Seeded, follower: Forge) -> None:
    host = origin_host(seeded)
    base = f"{follower.url}/mirrors/{host}/{PUBLIC}"
    home = httpx.get(follower.url + "/", timeout=30).text
    assert f"mirror of {host}" in home and f'href="/mirrors/{host}/{PUBLIC}"' in home

    repo_page = httpx.get(base, timeout=30)
    assert repo_page.status_code == 200
    header = re.search(r'<p class="desc mirror-info">(.*?)</p>', repo_page.text, re.S)
    assert header is not None, "no mirror line in the header"
    assert f'href="{seeded.forge.url}/{PUBLIC}"' in header.group(1)  # the origin, as a link
    assert f"hif clone {seeded.forge.url}/{PUBLIC}</code>" in repo_page.text  # sessions land at the origin
    assert "last synced" in header.group(1) and "<time" in header.group(1)
    assert "Settings" not in repo_page.text  # read-only

    listing = httpx.get(base + "/sessions?state=landed", timeout=30).text
    assert listing.count('class="session-row"') == 3
    assert listing.count("signature verified") == 3, listing
    key_id = f"{seeded.forge.url}/ap/node#main-key"
    assert f'title="signed by {key_id}"' in listing

    sid = seeded.sessions["Add a spinner widget"]
    page = httpx.get(f"{base}/sessions/{sid}", timeout=30).text
    assert "mirror-info" in page and f"signed by {key_id}" in page and "badge verified" in page


def test_a_tampered_envelope_shows_as_not_verified(seeded: Seeded, follower: Forge) -> None:
    """Flip one byte of the stored signature of position 1 in the follower's store: that landing,
    and only it, loses its badge; the pages still render."""
    host = origin_host(seeded)

    async def tamper() -> tuple[str, bytes]:
        store = EmbeddedStore(Path(follower.store), fsync=False)
        try:
            # the first page of envelopes holds position 1's (the follower keeps them in pages)
            key = (await store.list_page(f"{mirror_repo(store, host, PUBLIC).prefix}envelopes/", limit=1))[0]
            original = await store.get(key)
            page = decode(original)
            assert page["first"] == 1
            wire = page["envelopes"][0]
            page["envelopes"][0] = wire[:-1] + bytes([wire[-1] ^ 1])
            await store.put(key, encode(page))
            return key, original
        finally:
            await store.close()

    async def restore(key: str, original: bytes) -> None:
        store = EmbeddedStore(Path(follower.store), fsync=False)
        try:
            await store.put(key, original)
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:  # Playwright may run an event loop in this thread
        key, original = pool.submit(asyncio.run, tamper()).result()
    try:
        base = f"{follower.url}/mirrors/{host}/{PUBLIC}"
        listing = httpx.get(base + "/sessions?state=landed", timeout=30)
        assert listing.status_code == 200
        assert listing.text.count("signature verified") == 2
        assert listing.text.count("signature not verified") == 1
        first = seeded.sessions["Create the widget library"]
        page = httpx.get(f"{base}/sessions/{first}", timeout=30)
        assert page.status_code == 200 and "badge failed" in page.text and "Traceback" not in page.text
    finally:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, restore(key, original)).result()

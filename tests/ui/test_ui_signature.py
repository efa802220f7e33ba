"""The node-signature badge of a local landing: the envelope followers would receive, signed by the
node's key and checked against the record the page shows (the seeded node's own store)."""

from __future__ import annotations

import asyncio
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ui_seed import PUBLIC, Seeded

from federation.identity import load_node_key
from hif.repo import Repo
from hif.store.embedded import EmbeddedStore
from ui.signature import verify_record


def test_local_landing_verifies_and_a_different_record_does_not(seeded: Seeded) -> None:
    async def main() -> None:
        store = EmbeddedStore(Path(seeded.forge.store), fsync=False)
        try:
            repo = Repo(store, PUBLIC)
            key = await load_node_key(store, seeded.forge.url)  # the key the node published
            rec = await repo.mainline.record(2)
            ok = await verify_record(rec, repo=repo, key=key)
            assert ok.state == "verified" and ok.detail == f"signed by {seeded.forge.url}/ap/node#main-key"
            # a record that is not the stored one (as if the page had read something else) fails
            other = dataclasses.replace(rec, time=rec.time + 1)
            bad = await verify_record(other, repo=repo, key=key)
            assert bad.state == "failed" and "differs" in bad.detail
            # a record whose position holds another landing fails too
            moved = dataclasses.replace(rec, position=1)
            assert (await verify_record(moved, repo=repo, key=key)).state == "failed"
            # without federation nothing signs: the badge says so and claims nothing
            assert (await verify_record(rec)).state == "unsigned"
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API may run an event loop in this thread
        pool.submit(asyncio.run, main()).result()

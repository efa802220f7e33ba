"""Rollups make a conflict check cost O(log n) reads when nothing overlaps; missing ones never hide
an overlap."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from hif.landing import land
from hif.mainline import LandedSession, LandingRecord
from hif.objects import EMPTY_TREE, Entry, digest
from hif.repo import Repo
from hif.session import make_event
from hif.store.embedded import EmbeddedStore

N = 10_000
FAKE = Entry("f", digest(b"x"))


async def fill(repo: Repo, n: int) -> None:
    for pos in range(1, n + 1):
        landed = LandedSession(f"s{pos:015d}", digest(b"snap"), f"goal {pos}", "bot", "agent", pos - 1,
                               {f"f/{pos}/a.txt": FAKE})
        await repo.mainline.append(LandingRecord(pos, EMPTY_TREE, EMPTY_TREE, float(pos), [landed]))
        await repo.rollups.extend(pos)
    await repo.mainline.advance_hint(n)


def test_no_overlap_costs_log_n_reads(tmp_path: Path) -> None:
    async def main() -> None:
        repo = Repo(EmbeddedStore(tmp_path / "s", create=True, fsync=False), "t/r")
        await fill(repo, N)
        fresh = Repo(repo.store, "t/r")  # no caches
        items = {"s:zzzz", "p:elsewhere/x.txt", "d:elsewhere/x.txt", "p:elsewhere"}
        found = await fresh.rollups.candidates(0, N, items)
        assert found == []
        reads = fresh.rollups.reads + fresh.mainline.reads
        assert reads <= 4 * math.log2(N), reads

        # an overlap is found, still cheaply, and exactly
        from hif.rollups import query_items

        found = await fresh.rollups.candidates(0, N, query_items("zz", ["f/1234/a.txt"]))
        assert 1234 in found
        assert len(found) < 40

        # a file where the session needs a directory (f/77/a.txt/inner) is found too
        found = await fresh.rollups.candidates(0, N, query_items("zz", ["f/77/a.txt/inner"]))
        assert 77 in found

        # missing rollups are only slower, never wrong
        for key in [k async for k in repo.store.iter_keys("repos/t/r/rollups/")][::3]:
            await repo.store.delete(key)
        again = Repo(repo.store, "t/r")
        found = await again.rollups.candidates(0, N, query_items("zz", ["f/4321/a.txt"]))
        assert 4321 in found

    asyncio.run(main())


def test_land_far_behind_reads_little(tmp_path: Path) -> None:
    """A real landing whose base is 2,000 positions behind reads O(log n) records and rollups."""

    async def main() -> None:
        store = EmbeddedStore(tmp_path / "s", create=True, fsync=False)
        repo = Repo(store, "t/r")
        n = 2_000
        await fill(repo, n)
        s = await repo.sessions.start("far behind", "bot", "agent", base=0)
        blob = await repo.objects.put_blob(b"hello\n")
        await repo.sessions.append(s.id, make_event("write", "bot", "agent", 0.0, path="new/file.txt",
                                                    kind="f", blob=blob))
        fresh = Repo(store, "t/r")
        session = await fresh.sessions.load(s.id)
        result = await land(fresh, session)
        assert result.position == n + 1
        reads = fresh.rollups.reads + fresh.mainline.reads
        assert reads <= 4 * math.log2(n) + 8, reads  # + head discovery and the head record

    asyncio.run(main())

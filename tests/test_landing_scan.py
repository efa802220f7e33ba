"""What landing reads of the records after a session's base: only what touches the session's paths
(its own, the directories above them, the paths below them), and one store read for a log position
however many landers of one process ask for it at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hif.errors import ConflictError
from hif.landing import land
from hif.mainline import LandedSession, LandingRecord
from hif.objects import EMPTY_TREE, FILE, Entry, digest
from hif.repo import Repo
from hif.session import Session, make_event
from hif.store.embedded import EmbeddedStore
from hif.testing.faults import Faults, FaultyStore


def new_repo(tmp_path: Path, latency: float | None = None) -> tuple[Repo, FaultyStore]:
    store = FaultyStore(EmbeddedStore(tmp_path / "s", create=True, fsync=False),
                        Faults(latency=(lambda _rng: latency) if latency else None))
    return Repo(store, "t/r"), store


async def opened(repo: Repo, files: dict[str, bytes]) -> Session:
    """A session started at the current head that writes ``files`` (not landed)."""
    head = await repo.mainline.head()
    writes = [make_event("write", "ana", "human", 1.0, path=p, kind=FILE, blob=await repo.objects.put_blob(c))
              for p, c in files.items()]
    return await repo.sessions.start("work", "ana", "human", head, writes)


def test_a_directory_of_ours_that_became_a_file_is_a_conflict(tmp_path: Path) -> None:
    async def main() -> None:
        repo, _ = new_repo(tmp_path)
        await repo.ensure(description="t")
        await land(repo, await opened(repo, {"d/x.txt": b"x\n"}))
        ours = await opened(repo, {"d/y.txt": b"y\n"})
        theirs = await opened(repo, {"d": b"now a file\n"})  # replaces the directory d/
        await land(repo, theirs)
        with pytest.raises(ConflictError) as e:
            await land(repo, ours)
        assert [(c.path, c.reason) for c in e.value.conflicts] == [("d/y.txt", "d became a file in the mainline")]
        assert [s for _, s in e.value.conflicts[0].sessions] == [theirs.id]

    asyncio.run(main())


def test_a_file_of_ours_that_became_a_directory_names_who_did_it(tmp_path: Path) -> None:
    async def main() -> None:
        repo, _ = new_repo(tmp_path)
        await repo.ensure(description="t")
        await land(repo, await opened(repo, {"f": b"a file\n", "other.txt": b"o\n"}))
        ours = await opened(repo, {"f": b"changed\n"})
        theirs = await opened(repo, {"f/g.txt": b"under f\n"})
        unrelated = await opened(repo, {"elsewhere/h.txt": b"h\n"})
        await land(repo, theirs)
        await land(repo, unrelated)
        with pytest.raises(ConflictError) as e:
            await land(repo, ours)
        (conflict,) = e.value.conflicts
        assert conflict.path == "f" and conflict.reason == "became a directory in the mainline"
        assert [s for _, s in conflict.sessions] == [theirs.id]

    asyncio.run(main())


def test_unrelated_landings_leave_nothing_to_merge(tmp_path: Path) -> None:
    async def main() -> None:
        repo, _ = new_repo(tmp_path)
        await repo.ensure(description="t")
        await land(repo, await opened(repo, {"a/keep.txt": b"k\n"}))
        ours = await opened(repo, {"a/mine.txt": b"m\n"})
        for i in range(5):
            await land(repo, await opened(repo, {f"b/{i}.txt": b"x\n", f"a/sub{i}/deep.txt": b"y\n"}))
        result = await land(repo, ours)
        assert result.position == 7 and result.merged == []

    asyncio.run(main())


def test_landers_of_one_process_share_one_read_of_a_position(tmp_path: Path) -> None:
    async def main() -> None:
        repo, store = new_repo(tmp_path, latency=0.02)
        await repo.ensure(description="t")
        before = store.calls["get"]
        absent = await asyncio.gather(*(repo.mainline.peek(1) for _ in range(16)))
        assert absent == [None] * 16
        assert store.calls["get"] - before == 1

        landed = LandedSession("a" * 16, digest(b"snap"), "goal", "ana", "human", 0,
                               {"x.txt": Entry(FILE, digest(b"x"))})
        other = Repo(store, "t/r")  # another process: it writes, ours reads
        await other.mainline.append(LandingRecord(1, EMPTY_TREE, EMPTY_TREE, 1.0, [landed]))
        before = store.calls["get"]
        # a caller that gives up does not cancel the read the others wait for
        quitter = asyncio.ensure_future(repo.mainline.peek(1))
        waiting = [asyncio.ensure_future(repo.mainline.peek(1)) for _ in range(15)]
        await asyncio.sleep(0)
        quitter.cancel()
        found = await asyncio.gather(*waiting)
        assert store.calls["get"] - before == 1
        assert all(r is found[0] for r in found) and found[0].sessions[0].session == "a" * 16

    asyncio.run(main())

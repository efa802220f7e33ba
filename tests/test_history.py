"""hif.history: sessions' changes and iterations, and walks back through the log that cost a page,
not the log."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hif import history
from hif.blame import blame
from hif.history import Filters, Walk, search_landed
from hif.landing import land
from hif.mainline import LandedSession, LandingRecord
from hif.objects import EMPTY_TREE, Entry, digest
from hif.repo import Repo
from hif.session import Session, make_event
from hif.store.embedded import EmbeddedStore
from hif.tree import apply

FAKE = Entry("f", digest(b"x"))


def new_repo(tmp_path: Path) -> Repo:
    return Repo(EmbeddedStore(tmp_path / "s", create=True, fsync=False), "t/r")


async def work(repo: Repo, goal: str, files: dict[str, bytes | None], *, author: str = "ana",
               role: str = "human", says: tuple[str, ...] = (), checkpoints: bool = False,
               land_it: bool = True) -> Session:
    """A session through the plumbing: conversation, file events (a checkpoint after each file when
    asked), then landed unless ``land_it`` is false."""
    head = await repo.mainline.head()
    s = await repo.sessions.start(goal, author, role, head)
    for text in says:
        await repo.sessions.append(s.id, make_event("say", author, role, 1.0, text=text))
    base = await repo.mainline.tree_at(head)
    changes: dict[str, Entry | None] = {}
    for n, (path, content) in enumerate(files.items(), 1):
        if content is None:
            event = make_event("delete", author, role, 1.0, path=path)
            changes[path] = None
        else:
            blob = await repo.objects.put_blob(content)
            event = make_event("write", author, role, 1.0, path=path, kind="f", blob=blob)
            changes[path] = Entry("f", blob)
        await repo.sessions.append(s.id, event)
        if checkpoints:
            tree = await apply(repo.objects, base, changes)
            await repo.sessions.append(s.id, make_event("checkpoint", author, role, 1.0, note=f"step {n}",
                                                        tree=tree, iteration=n))
    s = await repo.sessions.load(s.id)
    if land_it:
        await land(repo, s)
        s = await repo.sessions.load(s.id)
    return s


async def fill(repo: Repo, n: int) -> None:
    """``n`` cheap landings (one file each under f/<pos>/, every tenth by "bea")."""
    for pos in range(1, n + 1):
        landed = LandedSession(f"s{pos:015d}", digest(b"snap"), f"goal {pos}", "bea" if pos % 10 == 0 else "bot",
                               "agent", pos - 1, {f"f/{pos}/a.txt": FAKE})
        await repo.mainline.append(LandingRecord(pos, EMPTY_TREE, EMPTY_TREE, float(pos), [landed]))
        await repo.rollups.extend(pos)
    await repo.mainline.advance_hint(n)


def test_session_changes_iterations_and_events(tmp_path: Path) -> None:
    async def main() -> None:
        repo = new_repo(tmp_path)
        first = await work(repo, "Start", {"a.py": b"print(1)\n", "README.md": b"# hi\n"},
                           says=("shall we?", "yes"), checkpoints=True)
        assert first.state == "landed" and first.position == 1
        rec = await history.session_record(repo, first)
        assert rec is not None and rec.position == 1
        changes = await history.session_changes(repo, first, rec)
        assert [(c.path, c.action) for c in changes] == [("README.md", "added"), ("a.py", "added")]
        again = await history.landed_session(repo, rec, first.id)
        assert again.goal == "Start" and again.changes == first.changes

        # iterations: 0 is the starting tree, then one per checkpoint
        assert [c["note"] for c in history.iterations(first)] == ["step 1", "step 2"]
        one_two = await history.iteration_changes(repo, first, 1, 2)
        assert [(c.path, c.action) for c in one_two] == [("README.md", "added")]
        zero_two = await history.iteration_changes(repo, first, 0, 2)
        assert {c.path for c in zero_two} == {"a.py", "README.md"}

        second = await work(repo, "Change", {"a.py": b"print(2)\n", "README.md": None})
        changes = await history.session_changes(repo, second, await history.session_record(repo, second))
        assert [(c.path, c.action) for c in changes] == [("README.md", "deleted"), ("a.py", "modified")]
        old, new = (await history.blob_or_none(repo, changes[1].old),
                    await history.blob_or_none(repo, changes[1].new))
        assert (old, new) == (b"print(1)\n", b"print(2)\n")

        # an open session: its changes against its base, its events after a cursor
        open_s = await work(repo, "Open", {"b.py": b"x = 1\n"}, says=("hello",), land_it=False)
        changes = await history.session_changes(repo, open_s)
        assert [(c.path, c.action) for c in changes] == [("b.py", "added")]
        events = await history.events_after(repo, open_s.id, 0)
        assert [e["type"] for e in events] == ["say", "write"]
        assert await history.events_after(repo, open_s.id, events[-1]["seq"]) == []
        assert [e["seq"] for e in await history.events_after(repo, open_s.id, -1)] == [0, 1, 2]

        # file history: the sessions that touched a path, newest first
        page = await history.file_history(repo, "a.py", await repo.mainline.head())
        assert [s.goal for _, s in page.rows] == ["Change", "Start"] and page.next is None
        page = await history.file_history(repo, "a.py", 2, limit=1)
        assert [s.goal for _, s in page.rows] == ["Change"] and page.next == 1

        # full text over the conversation of landed sessions
        page = await search_landed(repo, 2, Filters(text="shall"))
        assert [s.goal for _, s in page.rows] == ["Start"]
        # a budget smaller than one record and its snapshot still finishes that record
        page = await search_landed(repo, 2, Filters(text="shall"), budget=1)
        assert page.rows == [] and page.next == 1 and page.exhausted
        page = await search_landed(repo, page.next, Filters(text="shall"), budget=1)
        assert [s.goal for _, s in page.rows] == ["Start"]
        assert history.matches_text("Hello World", "world hello") and not history.matches_text("a", "b")

    asyncio.run(main())


def test_walks_cost_their_budget_not_the_log(tmp_path: Path) -> None:
    async def main() -> None:
        repo = new_repo(tmp_path)
        await fill(repo, 3000)
        fresh = Repo(repo.store, "t/r")

        # an unfiltered page reads the page
        page = await search_landed(fresh, 3000, Filters(), limit=25)
        assert [r.position for r, _ in page.rows] == list(range(3000, 2975, -1)) and page.next == 2975
        assert fresh.mainline.reads == 25

        # a filter nobody passes stops at the budget and says where to go on
        fresh = Repo(repo.store, "t/r")
        page = await search_landed(fresh, 3000, Filters(author="nobody"), budget=500)
        assert page.rows == [] and page.exhausted and page.next == 2500
        assert fresh.mainline.reads == 500
        page = await search_landed(fresh, page.next, Filters(author="nobody"), budget=500)
        assert page.next == 2000

        # a sparse author: pages continue exactly where the last one stopped
        fresh = Repo(repo.store, "t/r")
        page = await search_landed(fresh, 3000, Filters(author="BEA"), limit=3)
        assert [r.position for r, _ in page.rows] == [3000, 2990, 2980] and page.next == 2979
        page = await search_landed(fresh, page.next, Filters(author="bea"), limit=2)
        assert [r.position for r, _ in page.rows] == [2970, 2960]

        # a path touched once, long ago: the rollups skip the rest
        fresh = Repo(repo.store, "t/r")
        page = await search_landed(fresh, 3000, Filters(path="f/17"))
        assert [r.position for r, _ in page.rows] == [17] and page.next is None
        assert fresh.mainline.reads + fresh.rollups.reads < 150, (fresh.mainline.reads, fresh.rollups.reads)

        # a plain walk with a budget
        walk = Walk(fresh, 10, budget=4)
        assert [r.position async for r in walk] == [10, 9, 8, 7] and walk.next == 6 and walk.exhausted
        # even a budget too small for one step makes progress: a cursor never repeats
        walk = Walk(fresh, 10, budget=1, items={"p:nothing"})
        assert [r async for r in walk] == [] and walk.next < 10
        page = await search_landed(fresh, 10, Filters(author="nobody"), budget=1)
        assert page.rows == [] and page.next == 9

    asyncio.run(main())


def test_blame_skips_records_that_do_not_touch_the_file(tmp_path: Path) -> None:
    async def main() -> None:
        repo = new_repo(tmp_path)
        await work(repo, "Write it", {"doc.txt": b"one\ntwo\n"})
        for n in range(300):
            await work(repo, f"other {n}", {f"x/{n}.txt": b"x\n"})
        await work(repo, "Edit it", {"doc.txt": b"one\nTWO\n"})
        head = await repo.mainline.head()
        fresh = Repo(repo.store, "t/r")
        lines = await blame(fresh, "doc.txt", head)
        assert [(ln.goal, ln.text) for ln in lines] == [("Write it", "one"), ("Edit it", "TWO")]
        assert fresh.mainline.reads < 60, fresh.mainline.reads

    asyncio.run(main())


class DictCache:
    """A blame cache in memory (the node keeps its entries in files: ``ui.heavy.DiskCache``)."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}
        self.hits = 0

    def get(self, key: str) -> bytes | None:
        got = self.entries.get(key)
        self.hits += got is not None
        return got

    def put(self, key: str, value: bytes) -> None:
        self.entries[key] = value


def test_blame_from_its_cache_is_the_blame_it_would_make(tmp_path: Path) -> None:
    """Cached at one position, a blame at a later one starts from it (one diff per new change), and
    gives exactly what a blame without a cache gives; a damaged or foreign entry is not trusted."""
    async def main() -> None:
        repo = new_repo(tmp_path)
        await work(repo, "Write it", {"doc.txt": b"".join(b"line %d\n" % i for i in range(50))})
        for n in range(5):
            await work(repo, f"Edit {n}", {"doc.txt": b"".join(b"line %d%s\n" % (i, b" edited" * (i % 5 == n))
                                                          for i in range(50 + n))})
        cache = DictCache()
        first = await blame(repo, "doc.txt", 3, cache=cache)
        assert first == await blame(repo, "doc.txt", 3) and len(cache.entries) == 1
        await work(repo, "Edit again", {"doc.txt": b"top\n" + b"".join(b"line %d\n" % i for i in range(40))})
        await work(repo, "Unrelated", {"other.txt": b"x\n"})
        head = await repo.mainline.head()
        for at in (head, 6, 5, 4):
            fresh = Repo(repo.store, "t/r")
            cold = await blame(fresh, "doc.txt", at)
            reads = fresh.mainline.reads
            again = Repo(repo.store, "t/r")
            assert await blame(again, "doc.txt", at, cache=cache) == cold, at
            assert await blame(again, "doc.txt", at, cache=cache) == cold, at  # now from its own entry
            if at == head:  # it stopped at the cached blame of position 3: fewer records read
                assert again.mainline.reads < reads, (again.mainline.reads, reads)
        assert cache.hits >= 4
        goals = [ln.goal for ln in await blame(repo, "doc.txt", head, cache=cache)]
        assert goals[0] == "Edit again" and len(set(goals)) > 2
        for key in cache.entries:  # damaged entries: ignored, the blame is made again
            cache.entries[key] = b"\xa1\x61x\x01"
        assert await blame(Repo(repo.store, "t/r"), "doc.txt", head, cache=cache) == \
            await blame(Repo(repo.store, "t/r"), "doc.txt", head)

    asyncio.run(main())

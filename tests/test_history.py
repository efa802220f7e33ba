"""hif.history: sessions' changes and iterations, and walks back through the log that cost a page,
not the log."""

from __future__ import annotations

import asyncio
import bisect
import difflib
import random
from collections import Counter
from pathlib import Path
from typing import Any

from hif import history
from hif.blame import SMALL, blame, kept_lines, lines_near
from hif.history import Filters, Walk, search_landed
from hif.landing import land
from hif.mainline import LandedSession, LandingRecord
from hif.merge import split_lines
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
    """A blame cache in memory (the node keeps its entries in files: ``node.heavy.DiskCache``)."""

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


def plain_patience(a: list[Any], b: list[Any]) -> set[tuple[int, int]]:
    """The pairs of equal lines a patience diff keeps, made the plain way (the reference the fast
    ``kept_lines`` must agree with): head, tail, then every unique common line of the longest run
    anchors and every gap between anchors is matched in turn, line by line."""
    pairs: set[tuple[int, int]] = set()
    todo = [(0, len(a), 0, len(b))]
    while todo:
        a0, a1, b0, b1 = todo.pop()
        while a0 < a1 and b0 < b1 and a[a0] == b[b0]:
            pairs.add((a0, b0))
            a0, b0 = a0 + 1, b0 + 1
        while a0 < a1 and b0 < b1 and a[a1 - 1] == b[b1 - 1]:
            a1, b1 = a1 - 1, b1 - 1
            pairs.add((a1, b1))
        if a0 == a1 or b0 == b1:
            continue
        ca, cb = Counter(a[a0:a1]), Counter(b[b0:b1])
        common = [(j, a.index(b[j], a0, a1)) for j in range(b0, b1) if cb[b[j]] == 1 and ca[b[j]] == 1]
        tails: list[int] = []  # the longest run increasing in a (patience sorting, lowest tails)
        ends: list[int] = []
        back = []
        for k, (_, i) in enumerate(common):
            pos = bisect.bisect_left(tails, i)
            tails[pos:pos + 1], ends[pos:pos + 1] = [i], [k]
            back.append(ends[pos - 1] if pos else -1)
        anchors: list[tuple[int, int]] = []
        k = ends[-1] if ends else -1
        while k >= 0:
            anchors.append((common[k][1], common[k][0]))
            k = back[k]
        anchors.reverse()
        if not anchors:
            if a1 - a0 <= SMALL and b1 - b0 <= SMALL:
                sm = difflib.SequenceMatcher(None, a[a0:a1], b[b0:b1], autojunk=False)
                pairs |= {(a0 + m.a + n, b0 + m.b + n) for m in sm.get_matching_blocks() for n in range(m.size)}
            continue
        pa, pb = a0, b0
        for x, y in [*anchors, (a1, b1)]:
            if (x, y) != (a1, b1):
                pairs.add((x, y))
            if x > pa and y > pb:
                todo.append((pa, x, pb, y))
            pa, pb = x + 1, y + 1
    return pairs


def edited(rng: random.Random, lines: list[str], words: list[str]) -> list[str]:
    """``lines`` after a few random edits of every kind a history has: lines changed, inserted and
    deleted, a block moved elsewhere, a block copied (repeated lines), a line made a duplicate."""
    out = list(lines)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(("change", "insert", "delete", "move", "copy", "dup"))
        i = rng.randrange(len(out) + 1)
        n = rng.randint(1, 6)
        if kind == "change" and out:
            i = min(i, len(out) - 1)
            out[i] = rng.choice(words) + f" {rng.random():.6f}"
        elif kind == "insert":
            out[i:i] = [rng.choice(words) for _ in range(n)]
        elif kind == "delete":
            del out[i:i + n]
        elif kind in ("move", "copy") and out:
            block = out[i:i + n]
            if kind == "move":
                del out[i:i + n]
            j = rng.randrange(len(out) + 1)
            out[j:j] = block
        elif kind == "dup" and out:
            out.insert(rng.randrange(len(out) + 1), rng.choice(out))
    return out


def random_pair(rng: random.Random) -> tuple[list[str], list[str]]:
    words = ["", "pass", "}", "return x", "else:"] + [f"w{k}" for k in range(rng.choice((3, 30, 300)))]
    before = [rng.choice(words) if rng.random() < 0.5 else f"line {k}" for k in range(rng.randint(0, 160))]
    after = before
    for _ in range(rng.randint(1, 4)):
        after = edited(rng, after, words)
    return before, after


def test_kept_lines_over_open_lines_are_the_whole_diffs_blocks() -> None:
    """Asked only for some lines (blame's open ones), the diff skips the regions without them, and
    the lines it maps are mapped exactly as the whole diff and the plain patience diff map them —
    over moved, copied, repeated, inserted and deleted lines, asked as single lines, runs, edges,
    everything and nothing."""
    rng = random.Random(17)
    for case in range(400):
        before, after = random_pair(rng)
        whole = kept_lines(before, after)
        pairs = {(x + k, y + k) for x, y, n in whole for k in range(n)}
        assert pairs == plain_patience(before, after), case
        assert all(before[x] == after[y] for x, y in pairs)
        mapped = {y: x for x, y in pairs}
        n = len(after)
        for wanted in ([(0, n)] if n else [], [], [(0, 1)] if n else [], [(n - 1, n)] if n else [],
                       sorted({(i, min(n, i + rng.randint(1, 9))) for i in rng.sample(range(n), min(n, 3))})):
            merged: list[tuple[int, int]] = []
            for s, e in wanted:  # disjoint, as blame asks
                if merged and s <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
                else:
                    merged.append((s, e))
            some = kept_lines(before, after, merged)
            got = {y + k: x + k for x, y, m in some for k in range(m)}
            assert [y for _, y, _ in some] == sorted(y for _, y, _ in some), case
            for s, e in merged:
                for y in range(s, e):
                    assert got.get(y) == mapped.get(y), (case, merged, y)


def blame_lines(text: bytes) -> list[bytes]:
    """A text's lines as blame compares them: split, a last line without its newline given one."""
    lines = split_lines(text)
    return lines[:-1] + [lines[-1] + b"\n"] if lines and not lines[-1].endswith(b"\n") else lines


def test_a_version_split_next_to_another_gives_the_lines_a_split_gives() -> None:
    """``lines_near`` (a version's lines, its shared ends taken from the version it is diffed with)
    gives what splitting the whole text gives, over edits anywhere, line ends of every kind (a
    carriage return alone, CRLF, a last line with no newline, one gaining or losing it), empty
    texts and texts that are a prefix or a suffix of the other; and the lines it shares are the
    other version's own objects."""
    rng = random.Random(23)
    ends = [b"\n", b"\n", b"\n", b"\r\n", b"\r", b""]
    shared = 0
    for case in range(600):
        before, after = random_pair(rng)
        eol = rng.choice(ends[:4]) if rng.random() < 0.8 else None
        texts = []
        for lines in (before, after):
            text = b"".join(line.encode() + (eol if eol is not None else rng.choice(ends)) for line in lines)
            texts.append(text if rng.random() < 0.7 else text.rstrip(b"\n") if rng.random() < 0.5 else text + b"x")
        if rng.random() < 0.1:
            texts[0] = texts[1][:rng.randrange(len(texts[1]) + 1)] if rng.random() < 0.5 else \
                texts[1][rng.randrange(len(texts[1]) + 1):]
        near = blame_lines(texts[1])
        got = lines_near(texts[0], texts[1], near)
        assert got == blame_lines(texts[0]), (case, texts)
        ids = {id(x) for x in near}
        shared += sum(id(x) in ids for x in got)
    assert shared > 5_000  # (the point: most lines are not split again)


def test_blame_agrees_with_a_plain_line_by_line_blame_on_a_generated_history(tmp_path: Path) -> None:
    """A history of random edits (moves, copies, repeated lines, deletions, the file deleted and
    made again, sessions that leave it as it was, unrelated sessions), blamed at every position with
    and without a cache, gives what a plain blame gives: each version diffed in whole with the one
    before, every line followed one by one."""
    async def main() -> None:
        repo = new_repo(tmp_path)
        rng = random.Random(5)
        words = ["", "pass", "}", "return x", "else:"] + [f"w{k}" for k in range(20)]
        text: list[str] | None = [f"line {k}" for k in range(80)]
        versions: dict[int, list[str] | None] = {}
        for step in range(40):
            roll = rng.random()
            if roll < 0.1:
                await work(repo, f"other {step}", {f"o/{step}.txt": b"x\n"})
            elif roll < 0.15:
                text = None if text is not None else [rng.choice(words) for _ in range(30)]
                await work(repo, f"step {step}", {"doc.txt": None if text is None else
                                                  "".join(x + "\n" for x in text).encode()})
            else:
                text = edited(rng, text or [], words) if roll > 0.2 else (text or ["again"])
                await work(repo, f"step {step}", {"doc.txt": "".join(x + "\n" for x in text).encode()})
            versions[await repo.mainline.head()] = text
        goals = {rec.position: rec.sessions[0].goal async for rec in Walk(repo, await repo.mainline.head())}

        def plain(at: int) -> list[tuple[str, str]]:
            now = versions[at] or []
            owner = [""] * len(now)
            open_ = {k: k for k in range(len(now))}  # line of the version looked at -> line blamed
            for pos in range(at, 0, -1):
                if versions[pos] == versions.get(pos - 1):  # the file as it was: nothing to blame
                    continue
                back = {y: x for x, y in plain_patience(versions.get(pos - 1) or [], versions[pos] or [])}
                for v, o in open_.items():
                    if v not in back:
                        owner[o] = goals[pos]
                open_ = {back[v]: o for v, o in open_.items() if v in back}
            return list(zip(owner, now, strict=True))

        cache = DictCache()
        for at in sorted(versions, reverse=True):
            if versions[at] is None:
                continue
            expect = plain(at)
            for results in (None, cache, cache):
                got = await blame(Repo(repo.store, "t/r"), "doc.txt", at, cache=results)
                assert [(ln.goal, ln.text) for ln in got] == expect, at
        assert cache.hits

    asyncio.run(main())

"""Blame: which landed session (and, for imported history, which git commit) last changed each line of
a file, walking the mainline backwards.

Plumbing (no working copy): the SDK, the forge API and the web UI all answer blame through here.

A merge landing made by the git import holds the commits it brought in as iterations (checkpoints
with their trees and commit data); a line the merge brought in is followed through those iterations
to the commit that wrote it, instead of being blamed on the merge.

Cost: each step diffs two versions of the file, asked only for the lines still open (a region of
the diff holding none is not matched), looping once per changed place rather than per line, so a
commit that changes a few lines of a big file costs a few slice comparisons and one count of its
unique lines. Each version is read once, and split only between the ends it shares with the
version it is diffed with (those lines are that version's own objects); one whose blob is the one
before's costs no diff. A :class:`BlameCache` (content-addressed: a result is keyed by the file's
path and the exact landing record that last changed it, so it never goes stale) lets a later blame
stop at the first record whose blame is known, and reuse it.
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import operator
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import compress, islice
from typing import Any, Protocol

from hif.errors import CorruptObject, InvalidInput, NotFound
from hif.history import Walk
from hif.mainline import LandingRecord
from hif.merge import is_binary, split_lines
from hif.objects import decode, encode
from hif.repo import Repo
from hif.tree import lookup_file

# An owner: (position, session, summary, author, git commit or "", iteration or 0)
Owner = tuple[int, str, str, str, str, int]
NOBODY: Owner = (0, "", "", "", "", 0)
CACHE_VERSION = b"blame-1"


@dataclass
class BlameLine:
    line: int
    text: str
    position: int
    session: str
    goal: str  # the session's goal, or the subject of the imported commit that wrote the line
    author: str
    commit: str = ""  # the git commit that wrote the line, for imported history
    iteration: int = 0  # the iteration of the session that brought it in (a merged-in commit)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("line", "text", "position", "session", "goal", "author",
                                              "commit", "iteration")}


class BlameCache(Protocol):
    """Where finished blames are kept (e.g. the node's cache directory); keys are hex digests."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...


Offload = Callable[..., Awaitable[Any]]


async def _inline(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def cache_key(repo: Repo, path: str, rec: LandingRecord) -> str:
    """The key of the blame of ``path`` as record ``rec`` left it: the record's bytes pin its tree,
    its parent tree and its sessions, and a position is written once, so this never goes stale."""
    h = hashlib.sha256(CACHE_VERSION)
    for part in (repo.prefix.encode(), path.encode(), rec.to_bytes()):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


SMALL = 64  # regions without a unique common line up to this many lines each go to SequenceMatcher

# A run of open lines: (line in the version examined, line of the blamed file, count)
Run = tuple[int, int, int]
# A matching block: (line in the older version, line in the newer one, count)
Block = tuple[int, int, int]


def _common_head(a: Sequence[Any], a0: int, a1: int, b: Sequence[Any], b0: int, b1: int) -> int:
    """How many lines ``a[a0:a1]`` and ``b[b0:b1]`` share at their start, by galloping over slice
    comparisons (done in C) rather than a Python loop per line."""
    n, k, step = min(a1 - a0, b1 - b0), 0, 8
    while k < n:
        m = min(step, n - k)
        if a[a0 + k:a0 + k + m] == b[b0 + k:b0 + k + m]:
            k, step = k + m, step * 2
        elif m <= 8:
            while k < n and a[a0 + k] == b[b0 + k]:
                k += 1
            return k
        else:
            step = m // 2
    return k


def _common_tail(a: Sequence[Any], a0: int, a1: int, b: Sequence[Any], b0: int, b1: int) -> int:
    n, k, step = min(a1 - a0, b1 - b0), 0, 8
    while k < n:
        m = min(step, n - k)
        if a[a1 - k - m:a1 - k] == b[b1 - k - m:b1 - k]:
            k, step = k + m, step * 2
        elif m <= 8:
            while k < n and a[a1 - 1 - k] == b[b1 - 1 - k]:
                k += 1
            return k
        else:
            step = m // 2
    return k


def kept_lines(before: Sequence[Any], after: Sequence[Any],
               wanted: Sequence[tuple[int, int]] | None = None) -> list[Block]:
    """The lines a diff keeps, as blocks ``(i, j, n)``: ``after[j:j+n] == before[i:i+n]``, in order.

    A patience diff (as ``git diff --patience``): common head and tail first, then the lines that
    occur once on each side, in the longest increasing run, anchor the match, and the regions between
    anchors are matched the same way. A region with no such line is left to ``SequenceMatcher`` only
    when small, so one step costs about O(n log n), not ``SequenceMatcher``'s O(n*m) on big changes.

    ``wanted`` (sorted, disjoint ``(start, end)`` ranges of ``after``'s lines) limits the work to
    those lines: how a region between anchors matches depends on that region alone, so a region or
    an anchor holding no wanted line is skipped, and the blocks over wanted lines are exactly the
    ones the whole diff gives (blocks elsewhere may be left out). Blame asks only for its open lines."""
    blocks: list[Block] = []
    starts = [s for s, _ in wanted] if wanted is not None else []
    ends = [e for _, e in wanted] if wanted is not None else []
    todo = [(0, len(before), 0, len(after))]
    while todo:
        a0, a1, b0, b1 = todo.pop()
        if a1 - a0 == b1 - b0 and before[a0:a1] == after[b0:b1]:  # the usual gap between anchors
            blocks.append((a0, b0, a1 - a0))
            continue
        if wanted is not None:
            w = bisect.bisect_right(ends, b0)  # the first wanted range ending after b0
            if w == len(ends) or starts[w] >= b1:
                continue
        head = _common_head(before, a0, a1, after, b0, b1)
        if head:
            blocks.append((a0, b0, head))
            a0, b0 = a0 + head, b0 + head
        tail = _common_tail(before, a0, a1, after, b0, b1)
        if tail:
            a1, b1 = a1 - tail, b1 - tail
            blocks.append((a1, b1, tail))
        if a0 == a1 or b0 == b1:
            continue
        if wanted is not None:  # the wanted lines may all have been in the head or the tail
            w = bisect.bisect_right(ends, b0)
            if w == len(ends) or starts[w] >= b1:
                continue
        xs, ys = _unique_run(before, a0, a1, after, b0, b1)
        if not xs:
            if a1 - a0 <= SMALL and b1 - b0 <= SMALL:
                sm = difflib.SequenceMatcher(None, before[a0:a1], after[b0:b1], autojunk=False)
                blocks += [(a0 + x.a, b0 + x.b, x.size) for x in sm.get_matching_blocks() if x.size]
            continue
        # From each anchor, the lines equal on both sides run on (found by galloping, in C) to the
        # next difference: that is the anchor's block together with the anchors and the equal gaps
        # after it, as matching each gap in turn would give; the next anchor past it closes the gap
        # left to match. So the loop goes once per changed place, not once per anchor.
        n, done = len(xs), -1  # done: the first anchor (-1: the region's start) not walked yet
        for s, e in ([(b0, b1)] if wanted is None else zip(starts[w:], ends[w:], strict=True)):
            if s >= b1:
                break
            k = max(bisect.bisect_left(ys, s) - 1, done)  # the anchor before the range's first line
            while k < n:
                if k < 0:
                    ea, eb = a0, b0
                else:
                    x, y = xs[k], ys[k]
                    run = _common_head(before, x, a1, after, y, b1)
                    blocks.append((x, y, run))
                    ea, eb = x + run, y + run
                k = done = bisect.bisect_left(ys, eb, max(k + 1, 0))
                na, nb = (xs[k], ys[k]) if k < n else (a1, b1)
                if na > ea and nb > eb:  # a region with lines on both sides: match it in turn
                    todo.append((ea, na, eb, nb))
                if nb >= e:
                    break
    blocks.sort(key=lambda blk: blk[1])
    merged: list[Block] = []
    for x, y, n in blocks:  # neighbours from different regions (a head after an anchor) join too
        if merged and merged[-1][0] + merged[-1][2] == x and merged[-1][1] + merged[-1][2] == y:
            merged[-1] = (merged[-1][0], merged[-1][1], merged[-1][2] + n)
        else:
            merged.append((x, y, n))
    return merged


def _once(lines: Sequence[Any]) -> set[Any]:
    """The lines that occur once in ``lines``, counted and picked in C rather than line by line."""
    counts = Counter(lines)
    return set(compress(counts, map((1).__eq__, counts.values())))


def _unique_run(a: Sequence[Any], a0: int, a1: int, b: Sequence[Any], b0: int, b1: int) -> tuple[list[int], list[int]]:
    """The lines that occur exactly once in ``a[a0:a1]`` and in ``b[b0:b1]``, in the longest run
    increasing on both sides: their positions in ``a`` and in ``b``, in order."""
    part_a, part_b = a[a0:a1], b[b0:b1]
    common = _once(part_a) & _once(part_b)
    if not common:
        return [], []
    # their positions, picked in C: in b in order, in a through a map of the common lines only
    ys = list(compress(range(b0, b1), map(common.__contains__, part_b)))
    where = list(compress(range(a0, a1), map(common.__contains__, part_a)))
    at_a = dict(zip(map(a.__getitem__, where), where, strict=True))
    xs = list(map(at_a.__getitem__, map(b.__getitem__, ys)))
    if all(map(operator.lt, xs, islice(xs, 1, None))):  # nothing moved (the usual case): all of them
        return xs, ys
    # longest increasing subsequence of the a-positions (patience sorting, with back links)
    tails: list[int] = []
    tail_idx: list[int] = []
    back = [-1] * len(xs)
    for k, i in enumerate(xs):
        pos = bisect.bisect_left(tails, i)
        if pos == len(tails):
            tails.append(i)
            tail_idx.append(k)
        else:
            tails[pos], tail_idx[pos] = i, k
        back[k] = tail_idx[pos - 1] if pos else -1
    out: list[int] = []
    k = tail_idx[-1] if tail_idx else -1
    while k >= 0:
        out.append(k)
        k = back[k]
    out.reverse()
    return [xs[k] for k in out], [ys[k] for k in out]


def _lines(data: bytes) -> list[bytes]:
    """The lines as blame compares them: a last line without its newline gets one, so a line that
    only gained a final newline (text appended after it) is not a changed line."""
    lines = split_lines(data)
    if lines and not lines[-1].endswith(b"\n"):
        lines[-1] += b"\n"
    return lines


def _shared_ends(data: bytes, near: bytes) -> tuple[int, int]:
    """How many bytes ``data`` and ``near`` share at their start and at their end (not overlapping),
    by galloping over slice comparisons (done in C)."""
    n = min(len(data), len(near))
    head, step = 0, 4096
    while step:
        if head + step <= n and data[head:head + step] == near[head:head + step]:
            head += step
            step *= 2
        else:
            step //= 2
    n -= head
    tail, step = 0, 4096
    while step:
        if tail + step <= n and data[len(data) - tail - step:len(data) - tail] == near[len(near) - tail - step:len(near) - tail]:
            tail += step
            step *= 2
        else:
            step //= 2
    return head, tail


def lines_near(data: bytes, near: bytes, near_lines: list[bytes]) -> list[bytes]:
    """``_lines(data)``, taking the lines it shares at its start and its end with the version
    ``near`` (whose ``_lines`` are ``near_lines``) from there: one version of a file differs from the
    next in a few places, so most of it is not split again, and the shared lines are the very
    objects of ``near``, which the diff compares by identity. Only whole lines ending in a newline
    are shared, so a line is never cut (a newline ends a line whatever follows it)."""
    head, tail = _shared_ends(data, near)
    cut = data.rfind(b"\n", 0, head) + 1  # the shared start's whole lines (0: none)
    nl = data.find(b"\n", len(data) - tail) if tail else -1
    back = len(data) - nl - 1 if nl >= 0 else 0  # the shared end's whole lines, in bytes
    if (not cut and not back) or b"\r" in near:  # (a carriage return may end a line too: no counting)
        return _lines(data)
    first = near.count(b"\n", 0, cut)  # near's lines in the shared start: each ends in a newline
    last = len(near_lines) - (near.count(b"\n", len(near) - back) + (not near.endswith(b"\n")) if back else 0)
    mid = split_lines(data[cut:len(data) - back])
    if not back and mid and not mid[-1].endswith(b"\n"):
        mid[-1] += b"\n"  # as _lines does to a last line without its newline
    return near_lines[:first] + mid + near_lines[last:]


def _follow(cur: list[Run], blocks: list[Block]) -> tuple[list[Run], list[Run]]:
    """The open runs moved to the older version through the diff's blocks, and the runs no block
    keeps (as they were: the change wrote them). Costs the runs and blocks, not the lines."""
    kept: list[Run] = []
    dropped: list[Run] = []
    k = i = 0
    while i < len(cur):
        v, o, n = cur[i]
        end = v + n
        while k < len(blocks) and blocks[k][1] + blocks[k][2] <= v:
            k += 1
        if k < len(blocks) and blocks[k][1] <= v and end <= blocks[k][1] + blocks[k][2]:
            # the usual case: this run and the ones after it lie inside one block, moved as one
            a, b, size = blocks[k]
            last, d = bisect.bisect_right(cur, b + size, i, key=_run_end), a - b
            kept += [(x + d, y, m) for x, y, m in cur[i:last]]
            i = last
            continue
        i += 1
        at, j = v, k
        while at < end:
            if j < len(blocks) and blocks[j][1] < end:
                a, b, size = blocks[j]
                lo, hi = max(b, at), min(b + size, end)
                j += 1
                if lo >= hi:
                    continue
                if lo > at:
                    dropped.append((at, o + at - v, lo - at))
                kept.append((a + lo - b, o + lo - v, hi - lo))
                at = hi
            else:
                dropped.append((at, o + at - v, end - at))
                at = end
    return kept, dropped


def _run_end(run: Run) -> int:
    return run[0] + run[2]


def _wanted(cur: list[Run]) -> list[tuple[int, int]]:
    """The lines of the open runs as sorted, disjoint ``(start, end)`` ranges (what
    :func:`kept_lines` is asked for)."""
    out: list[tuple[int, int]] = []
    for v, _, n in sorted(cur):
        if out and out[-1][1] >= v:
            out[-1] = (out[-1][0], max(out[-1][1], v + n))
        else:
            out.append((v, v + n))
    return out


def _own_all(cur: list[Run], owner: list[Owner | None], who: Owner) -> None:
    for _, o, n in cur:
        owner[o:o + n] = [who] * n


KEEP_VERSIONS = 16  # a blame keeps this many versions' lines at most (a merge's commits revisit them)


class _Blamer:
    def __init__(self, repo: Repo, path: str, offload: Offload) -> None:
        self.repo, self.db, self.path, self.offload = repo, repo.objects, path, offload
        self.oids: dict[bytes, bytes | None] = {}  # tree -> the file's blob id in it (or None)
        # blob id -> its bytes and lines, the latest few
        self.texts: OrderedDict[bytes, tuple[bytes, list[bytes]]] = OrderedDict()

    async def oid_in(self, tree: bytes) -> bytes | None:
        """The file's blob id in ``tree`` (None when absent); a merged-in commit's tree is often one
        the mainline walk looked in already."""
        if tree not in self.oids:
            entry = await lookup_file(self.db, tree, self.path)
            self.oids[tree] = entry.oid if entry is not None else None
        return self.oids[tree]

    async def lines_of(self, oid: bytes | None, near: bytes | None = None) -> list[bytes]:
        """The lines of blob ``oid`` (none for an absent file), read and split once per blame; the
        lines it shares at either end with blob ``near`` (the version it is diffed with, read
        before) are taken from there rather than split again."""
        if oid is None:
            return []
        got = self.texts.get(oid)
        if got is None:
            data = await self.db.get_blob(oid)
            known = self.texts.get(near) if near is not None else None
            got = self.texts[oid] = (data, _lines(data) if known is None else lines_near(data, *known))
            if len(self.texts) > KEEP_VERSIONS:
                self.texts.popitem(last=False)
        else:
            self.texts.move_to_end(oid)
        return got[1]

    async def version(self, tree: bytes, near: bytes | None) -> tuple[bytes | None, list[bytes]]:
        """The file's blob id in ``tree`` and its lines (None and none when it is absent)."""
        oid = await self.oid_in(tree)
        return oid, await self.lines_of(oid, near)

    async def merged_in(self, rec: LandingRecord, version: list[bytes], cur: list[Run],
                        owner: list[Owner | None], who: Owner, version_oid: bytes | None) -> None:
        """Lines a git merge brought in (``cur``, runs of ``version``, blob ``version_oid``): follow
        them through the merged-in commits, newest first along first parents, to the one that wrote
        each."""
        meta = rec.extra.get("git")
        if not isinstance(meta, dict) or not meta.get("merged") or len(meta.get("parents") or []) < 2:
            _own_all(cur, owner, who)
            return
        sess = rec.sessions[-1]
        snap = await self.db.get_value("snapshot", sess.snapshot)
        commits: dict[str, tuple[bytes, list[str], Owner]] = {}
        for e in snap.get("events", []):
            g = e.get("git") if isinstance(e, dict) and e.get("type") == "checkpoint" else None
            if isinstance(g, dict) and isinstance(g.get("commit"), str) and isinstance(e.get("tree"), bytes):
                commits[g["commit"]] = (e["tree"], list(g.get("parents") or []),
                                        (rec.position, sess.session, str(e.get("note", "")),
                                         str(e.get("author", "")), g["commit"], int(e.get("iteration", 0))))
        # depth first through the merged-in commits (a side branch may merge too): a commit's lines
        # go to the first of its parents in this session that has them, else they are its own
        root = (rec.position, sess.session, sess.goal, sess.author, str(meta.get("commit", "")), 0)
        stack: list[tuple[list[str], Owner, bytes | None, list[bytes], list[Run]]] = [
            ([p for p in meta["parents"][1:] if isinstance(p, str)], root, None, version, cur)]
        seen: set[str] = set()  # a commit reached by a second path is not walked again
        while stack:
            parents, who, oid, version, cur = stack.pop()
            for p in parents:
                if not cur or p not in commits or p in seen:
                    continue
                seen.add(p)
                tree, grand, p_owner = commits[p]
                p_oid = await self.oid_in(tree)
                if p_oid is None:
                    continue
                if p_oid == oid:  # a commit that left the file alone costs no diff
                    kept, cur = cur, []
                    older = version
                else:
                    older = await self.lines_of(p_oid, oid or version_oid)
                    kept, cur = _follow(cur, await self.offload(kept_lines, older, version, _wanted(cur)))
                if kept:
                    stack.append((grand, p_owner, p_oid, older, kept))
            _own_all(cur, owner, who)  # what no parent in the session has: this commit wrote it

    async def run(self, at: int, cache: BlameCache | None) -> tuple[list[bytes], list[Owner]]:
        tree = await self.repo.mainline.tree_at(at)
        entry = await lookup_file(self.db, tree, self.path)
        if entry is None:
            raise NotFound(f"no file {self.path} at position {at}")
        oid: bytes | None = entry.oid
        data = await self.db.get_blob(entry.oid)
        if is_binary(data):
            raise InvalidInput(f"{self.path} is a binary file; blame works on text")
        raw = split_lines(data)
        version = _lines(data)
        self.texts[entry.oid] = (data, version)
        owner: list[Owner | None] = [None] * len(raw)
        cur: list[Run] = [(0, 0, len(raw))] if raw else []
        first: LandingRecord | None = None  # the record that made the asked version (the cache key)
        # only records that changed the path matter: the rollups skip the others unread
        async for rec in Walk(self.repo, at, items={"p:" + self.path}):
            if not cur:
                break
            touched = [s for s in rec.sessions if self.path in s.changes]
            if not touched:
                continue
            if cache is not None:
                known = _load(cache, cache_key(self.repo, self.path, rec), len(version))
                if first is None:
                    first = rec
                    if known is not None:
                        return raw, known
                if known is not None:  # this version's blame is known: the open lines take it
                    for v, o, n in cur:
                        owner[o:o + n] = known[v:v + n]
                    cur = []
                    break
            first = first or rec
            sess = touched[-1]
            meta = rec.extra.get("git")
            commit = meta.get("commit", "") if isinstance(meta, dict) else ""
            who: Owner = (rec.position, sess.session, sess.goal, sess.author,
                          commit if isinstance(commit, str) else "", 0)
            before_oid, before = await self.version(rec.parent_tree, oid)
            if before_oid == oid:  # the same bytes (a record that left them as they were): no diff
                continue
            blocks = await self.offload(kept_lines, before, version, _wanted(cur))
            cur, brought = _follow(cur, blocks)
            if brought:
                await self.merged_in(rec, version, brought, owner, who, oid)
            version, oid = before, before_oid
        out = [o or NOBODY for o in owner]
        if cache is not None and first is not None:
            cache.put(cache_key(self.repo, self.path, first), _dump(out))
        return raw, out


def _dump(owners: list[Owner]) -> bytes:
    table: dict[Owner, int] = {}
    index = [table.setdefault(o, len(table)) for o in owners]
    return encode({"owners": [list(o) for o in table], "lines": index})


def _load(cache: BlameCache, key: str, n: int) -> list[Owner] | None:
    """A cached blame of ``n`` lines, or None (absent, or not one: a damaged entry is ignored)."""
    data = cache.get(key)
    if data is None:
        return None
    try:
        doc = decode(data)
        owners = [(int(p), str(s), str(g), str(a), str(c), int(i)) for p, s, g, a, c, i in doc["owners"]]
        out = [owners[k] for k in doc["lines"]]
    except (CorruptObject, KeyError, TypeError, ValueError, IndexError):
        return None
    return out if len(out) == n else None


async def blame(repo: Repo, path: str, at: int, *, cache: BlameCache | None = None,
                offload: Offload | None = None) -> list[BlameLine]:
    """Attribute every line of ``path`` at position ``at``; stops as soon as every line has an owner
    (or the blame of an older version is in ``cache``) and reads only the records that changed the
    path (found through the rollups), so the cost follows the file's history, not the log's length.
    ``offload`` runs the diffs (e.g. in a bounded executor, off a server's event loop)."""
    raw, owners = await _Blamer(repo, path, offload or _inline).run(at, cache)
    return [BlameLine(i + 1, text.decode("utf-8", "replace").rstrip("\n"), *o)
            for i, (text, o) in enumerate(zip(raw, owners, strict=True))]

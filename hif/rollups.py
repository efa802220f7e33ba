"""Rollups: derived filters over aligned blocks of landing positions, so that a conflict check walks
O(log n) objects instead of every record since a session's base.

Level L, block b covers positions ``(b-1)*2^L + 1 .. b*2^L``. Each rollup holds the sorted, unique
64-bit fingerprints of the *items* of its records: ``p:<path>`` for each changed path, ``d:<dir>``
for each directory above one, ``s:<session>`` for each landed session. Fingerprint sets play the role of
bloom filters (a miss proves absence; a hit is only a candidate, confirmed against exact records), and
unlike fixed-size bloom filters they merge exactly from two children, so a level-L rollup is built
from two level-(L-1) rollups without re-reading records.

Rollups are derived and best effort: written with put-if-absent after landing (their bytes are
deterministic, so racing writers agree), rebuilt from records when missing, and never trusted as proof
of an overlap.
"""

from __future__ import annotations

import contextlib
import hashlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable

from hif.errors import PreconditionFailed
from hif.mainline import LandingRecord, Mainline
from hif.objects import decode, encode
from hif.paths import parent_dirs

MAX_LEVEL = 40


def fingerprint(item: str) -> int:
    return int.from_bytes(hashlib.sha256(item.encode()).digest()[:8], "big")


def record_items(record: LandingRecord) -> set[str]:
    items: set[str] = set()
    for landed in record.sessions:
        items.add("s:" + landed.session)
        for path in landed.changes:
            items.add("p:" + path)
            items.update("d:" + d for d in parent_dirs(path))
    return items


def query_items(session_id: str, paths: Iterable[str]) -> set[str]:
    """What a landing record must contain to matter to a session changing ``paths``."""
    items = {"s:" + session_id}
    for path in paths:
        items.add("p:" + path)  # the same path
        items.add("d:" + path)  # something below it (path became a directory)
        items.update("p:" + d for d in parent_dirs(path))  # a file where it needs a directory
    return items


class Rollups:
    """Read, build and query the rollups of one repository (``<prefix>rollups/<level>/<block>``)."""

    def __init__(self, mainline: Mainline) -> None:
        self.mainline = mainline
        self.store = mainline.store
        self.prefix = mainline.prefix + "rollups/"
        self.reads = 0

    def _key(self, level: int, block: int) -> str:
        return f"{self.prefix}{level:02d}/{block:012d}"

    async def _load(self, level: int, block: int) -> array | None:
        self.reads += 1
        data = await self.store.get_or_none(self._key(level, block))
        if data is None:
            return None
        try:
            value = decode(data)
            fps = array("Q")
            fps.frombytes(value["fp"])
            if value["level"] != level or value["block"] != block:
                return None
            return fps
        except Exception:  # a foreign or damaged rollup is ignored, never trusted
            return None

    async def build(self, level: int, block: int) -> array:
        """The fingerprints of a block, from children (or records at level 1), stored for next time."""
        if level == 0:
            record = await self.mainline.record(block)
            return array("Q", sorted({fingerprint(i) for i in record_items(record)}))
        left = await self._get_or_build(level - 1, 2 * block - 1)
        right = await self._get_or_build(level - 1, 2 * block)
        fps = array("Q", sorted(set(left) | set(right)))
        body = {"level": level, "block": block, "fp": fps.tobytes()}
        with contextlib.suppress(PreconditionFailed):
            await self.store.put(self._key(level, block), encode(body), if_none_match=True)
        return fps

    async def _get_or_build(self, level: int, block: int) -> array:
        if level == 0:
            return await self.build(0, block)
        fps = await self._load(level, block)
        return fps if fps is not None else await self.build(level, block)

    async def extend(self, position: int, *, max_level: int = 16) -> None:
        """After landing ``position``: build every rollup that position completes (best effort)."""
        level = 1
        while level <= max_level and position % (1 << level) == 0:
            block = position >> level
            if await self._load(level, block) is None:
                await self.build(level, block)
            level += 1

    async def candidates(self, lo: int, hi: int, items: set[str]) -> list[int]:
        """Positions in ``(lo, hi]`` whose records may contain one of ``items``, in order."""
        wanted = sorted(fingerprint(i) for i in items)
        out: list[int] = []
        await self._walk(lo + 1, hi, wanted, out)
        return out

    async def _walk(self, first: int, last: int, wanted: list[int], out: list[int]) -> None:
        pos = first
        while pos <= last:
            # the largest aligned block starting at pos that fits in [pos, last]
            level = 0
            while level < MAX_LEVEL:
                size = 1 << (level + 1)
                if (pos - 1) % size != 0 or pos + size - 1 > last:
                    break
                level += 1
            size = 1 << level
            await self._check(level, (pos - 1) // size + 1, wanted, out)
            pos += size

    async def _check(self, level: int, block: int, wanted: list[int], out: list[int]) -> None:
        if level == 0:
            out.append(block)  # the caller reads the record itself: exact
            return
        fps = await self._load(level, block)
        if fps is not None and not _intersects(fps, wanted):
            return
        await self._check(level - 1, 2 * block - 1, wanted, out)
        await self._check(level - 1, 2 * block, wanted, out)


def _intersects(fps: array, wanted: list[int]) -> bool:
    n = len(fps)
    for w in wanted:
        i = bisect_left(fps, w)
        if i < n and fps[i] == w:
            return True
    return False

"""node.heavy's result cache on a real directory: its size cap, dropping what was used longest ago."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from node.heavy import ENTRY_MAX, Budget, DiskCache


def key(n: int) -> str:
    return hashlib.sha256(b"%d" % n).hexdigest()


def on_disk(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "ui").rglob("*") if p.is_file())


def age(cache: DiskCache, k: str, seconds: float) -> None:
    """Make entry ``k`` look ``seconds`` old (its file's times), as if written or read that long ago."""
    path = cache.root / k[:2] / k
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_the_result_cache_stays_under_its_cap_dropping_what_was_used_longest_ago(tmp_path: Path) -> None:
    budget = Budget(tmp_path / "ui", 1000)
    blame, hl = DiskCache(tmp_path, "blame", budget), DiskCache(tmp_path, "highlight", budget)
    for n in range(8):  # 800 bytes in two kinds: under the cap, all kept
        (blame if n % 2 else hl).put(key(n), bytes([n]) * 100)
    assert on_disk(tmp_path) == 800 and all((blame if n % 2 else hl).get(key(n)) for n in range(8))
    for n in range(8):
        age(blame if n % 2 else hl, key(n), 10_000 - n * 100)  # entry 0 the oldest
    # entry 1 is read again (long enough after it was written to count as used): it outlives 0 and 2
    age(blame, key(1), 10_000)
    assert blame.get(key(1)) == bytes([1]) * 100
    for n in range(8, 12):  # past the cap: the least recently used go, down to 80% of the cap
        blame.put(key(n), bytes([n]) * 100)
        assert on_disk(tmp_path) <= 1000
    assert blame.get(key(1)) is not None and hl.get(key(0)) is None and hl.get(key(2)) is None
    assert all(blame.get(key(n)) == bytes([n]) * 100 for n in range(8, 12))  # the newest stay
    # the same key written again (content-addressed: the same bytes) is not counted twice
    before = on_disk(tmp_path)
    for _ in range(50):
        blame.put(key(11), bytes([11]) * 100)
    assert on_disk(tmp_path) == before and blame.get(key(9)) is not None
    # another replica's writes to the same directory are counted when this one evicts
    other = DiskCache(tmp_path, "blame", Budget(tmp_path / "ui", 10_000))
    for n in range(20, 30):
        other.put(key(n), b"o" * 100)
    assert on_disk(tmp_path) > 1000
    for n in range(40, 43):  # a fifth of the cap written here: the directory is counted again
        blame.put(key(n), b"n" * 100)
    assert on_disk(tmp_path) <= 1000 and blame.get(key(42)) is not None
    # an entry bigger than one entry may be is not kept, and one bigger than the cap is dropped at once
    blame.put(key(99), b"x" * (ENTRY_MAX + 1))
    assert blame.get(key(99)) is None and on_disk(tmp_path) <= 1000
    small = DiskCache(tmp_path / "small", "blame", Budget(tmp_path / "small" / "ui", 50))
    small.put(key(1), b"y" * 60)
    assert on_disk(tmp_path / "small") <= 50

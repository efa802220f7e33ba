"""The working copy's stat cache, so an unchanged tree is not re-hashed (like git's index).

For each path it keeps the base entry (what the tree at the working copy's position holds) and the
last seen stat of the working file with that file's entry. A file whose size, mtime, inode and mode are
unchanged is trusted without reading it, unless it was modified too close to the moment the cache was
written (the "racy" case: a later write within the same timestamp tick would be invisible).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cbor2

from hif.objects import Entry

RACY_NS = 2_000_000_000


@dataclass(slots=True)
class IndexEntry:
    base: Entry | None
    stat: tuple[int, int, int, int] | None = None  # size, mtime_ns, ino, mode
    work: Entry | None = None


@dataclass
class Index:
    position: int = 0
    tree: bytes = b""
    written_ns: int = 0
    entries: dict[str, IndexEntry] = field(default_factory=dict)
    dirty: bool = False

    @classmethod
    def load(cls, path: Path) -> Index:
        try:
            raw = cbor2.loads(path.read_bytes())
        except (FileNotFoundError, cbor2.CBORDecodeError, ValueError):
            return cls(dirty=True)
        entries: dict[str, IndexEntry] = {}
        for p, (bk, bo, st, wk, wo) in raw["entries"].items():
            base = Entry(bk, bo) if bk else None
            # an unchanged file (the common case) shares one Entry: half the objects to build
            work = base if wk == bk and wo == bo else Entry(wk, wo) if wk else None
            entries[p] = IndexEntry(base, tuple(st) if st else None, work)
        return cls(raw["position"], raw["tree"], raw["written_ns"], entries)

    def save(self, path: Path) -> None:
        self.written_ns = time.time_ns()
        raw = {
            "position": self.position,
            "tree": self.tree,
            "written_ns": self.written_ns,
            "entries": {
                p: [
                    e.base.kind if e.base else None,
                    e.base.oid if e.base else None,
                    list(e.stat) if e.stat else None,
                    e.work.kind if e.work else None,
                    e.work.oid if e.work else None,
                ]
                for p, e in self.entries.items()
            },
        }
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(cbor2.dumps(raw))
        os.replace(tmp, path)
        self.dirty = False

    def cached(self, path: str, st: os.stat_result) -> Entry | None:
        e = self.entries.get(path)
        if e is None or e.stat is None or e.work is None:
            return None
        if e.stat != (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode):
            return None
        if st.st_mtime_ns >= self.written_ns - RACY_NS:
            return None
        return e.work

    def remember(self, path: str, st: os.stat_result, work: Entry) -> None:
        e = self.entries.get(path)
        if e is None:
            e = self.entries[path] = IndexEntry(None)
        e.stat = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode)
        e.work = work
        self.dirty = True

    def set_base(self, path: str, base: Entry | None) -> None:
        e = self.entries.get(path)
        if base is None:
            if e is not None:
                e.base = None
                if e.work is None:
                    del self.entries[path]
        elif e is None:
            self.entries[path] = IndexEntry(base)
        else:
            e.base = base
        self.dirty = True

    def forget_work(self, path: str) -> None:
        e = self.entries.get(path)
        if e is not None:
            e.stat = None
            e.work = None
            if e.base is None:
                del self.entries[path]
            self.dirty = True

    def base_entries(self) -> dict[str, Entry]:
        return {p: e.base for p, e in self.entries.items() if e.base is not None}

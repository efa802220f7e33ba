"""The working copy's stat cache, so an unchanged tree is not re-hashed (like git's index).

For each path it keeps the base entry (what the tree at the working copy's position holds) and the
last seen stat of the working file with that file's entry. A file whose size, mtime, inode and mode are
unchanged is trusted without reading it, unless it was modified too close to the moment the cache was
written (the "racy" case: a later write within the same timestamp tick would be invisible).

On disk the cache is one binary file grouped by directory, so ``hif status`` can load it with one
``read()`` and check a whole directory at once (its names, then one packed stat row per file) without
building a Python object per path; see :class:`Snapshot` for the layout. Changes made after loading
go to an overlay of :class:`IndexEntry` objects; ``Index.entries`` folds everything into one dict for
the callers that want all of it (checkout, rebuilds). Anything unreadable, truncated, of another
format or failing its checksum loads as an empty, dirty cache, which is then rebuilt.
"""

from __future__ import annotations

import bisect
import contextlib
import mmap
import operator
import os
import struct
import sys
import time
import zlib
from itertools import starmap

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: a quick status stays quick
if TYPE_CHECKING:
    from collections.abc import Iterator
    from collections.abc import Set as AbstractSet
    from pathlib import Path

    from hif.objects import Entry  # pulls in cbor2 and zstandard, which a clean status never needs

RACY_NS = 2_000_000_000

MAGIC = b"HIFIDX\x00\x03"
_HEAD = struct.Struct("<8sqqIIIII")  # magic, position, written_ns, dirs, files, tree, dir names, work oids
# per directory: its files, bytes of their names, newest mtime_ns, flags, and the directory's own
# (ctime_ns, inode) when its listing was last found to hold exactly the cached names (0, 0: unknown)
_DIR = struct.Struct("<IIqBqQ")
STAT = struct.Struct("<qqQI")  # size, mtime_ns, ino, mode of one file (mode 0: no stat known)
_OID = 32
_CRC = struct.Struct("<I")
_EMPTY_OID = bytes(_OID)

ALL_PRESENT = 1  # every file of the directory has a stat and a work entry (was there at the last scan)
CLEAN = 2  # ... and every work entry equals its base entry


class IndexEntry:
    """One path: its base entry, the last seen stat of its working file and that file's entry."""

    __slots__ = ("base", "stat", "work")

    def __init__(self, base: Entry | None, stat: tuple[int, int, int, int] | None = None,
                 work: Entry | None = None) -> None:
        self.base = base
        self.stat = stat  # size, mtime_ns, ino, mode
        self.work = work

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IndexEntry):
            return NotImplemented
        return (self.base, self.stat, self.work) == (other.base, other.stat, other.work)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"IndexEntry(base={self.base!r}, stat={self.stat!r}, work={self.work!r})"


_ENTRY: list[type[Entry]] = []  # hif.objects.Entry, imported on first use


def _entry(kind: int, oid: bytes) -> Entry:
    if not _ENTRY:
        # cbor2 and the object codecs: a quick ``hif status`` does without them (start-up time)
        from hif.objects import Entry

        _ENTRY.append(Entry)
    return _ENTRY[0](chr(kind), oid)


def _parent(path: str) -> tuple[str, str]:
    d, _, name = path.rpartition("/")
    return d, name


class Snapshot:
    """The cache as loaded: immutable, read lazily out of the file's bytes.

    Layout (little-endian): a header (``_HEAD``), the tree id, the directory paths joined by NUL
    (sorted; the root is ``""``; every ancestor of a directory with files is listed), one ``_DIR``
    record per directory, each directory's file names joined by NUL (sorted), then per file (in
    directory order) a ``STAT`` row, two kind bytes (base, work; 0 for none) and the base id
    (zeros for none), then the work ids that differ from the base id as (row u32, id) pairs, and a
    CRC-32 of everything before it.
    """

    __slots__ = ("header", "dirs", "dir_id", "counts", "first", "names_at", "max_mtime", "flags", "dstat",
                 "subdirs", "raw", "stats_at", "kinds_at", "oids_at", "work_oids", "_names", "_rows",
                 "nfiles", "names_blob", "names0")

    def __init__(self, raw: bytes | mmap.mmap) -> None:
        """Parse and check ``raw``; any inconsistency raises ``ValueError`` (or ``struct.error``)."""
        if len(raw) < _HEAD.size + _CRC.size or raw[:8] != MAGIC:
            raise ValueError("not a stat cache of this format")
        (crc,) = _CRC.unpack_from(raw, len(raw) - _CRC.size)
        if zlib.crc32(memoryview(raw)[: len(raw) - _CRC.size]) != crc:
            raise ValueError("stat cache checksum mismatch")
        _, self_pos, self_written, ndirs, nfiles, tree_len, dnames_len, nwork = _HEAD.unpack_from(raw)
        self.raw = raw
        self.nfiles = nfiles
        at = _HEAD.size
        self.header: tuple[int, int, bytes] = (self_pos, self_written, bytes(raw[at:at + tree_len]))
        at += tree_len
        self.dirs: list[str] = raw[at:at + dnames_len].decode().split("\0") if ndirs else []
        at += dnames_len
        if len(self.dirs) != ndirs:
            raise ValueError("stat cache directory table is inconsistent")
        self.counts: list[int] = []
        names_len: list[int] = []
        self.max_mtime: list[int] = []
        self.flags: list[int] = []
        self.dstat: list[tuple[int, int]] = []
        for count, nlen, mt, fl, dctime, dino in _DIR.iter_unpack(raw[at:at + ndirs * _DIR.size]):
            self.dstat.append((dctime, dino))
            self.counts.append(count)
            names_len.append(nlen)
            self.max_mtime.append(mt)
            self.flags.append(fl)
        at += ndirs * _DIR.size
        self.first: list[int] = []
        self.names_at: list[tuple[int, int]] = []
        row = 0
        for count, nlen in zip(self.counts, names_len, strict=True):
            self.first.append(row)
            self.names_at.append((at, at + nlen))
            row += count
            at += nlen
        if row != nfiles:
            raise ValueError("stat cache file count is inconsistent")
        self.names0 = n0 = self.names_at[0][0] if ndirs else at
        self.names_blob = blob = raw[n0:at]  # every file name, as bytes
        blob.decode()  # all names UTF-8, or no cache at all
        for count, (a, b) in zip(self.counts, self.names_at, strict=True):  # each directory's names
            if (blob.count(b"\0", a - n0, b - n0) + 1 if count else b - a) != count:
                raise ValueError("stat cache names are inconsistent")
        self.stats_at = at
        self.kinds_at = at + nfiles * STAT.size
        self.oids_at = self.kinds_at + nfiles * 2
        at = self.oids_at + nfiles * _OID
        self.work_oids: dict[int, bytes] = {}
        for _ in range(nwork):
            (r,) = struct.unpack_from("<I", raw, at)
            self.work_oids[r] = bytes(raw[at + 4:at + 4 + _OID])
            at += 4 + _OID
        if at + _CRC.size != len(raw):
            raise ValueError("stat cache length is inconsistent")
        self.dir_id = {d: i for i, d in enumerate(self.dirs)}
        self.subdirs = [0] * ndirs  # how many of each directory's entries are directories of the cache
        for d in self.dirs:
            if d:
                self.subdirs[self.dir_id[_parent(d)[0]]] += 1
        self._names: dict[int, list[str]] = {}
        self._rows: dict[int, dict[str, int]] = {}

    def names(self, d: int) -> list[str]:
        """The file names of directory ``d``, sorted (decoded on first use)."""
        got = self._names.get(d)
        if got is None:
            a, b = self.names_at[d]
            got = self.names_blob[a - self.names0:b - self.names0].decode().split("\0") if self.counts[d] else []
            if len(got) != self.counts[d]:
                raise ValueError("stat cache names are inconsistent")
            self._names[d] = got
        return got

    def bnames(self, d: int) -> list[bytes]:
        """The file names of directory ``d`` as bytes (what ``lstat`` takes without converting)."""
        a, b = self.names_at[d]
        return self.names_blob[a - self.names0:b - self.names0].split(b"\0") if self.counts[d] else []

    def stats_block(self, d: int) -> bytes:
        a = self.stats_at + self.first[d] * STAT.size
        return self.raw[a:a + self.counts[d] * STAT.size]

    def row_of(self, path: str) -> int | None:
        d, name = _parent(path)
        i = self.dir_id.get(d)
        if i is None:
            return None
        rows = self._rows.get(i)
        if rows is None:
            rows = self._rows[i] = {n: self.first[i] + k for k, n in enumerate(self.names(i))}
        return rows.get(name)

    def entry(self, row: int) -> IndexEntry:
        """One file's entry, built from its row."""
        raw = self.raw
        st = STAT.unpack_from(raw, self.stats_at + row * STAT.size)
        bk, wk = raw[self.kinds_at + 2 * row], raw[self.kinds_at + 2 * row + 1]
        at = self.oids_at + row * _OID
        boid = raw[at:at + _OID]
        base = _entry(bk, boid) if bk else None
        work = None
        if wk:
            woid = self.work_oids.get(row, boid)
            work = base if base is not None and wk == bk and woid == boid else _entry(wk, woid)
        return IndexEntry(base, st if st[3] else None, work)

    def dir_entries(self, d: int) -> Iterator[tuple[str, IndexEntry]]:
        prefix = self.dirs[d] + "/" if self.dirs[d] else ""
        for k, name in enumerate(self.names(d)):
            yield prefix + name, self.entry(self.first[d] + k)


class Index:
    """The stat cache: a loaded :class:`Snapshot` with an overlay of the entries changed since."""

    def __init__(self, position: int = 0, tree: bytes = b"", written_ns: int = 0,
                 entries: dict[str, IndexEntry] | None = None, dirty: bool = False) -> None:
        self.position = position
        self.tree = tree
        self.written_ns = written_ns
        self.dirty = dirty
        self.snapshot: Snapshot | None = None
        # entries changed since loading (None: removed); without a snapshot, all of them
        self.overlay: dict[str, IndexEntry | None] = dict(entries or {})
        self._touched: set[int] | None = None  # snapshot directories with overlay entries
        self._dstat: dict[int, tuple[int, int]] = {}  # snapshot directories' stats learned since loading

    @classmethod
    def load(cls, path: Path) -> Index:
        """The cache at ``path``; one that is missing or unreadable loads empty and dirty (rebuilt)."""
        try:
            with open(path, "rb") as f:
                # mapped, not read: no copy of the whole file (status never touches the object ids
                # but through the checksum). Safe because the file is never truncated in place: a
                # save renames a new file over it, and this mapping keeps the old one.
                snap = Snapshot(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        except (OSError, ValueError, KeyError, IndexError, struct.error):  # UnicodeDecodeError too
            return cls(dirty=True)
        position, written_ns, tree = snap.header
        idx = cls(position, tree, written_ns)
        idx.snapshot = snap
        return idx

    # -- reading -----------------------------------------------------------------------------

    def get(self, path: str) -> IndexEntry | None:
        """The entry for ``path`` (a copy when it comes from the snapshot: change it through the
        methods below, not in place)."""
        if path in self.overlay:
            return self.overlay[path]
        if self.snapshot is None:
            return None
        row = self.snapshot.row_of(path)
        return None if row is None else self.snapshot.entry(row)

    def base_of(self, path: str) -> Entry | None:
        e = self.get(path)
        return e.base if e is not None else None

    @property
    def entries(self) -> dict[str, IndexEntry]:
        """Every entry as one dict (built once from the snapshot; from then on the only copy)."""
        if self.snapshot is not None:
            snap, over = self.snapshot, self.overlay
            merged: dict[str, IndexEntry] = {}
            for d in range(len(snap.dirs)):
                for p, e in snap.dir_entries(d):
                    if p not in over:
                        merged[p] = e
            for p, e in over.items():
                if e is not None:
                    merged[p] = e
            self.overlay = merged  # type: ignore[assignment]
            self.snapshot = None
            self._touched = None
        return self.overlay  # type: ignore[return-value]

    def untouched_dirs(self) -> set[int]:
        """Snapshot directories none of whose entries changed since loading."""
        snap = self.snapshot
        if snap is None:
            return set()
        if self._touched is None:
            self._touched = {i for i in (snap.dir_id.get(_parent(p)[0]) for p in self.overlay) if i is not None}
        return set(range(len(snap.dirs))) - self._touched

    def iter_entries(self, skip_dirs: AbstractSet[int] = frozenset()) -> Iterator[tuple[str, IndexEntry]]:
        """Every entry except those in snapshot directories ``skip_dirs``, without building the dict."""
        snap, over = self.snapshot, self.overlay
        if snap is not None:
            for d in range(len(snap.dirs)):
                if d in skip_dirs:
                    continue
                for p, e in snap.dir_entries(d):
                    if p not in over:
                        yield p, e
        for p, e in over.items():
            if e is not None:
                yield p, e

    def learn_dirs(self, found: list[tuple[int, int, int]]) -> None:
        """Record (directory id, ctime_ns, inode) of snapshot directories whose listing was just
        found to hold exactly the cached names, so the next status need not list them."""
        snap = self.snapshot
        if snap is None:
            return
        for i, ctime, ino in found:
            if snap.dstat[i] != (ctime, ino):
                self._dstat[i] = (ctime, ino)
                self.dirty = True

    def cached(self, path: str, st: os.stat_result) -> Entry | None:
        e = self.get(path)
        if e is None or e.stat is None or e.work is None:
            return None
        if e.stat != (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode):
            return None
        if st.st_mtime_ns >= self.written_ns - RACY_NS:
            return None
        return e.work

    def base_entries(self) -> dict[str, Entry]:
        return {p: e.base for p, e in self.iter_entries() if e.base is not None}

    # -- changing ----------------------------------------------------------------------------

    def _own(self, path: str) -> IndexEntry | None:
        """The entry for ``path``, moved into the overlay so that it can be changed in place."""
        if path in self.overlay:
            return self.overlay[path]
        e = self.get(path)
        if e is not None:
            self._note(path)
            self.overlay[path] = e
        return e

    def _note(self, path: str) -> None:
        if self.snapshot is not None and self._touched is not None:
            i = self.snapshot.dir_id.get(_parent(path)[0])
            if i is not None:
                self._touched.add(i)

    def _drop(self, path: str) -> None:
        if self.snapshot is not None and self.snapshot.row_of(path) is not None:
            self.overlay[path] = None  # hides the snapshot's row
        else:
            self.overlay.pop(path, None)

    def remember(self, path: str, st: os.stat_result, work: Entry) -> None:
        e = self._own(path)
        if e is None:
            self._note(path)
            e = self.overlay[path] = IndexEntry(None)
        e.stat = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode)
        e.work = work
        self.dirty = True

    def set_base(self, path: str, base: Entry | None) -> None:
        e = self._own(path)
        if base is None:
            if e is not None:
                e.base = None
                if e.work is None:
                    self._drop(path)
        elif e is None:
            self._note(path)
            self.overlay[path] = IndexEntry(base)
        else:
            e.base = base
        self.dirty = True

    def forget_work(self, path: str) -> None:
        e = self._own(path)
        if e is not None:
            e.stat = None
            e.work = None
            if e.base is None:
                self._drop(path)
            self.dirty = True

    # -- writing -----------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the cache atomically (a temporary file renamed over it)."""
        self.written_ns = time.time_ns()
        data = self._encode()
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        self.dirty = False

    def _encode(self) -> bytes:
        snap = self.snapshot
        # directory -> entries to encode; None: copy the snapshot's block for it unchanged
        by_dir: dict[str, dict[str, IndexEntry] | None] = {}
        snap_work: dict[int, list[tuple[int, bytes]]] = {}  # snapshot directory -> its differing work ids
        if snap is not None:
            for r, oid in snap.work_oids.items():
                snap_work.setdefault(bisect.bisect_right(snap.first, r) - 1, []).append((r, oid))
            untouched = self.untouched_dirs()
            for i, d in enumerate(snap.dirs):
                if i in untouched:
                    by_dir[d] = None
                else:
                    by_dir[d] = {p.rpartition("/")[2]: e for p, e in snap.dir_entries(i) if p not in self.overlay}
        for p, e in self.overlay.items():
            if e is None:
                continue
            d, name = _parent(p)
            got = by_dir.get(d)
            if got is None:
                got = by_dir[d] = {}
            got[name] = e
        for d in list(by_dir):  # every ancestor of a directory, so that status walks through it
            while d:
                d = _parent(d)[0]
                if d in by_dir:
                    break
                by_dir[d] = {}
        dirs = sorted(by_dir)
        # a directory's stat vouches for its listing only while the cache expects the same entries
        # in it: its files (an untouched directory) and the same subdirectories
        same_subdirs = snap is not None and dirs == snap.dirs
        if snap is not None and not same_subdirs:
            before, after = _children(snap.dirs), _children(dirs)
        # the per-file columns grow in place: a list of small bytes per file would cost more than the file
        table, names = [], []
        stats, kinds, oids, work = bytearray(), bytearray(), bytearray(), bytearray()
        row = 0
        for d in dirs:
            got = by_dir[d]
            if got is None:
                assert snap is not None
                i = snap.dir_id[d]
                a, b = snap.names_at[i]
                n = snap.counts[i]
                first = snap.first[i]
                dstat = self._dstat.get(i, snap.dstat[i])
                if not same_subdirs and before.get(d) != after.get(d):
                    dstat = (0, 0)
                table.append(_DIR.pack(n, b - a, snap.max_mtime[i], snap.flags[i], *dstat))
                names.append(snap.raw[a:b])
                stats += snap.stats_block(i)
                k0 = snap.kinds_at + 2 * first
                kinds += snap.raw[k0:k0 + 2 * n]
                o0 = snap.oids_at + _OID * first
                oids += snap.raw[o0:o0 + _OID * n]
                for r, oid in snap_work.get(i, ()):
                    work += struct.pack("<I", row + r - first) + oid
                row += n
                continue
            order = sorted(got)
            blob = "\0".join(order).encode()
            max_mtime, flags = 0, ALL_PRESENT | CLEAN
            for name in order:
                e = got[name]
                b, w, st = e.base, e.work, e.stat
                if st is not None and w is not None:
                    try:
                        stats += STAT.pack(*st)
                    except struct.error:  # out of range: store no stat, so the file is always re-read
                        stats += bytes(STAT.size)
                        flags = 0
                    max_mtime = max(max_mtime, st[1])
                    if w != b:
                        flags &= ~CLEAN
                else:
                    stats += bytes(STAT.size)
                    flags = 0
                kinds += bytes((ord(b.kind) if b else 0, ord(w.kind) if w else 0))
                boid = b.oid if b else _EMPTY_OID
                if len(boid) != _OID or (w is not None and len(w.oid) != _OID):
                    raise ValueError(f"unexpected object id length for {name}")
                oids += boid
                if w is not None and w.oid != boid:
                    work += struct.pack("<I", row) + w.oid
                row += 1
            table.append(_DIR.pack(len(order), len(blob), max_mtime, flags, 0, 0))
            names.append(blob)
        dnames = "\0".join(dirs).encode()
        head = _HEAD.pack(MAGIC, self.position, self.written_ns, len(dirs), row, len(self.tree),
                          len(dnames), len(work) // (4 + _OID))
        body = b"".join([head, self.tree, dnames, *table, *names, stats, kinds, oids, work])
        return body + _CRC.pack(zlib.crc32(body))


def _children(dirs: list[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for d in dirs:
        if d:
            parent, name = _parent(d)
            out.setdefault(parent, set()).add(name)
    return out


# -- checking directories against the snapshot (the hot path of ``hif status``) -------------------

_STAT_KEY = operator.attrgetter("st_size", "st_mtime_ns", "st_ino", "st_mode")
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
PARALLEL_MIN_FILES = 20_000  # below this a second process costs more than it saves
WORKERS = min(8, os.cpu_count() or 1)  # processes checking directories: one per CPU


def fast_candidates(idx: Index) -> list[int]:
    """Snapshot directories that :func:`verify_dirs` may vouch for: unchanged since loading, every
    file present at the last scan, none modified within the racy window of the cache's writing."""
    snap = idx.snapshot
    if snap is None:
        return []
    racy = idx.written_ns - RACY_NS
    flags, max_mtime = snap.flags, snap.max_mtime
    return [i for i in sorted(idx.untouched_dirs()) if flags[i] & ALL_PRESENT and max_mtime[i] < racy]


Found = tuple[list[int], list[tuple[int, int, int]]]  # changed directories; learned directory stats
_LEARNED = struct.Struct("<IqQ")


def verify_dirs(root: str, snap: Snapshot, ids: list[int], racy: int) -> Found:
    """Which of directories ``ids`` may have changed: that cannot be opened (gone, or no longer a
    directory), whose entries are not exactly the cached names, or a file of which has another stat;
    and the (id, ctime_ns, inode) of the others whose listing was checked, to be cached.

    Per directory: an ``fstat``; when the directory's ctime and inode are those cached (older than
    ``racy``), no entry was added or removed since its listing was checked, so it is not listed
    again; otherwise one ``listdir``, only counted (if every cached name is still there, a listing of
    the same length has no other name). Then one ``lstat`` per file relative to the directory, and
    one comparison of all its stats, packed, with the cached rows.
    """
    bad: list[int] = []
    learned: list[tuple[int, int, int]] = []
    settled = time.time_ns() - RACY_NS  # a directory stat older than this can be cached
    lstat, key, pack = os.lstat, _STAT_KEY, STAT.pack
    for i in ids:
        d = snap.dirs[i]
        try:
            fd = os.open(f"{root}/{d}" if d else root, _OPEN_DIR)
        except OSError:
            bad.append(i)
            continue
        try:
            names = snap.bnames(i)
            dst = os.fstat(fd)  # before the listing: an entry added after it changes the ctime
            listed = (dst.st_ctime_ns, dst.st_ino) != snap.dstat[i] or dst.st_ctime_ns >= racy
            if listed and len(os.listdir(fd)) != len(names) + snap.subdirs[i] + (0 if d else 1):  # root: .hif
                bad.append(i)
                continue
            sts = [lstat(n, dir_fd=fd) for n in names]
            if b"".join(starmap(pack, map(key, sts))) != snap.stats_block(i):  # packed like the rows
                bad.append(i)
            elif listed and dst.st_ctime_ns < settled:
                learned.append((i, dst.st_ctime_ns, dst.st_ino))
        except (OSError, struct.error):  # struct.error: a stat out of the rows' range, never cached
            bad.append(i)
        finally:
            os.close(fd)
    return bad, learned


def _may_fork() -> bool:
    """Forking is safe only while this process runs no other thread."""
    if not hasattr(os, "fork"):
        return False
    threading = sys.modules.get("threading")
    return threading is None or threading.active_count() == 1


def verify_dirs_parallel(root: str, snap: Snapshot, ids: list[int], racy: int) -> Found:
    """:func:`verify_dirs` shared between this process and forked children on a large tree.

    The work is mostly ``lstat`` calls and the Python around them, so threads (one GIL) gain
    nothing, while processes scale with the CPUs. Each child sends back only what it found (a few
    bytes for an unchanged tree); the share of a child that fails in any way is checked here.
    ``HIF_PARALLEL_STAT=N`` uses N processes whatever the tree's size (``0`` or ``1``: none).
    """
    env = os.environ.get("HIF_PARALLEL_STAT", "")
    procs = min(int(env) if env.isdigit() else WORKERS, len(ids))
    if procs < 2 or (not env and sum(snap.counts[i] for i in ids) < PARALLEL_MIN_FILES) or not _may_fork():
        return verify_dirs(root, snap, ids, racy)
    children: list[tuple[int, int, list[int]]] = []  # pid, read end, ids; until reaped
    mine = ids[0::procs]
    try:
        for k in range(1, procs):
            share = ids[k::procs]
            r, w = os.pipe()
            try:
                pid = os.fork()
            except OSError:  # no more processes: this one does that share too
                os.close(r)
                os.close(w)
                mine += share
                continue
            if pid == 0:  # the child: no clean-up, no buffered output, nothing but the answer
                code = 1
                try:
                    os.close(r)
                    for _, other, _ in children:
                        os.close(other)
                    bad, learned = verify_dirs(root, snap, share, racy)
                    data = memoryview(b"".join([struct.pack(f"<II{len(bad)}I", len(bad), len(learned), *bad),
                                                *(_LEARNED.pack(*x) for x in learned)]))
                    while data:
                        data = data[os.write(w, data):]
                    code = 0
                finally:
                    os._exit(code)
            os.close(w)
            children.append((pid, r, share))
        bad, learned = verify_dirs(root, snap, mine, racy)
        while children:
            pid, r, share = children.pop(0)
            data = b""
            try:
                with os.fdopen(r, "rb") as reader:
                    data = reader.read()
            finally:
                _reap(pid)
            got = _answer(data)  # complete only if the child finished: it writes all at the end
            if got is None:  # the child failed: its share is checked here
                got = verify_dirs(root, snap, share, racy)
            bad += got[0]
            learned += got[1]
        return bad, learned
    finally:  # after an error here: each pipe closed first, so a child blocked writing fails, not waits
        for pid, r, _ in children:
            os.close(r)
            _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # already reaped, say by a SIGCHLD handler
        os.waitpid(pid, 0)


def _answer(data: bytes) -> Found | None:
    try:
        nbad, nlearned = struct.unpack_from("<II", data)
        if len(data) != 8 + 4 * nbad + _LEARNED.size * nlearned:
            return None
        return (list(struct.unpack_from(f"<{nbad}I", data, 8)),
                [tuple(x) for x in _LEARNED.iter_unpack(data[8 + 4 * nbad:])])  # type: ignore[misc]
    except struct.error:
        return None

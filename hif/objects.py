"""Content-addressed objects: canonical CBOR, addressed by the SHA-256 of those canonical bytes.

An object is a CBOR array whose first item names its kind: ``["blob", bytes]``,
``["tree", [[name, kind, id], ...]]`` or ``["snapshot", {...}]``. Ids are raw 32-byte digests inside
objects and lowercase hex everywhere a person or JSON sees them.

On disk (in the store) an object is one header byte then the body: ``0`` raw canonical bytes, ``1``
zstd-compressed canonical bytes. The id is always the hash of the *uncompressed* canonical bytes, so
compression never changes identity and every read re-verifies the hash.

Objects come from strangers (uploads, peers, a store others write), so expanding one is bounded
(docs/architecture.md, "Limits"): a blob expands to at most :data:`MAX_BLOB` bytes, any other object
to :data:`MAX_VALUE`, and no object to more than :data:`MAX_RATIO` times its compressed size beyond
:data:`RATIO_FLOOR` (real content does not compress that well; a decompression bomb does). The
expansion is streamed and stops at the bound, whatever size the frame header declares.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
import zstandard

from hif.errors import CorruptObject, NotFound, PreconditionFailed, TooLarge
from hif.paths import check_link_name, check_name
from hif.store.base import ObjectStore

RAW, ZSTD = 0, 1
_COMPRESS_MIN = 256
_ZC = zstandard.ZstdCompressor(level=3)
_ZD = zstandard.ZstdDecompressor()
MAX_BLOB = 256 << 20  # a file's content, expanded (the API's bodies carry at most 64 MiB compressed)
MAX_VALUE = 64 << 20  # a tree, snapshot or any other object, expanded
MAX_RATIO = 1000  # expanded / compressed bytes that real content does not reach...
RATIO_FLOOR = 4 << 20  # ...beyond this many expanded bytes (small objects may compress very well)
KEEP_RATIO = 64  # expansion kept in memory on the first pass (beyond it: counted, then expanded again)
KEEP_FLOOR = 1 << 20  # ...or this many bytes, whichever is more
_BLOB_HEAD = b"\x82\x64blob"  # the first bytes of every canonical blob
_OUT_STEP = 1 << 20  # bytes expanded per read (the most one read holds)

# Kinds of tree entries: regular file, executable file, symbolic link (blob holds the target), directory.
FILE, EXEC, LINK, DIR = "f", "x", "l", "d"
FILE_KINDS = (FILE, EXEC, LINK)


def encode(value: Any) -> bytes:
    """Canonical CBOR (RFC 8949 §4.2.1 deterministic encoding): equal values give equal bytes."""
    return cbor2.dumps(value, canonical=True)


def decode(data: bytes, *, max_items: int | None = None) -> Any:
    """Exactly one CBOR item: bytes after it are an error (``cbor2.loads`` ignores them), as is
    nesting deeper than cbor2's bound. With ``max_items``, a document of more items than that is
    refused (:class:`TooLarge`) before anything is built: each item becomes a Python object, and
    a megabyte of one-byte empty lists would take fifty."""
    if max_items is not None and len(data) > max_items:  # (each item takes a byte at least)
        count_items(data, max_items)
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(fp).decode()
    except Exception as e:  # cbor2 raises several types for malformed input
        raise CorruptObject(f"malformed CBOR: {e}") from None
    if fp.tell() != len(data):
        raise CorruptObject(f"malformed CBOR: {len(data) - fp.tell()} bytes after the item")
    return value


def count_items(data: bytes, limit: int) -> int:
    """The number of CBOR items (heads) in ``data``, counted by a linear walk that skips string
    payloads; :class:`TooLarge` as soon as it passes ``limit``. Malformed input is left to the
    decoder (the walk just stops)."""
    n = at = 0
    end = len(data)
    try:
        while at < end:
            b = data[at]
            n += 1
            if n > limit:
                raise TooLarge(f"a CBOR document of more than {limit} items")
            info = b & 31
            if info < 24:
                arg, at = info, at + 1
            elif info < 28:
                width = 1 << (info - 24)
                arg, at = int.from_bytes(data[at + 1:at + 1 + width], "big"), at + 1 + width
            else:  # indefinite length (31) or reserved: no argument
                arg, at = 0, at + 1
            if b >> 5 in (2, 3) and info != 31:  # a definite byte or text string: skip its payload
                at += arg
    except IndexError:
        pass
    return n


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hexid(oid: bytes) -> str:
    return oid.hex()


def parse_id(text: str) -> bytes:
    try:
        oid = bytes.fromhex(text)
    except ValueError:
        raise CorruptObject(f"not an object id: {text!r}") from None
    if len(oid) != 32:
        raise CorruptObject(f"not an object id: {text!r}")
    return oid


def blob_bytes(content: bytes) -> bytes:
    return encode(["blob", content])


def blob_id(content: bytes) -> bytes:
    return digest(blob_bytes(content))


def pack(canonical: bytes) -> bytes:
    """Storage form: compress when it helps, but never past :data:`MAX_RATIO` (which reads refuse):
    content that compresses that well (a file of zeros) is stored raw."""
    if len(canonical) >= _COMPRESS_MIN:
        packed = _ZC.compress(canonical)
        if len(packed) < len(canonical) * 0.9 and len(canonical) <= _expansion_cap(len(packed)):
            return bytes([ZSTD]) + packed
    return bytes([RAW]) + canonical


def _expansion_cap(compressed: int) -> int:
    return max(RATIO_FLOOR, MAX_RATIO * compressed)


def _size_cap(head: bytes) -> int:
    return MAX_BLOB if head.startswith(_BLOB_HEAD) else MAX_VALUE


def unpack(stored: bytes) -> bytes:
    """Canonical bytes of a stored object, expanded under the limits above (:class:`TooLarge` past
    them, :class:`CorruptObject` for anything malformed)."""
    if not stored:
        raise CorruptObject("empty object")
    if stored[0] == RAW:
        if len(stored) - 1 > _size_cap(stored[1:9]):
            raise TooLarge(f"an object of {len(stored) - 1} bytes is over the size limit")
        return stored[1:]
    if stored[0] == ZSTD:
        return _expand(memoryview(stored)[1:])
    raise CorruptObject(f"unknown object encoding {stored[0]}")


def expand_bounded(data: bytes, limit: int) -> bytes:
    """One zstd frame expanded to at most ``limit`` bytes, for stored data that is not an object
    (the node's auth database): the same streaming as objects, without their kinds and ratio.
    :class:`TooLarge` as soon as it passes ``limit``, :class:`CorruptObject` when malformed."""
    return _expand(memoryview(data), limit)


def _expand(frame: memoryview, limit: int | None = None) -> bytes:
    """Decompress one zstd frame under the limits (an object's, or ``limit`` bytes). Output is
    kept while it stays within :data:`KEEP_RATIO` times the input (real content); past that it is
    only counted, and only a frame that ends within the limits is expanded again, kept: a bomb
    costs a few MiB at most."""
    end = _frame_end(frame)
    if end != len(frame):
        # trailing bytes after the frame mean the stored object was altered: refuse them
        raise CorruptObject("undecodable object: bytes after the zstd frame")
    ratio_cap = _expansion_cap(len(frame)) if limit is None else None
    cap = MAX_BLOB if limit is None else limit
    try:  # a small frame that declares its size, within every bound: expanded in one call
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as e:
        raise CorruptObject(f"undecodable object: {e}") from None
    if 0 <= size <= min(KEEP_FLOOR, cap):  # (KEEP_FLOOR is below every object's bounds)
        try:  # allocates the declared size; a frame holding more than it declares is an error
            out = _ZD.decompress(frame)
        except zstandard.ZstdError as e:
            raise CorruptObject(f"undecodable object: {e}") from None
        if len(out) != size:
            raise CorruptObject("undecodable object: the zstd frame holds another size than it declares")
        return out
    keep = max(KEEP_FLOOR, KEEP_RATIO * len(frame))
    out = _decompress(frame, ratio_cap, keep, cap)
    if out is None:  # compressed unusually well, within the limits: expand again, keeping it
        out = _decompress(frame, ratio_cap, cap, cap)
        assert out is not None
    return out


def _frame_end(frame: memoryview) -> int:
    """Where the zstd frame at the start of ``frame`` ends, walking its block headers (cheap: one
    step per block); a truncated or malformed frame is a CorruptObject. The decompressor's stream
    reader says neither (it stops quietly), hence the walk."""
    try:
        at = zstandard.frame_header_size(frame)
        checksum = zstandard.get_frame_parameters(frame).has_checksum
    except zstandard.ZstdError as e:
        raise CorruptObject(f"undecodable object: {e}") from None
    while True:
        if at + 3 > len(frame):
            raise CorruptObject("undecodable object: the zstd frame is truncated")
        header = int.from_bytes(frame[at:at + 3], "little")
        last, kind, size = header & 1, (header >> 1) & 3, header >> 3
        if kind == 3:
            raise CorruptObject("undecodable object: a reserved zstd block type")
        at += 3 + (1 if kind == 1 else size)  # an RLE block holds one byte, others their size
        if last:
            end = at + (4 if checksum else 0)
            if end > len(frame):
                raise CorruptObject("undecodable object: the zstd frame is truncated")
            return end


def _decompress(frame: memoryview, ratio_cap: int | None, keep: int, limit: int) -> bytes | None:
    """The frame's content, or None when it passed ``keep`` bytes (then it was only counted). Read
    :data:`_OUT_STEP` bytes at a time, never more than one past the bound, whatever the frame's
    header declares (never trusted). ``ratio_cap`` None: bytes that are not an object, bounded by
    ``limit`` alone (no kind read from their head)."""
    cap = limit if ratio_cap is None else min(limit, ratio_cap)
    out: bytearray | None = bytearray()
    head = b""
    n = 0
    try:
        with _ZD.stream_reader(frame, read_across_frames=False) as reader:
            while piece := reader.read(min(_OUT_STEP, cap + 1 - n)):
                n += len(piece)
                if ratio_cap is not None and len(head) < 16:
                    head += piece[:16 - len(head)]
                    if len(head) >= 16:
                        cap = min(cap, _size_cap(head))
                if out is not None:
                    if n > keep:
                        out = None
                    else:
                        out += piece
                if n > cap:
                    raise TooLarge(_too_large(len(frame), cap, ratio_cap))
    except zstandard.ZstdError as e:
        raise CorruptObject(f"undecodable object: {e}") from None
    return None if out is None else bytes(out)


def _too_large(compressed: int, cap: int, ratio_cap: int | None) -> str:
    if cap == ratio_cap:
        return (f"an object of {compressed} compressed bytes expands more than {MAX_RATIO} times "
                "(a decompression bomb?)")
    return f"an object expands past the {cap >> 20} MiB limit"


@dataclass(frozen=True, slots=True)
class Entry:
    """A tree entry's target: its kind and object id."""

    kind: str
    oid: bytes

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.oid.hex()}


Tree = dict[str, Entry]  # name -> entry, for one directory


def _cbor_head(major: int, n: int) -> bytes:
    """A CBOR item head with the shortest length encoding (as RFC 8949 deterministic encoding wants)."""
    if n < 24:
        return bytes([major << 5 | n])
    if n < 0x100:
        return bytes([major << 5 | 24, n])
    if n < 0x10000:
        return bytes([major << 5 | 25]) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes([major << 5 | 26]) + n.to_bytes(4, "big")
    return bytes([major << 5 | 27]) + n.to_bytes(8, "big")


_TREE_HEAD = encode("tree")
_BLOB_START = b"\x82" + encode("blob")  # how a blob's canonical bytes begin
_TREE_START = b"\x82" + _TREE_HEAD
_KINDS_KEPT = 1 << 16  # object ids whose kind an ObjectDB remembers
_KINDS_READ = 256  # objects read at once to learn their kinds (bounds the memory they take)
_KIND_BYTES = {k: encode(k) for k in ("f", "x", "l", "d")}


def tree_bytes(entries: Tree) -> bytes:
    """``encode(["tree", [[name, kind, id], ...]])`` with entries in UTF-8 name order, built directly:
    trees are the most frequent object written (an import writes one per changed directory per
    commit) and this is the same canonical encoding at a third of the cost (checked in tests)."""
    parts = [b"\x82", _TREE_HEAD, _cbor_head(4, len(entries))]
    for name in sorted(entries, key=str.encode):
        e = entries[name]
        raw = name.encode()
        kind = _KIND_BYTES.get(e.kind)
        if kind is None or len(e.oid) != 32:
            return encode(["tree", [[n, entries[n].kind, entries[n].oid]
                                    for n in sorted(entries, key=str.encode)]])
        parts += (b"\x83", _cbor_head(3, len(raw)), raw, kind, b"\x58\x20", e.oid)
    return b"".join(parts)


def canonical_kind(start: bytes) -> str:
    """The kind of an object from the first bytes of its canonical form: "blob", "tree" or "other"."""
    if start.startswith(_BLOB_START) and start[len(_BLOB_START):][:1] and start[len(_BLOB_START)] >> 5 == 2:
        return "blob"  # and its body is a byte string
    if start.startswith(_TREE_START):
        return "tree"
    return "other"


def blob_content(canonical: bytes) -> bytes | None:
    """The content of a blob's canonical bytes, cut out rather than decoded (blame reads hundreds of
    versions of a big file: the decoder's copy is a tenth of its reading), or None unless they are
    exactly ``["blob", <definite-length byte string>]`` with nothing after it (then what the decoder
    would give is the same bytes; anything else is left to the decoder)."""
    at = len(_BLOB_START)
    if not canonical.startswith(_BLOB_START) or len(canonical) <= at or canonical[at] >> 5 != 2:
        return None
    info = canonical[at] & 31
    if info < 24:
        size, at = info, at + 1
    elif info < 28:
        width = 1 << (info - 24)
        size, at = int.from_bytes(canonical[at + 1:at + 1 + width], "big"), at + 1 + width
    else:
        return None
    return canonical[at:] if at + size == len(canonical) else None


def stored_kind(stored: bytes) -> str:
    """``canonical_kind`` of an object in its stored form, decompressing only its first bytes."""
    return canonical_kind(_head(stored))


def _head(stored: bytes, size: int = 8) -> bytes:
    """The first ``size`` canonical bytes of a stored object, decompressing no more than needed."""
    if not stored:
        return b""
    if stored[0] == RAW:
        return stored[1:1 + size]
    if stored[0] == ZSTD:
        try:
            with _ZD.stream_reader(stored[1:]) as reader:
                return reader.read(size)
        except zstandard.ZstdError:
            return b""
    return b""


def check_object(kind: str, value: Any) -> Any:
    """Verify an object decodes to the expected kind and shape."""
    if not isinstance(value, list) or len(value) != 2 or value[0] != kind:
        raise CorruptObject(f"expected a {kind} object")
    return value[1]


class ObjectDB:
    """Objects of one repository, in a store under ``<prefix>objects/``; trees are cached (immutable)."""

    def __init__(self, store: ObjectStore, prefix: str, *, cache_size: int = 4096) -> None:
        self.store = store
        self.prefix = prefix + "objects/"
        self._trees: OrderedDict[bytes, Tree] = OrderedDict()
        self._cache_size = cache_size
        self._known: set[bytes] = set()
        self._kinds: dict[bytes, str] = {}  # object id -> "blob" | "tree" | "other", as seen here

    def key(self, oid: bytes) -> str:
        return self.prefix + oid.hex()

    async def put_canonical(self, canonical: bytes) -> bytes:
        """Store canonical bytes; idempotent, so a retry or a concurrent writer of the same object is fine."""
        oid = digest(canonical)
        if oid in self._known:
            return oid
        with contextlib.suppress(PreconditionFailed):
            await self.store.put(self.key(oid), pack(canonical), if_none_match=True)
        self._known.add(oid)
        self.note_kind(oid, canonical_kind(canonical))
        return oid

    async def put_blob(self, content: bytes) -> bytes:
        return await self.put_canonical(blob_bytes(content))

    async def put_blobs(self, contents: Sequence[bytes]) -> None:
        """Store several blobs, the new ones as one ``create_all`` batch: durable together (on the
        embedded store two file-system syncs for the batch, not two fsyncs per blob), and none
        visible before its bytes are on disk. If one exists already (stored before, or by a
        concurrent writer), each is put on its own instead."""
        items: dict[bytes, bytes] = {}  # id -> stored form: the canonical copy is dropped at once
        for content in contents:
            canonical = blob_bytes(content)
            oid = digest(canonical)
            if oid not in self._known and oid not in items:
                items[oid] = pack(canonical)
            del canonical
        if not items:
            return
        try:
            await self.store.create_all([(self.key(oid), packed) for oid, packed in items.items()])
        except PreconditionFailed:
            for content in contents:
                await self.put_blob(content)
            return
        for oid in items:
            self._known.add(oid)
            self.note_kind(oid, "blob")

    async def put_tree(self, entries: Tree) -> bytes:
        oid = await self.put_canonical(tree_bytes(entries))
        self.remember_tree(oid, entries)
        return oid

    async def put_value(self, kind: str, value: Any) -> bytes:
        return await self.put_canonical(encode([kind, value]))

    async def has(self, oid: bytes) -> bool:
        if oid in self._known or oid in self._kinds:  # stored or read through this handle: it exists
            return True
        return await self.store.head(self.key(oid)) is not None

    async def has_many(self, oids: Sequence[bytes]) -> list[bool]:
        """Whether each object is stored, in order: one store call for all of them (on disk one
        ``stat`` each, in one worker-thread hop), not one ``head`` per object."""
        unknown = [oid for oid in oids if oid not in self._known]
        found = dict(zip(unknown, await self.store.has_many([self.key(o) for o in unknown]), strict=True))
        return [oid in self._known or found[oid] for oid in oids]

    async def get_canonical(self, oid: bytes) -> bytes:
        try:
            stored = await self.store.get(self.key(oid))
        except NotFound:
            raise NotFound(f"object {oid.hex()} is missing") from None
        try:
            canonical = unpack(stored)
        except (CorruptObject, TooLarge) as e:  # stored by someone else: unreadable, not too large
            raise CorruptObject(f"object {oid.hex()} is corrupt ({e})") from None
        if digest(canonical) != oid:
            raise CorruptObject(f"object {oid.hex()} is corrupt (hash mismatch)")
        return canonical

    async def get_value(self, kind: str, oid: bytes) -> Any:
        return check_object(kind, decode(await self.get_canonical(oid)))

    async def get_blob(self, oid: bytes) -> bytes:
        canonical = await self.get_canonical(oid)
        content = blob_content(canonical)
        if content is None:  # not the plain form: the decoder says what it is
            content = check_object("blob", decode(canonical))
            if not isinstance(content, bytes):
                raise CorruptObject(f"object {oid.hex()} is not a blob")
        self.note_kind(oid, "blob")
        return content

    def note_kind(self, oid: bytes, kind: str) -> None:
        """Remember what ``oid`` is (seen written or read here), so that ``check_kinds`` need not read it
        and ``has`` need not ask."""
        if len(self._kinds) >= _KINDS_KEPT:
            self._kinds.clear()
        self._kinds[oid] = kind

    async def check_kinds(self, entries: Iterable[tuple[str, Entry]],
                          known: Mapping[bytes, str] | None = None) -> None:
        """Every ``(path, entry)`` names an object of its kind: a file entry a blob, a directory a
        tree. Objects seen here already are not read again; the others are read together, and only
        their first bytes are decompressed. Raises CorruptObject naming the first bad path."""
        todo: dict[bytes, list[tuple[str, Entry]]] = {}
        for path, entry in entries:
            want = "tree" if entry.kind == DIR else "blob"
            if entry.kind not in (FILE, EXEC, LINK, DIR):
                raise CorruptObject(f"{path}: unknown entry kind {entry.kind!r}")
            if entry.oid == EMPTY_TREE and want == "tree":
                continue
            seen = (known or {}).get(entry.oid) or self._kinds.get(entry.oid) or (
                "tree" if entry.oid in self._trees else None)
            if seen is None:
                todo.setdefault(entry.oid, []).append((path, entry))
            elif seen != want:
                raise CorruptObject(f"{path}: names object {entry.oid.hex()}, which is not a {want}")
        if not todo:
            return
        ids = list(todo)
        for i in range(0, len(ids), _KINDS_READ):
            chunk = ids[i:i + _KINDS_READ]
            self._take_kinds(todo, chunk, await self.store.get_many([self.key(oid) for oid in chunk]))

    def _take_kinds(self, todo: dict[bytes, list[tuple[str, Entry]]], ids: list[bytes],
                    found: list[bytes | None]) -> None:
        for oid, stored in zip(ids, found, strict=True):
            if stored is None:
                raise CorruptObject(f"{todo[oid][0][0]}: names object {oid.hex()}, which is missing")
            kind = stored_kind(stored)
            self.note_kind(oid, kind)
            for p, e in todo[oid]:
                want = "tree" if e.kind == DIR else "blob"
                if kind != want:
                    raise CorruptObject(f"{p}: names object {oid.hex()}, which is not a {want}")

    async def get_tree(self, oid: bytes) -> Tree:
        if oid == EMPTY_TREE:
            return {}
        cached = self._trees.get(oid)
        if cached is not None:
            self._trees.move_to_end(oid)
            return cached
        rows = await self.get_value("tree", oid)
        tree = parse_tree_rows(rows, oid)
        self.remember_tree(oid, tree)
        return tree

    async def prefetch(self, ids: Iterable[bytes]) -> None:
        """Make ``ids`` cheap to read. A store holds every object already; a forge clone's cache
        (``hif.forge.remote.RemoteObjectDB``) fetches the missing ones in batches."""

    async def prefetch_diff(self, old: bytes, new: bytes) -> None:
        """Make what moving from tree ``old`` to tree ``new`` reads cheap (see ``prefetch``)."""

    def cached_tree(self, oid: bytes) -> Tree | None:
        return {} if oid == EMPTY_TREE else self._trees.get(oid)

    def remember_tree(self, oid: bytes, tree: Tree) -> None:
        self._trees[oid] = tree
        if len(self._trees) > self._cache_size:
            self._trees.popitem(last=False)


def check_stored(stored: bytes) -> tuple[bytes, bytes, Any]:
    """An object in its stored form as another party sent it: (id, canonical bytes, decoded value).
    It must decode to a ``[kind, value]`` pair, and a tree may name only safe entries; raises
    CorruptObject or InvalidPath otherwise (the id is computed, so it cannot lie)."""
    canonical = unpack(stored)
    oid, value = check_canonical(canonical)
    return oid, canonical, value


def check_canonical(canonical: bytes, names: set[str] | None = None) -> tuple[bytes, Any]:
    """:func:`check_stored` of bytes already expanded: (id, decoded value). ``names``: see
    :func:`parse_tree_rows`."""
    value = decode(canonical)
    if not isinstance(value, list) or len(value) != 2 or not isinstance(value[0], str):
        raise CorruptObject("an object is a [kind, value] pair")
    oid = digest(canonical)
    if value[0] == "tree":
        parse_tree_rows(value[1], oid, names)
    return oid, value


def parse_tree_rows(rows: Any, oid: bytes, names: set[str] | None = None) -> Tree:
    """The entries of a tree from outside, each checked. ``names``: entry names already found
    safe, kept by a caller that checks many versions of the same directories (a backfill), so each
    name is checked once rather than once per tree naming it; names found safe are added to it."""
    if not isinstance(rows, list):
        raise CorruptObject(f"tree {oid.hex()} is malformed")
    tree: Tree = {}
    for row in rows:
        if (
            not isinstance(row, list)
            or len(row) != 3
            or not isinstance(row[0], str)
            or row[1] not in (FILE, EXEC, LINK, DIR)
            or not isinstance(row[2], bytes)
            or len(row[2]) != 32
        ):
            raise CorruptObject(f"tree {oid.hex()} has a malformed entry")
        if names is None:
            check_name(row[0])
        elif row[0] not in names:
            names.add(check_name(row[0]))
        if row[1] == LINK:
            check_link_name(row[0])
        tree[row[0]] = Entry(row[1], row[2])
    return tree


EMPTY_TREE_BYTES = tree_bytes({})
EMPTY_TREE = digest(EMPTY_TREE_BYTES)

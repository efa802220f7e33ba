"""Property tests of the content-addressed layer: canonical CBOR, object storage and Merkle trees."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hif.errors import CorruptObject, InvalidPath
from hif.objects import (
    DIR,
    EMPTY_TREE,
    EXEC,
    FILE,
    LINK,
    RAW,
    ZSTD,
    Entry,
    ObjectDB,
    blob_content,
    blob_id,
    check_object,
    decode,
    digest,
    encode,
    pack,
    parse_tree_rows,
)
from hif.store import EmbeddedStore
from hif.tree import apply, diff, lookup, lookup_file, walk

T = TypeVar("T")
PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ------------------------------------------------------------------------------------

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=20),
    st.binary(max_size=40),
    st.booleans(),
    st.none(),
)
cbor_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-1000, 1000)), children, max_size=5),
    ),
    max_leaves=30,
)

NAMES = ["a", "b", "c", "a.b", "d-e"]
paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
contents = st.binary(max_size=30)
kinds = st.sampled_from([FILE, FILE, EXEC])


def _without_prefix_clashes(files: dict[str, tuple[str, bytes]]) -> dict[str, tuple[str, bytes]]:
    """Drop paths that would be both a file and a directory (shortest path wins)."""
    kept: dict[str, tuple[str, bytes]] = {}
    for path in sorted(files, key=lambda p: (p.count("/"), p)):
        parts = path.split("/")
        if any("/".join(parts[:i]) in kept for i in range(1, len(parts))):
            continue
        kept[path] = files[path]
    return kept


file_maps = st.dictionaries(paths, st.tuples(kinds, contents), max_size=12).map(_without_prefix_clashes)


# -- helpers ---------------------------------------------------------------------------------------


def with_db(body: Callable[[ObjectDB, EmbeddedStore, Path], Awaitable[T]]) -> T:
    """Run ``body`` against a fresh embedded store in a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"

        async def main() -> T:
            store = EmbeddedStore(root, create=True, fsync=False)
            try:
                return await body(ObjectDB(store, "repos/t/r/"), store, root)
            finally:
                await store.close()

        return asyncio.run(main())


async def entries_of(db: ObjectDB, files: dict[str, tuple[str, bytes]]) -> dict[str, Entry]:
    return {p: Entry(kind, await db.put_blob(data)) for p, (kind, data) in files.items()}


async def listing(db: ObjectDB, tree: bytes) -> list[tuple[str, Entry]]:
    return [item async for item in walk(db, tree)]


# -- canonical CBOR --------------------------------------------------------------------------------


@PROPS
@given(cbor_values)
def test_cbor_round_trip(value: Any) -> None:
    data = encode(value)
    assert decode(data) == value
    assert encode(decode(data)) == data  # decoding then encoding is the identity on canonical bytes


@PROPS
@given(st.dictionaries(st.text(max_size=6), cbor_values, max_size=8), st.randoms(use_true_random=False))
def test_cbor_equal_values_equal_bytes(value: dict[str, Any], rnd: Any) -> None:
    items = list(value.items())
    rnd.shuffle(items)
    shuffled = dict(items)  # same mapping, another insertion order
    assert shuffled == value
    assert encode(shuffled) == encode(value)
    assert encode([shuffled, {"k": shuffled}]) == encode([value, {"k": value}])


@PROPS
@given(cbor_values, cbor_values)
def test_cbor_different_values_different_bytes(a: Any, b: Any) -> None:
    # True == 1 and False == 0 in Python but not in CBOR; compare with the types included
    if encode(a) == encode(b):
        assert decode(encode(a)) == decode(encode(b))


def test_decode_garbage_is_corrupt() -> None:
    with pytest.raises(CorruptObject):
        decode(b"\xff\xff\x00")
    with pytest.raises(CorruptObject):
        decode(encode([1, 2, 3])[:-1])


# -- objects in a store ----------------------------------------------------------------------------


big_blobs = st.tuples(st.binary(min_size=1, max_size=64), st.integers(min_value=8, max_value=4000)).map(
    lambda t: t[0] * t[1]
)


@PROPS
@given(st.lists(st.one_of(st.binary(max_size=300), big_blobs), min_size=1, max_size=6))
def test_object_put_get_round_trip(blobs: list[bytes]) -> None:
    async def body(db: ObjectDB, store: EmbeddedStore, root: Path) -> None:
        ids = [await db.put_blob(b) for b in blobs]
        again = [await db.put_blob(b) for b in blobs]  # idempotent
        assert ids == again
        fresh = ObjectDB(store, "repos/t/r/")  # no cache: read from disk
        for b, oid in zip(blobs, ids, strict=True):
            assert oid == blob_id(b)
            assert await fresh.get_blob(oid) == b
            assert await fresh.has(oid)
            stored = await store.get(fresh.key(oid))
            assert stored[0] in (RAW, ZSTD)
            if len(b) >= 4096 and len(set(b)) <= 64:
                assert stored[0] == ZSTD, "a large repetitive blob is stored compressed"
                assert len(stored) < len(b)

    with_db(body)


def test_large_blob_is_compressed_and_round_trips() -> None:
    data = b"the same line again and again\n" * 50_000

    async def body(db: ObjectDB, store: EmbeddedStore, root: Path) -> None:
        oid = await db.put_blob(data)
        stored = await store.get(db.key(oid))
        assert stored[0] == ZSTD and len(stored) < len(data) // 10
        assert await ObjectDB(store, "repos/t/r/").get_blob(oid) == data

    with_db(body)


@PROPS
@given(
    st.one_of(st.binary(max_size=200), big_blobs),
    st.integers(min_value=0),
    st.sampled_from(["flip", "truncate", "extend", "swap"]),
    st.integers(min_value=1, max_value=255),
)
def test_altered_object_is_corrupt(blob: bytes, where: int, how: str, xor: int) -> None:
    async def body(db: ObjectDB, store: EmbeddedStore, root: Path) -> None:
        oid = await db.put_blob(blob)
        other = await db.put_blob(blob + b"!")
        path = root / "data" / db.key(oid)
        stored = path.read_bytes()
        if how == "flip":
            i = where % len(stored)
            altered = stored[:i] + bytes([stored[i] ^ xor]) + stored[i + 1 :]
        elif how == "truncate":
            altered = stored[: where % len(stored)]
        elif how == "extend":
            altered = stored + bytes([xor]) * (1 + where % 7)
        else:
            altered = (root / "data" / db.key(other)).read_bytes()
        assert altered != stored
        path.unlink()  # the stored file may be a hard link; never alter another name's bytes
        path.write_bytes(altered)
        fresh = ObjectDB(store, "repos/t/r/")
        with pytest.raises(CorruptObject):
            await fresh.get_blob(oid)

    with_db(body)


def test_altered_tree_is_corrupt() -> None:
    async def body(db: ObjectDB, store: EmbeddedStore, root: Path) -> None:
        tree = await apply(db, EMPTY_TREE, {"x/y": Entry(FILE, await db.put_blob(b"y"))})
        path = root / "data" / db.key(tree)
        stored = path.read_bytes()
        path.unlink()
        path.write_bytes(stored[:-1] + bytes([stored[-1] ^ 1]))
        with pytest.raises(CorruptObject):
            await ObjectDB(store, "repos/t/r/").get_tree(tree)

    with_db(body)


def _blob_spellings() -> list[bytes]:
    """Canonical blobs of every head width, and other spellings of (or near) a blob: longer heads
    than needed, an indefinite-length string, bytes after the item, cut heads and bodies, a text
    string, a third item, another kind, nothing."""
    out = [encode(["blob", b"x" * n]) for n in (0, 1, 23, 24, 255, 256, 65535, 65536)]
    start = b"\x82\x64blob"
    out += [start + b"\x58\x03abc", start + b"\x59\x00\x03abc", start + b"\x5a\x00\x00\x00\x03abc",
            start + b"\x5b" + (3).to_bytes(8, "big") + b"abc", start + b"\x5f\x41a\x42bc\xff",
            start + b"\x43abc\x00", start + b"\x43ab", start + b"\x59\x00", start + b"\x58", start + b"\x5c",
            start + b"\x63abc", start, b"\x83\x64blob\x43abc\x00", encode(["tree", []]), b"",
            start + b"\x5b" + (1 << 63).to_bytes(8, "big") + b"abc"]
    return out


def test_a_blob_cut_out_is_what_the_decoder_gives_for_every_spelling() -> None:
    """``get_blob`` cuts a blob's content out of its bytes instead of decoding them: for any bytes,
    it gives what the decoder gives, or is refused as the decoder refuses them."""

    def decoded(canonical: bytes) -> bytes | None:
        try:
            content = check_object("blob", decode(canonical))
        except CorruptObject:
            return None
        return content if isinstance(content, bytes) else None

    async def body(db: ObjectDB, store: EmbeddedStore, root: Path) -> None:
        spellings = _blob_spellings()
        for canonical in spellings:
            cut = blob_content(canonical)
            assert cut is None or cut == decoded(canonical), canonical[:16]
            oid = digest(canonical)
            await store.put(db.key(oid), pack(canonical))
            want = decoded(canonical)
            if want is None:
                with pytest.raises(CorruptObject):
                    await ObjectDB(store, "repos/t/r/").get_blob(oid)
            else:
                assert await ObjectDB(store, "repos/t/r/").get_blob(oid) == want
        # every canonical blob is cut out; an indefinite-length string is left to the decoder
        assert all(blob_content(c) is not None for c in spellings[:8])
        assert blob_content(b"\x82\x64blob\x5f\x41a\x42bc\xff") is None

    with_db(body)


# -- trees -----------------------------------------------------------------------------------------


@PROPS
@given(file_maps)
def test_tree_build_and_walk(files: dict[str, tuple[str, bytes]]) -> None:
    async def body(db: ObjectDB, store: EmbeddedStore, root: Path) -> None:
        want = await entries_of(db, files)
        tree = await apply(db, EMPTY_TREE, want)
        got = await listing(db, tree)
        assert len(got) == len({p for p, _ in got})
        assert dict(got) == want
        for p, e in want.items():
            assert await lookup_file(db, tree, p) == e
        if not want:
            assert tree == EMPTY_TREE
        # the same map built in another order (and in another store) gives the same root id
        tree2 = await apply(db, EMPTY_TREE, dict(reversed(list(want.items()))))
        assert tree2 == tree
        one_by_one = EMPTY_TREE
        for p, e in sorted(want.items(), reverse=True):
            one_by_one = await apply(db, one_by_one, {p: e})
        assert one_by_one == tree

    with_db(body)


@PROPS
@given(file_maps, file_maps)
def test_tree_diff_and_apply(files1: dict[str, tuple[str, bytes]], files2: dict[str, tuple[str, bytes]]) -> None:
    async def body(db: ObjectDB, store: EmbeddedStore, root: Path) -> None:
        m1, m2 = await entries_of(db, files1), await entries_of(db, files2)
        t1 = await apply(db, EMPTY_TREE, m1)
        t2 = await apply(db, EMPTY_TREE, m2)
        d = [item async for item in diff(db, t1, t2)]
        paths = [p for p, _, _ in d]
        assert len(paths) == len(set(paths)), f"a path reported twice: {paths}"
        expected = {p for p in m1.keys() | m2.keys() if m1.get(p) != m2.get(p)}
        assert set(paths) == expected
        for p, old, new in d:
            assert old == m1.get(p)
            assert new == m2.get(p)
        changes = {p: new for p, _, new in d}
        assert await apply(db, t1, changes) == t2
        back = {p: old for p, old, _ in d}
        assert await apply(db, t2, back) == t1
        assert [x async for x in diff(db, t1, t1)] == []
        assert (t1 == t2) == (m1 == m2)

    with_db(body)


def test_file_replaced_by_directory_and_back() -> None:
    async def body(db: ObjectDB, store: EmbeddedStore, root: Path) -> None:
        f = Entry(FILE, await db.put_blob(b"file"))
        g = Entry(FILE, await db.put_blob(b"inner"))
        keep = Entry(FILE, await db.put_blob(b"keep"))
        t0 = await apply(db, EMPTY_TREE, {"a/x": f, "z": keep})
        # a file replaced by a directory (the file is deleted, a file appears below its name)
        t1 = await apply(db, t0, {"a/x": None, "a/x/y": g})
        assert dict(await listing(db, t1)) == {"a/x/y": g, "z": keep}
        assert (await lookup(db, t1, "a/x")).kind == DIR
        # ... and implicitly: writing below a file replaces the file by a directory
        t1b = await apply(db, t0, {"a/x/y": g})
        assert t1b == t1
        # and back: the directory replaced by a file
        t2 = await apply(db, t1, {"a/x": f, "a/x/y": None})
        assert t2 == t0
        # setting a file where a directory stands replaces the whole directory
        t3 = await apply(db, t1, {"a/x": f})
        assert t3 == t0
        # deleting a path below a file leaves the file alone
        assert await apply(db, t0, {"a/x/y": None}) == t0
        # diff across the change reports the file and the directory's files
        d = [x async for x in diff(db, t0, t1)]
        assert d == [("a/x", f, None), ("a/x/y", None, g)]
        d = [x async for x in diff(db, t1, t0)]
        assert d == [("a/x/y", g, None), ("a/x", None, f)]
        # deleting the last file of a directory removes the directory
        assert await apply(db, t1, {"a/x/y": None, "z": None}) == EMPTY_TREE

    with_db(body)


@pytest.mark.parametrize(
    "bad",
    [
        ["..", FILE], [".git", DIR], [".GIT", FILE], ["git~1", DIR], [".hif", DIR], ["a/b", FILE], ["", FILE],
        ["a\x00b", FILE], ["a\\b", FILE], ["x:$DATA", FILE], [".gitmodules", LINK], ["GITMOD~1", LINK],
    ],
)
def test_tree_rows_checked_once_per_name_still_refuse_bad_ones(bad: list[str]) -> None:
    """A backfill keeps the names it found safe (``names``) so that the hundred versions of one
    directory check each name once: an unsafe name is refused whether or not the cache holds safe
    ones, a name cached from a file is still checked when a symbolic link has it, and a name
    refused as a name never enters the cache (a link's name may: it is a fine name for a file)."""
    oid = bytes(32)
    names: set[str] = set()
    safe = [["a", FILE, oid], ["d", DIR, oid], [".gitmodules", FILE, oid], ["gitmod~1", FILE, oid]]
    assert set(parse_tree_rows(safe, oid, names)) == {"a", "d", ".gitmodules", "gitmod~1"}
    assert names == {"a", "d", ".gitmodules", "gitmod~1"}
    for attempt in range(2):  # a second time too: nothing about the refused row was kept
        with pytest.raises((CorruptObject, InvalidPath)):
            parse_tree_rows([*safe, [bad[0], bad[1], oid]], oid, names)
        assert names - {"a", "d", ".gitmodules", "gitmod~1"} <= ({bad[0]} if bad[1] == LINK else set()), attempt
    with pytest.raises((CorruptObject, InvalidPath)):  # and without the cache, as before
        parse_tree_rows([[bad[0], bad[1], oid]], oid)

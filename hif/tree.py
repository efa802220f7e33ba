"""Merkle directory trees: read a path, apply changes, diff two trees, walk a tree.

Every operation touches only the directories on the paths involved: applying a change rewrites
O(depth) tree objects and a diff skips any subtree whose id is equal on both sides, so cost follows the
size of the change, never the size of the repository.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping

from hif.aio import together
from hif.objects import (
    DIR,
    EMPTY_TREE,
    Entry,
    ObjectDB,
    Tree,
    decode,
    digest,
    parse_tree_rows,
    tree_bytes,
)
from hif.paths import fold
from hif.store.base import drive

Changes = Mapping[str, Entry | None]  # path -> new file entry, or None to delete


async def lookup(db: ObjectDB, tree_id: bytes, path: str) -> Entry | None:
    """The entry at ``path`` (file or directory), or None."""
    entry: Entry | None = Entry(DIR, tree_id)
    for name in path.split("/"):
        if entry is None or entry.kind != DIR:
            return None
        entry = (await db.get_tree(entry.oid)).get(name)
    return entry


async def lookup_file(db: ObjectDB, tree_id: bytes, path: str) -> Entry | None:
    entry = await lookup(db, tree_id, path)
    return None if entry is None or entry.kind == DIR else entry


async def apply(db: ObjectDB, tree_id: bytes, changes: Changes, *, pending: list[bytes] | None = None) -> bytes:
    """Return the id of ``tree_id`` with ``changes`` applied; new tree objects are written to ``db``
    (or, with ``pending``, appended there as canonical bytes for the caller to write together: a
    tree's id needs only its children's ids, so the writes need not wait for one another).

    Setting a file where a directory stands replaces the directory, and a file under a path whose
    parent is a file replaces that file by a directory; directories left empty disappear.
    """
    if not changes:
        return tree_id
    nested: dict[str, dict[str, Entry | None]] = {}
    direct: dict[str, Entry | None] = {}
    for path, entry in changes.items():
        head, sep, rest = path.partition("/")
        if sep:
            nested.setdefault(head, {})[rest] = entry
        else:
            direct[head] = entry
    tree = dict(await db.get_tree(tree_id)) if tree_id != EMPTY_TREE else {}
    for name, entry in direct.items():
        if entry is None:
            if name in tree and tree[name].kind != DIR:
                del tree[name]
        else:
            tree[name] = entry
    for name, sub in nested.items():
        current = tree.get(name)
        base = current.oid if current is not None and current.kind == DIR else EMPTY_TREE
        new_id = await apply(db, base, sub, pending=pending)
        if new_id == EMPTY_TREE:
            if current is not None and current.kind == DIR:
                del tree[name]  # a directory left empty disappears; a file there (e.g. just set) stays
        else:
            tree[name] = Entry(DIR, new_id)
    if not tree:
        return EMPTY_TREE
    if pending is None:
        return await db.put_tree(tree)
    canonical = tree_bytes(tree)
    oid = digest(canonical)
    db.remember_tree(oid, tree)
    pending.append(canonical)
    return oid


async def walk(db: ObjectDB, tree_id: bytes, prefix: str = "") -> AsyncIterator[tuple[str, Entry]]:
    """Every file under the tree, in path order, streaming one directory at a time."""
    if tree_id == EMPTY_TREE:
        return
    tree = await db.get_tree(tree_id)
    for name in sorted(tree, key=str.encode):
        entry = tree[name]
        path = f"{prefix}{name}"
        if entry.kind == DIR:
            async for item in walk(db, entry.oid, path + "/"):
                yield item
        else:
            yield path, entry


async def diff(
    db: ObjectDB, old_id: bytes, new_id: bytes, prefix: str = ""
) -> AsyncIterator[tuple[str, Entry | None, Entry | None]]:
    """File-level differences (path, old, new) between two trees, in path order."""
    if old_id == new_id:
        return
    old = await db.get_tree(old_id) if old_id != EMPTY_TREE else {}
    new = await db.get_tree(new_id) if new_id != EMPTY_TREE else {}
    for name in sorted(old.keys() | new.keys(), key=str.encode):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        path = f"{prefix}{name}"
        a_dir = a is not None and a.kind == DIR
        b_dir = b is not None and b.kind == DIR
        if a is not None and not a_dir and (b is None or b_dir or a != b):
            if b is not None and not b_dir:
                yield path, a, b
                continue
            yield path, a, None
        if a_dir or b_dir:
            async for item in diff(
                db, a.oid if a_dir else EMPTY_TREE, b.oid if b_dir else EMPTY_TREE, path + "/"
            ):
                yield item
        if b is not None and not b_dir and (a is None or a_dir):
            yield path, None, b


async def read_dir(db: ObjectDB, tree_id: bytes, path: str = "") -> Tree | None:
    """The entries of the directory at ``path`` ('' for the root), or None if it is not a directory."""
    if not path:
        return await db.get_tree(tree_id) if tree_id != EMPTY_TREE else {}
    entry = await lookup(db, tree_id, path)
    if entry is None or entry.kind != DIR:
        return None
    return await db.get_tree(entry.oid)


def _names_on(paths: Iterable[str], *, leaves: bool) -> dict[str, set[str]]:
    """Directory ('' for the root) -> the names below it on some path (the last name too with
    ``leaves``): the directories a prefetch or a cache-only apply must look into."""
    children: dict[str, set[str]] = {}
    for path in paths:
        parent = ""
        names = path.split("/")
        for name in names if leaves else names[:-1]:
            children.setdefault(parent, set()).add(name)
            parent = f"{parent}/{name}" if parent else name
    return children


async def prefetch(db: ObjectDB, tree_id: bytes, paths: Iterable[str]) -> None:
    """Read the directories on ``paths`` (and the path itself if it is one) one level at a time, each
    level's reads together: depth round trips for any number of paths instead of depth per path.
    ``lookup`` and ``apply`` on those paths then find every tree in the cache."""
    children = _names_on(paths, leaves=True)
    frontier: dict[str, bytes] = {"": tree_id}  # directories of one depth -> their tree ids
    while frontier:
        known = {d: db.cached_tree(oid) for d, oid in frontier.items()}
        missing = [d for d, t in known.items() if t is None]  # usually none: no tasks to make then
        for d, t in zip(missing, await together([db.get_tree(frontier[d]) for d in missing]), strict=True):
            known[d] = None if isinstance(t, BaseException) else t
        below: dict[str, bytes] = {}
        for dirpath, tree in known.items():
            if tree is None:
                continue  # a failed read is the caller's to report, when it reads the same tree
            for name in children.get(dirpath, ()):
                entry = tree.get(name)
                child = f"{dirpath}/{name}" if dirpath else name
                if entry is not None and entry.kind == DIR and child in children:
                    below[child] = entry.oid
        frontier = below


def cached_apply(db: ObjectDB, tree_id: bytes, changes: Changes) -> bytes | None:
    """``apply`` from the tree cache alone, or None when a directory it needs is not cached: a lander
    replays each record it sees onto the tree it already knows, so the new head's directories are
    known without reading them (the result is checked against the record's tree by the caller)."""
    children = _names_on(changes, leaves=False)
    frontier: dict[str, bytes] = {"": tree_id}
    while frontier:
        below: dict[str, bytes] = {}
        for dirpath, oid in frontier.items():
            tree = db.cached_tree(oid)
            if tree is None:
                return None
            for name in children.get(dirpath, ()):
                entry = tree.get(name)
                if entry is not None and entry.kind == DIR:
                    below[f"{dirpath}/{name}" if dirpath else name] = entry.oid
        frontier = below
    return drive(apply(db, tree_id, changes, pending=[]))


_FOLDS: OrderedDict[bytes, dict[str, str]] = OrderedDict()  # tree id -> folded name -> a name
_FOLDS_KEPT = 256  # directories
_FOLDS_NAMES = 1 << 19  # names in all of them at most, so that huge directories bound the memory
_folds_held = [0]


def _folds(oid: bytes, tree: Tree) -> dict[str, str]:
    """The folded names of a directory (cached by tree id: a landing's new directory is the next
    landing's old one, so its names are folded once, not once per landing)."""
    found = _FOLDS.get(oid)
    if found is None:
        found = {fold(n): n for n in tree}
        _remember_folds(oid, found)
    else:
        _FOLDS.move_to_end(oid)
    return found


def _remember_folds(oid: bytes, folds: dict[str, str]) -> None:
    if len(folds) > _FOLDS_NAMES or oid in _FOLDS:
        return
    _FOLDS[oid] = folds
    _folds_held[0] += len(folds)
    while len(_FOLDS) > _FOLDS_KEPT or _folds_held[0] > _FOLDS_NAMES:
        _folds_held[0] -= len(_FOLDS.popitem(last=False)[1])


async def collisions(db: ObjectDB, old_id: bytes, new_id: bytes, changes: Changes,
                     pending: list[bytes] | None = None) -> list[tuple[str, str]]:
    """Pairs of paths that ``changes`` (taking tree ``old_id`` to ``new_id``) put side by side in one
    directory and that a case-insensitive or Unicode-normalising file system would take for one
    (``hif.paths.fold``): a checkout would overwrite one with the other. Only the directories on
    the changed paths are looked at, and only pairs with a name new there are reported, so the cost
    follows the change (names already side by side are left to whoever changes them). ``pending``:
    the canonical bytes of new trees not written yet (``apply``'s), for any the cache has let go."""
    unwritten: dict[bytes, bytes] = {}

    async def get_tree(oid: bytes) -> Tree:
        tree = db.cached_tree(oid)
        if tree is not None:
            return tree
        if pending and not unwritten:
            unwritten.update((digest(c), c) for c in pending)
        if oid in unwritten:
            return parse_tree_rows(decode(unwritten[oid])[1], oid)
        return await db.get_tree(oid)

    added = _names_on((p for p, e in changes.items() if e is not None), leaves=True)
    if not added:
        return []
    changed = _names_on(changes, leaves=True)
    out: list[tuple[str, str]] = []
    frontier: dict[str, tuple[bytes, bytes]] = {"": (old_id, new_id)}
    while frontier:
        below: dict[str, tuple[bytes, bytes]] = {}
        for dirpath, (old, new) in frontier.items():
            old_tree = await get_tree(old)
            new_tree = await get_tree(new)
            names = added.get(dirpath, set())
            fresh = [n for n in names if n in new_tree and n not in old_tree]
            prefix = f"{dirpath}/" if dirpath else ""
            if fresh:
                folds = dict(_folds(old, old_tree))
                for n in changed.get(dirpath, ()):  # names gone from the directory
                    if n in old_tree and n not in new_tree and folds.get(fold(n)) == n:
                        del folds[fold(n)]
                for n in sorted(fresh, key=str.encode):
                    key = fold(n)
                    other = folds.get(key)
                    if other is not None and other != n and other in new_tree:
                        out.append((prefix + other, prefix + n))
                    else:
                        folds[key] = n
                _remember_folds(new, folds)
            for n in names:
                entry = new_tree.get(n)
                if entry is not None and entry.kind == DIR and prefix + n in added:
                    was = old_tree.get(n)
                    below[prefix + n] = (was.oid if was is not None and was.kind == DIR else EMPTY_TREE, entry.oid)
        frontier = below
    return out

"""Sparse working copies: only some directories of a repository are checked out.

Patterns are directories, as in git's cone mode: ``src/app`` checks out everything under
``src/app/`` plus the files at the root. The working copy then works on a *projected* tree that
keeps the cone's subtrees by reference and drops everything else, so checkout, status and moving
between positions read only the tree objects inside the cone (plus one per directory on the way to
it); the rest of the repository is never fetched. Sessions still change the full tree: their
changes are by path, and landing applies them to the whole mainline tree.
"""

from __future__ import annotations

from typing import Any

from hif.errors import InvalidInput
from hif.objects import DIR, Entry, ObjectDB
from hif.paths import check_path
from hif.tree import lookup


def parse_cones(patterns: list[str]) -> list[str]:
    """Normalise patterns to distinct directory paths, dropping any inside another."""
    cones = set()
    for raw in patterns:
        text = raw.strip().strip("/")
        text = text.removesuffix("/**").removesuffix("/*").strip("/")
        if not text or "*" in text or "?" in text or "[" in text:
            raise InvalidInput(f"sparse patterns are directories such as src/app, not {raw!r}")
        cones.add(check_path(text))
    ordered = sorted(cones)
    return [c for c in ordered if not any(c.startswith(o + "/") for o in ordered)]


class Cone:
    """Which paths a sparse working copy holds: root files and everything under the cones."""

    def __init__(self, cones: list[str]) -> None:
        self.cones = parse_cones(cones)

    def __contains__(self, path: str) -> bool:
        return "/" not in path or any(path.startswith(c + "/") for c in self.cones)

    def check(self, paths: list[str]) -> None:
        outside = [p for p in paths if p not in self]
        if outside:
            raise InvalidInput(
                f"{outside[0]} is outside the sparse checkout ({', '.join(self.cones)}); "
                "this working copy cannot change it"
            )

    async def project(self, db: ObjectDB, tree: bytes) -> bytes:
        """The tree a sparse working copy sees: root files, and each cone's subtree by reference."""
        root = {name: e for name, e in (await db.get_tree(tree)).items() if e.kind != DIR}
        nested: dict[str, Any] = {}
        for cone in self.cones:
            entry = await lookup(db, tree, cone)
            if entry is None or entry.kind != DIR:
                continue
            *parents, leaf = cone.split("/")
            node = nested
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = entry
        return await _build(db, root, nested)


async def _build(db: ObjectDB, entries: dict[str, Entry], nested: dict[str, Any]) -> bytes:
    out = dict(entries)
    for name, value in nested.items():
        out[name] = value if isinstance(value, Entry) else Entry(DIR, await _build(db, {}, value))
    return await db.put_tree(out)

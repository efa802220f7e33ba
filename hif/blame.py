"""Blame: which landed session last changed each line of a file, walking the mainline backwards.

Plumbing (no working copy): the SDK, the forge API and the web UI all answer blame through here.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from hif.errors import InvalidInput, NotFound
from hif.history import Walk
from hif.merge import is_binary, split_lines
from hif.repo import Repo
from hif.tree import lookup_file


@dataclass
class BlameLine:
    line: int
    text: str
    position: int
    session: str
    goal: str
    author: str

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("line", "text", "position", "session", "goal", "author")}


async def blame(repo: Repo, path: str, at: int) -> list[BlameLine]:
    """Attribute every line of ``path`` at position ``at``; stops as soon as every line has an owner
    and reads only the records that changed the path (found through the rollups), so the cost
    follows the file's history, not the log's length."""
    db = repo.objects
    tree = await repo.mainline.tree_at(at)
    entry = await lookup_file(db, tree, path)
    if entry is None:
        raise NotFound(f"no file {path} at position {at}")
    data = await db.get_blob(entry.oid)
    if is_binary(data):
        raise InvalidInput(f"{path} is a binary file; blame works on text")
    lines = split_lines(data)
    owner: list[tuple[int, str, str, str] | None] = [None] * len(lines)
    cur = {i: i for i in range(len(lines))}  # line of the version examined -> line of the file
    version = lines
    # only records that changed the path matter: the rollups skip the others unread
    async for rec in Walk(repo, at, items={"p:" + path}):
        if not cur:
            break
        touched = [s for s in rec.sessions if path in s.changes]
        if not touched:
            continue
        before_entry = await lookup_file(db, rec.parent_tree, path)
        before = split_lines(await db.get_blob(before_entry.oid)) if before_entry else []
        sess = touched[-1]
        # a line that only gained a final newline (text appended after it) is not a changed line
        sm = difflib.SequenceMatcher(None, [x.removesuffix(b"\n") for x in before],
                                     [x.removesuffix(b"\n") for x in version], autojunk=False)
        kept: dict[int, int] = {}
        for blk in sm.get_matching_blocks():
            for k in range(blk.size):
                kept[blk.b + k] = blk.a + k
        nxt: dict[int, int] = {}
        for v, o in cur.items():
            if v in kept:
                nxt[kept[v]] = o
            else:
                owner[o] = (rec.position, sess.session, sess.goal, sess.author)
        cur, version = nxt, before
    out = []
    for i, text in enumerate(lines):
        o = owner[i] or (0, "", "", "")
        out.append(BlameLine(i + 1, text.decode("utf-8", "replace").rstrip("\n"), o[0], o[1], o[2], o[3]))
    return out

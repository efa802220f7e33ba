"""``hif.landing.merge_file``: the one per-file three-way decision that landing, ``hif sync`` and an
accepted offer share, over blobs in a real store. Every kind of "changed on both sides" is covered:
clean text merges (either side's kind kept), overlaps (refused, or written with markers), deletions
against changes (either way round), symbolic links (on any of the three sides) and binary files (on
any of the three sides)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hif.landing import FileMerge, merge_file
from hif.objects import EXEC, FILE, LINK, Entry, ObjectDB
from hif.store.embedded import EmbeddedStore

BASE = b"one\ntwo\nthree\nfour\nfive\n"
OURS = b"ONE\ntwo\nthree\nfour\nfive\n"  # changes the first line
THEIRS = b"one\ntwo\nthree\nfour\nFIVE\n"  # changes the last line
CLASH = b"uno\ntwo\nthree\nfour\nfive\n"  # changes the first line too, otherwise


def decide(tmp_path: Path, sides: list[tuple[int, bytes] | None], markers: bool = False) -> tuple[FileMerge, bytes | None]:
    async def main() -> tuple[FileMerge, bytes | None]:
        db = ObjectDB(EmbeddedStore(tmp_path / "s", create=True, fsync=False), "t/r/")
        entries = [Entry(s[0], await db.put_blob(s[1])) if s is not None else None for s in sides]
        out = await merge_file(*entries, read=db.get_blob, put=db.put_blob, markers=markers)
        return out, (await db.get_blob(out.entry.oid) if out.entry is not None else None)

    return asyncio.run(main())


def test_text_changed_in_different_places_merges_cleanly(tmp_path: Path) -> None:
    out, data = decide(tmp_path, [(FILE, BASE), (FILE, OURS), (FILE, THEIRS)])
    assert out.clean and out.conflict is None
    assert data == b"ONE\ntwo\nthree\nfour\nFIVE\n"
    assert out.entry is not None and out.entry.kind == FILE


@pytest.mark.parametrize("ours_kind, theirs_kind", [(EXEC, FILE), (FILE, EXEC)])
def test_the_kind_one_side_changed_is_kept(tmp_path: Path, ours_kind: int, theirs_kind: int) -> None:
    out, _ = decide(tmp_path, [(FILE, BASE), (ours_kind, OURS), (theirs_kind, THEIRS)])
    assert out.clean and out.entry is not None and out.entry.kind == EXEC


def test_a_file_added_on_both_sides_merges_against_an_empty_base(tmp_path: Path) -> None:
    out, data = decide(tmp_path, [None, (FILE, b"same\n"), (FILE, b"same\n")])
    assert out.clean and data == b"same\n"


def test_overlapping_changes_are_refused_or_written_with_markers(tmp_path: Path) -> None:
    out, data = decide(tmp_path, [(FILE, BASE), (FILE, OURS), (FILE, CLASH)])
    assert not out.clean and out.entry is None and data is None
    assert out.conflict == "1 overlapping change(s)"
    marked, data = decide(tmp_path / "m", [(FILE, BASE), (FILE, OURS), (FILE, CLASH)], markers=True)
    assert not marked.clean and marked.conflict == "1 overlapping change(s)"
    assert data is not None and b"<<<<<<< " in data and b">>>>>>> mainline" in data


@pytest.mark.parametrize("deleted", ["ours", "theirs"])
def test_a_deletion_against_a_change_is_a_conflict(tmp_path: Path, deleted: str) -> None:
    sides: list[tuple[int, bytes] | None] = [(FILE, BASE), (FILE, OURS), (FILE, THEIRS)]
    sides[1 if deleted == "ours" else 2] = None
    out, _ = decide(tmp_path, sides)
    assert out == FileMerge(conflict="deleted on one side, changed on the other")


@pytest.mark.parametrize("where", [0, 1, 2])
def test_a_symbolic_link_on_any_side_is_a_conflict(tmp_path: Path, where: int) -> None:
    sides: list[tuple[int, bytes] | None] = [(FILE, BASE), (FILE, OURS), (FILE, THEIRS)]
    sides[where] = (LINK, b"target")
    out, _ = decide(tmp_path, sides)
    assert out == FileMerge(conflict="symbolic link changed on both sides")


@pytest.mark.parametrize("where", [0, 1, 2])
def test_a_binary_file_on_any_side_is_a_conflict(tmp_path: Path, where: int) -> None:
    sides: list[tuple[int, bytes] | None] = [(FILE, BASE), (FILE, OURS), (FILE, THEIRS)]
    sides[where] = (FILE, b"\x00\x01binary\x00")
    out, _ = decide(tmp_path, sides)
    assert out == FileMerge(conflict="binary file changed on both sides")

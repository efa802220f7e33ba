"""Properties of hif's three-way merge and diffs: landing sessions must never lose or invent changes."""

from __future__ import annotations

import difflib

from hypothesis import given, settings
from hypothesis import strategies as st

from hif.merge import MergeResult, diffstat, is_binary, merge3, split_lines, unified_diff

FAST = settings(max_examples=200, deadline=None)

# A tiny alphabet so that diffs of random files overlap, repeat and tie often.
line = st.sampled_from([b"a\n", b"b\n", b"c\n", b"d\n", b"\n"])
lines = st.lists(line, max_size=30)


@st.composite
def text(draw: st.DrawFn) -> bytes:
    """A small file, sometimes ending without a newline, to exercise the last-line edge."""
    body = b"".join(draw(lines))
    if draw(st.booleans()):
        body += draw(st.sampled_from([b"a", b"b", b"z"]))
    return body


def marker_lines(data: bytes, prefix: bytes) -> int:
    """Count lines starting with a conflict marker prefix."""
    return sum(1 for ln in split_lines(data) if ln.startswith(prefix))


def naive_conflicts(base: bytes, ours: bytes, theirs: bytes) -> int:
    """Reference count: connected components of the conflict relation, checked pairwise (O(n^2))."""
    b = split_lines(base)

    def hunks(other: bytes) -> list[tuple[int, int, tuple[bytes, ...]]]:
        o = split_lines(other)
        sm = difflib.SequenceMatcher(None, b, o, autojunk=False)
        return [(i1, i2, tuple(o[j1:j2])) for t, i1, i2, j1, j2 in sm.get_opcodes() if t != "equal"]

    def clash(x: tuple[int, int, object], y: tuple[int, int, object]) -> bool:
        (a1, a2, _), (b1, b2, _) = x, y
        if a1 == a2 and b1 == b2:
            return a1 == b1
        if a1 == a2:
            return b1 < a1 < b2
        if b1 == b2:
            return a1 < b1 < a2
        return a1 < b2 and b1 < a2

    mine, yours = hunks(ours), hunks(theirs)
    nodes = [(0, h) for h in mine] + [(1, h) for h in yours]
    parent = list(range(len(nodes)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, (si, hi) in enumerate(nodes):
        for j, (sj, hj) in enumerate(nodes):
            if si == 0 and sj == 1 and clash(hi, hj):
                parent[find(i)] = find(j)
    groups: dict[int, list[tuple[int, tuple[int, int, tuple[bytes, ...]]]]] = {}
    for i, node in enumerate(nodes):
        groups.setdefault(find(i), []).append(node)

    def version(
        side: int, group: list[tuple[int, tuple[int, int, tuple[bytes, ...]]]]
    ) -> list[bytes]:
        lo = min(h[0] for _, h in group)
        hi = max(h[1] for _, h in group)
        out: list[bytes] = []
        pos = lo
        for s, (i1, i2, new) in sorted(group, key=lambda n: n[1][:2]):
            if s == side:
                out += b[pos:i1] + list(new)
                pos = i2
        return out + b[pos:hi]

    return sum(
        1 for g in groups.values() if {s for s, _ in g} == {0, 1} and version(0, g) != version(1, g)
    )


# --- merge3: properties ---------------------------------------------------------------------------


@FAST
@given(text())
def test_merge_with_itself_is_identity(x: bytes) -> None:
    assert merge3(x, x, x) == MergeResult(x, 0)


@FAST
@given(text(), text())
def test_one_side_unchanged_takes_the_other(base: bytes, changed: bytes) -> None:
    assert merge3(base, changed, base) == MergeResult(changed, 0)
    assert merge3(base, base, changed) == MergeResult(changed, 0)


@FAST
@given(text(), text())
def test_identical_change_on_both_sides_is_taken_once(base: bytes, changed: bytes) -> None:
    assert merge3(base, changed, changed) == MergeResult(changed, 0)


@FAST
@given(lines, lines, st.integers(1, 3), lines, lines, lines)
def test_disjoint_edits_merge_clean_with_both_changes(
    prefix: list[bytes],
    suffix: list[bytes],
    gap_len: int,
    new_prefix: list[bytes],
    new_suffix: list[bytes],
    tail_extra: list[bytes],
) -> None:
    # Unique gap lines pin the diff alignment, so the two edits cannot be read as touching.
    gap = [b"gap-%d\n" % i for i in range(gap_len)]
    base = b"".join(prefix + gap + suffix)
    ours = b"".join(new_prefix + gap + suffix)
    theirs = b"".join(prefix + gap + new_suffix + tail_extra)
    result = merge3(base, ours, theirs)
    assert result.clean
    assert result.data == b"".join(new_prefix + gap + new_suffix + tail_extra)


@FAST
@given(st.lists(line, min_size=1, max_size=30), st.data())
def test_same_line_changed_differently_conflicts(
    base_lines: list[bytes], data: st.DataObject
) -> None:
    k = data.draw(st.integers(0, len(base_lines) - 1))
    ours = base_lines[:k] + [b"OURS\n"] + base_lines[k + 1 :]
    theirs = base_lines[:k] + [b"THEIRS\n"] + base_lines[k + 1 :]
    result = merge3(b"".join(base_lines), b"".join(ours), b"".join(theirs))
    assert not result.clean
    assert result.conflicts >= 1
    out = result.data
    start, mid, end = (
        out.index(b"<<<<<<< ours\n"),
        out.index(b"=======\n"),
        out.index(b">>>>>>> theirs\n"),
    )
    assert start < out.index(b"OURS\n") < mid < out.index(b"THEIRS\n") < end


@FAST
@given(text(), text(), text())
def test_markers_match_conflict_count(base: bytes, ours: bytes, theirs: bytes) -> None:
    result = merge3(base, ours, theirs)
    assert marker_lines(result.data, b"<<<<<<< ours\n") == result.conflicts
    assert marker_lines(result.data, b"=======\n") == result.conflicts
    assert marker_lines(result.data, b">>>>>>> theirs\n") == result.conflicts
    assert result.clean == (result.conflicts == 0)


@FAST
@given(text(), text(), text())
def test_merge_is_symmetric(base: bytes, ours: bytes, theirs: bytes) -> None:
    a = merge3(base, ours, theirs)
    b = merge3(base, theirs, ours)
    assert a.conflicts == b.conflicts
    if a.clean:
        assert a.data == b.data


@FAST
@given(text(), text(), text())
def test_conflict_count_matches_pairwise_reference(base: bytes, ours: bytes, theirs: bytes) -> None:
    assert merge3(base, ours, theirs).conflicts == naive_conflicts(base, ours, theirs)


# --- merge3: examples -----------------------------------------------------------------------------


def test_classic_conflict_with_labels() -> None:
    base = b"one\ntwo\nthree\n"
    ours = b"one\nTWO\nthree\n"
    theirs = b"one\n2\nthree\n"
    result = merge3(base, ours, theirs, ours_label="main", theirs_label="session/42")
    assert result.conflicts == 1
    assert result.data == (b"one\n<<<<<<< main\nTWO\n=======\n2\n>>>>>>> session/42\nthree\n")


def test_adjacent_edits_are_clean() -> None:
    base = b"a\nb\nc\nd\n"
    ours = b"A\nB\nc\nd\n"  # replaces [0, 2)
    theirs = b"a\nb\nC\nD\n"  # replaces [2, 4): touches at 2 but does not overlap
    assert merge3(base, ours, theirs) == MergeResult(b"A\nB\nC\nD\n", 0)


def test_insertions_at_same_point_conflict_unless_equal() -> None:
    base = b"a\nb\n"
    assert merge3(base, b"a\nx\nb\n", b"a\ny\nb\n").conflicts == 1
    assert merge3(base, b"a\nx\nb\n", b"a\nx\nb\n") == MergeResult(b"a\nx\nb\n", 0)


def test_insertion_inside_other_sides_replacement_conflicts() -> None:
    base = b"a\nb\nc\nd\n"
    ours = b"a\nB\nC\nd\n"  # replaces [1, 3)
    theirs = b"a\nb\nnew\nc\nd\n"  # inserts at 2, strictly inside [1, 3)
    assert merge3(base, ours, theirs).conflicts == 1


def test_missing_final_newline_keeps_markers_on_their_own_lines() -> None:
    result = merge3(b"a\nb", b"a\nx", b"a\ny")
    assert result.data == b"a\n<<<<<<< ours\nx\n=======\ny\n>>>>>>> theirs\n"


def test_empty_inputs() -> None:
    assert merge3(b"", b"", b"") == MergeResult(b"", 0)
    assert merge3(b"", b"x\n", b"") == MergeResult(b"x\n", 0)
    assert merge3(b"", b"x\n", b"y\n").conflicts == 1


# --- split_lines / is_binary ----------------------------------------------------------------------


@FAST
@given(st.binary(max_size=200))
def test_split_lines_round_trips(data: bytes) -> None:
    assert b"".join(split_lines(data)) == data
    assert split_lines(data) == data.splitlines(keepends=True)


def test_is_binary() -> None:
    assert not is_binary(b"")
    assert not is_binary("héllo\n".encode())
    assert is_binary(b"abc\0def")
    assert is_binary(b"\xff\xfe\xfd")
    assert not is_binary(b"x" * 8000 + b"\0")  # NUL past the sniff window, still valid UTF-8


# --- unified_diff / diffstat ----------------------------------------------------------------------


def test_unified_diff_headers_and_hunk() -> None:
    diff = unified_diff(b"a\nb\nc\n", b"a\nB\nc\n", "src/x.py")
    assert diff == "--- a/src/x.py\n+++ b/src/x.py\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"


def test_unified_diff_added_and_deleted_use_dev_null() -> None:
    added = unified_diff(None, b"x\n", "new.txt")
    assert added.startswith("--- /dev/null\n+++ b/new.txt\n")
    assert "+x\n" in added
    deleted = unified_diff(b"x\n", None, "old.txt")
    assert deleted.startswith("--- a/old.txt\n+++ /dev/null\n")
    assert "-x\n" in deleted


def test_unified_diff_equal_is_empty() -> None:
    assert unified_diff(b"same\n", b"same\n", "f") == ""
    assert unified_diff(None, None, "f") == ""


def test_unified_diff_binary_messages() -> None:
    assert unified_diff(b"\0a", b"\0b", "img.png") == "Binary file img.png differs\n"
    assert unified_diff(None, b"\0", "img.png") == "Binary file img.png added\n"
    assert unified_diff(b"\0", None, "img.png") == "Binary file img.png deleted\n"
    assert unified_diff(b"text\n", b"\xff", "f") == "Binary file f differs\n"


def test_unified_diff_no_newline_marker() -> None:
    diff = unified_diff(b"a\nb", b"a\nc", "f")
    assert diff == (
        "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n"
        "+c\n\\ No newline at end of file\n"
    )


def test_unified_diff_context_is_respected() -> None:
    old = b"".join(b"%d\n" % i for i in range(20))
    new = old.replace(b"10\n", b"ten\n")
    diff = unified_diff(old, new, "n", context=1)
    assert "@@ -10,3 +10,3 @@\n 9\n-10\n+ten\n 11\n" in diff


def test_diffstat() -> None:
    assert diffstat(b"a\nb\nc\n", b"a\nB\nc\nd\n") == (2, 1)
    assert diffstat(None, b"x\ny\n") == (2, 0)
    assert diffstat(b"x\ny\n", None) == (0, 2)
    assert diffstat(b"\0", b"\0\0") == (0, 0)
    assert diffstat(b"same", b"same") == (0, 0)


@FAST
@given(text(), text())
def test_diffstat_agrees_with_unified_diff(old: bytes, new: bytes) -> None:
    body = unified_diff(old, new, "f").splitlines()[2:]
    added = sum(1 for ln in body if ln.startswith("+"))
    removed = sum(1 for ln in body if ln.startswith("-"))
    assert diffstat(old, new) == (added, removed)

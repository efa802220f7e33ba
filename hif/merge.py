"""Line-based three-way merge and git-like diffs, so hif can land sessions and show what changed.

difflib is imported by the functions that use it: landing imports this module, and most landings
merge nothing (each ``hif`` command is a process of its own, whose start-up is most of its CPU)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_BINARY_SNIFF = 8000
_NO_NEWLINE = "\\ No newline at end of file\n"

_OURS = 0
_THEIRS = 1


def is_binary(data: bytes) -> bool:
    """Tell text from binary the way git does (NUL early on), and refuse to line-merge non-UTF-8."""
    if b"\0" in data[:_BINARY_SNIFF]:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def split_lines(data: bytes) -> list[bytes]:
    """Split keeping line endings, so joining the lines gives the exact bytes back."""
    return data.splitlines(keepends=True)


@dataclass(frozen=True)
class MergeResult:
    """The merged bytes plus how many regions need a human (or agent) to resolve them."""

    data: bytes
    conflicts: int

    @property
    def clean(self) -> bool:
        """A merge with no conflict regions can be committed as is."""
        return self.conflicts == 0


@dataclass(frozen=True)
class _Hunk:
    """One side's change: base lines [i1, i2) replaced by ``lines``."""

    i1: int
    i2: int
    lines: tuple[bytes, ...]
    side: int


def _hunks(base: Sequence[bytes], other: Sequence[bytes], side: int) -> list[_Hunk]:
    """The non-equal opcodes of base -> other; difflib keeps them strictly separated by equal lines."""
    import difflib

    matcher = difflib.SequenceMatcher(None, base, other, autojunk=False)
    return [
        _Hunk(i1, i2, tuple(other[j1:j2]), side)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag != "equal"
    ]


def _conflicts(a: _Hunk, b: _Hunk) -> bool:
    """Whether two hunks from different sides touch the same base lines (or the same insertion gap)."""
    a_ins = a.i1 == a.i2
    b_ins = b.i1 == b.i2
    if a_ins and b_ins:
        return a.i1 == b.i1
    if a_ins:
        return b.i1 < a.i1 < b.i2
    if b_ins:
        return a.i1 < b.i1 < a.i2
    return a.i1 < b.i2 and b.i1 < a.i2


def _regions(ours: list[_Hunk], theirs: list[_Hunk]) -> list[list[_Hunk]]:
    """Group hunks into regions: each region is one hunk, or a chain of mutually conflicting ones.

    Hunks are swept in base order (insertions before replacements at the same index). Because one
    side's hunks are separated by at least one equal base line, a candidate can only conflict with
    the latest hunk of the other side already in the region, and a candidate that does not conflict
    closes the region: no later hunk can reach back into it.
    """
    ordered = sorted(ours + theirs, key=lambda h: (h.i1, h.i2, h.side))
    regions: list[list[_Hunk]] = []
    last: list[_Hunk | None] = [None, None]
    for hunk in ordered:
        other = last[1 - hunk.side]
        if regions and other is not None and _conflicts(hunk, other):
            regions[-1].append(hunk)
        else:
            regions.append([hunk])
            last = [None, None]
        last[hunk.side] = hunk
    return regions


def _apply(base: Sequence[bytes], lo: int, hi: int, hunks: list[_Hunk]) -> list[bytes]:
    """One side's version of base[lo:hi], given that side's hunks inside the region."""
    out: list[bytes] = []
    pos = lo
    for hunk in hunks:
        out.extend(base[pos : hunk.i1])
        out.extend(hunk.lines)
        pos = hunk.i2
    out.extend(base[pos:hi])
    return out


def _terminated(chunk: list[bytes]) -> list[bytes]:
    """Keep a conflict marker on its own line even when the chunk ends the file without a newline."""
    if chunk and not chunk[-1].endswith(b"\n"):
        return [*chunk[:-1], chunk[-1] + b"\n"]
    return chunk


def merge3(
    base: bytes,
    ours: bytes,
    theirs: bytes,
    *,
    ours_label: str = "ours",
    theirs_label: str = "theirs",
) -> MergeResult:
    """Combine two descendants of base, keeping both sides' changes and marking where they clash."""
    base_lines = split_lines(base)
    ours_lines = split_lines(ours)
    theirs_lines = split_lines(theirs)
    regions = _regions(
        _hunks(base_lines, ours_lines, _OURS), _hunks(base_lines, theirs_lines, _THEIRS)
    )

    out: list[bytes] = []
    conflicts = 0
    pos = 0
    for region in regions:
        lo = min(h.i1 for h in region)
        hi = max(h.i2 for h in region)
        out.extend(base_lines[pos:lo])
        pos = max(pos, hi)
        mine = _apply(base_lines, lo, hi, [h for h in region if h.side == _OURS])
        yours = _apply(base_lines, lo, hi, [h for h in region if h.side == _THEIRS])
        sides = {h.side for h in region}
        if sides == {_OURS}:
            out.extend(mine)
        elif sides == {_THEIRS} or mine == yours:
            out.extend(yours)
        else:
            conflicts += 1
            out.append(b"<<<<<<< " + ours_label.encode("utf-8") + b"\n")
            out.extend(_terminated(mine))
            out.append(b"=======\n")
            out.extend(_terminated(yours))
            out.append(b">>>>>>> " + theirs_label.encode("utf-8") + b"\n")
    out.extend(base_lines[pos:])
    return MergeResult(b"".join(out), conflicts)


def _text_lines(data: bytes | None) -> list[str]:
    """Decode and split on ``\\n`` only, as git does, so a stray ``\\r`` stays inside its line."""
    if not data:
        return []
    parts = data.decode("utf-8", errors="replace").split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def unified_diff(old: bytes | None, new: bytes | None, path: str, *, context: int = 3) -> str:
    """Render one file's change as a git-style unified diff; ``None`` means the file is absent."""
    if old == new:
        return ""
    if (old is not None and is_binary(old)) or (new is not None and is_binary(new)):
        if old is None:
            return f"Binary file {path} added\n"
        if new is None:
            return f"Binary file {path} deleted\n"
        return f"Binary file {path} differs\n"
    from_file = "/dev/null" if old is None else f"a/{path}"
    to_file = "/dev/null" if new is None else f"b/{path}"
    out = [f"--- {from_file}\n", f"+++ {to_file}\n"]
    import difflib

    body = list(difflib.unified_diff(_text_lines(old), _text_lines(new), n=context))
    # body[:2] are difflib's own file headers; ours above carry the a/ and b/ prefixes.
    for line in body[2:]:
        if line.startswith("@@"):
            out.append(line if line.endswith("\n") else line + "\n")
        elif line.endswith("\n"):
            out.append(line)
        else:
            out.append(line + "\n" + _NO_NEWLINE)
    return "".join(out)


def diffstat(old: bytes | None, new: bytes | None) -> tuple[int, int]:
    """Count (added, removed) lines exactly as ``unified_diff`` shows them; binary counts as nothing."""
    if old == new:
        return (0, 0)
    if (old is not None and is_binary(old)) or (new is not None and is_binary(new)):
        return (0, 0)
    import difflib

    added = removed = 0
    matcher = difflib.SequenceMatcher(None, _text_lines(old), _text_lines(new))
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            removed += i2 - i1
        if tag in ("replace", "insert"):
            added += j2 - j1
    return (added, removed)


MAX_RANGE_LINES = 20_000  # lines of a file compared line by line for changed_ranges; beyond, all of it


def changed_ranges(old: bytes | None, new: bytes) -> list[tuple[int, int]]:
    """The 1-based, inclusive line ranges of ``new`` that are not in ``old`` (added or changed lines;
    Agent Trace's attribution ranges). A file too long to compare cheaply counts as changed whole."""
    lines, before = _text_lines(new), _text_lines(old)
    if old is None or len(lines) + len(before) > MAX_RANGE_LINES:
        return [(1, len(lines))] if lines else []
    import difflib

    matcher = difflib.SequenceMatcher(None, before, lines, autojunk=False)
    return [(j1 + 1, j2) for tag, _i1, _i2, j1, j2 in matcher.get_opcodes() if tag in ("replace", "insert")]

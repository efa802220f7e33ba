"""Turning repository content into HTML: highlighted lines, Markdown, diffs, times.

Highlighting is done per line (not one ``<pre>`` blob) so that the file view, blame and diffs share
it and stay aligned line by line. Everything returned as :class:`Markup` is escaped here.
"""

from __future__ import annotations

import functools
import hashlib
import math
import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup, escape
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_for_filename
from pygments.token import STANDARD_TYPES, _TokenType
from pygments.util import ClassNotFound

from hif.blame import kept_lines
from hif.merge import is_binary

SHOW_MAX = 1 << 20  # bytes of a file shown on its page; the rest is behind "raw"
HIGHLIGHT_MAX = 256 * 1024  # bigger texts are shown plain: highlighting costs ~3 s per MB
HIGHLIGHT_PAGE = 64 * 1024  # characters newly highlighted for a page (~0.2 s); the rest later
DIFF_FILE_MAX = 512 * 1024  # a side bigger than this is not diffed line by line
DIFF_LINES_MAX = 20_000  # ... nor a side with more lines than this
MINIFIED_LINE = 500  # characters per line on average from which a text counts as minified
LOCKFILES = frozenset({"package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml",
                       "poetry.lock", "pipfile.lock", "uv.lock", "cargo.lock", "gemfile.lock",
                       "composer.lock", "go.sum", "flake.lock", "packages.lock.json", "pubspec.lock"})

_md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
URL_SCHEMES = {"http", "https", "mailto"}
Resolve = Callable[[str, str], str | None]  # (tag, a relative URL) -> where it points on this site


def markdown(text: str, resolve: Resolve | None = None) -> Markup:
    """CommonMark with tables. Raw HTML passes only through nh3's allow-list (no script, style,
    form, frame, event handler or unsafe URL scheme survives); relative links and images are
    pointed at the repository by ``resolve`` (None drops them); images from other sites are
    dropped (the pages' CSP would refuse them, and they would tell a third party who reads)."""

    def attribute(tag: str, name: str, value: str) -> str | None:
        if (tag, name) not in (("a", "href"), ("img", "src")):
            return value
        if value.startswith("#"):
            return value
        parts = urlsplit(value)
        if parts.scheme or value.startswith("//"):
            return None if tag == "img" else value  # nh3 checks the scheme of what stays
        if value.startswith("/") or resolve is None:
            return value
        return resolve(tag, value)

    html = nh3.clean(_md.render(text), url_schemes=URL_SCHEMES, attribute_filter=attribute,
                     link_rel="nofollow noopener noreferrer")
    return Markup(html)


_message_md = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(["table", "strikethrough"])


def message_html(text: str) -> Markup:
    """A commit message's body: Markdown as :func:`markdown`, but each line break kept (git
    messages are wrapped by hand, and lists of lines are common)."""
    return Markup(_message_md.render(text))


@functools.lru_cache(maxsize=512)
def _lexer(name: str) -> Lexer | None:
    try:
        return get_lexer_for_filename(name, stripnl=False, ensurenl=False, stripall=False)
    except ClassNotFound:
        return None


def warm_lexers() -> None:
    """The lexer lookup's one-time set-up, done at a node's start (see ``ui.web``)."""
    _lexer("warm.py")


# token classes the stylesheet gives no colour of their own (plain names, punctuation) or that cannot
# show one (whitespace): no span, as they are a third of a file's tokens and would add a fifth to its page
UNSTYLED = frozenset({"", "n", "p", "w"})


@functools.lru_cache(maxsize=1024)
def _css_class(ttype: _TokenType) -> str:
    while ttype not in STANDARD_TYPES:
        ttype = ttype.parent
    cls = STANDARD_TYPES[ttype]
    return "" if cls in UNSTYLED else cls


def text_of(data: bytes) -> str:
    """Bytes as text with one kind of line ending (what the lexers expect)."""
    return data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")


def split_text(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def highlight_lines(text: str, path: str, *, limit: int = HIGHLIGHT_MAX) -> list[Markup]:
    """One piece of HTML per line of ``text``, highlighted by the lexer its file name suggests
    (plain when none fits or the text is over ``limit`` characters)."""
    lines = split_text(text)
    lexer = _lexer(posixpath.basename(path)) if len(text) <= limit else None
    if lexer is None:
        return [escape(line) for line in lines]
    out: list[Markup] = []
    cur: list[str] = []
    for ttype, value in lexer.get_tokens(text):
        cls = _css_class(ttype)
        for i, part in enumerate(value.split("\n")):
            if i:
                out.append(Markup("".join(cur)))
                cur = []
            if part:
                cur.append(f'<span class="{cls}">{escape(part)}</span>' if cls else str(escape(part)))
    if cur:
        out.append(Markup("".join(cur)))
    out = out[: len(lines)]  # the lexer saw the same text, so only a last empty line can differ
    return out + [Markup("")] * (len(lines) - len(out))


class ResultCache(Protocol):
    """Where results keyed by content are kept (``node.heavy.DiskCache``)."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...


class Highlighter:
    """Highlighted lines of texts, kept in ``cache`` by content (the text's hash and the lexer), so a
    file is highlighted once; at most ``budget`` characters are newly highlighted per page (the rest
    shown plain), since pygments costs ~3 s per MB. Thread-safe enough: a lost race highlights twice."""

    def __init__(self, cache: ResultCache | None, budget: int = HIGHLIGHT_PAGE) -> None:
        self.cache, self.budget = cache, budget
        self.later: list[tuple[bytes, str, str]] = []  # shown plain for want of budget: fill() them

    def __call__(self, data: bytes, text: str, path: str) -> list[Markup]:
        lexer = _lexer(posixpath.basename(path)) if len(text) <= HIGHLIGHT_MAX else None
        if lexer is None:
            return [escape(line) for line in split_text(text)]
        key = hashlib.sha256(b"hl-3\0" + type(lexer).__name__.encode() + b"\0" + data).hexdigest()
        got = self.cache.get(key) if self.cache is not None else None
        if got is not None:
            lines = got.decode("utf-8").split("\n")
            if len(lines) == len(split_text(text)) or (not got and not split_text(text)):
                return [Markup(x) for x in lines] if got else []
        if len(text) > self.budget:
            self.later.append((data, text, path))
            return [escape(line) for line in split_text(text)]
        self.budget -= len(text)
        out = highlight_lines(text, path)
        if self.cache is not None:
            self.cache.put(key, "\n".join(out).encode("utf-8"))
        return out

    def fill(self) -> None:
        """Highlight what was shown plain into the cache, for the next page that shows it."""
        later, self.later = self.later, []
        for data, text, path in later:
            self.budget = len(text)
            self(data, text, path)


@dataclass
class FileView:
    """A file prepared for its page."""

    size: int
    binary: bool
    truncated: bool = False
    highlighted: bool = False
    lines: list[Markup] = field(default_factory=list)
    later: bool = False  # shown plain for now: highlighting is being cached for the next view


def file_view(data: bytes, path: str, highlight: Highlighter | None = None) -> FileView:
    """The first :data:`SHOW_MAX` bytes of a file (cut at a line end), highlighted when small (by
    ``highlight``, which may leave it plain until it is cached)."""
    if is_binary(data):
        return FileView(len(data), True)
    shown = data
    if len(data) > SHOW_MAX:
        cut = data.rfind(b"\n", 0, SHOW_MAX)
        shown = data[: cut + 1 if cut >= 0 else SHOW_MAX]
    text = text_of(shown)
    highlight = highlight or Highlighter(None, HIGHLIGHT_MAX)
    later = len(highlight.later)
    lines = highlight(shown, text, path)
    deferred = len(highlight.later) > later
    highlighted = len(text) <= HIGHLIGHT_MAX and _lexer(posixpath.basename(path)) is not None and not deferred
    return FileView(len(data), False, len(shown) < len(data), highlighted, lines, deferred)


def code_rows(lines: list[Markup]) -> Markup:
    """Table rows of a file view, built here rather than in a template loop: a 1 MB file has tens of
    thousands of lines."""
    return Markup("".join(
        f'<tr id="L{n}"><td class="ln"><a href="#L{n}">{n}</a></td><td class="src">{html}</td></tr>'
        for n, html in enumerate(lines, 1)
    ))


# -- diffs -----------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of a diff: kind is ctx, add, del or hunk (a ``@@`` separator with ``text``)."""

    kind: str
    old: int | None = None
    new: int | None = None
    html: Markup = Markup("")
    text: str = ""


@dataclass
class SplitRow:
    """One line of a side-by-side diff (either side may be empty)."""

    left: Row | None
    right: Row | None
    hunk: str = ""


@dataclass
class FileDiff:
    """A file's change ready to render: both sides' rows, or why there are none."""

    path: str
    action: str
    rows: list[Row] = field(default_factory=list)
    added: int = 0
    removed: int = 0
    note: str = ""  # binary, too large, not shown...
    collapsed: bool = False  # too long to render with the page: shown on demand (``href``)
    total_rows: int = 0  # the rows the whole diff has (hunk headers included)
    href: str = ""  # this file's diff on a page of its own

    def split(self) -> list[SplitRow]:
        """Pair deletions with the additions that follow them, for the side-by-side view."""
        out: list[SplitRow] = []
        dels: list[Row] = []
        adds: list[Row] = []

        def flush() -> None:
            for i in range(max(len(dels), len(adds))):
                out.append(SplitRow(dels[i] if i < len(dels) else None, adds[i] if i < len(adds) else None))
            dels.clear()
            adds.clear()

        for row in self.rows:
            if row.kind == "del":
                if adds:
                    flush()
                dels.append(row)
            elif row.kind == "add":
                adds.append(row)
            else:
                flush()
                if row.kind == "hunk":
                    out.append(SplitRow(None, None, row.text))
                else:
                    out.append(SplitRow(row, row))
        flush()
        return out


def generated(path: str, text: str) -> str | None:
    """Why a file's diff is only summarised (a lockfile, minified code), or None."""
    name = posixpath.basename(path).casefold()
    if name in LOCKFILES or name.endswith((".lock", "-lock.json", "-lock.yaml")):
        return "a lockfile"
    if name.endswith((".min.js", ".min.css", ".map")):
        return "minified or generated"
    lines = text.count("\n") + 1
    if len(text) > 4096 and len(text) / lines > MINIFIED_LINE:
        return "minified or generated (very long lines)"
    return None


Op = tuple[str, int, int, int, int]  # (equal|replace|delete|insert, old from, old to, new from, new to)


def line_opcodes(a: list[str], b: list[str]) -> list[Op]:
    """The edit from ``a`` to ``b`` in difflib's opcode form, from the patience diff blame uses
    (bounded: big changes without a common unique line are a replacement, not an O(n*m) search)."""
    ops: list[Op] = []
    i = j = 0
    for x, y, n in kept_lines(a, b):
        if i < x and j < y:
            ops.append(("replace", i, x, j, y))
        elif i < x:
            ops.append(("delete", i, x, j, j))
        elif j < y:
            ops.append(("insert", i, i, j, y))
        ops.append(("equal", x, x + n, y, y + n))
        i, j = x + n, y + n
    if i < len(a) and j < len(b):
        ops.append(("replace", i, len(a), j, len(b)))
    elif i < len(a):
        ops.append(("delete", i, len(a), j, j))
    elif j < len(b):
        ops.append(("insert", i, i, j, len(b)))
    return ops


def hunks(ops: list[Op], context: int) -> list[list[Op]]:
    """The changes with ``context`` equal lines around them, changes closer than twice that in one
    hunk (what ``difflib``'s grouped opcodes give)."""
    out: list[list[Op]] = []
    cur: list[Op] = []
    for k, (tag, i1, i2, j1, j2) in enumerate(ops):
        if tag != "equal":
            if not cur and k and ops[k - 1][0] == "equal":  # leading context
                _, p1, p2, q1, q2 = ops[k - 1]
                cur.append(("equal", max(p1, p2 - context), p2, max(q1, q2 - context), q2))
            cur.append((tag, i1, i2, j1, j2))
            continue
        if not cur:
            continue
        if k < len(ops) - 1 and i2 - i1 <= 2 * context:
            cur.append((tag, i1, i2, j1, j2))
            continue
        cur.append(("equal", i1, min(i2, i1 + context), j1, min(j2, j1 + context)))
        out.append(cur)
        cur = []
    if cur:
        out.append(cur)
    return out


def file_diff(path: str, action: str, old: bytes | None, new: bytes | None, *, context: int = 3,
              rows_max: int | None = None,
              highlight: Callable[[bytes, str, str], list[Markup]] | None = None) -> FileDiff:
    """Line diff of one file in hunks of ``context`` lines, both sides highlighted by ``highlight``
    (escaped plain text without one). Binary, huge and generated files get a note instead; a diff of
    more than ``rows_max`` rows comes back ``collapsed`` (counted, not rendered)."""
    fd = FileDiff(path, action)
    if (old is not None and is_binary(old)) or (new is not None and is_binary(new)):
        fd.note = f"binary file ({_size(old)} → {_size(new)})"
        return fd
    if len(old or b"") > DIFF_FILE_MAX or len(new or b"") > DIFF_FILE_MAX:
        fd.note = f"too large to show here ({_size(old)} → {_size(new)})"
        return fd
    a_text, b_text = text_of(old or b""), text_of(new or b"")
    why = generated(path, a_text) or generated(path, b_text)
    if why:
        fd.note = f"{why}: the diff is not shown ({_size(old)} → {_size(new)})"
        return fd
    a, b = split_text(a_text), split_text(b_text)
    if max(len(a), len(b)) > DIFF_LINES_MAX:
        fd.note = f"too many lines to diff here ({len(a)} → {len(b)} lines)"
        return fd
    ops = line_opcodes(a, b)
    for tag, i1, i2, j1, j2 in ops:
        if tag != "equal":
            fd.removed += i2 - i1
            fd.added += j2 - j1
    groups = hunks(ops, context)
    fd.total_rows = sum(1 + sum(max(i2 - i1, 0) + (j2 - j1 if tag != "equal" else 0)
                                for tag, i1, i2, j1, j2 in g) for g in groups)
    if rows_max is not None and fd.total_rows > rows_max:
        fd.collapsed = True
        return fd
    if highlight is not None:
        ah, bh = highlight(old or b"", a_text, path), highlight(new or b"", b_text, path)
    else:
        ah, bh = [escape(x) for x in a], [escape(x) for x in b]
    for group in groups:
        i1, j1 = group[0][1], group[0][3]
        i2, j2 = group[-1][2], group[-1][4]
        fd.rows.append(Row("hunk", text=f"@@ -{i1 + 1},{i2 - i1} +{j1 + 1},{j2 - j1} @@"))
        for tag, x1, x2, y1, y2 in group:
            if tag == "equal":
                fd.rows += [Row("ctx", x + 1, y + 1, bh[y]) for x, y in zip(range(x1, x2), range(y1, y2), strict=True)]
                continue
            fd.rows += [Row("del", x + 1, None, ah[x]) for x in range(x1, x2)]
            fd.rows += [Row("add", None, y + 1, bh[y]) for y in range(y1, y2)]
    if not fd.rows and old != new:
        fd.note = "only line endings or the final newline changed"
    return fd


def _size(data: bytes | None) -> str:
    return "absent" if data is None else human_size(len(data))


def human_size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"  # pragma: no cover


def xml_text(value: Any) -> str:
    """Text as XML may carry it (a feed): stored goals and names are anyone's strings, control
    characters included, and one of those must not make the whole document unreadable."""
    return _NOT_XML.sub("\ufffd", str(value))


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")  # not allowed in XML 1.0


# -- times -----------------------------------------------------------------------------------------


def _moment(t: Any) -> datetime | None:
    """``t`` (seconds since 1970) as a datetime, or None for anything that is not a representable
    moment: times come from stored data that others wrote, and a page must not fail on them."""
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        return None
    try:
        return datetime.fromtimestamp(t, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def iso(t: Any) -> str:
    d = _moment(t)
    return "" if d is None else d.isoformat(timespec="seconds")


def absolute(t: Any) -> str:
    d = _moment(t)
    return "" if d is None else d.strftime("%Y-%m-%d %H:%M UTC")


def ago(t: Any, now: float | None = None) -> str:
    """A short relative time ("3 minutes ago"); the exact time goes in the title."""
    if _moment(t) is None:
        return ""
    delta = max(0.0, (now if now is not None else time.time()) - t)
    for size, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400, "day"), (3600, "hour"),
                       (60, "minute")):
        if delta >= size:
            n = int(delta // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


# -- events ----------------------------------------------------------------------------------------

_TEXT = str
_ID = "id"  # a 32-byte object id
_EVENT_FIELDS: dict[str, dict[str, Any]] = {  # what each event type must carry to be shown
    "start": {"goal": _TEXT, "base": int},
    "say": {"text": _TEXT},
    "decide": {"decision": _TEXT, "why": _TEXT},
    "write": {"path": _TEXT, "kind": _TEXT, "blob": _ID},
    "delete": {"path": _TEXT},
    "checkpoint": {"note": _TEXT, "tree": _ID, "iteration": int},
    "sync": {"base": int},
    "abandon": {"reason": _TEXT},
    "attest": {"attestation": dict},
}


def _fits(value: Any, want: Any) -> bool:
    if want == _ID:
        return isinstance(value, bytes) and len(value) == 32
    return isinstance(value, want) and not (want is int and isinstance(value, bool))


def event_problem(e: Any) -> str | None:
    """Why a stored event cannot be shown as one, or None when it can."""
    if not isinstance(e, dict):
        return "not a map"
    t = e.get("type")
    if t not in _EVENT_FIELDS:
        return "unknown type"
    if not _fits(e.get("seq"), int) or not isinstance(e.get("author"), str) \
            or not isinstance(e.get("role"), str) or _moment(e.get("time")) is None:
        return "missing or malformed seq, author, role or time"
    for name, want in _EVENT_FIELDS[t].items():
        if not _fits(e.get(name), want):
            return f"missing or malformed {name}"
    if t == "decide" and not (isinstance(e.get("alternatives", []), list)
                              and all(isinstance(a, str) for a in e.get("alternatives", []))):
        return "malformed alternatives"
    if t == "sync" and not all(isinstance(e.get(k, []), list)
                               and all(isinstance(p, str) for p in e.get(k, []))
                               for k in ("merged", "conflicts")):
        return "malformed merged or conflicts"
    return None


_ADDRESS = re.compile(r"^(.*?)\s*<[^<>]*>$", re.S)
OLD_MESSAGE_WHY = "the message of git commit "  # how imports before the role "imported" kept the body


def person(who: Any, *, addresses: bool = False) -> str:
    """An author as a page shows it: ``Name <address>`` (git's form, kept by older imports) becomes
    ``Name`` unless ``addresses`` (the viewer is a member of the repository)."""
    text = who if isinstance(who, str) else ""
    if addresses:
        return text
    m = _ADDRESS.match(text)
    return (m.group(1).strip() or text) if m else text


def imported_view(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A session imported from git shown as one, however old its import: the events of one whose
    start names a git commit get the role ``imported``, and a ``decide`` that only holds the commit
    message's body (imports before that role) becomes the ``say`` newer imports write."""
    start = events[0] if events else None
    if start is None or start.get("type") != "start" or not isinstance(start.get("git"), dict):
        return events
    sha = start["git"].get("commit")
    out = []
    for e in events:
        e = {**e, "role": "imported"} if e.get("role") == "human" else e
        if e.get("type") == "decide" and isinstance(sha, str) and e.get("why") == OLD_MESSAGE_WHY + sha:
            e = {k: v for k, v in e.items() if k not in ("decision", "why", "alternatives")} | {
                "type": "say", "text": e["decision"], "git": {"commit": sha}}
        out.append(e)
    return out


def landed_role(rec: Any, role: str) -> str:
    """A landed session's role as shown: ``imported`` for a commit imported before that role."""
    git = getattr(rec, "extra", {}).get("git")
    return "imported" if role == "human" and isinstance(git, dict) and "commit" in git else role


def readable_events(events: list[Any]) -> list[dict[str, Any]]:
    """The events as a page shows them: each one that is malformed (stored by someone else: wrong
    types, a NaN time, missing fields) becomes an ``unreadable`` placeholder in its place, so one bad
    event shows as such and the rest of the page works."""
    out: list[dict[str, Any]] = []
    for i, e in enumerate(events):
        why = event_problem(e)
        if why is None:
            out.append(e)
            continue
        seq = e.get("seq") if isinstance(e, dict) else None
        out.append({"type": "unreadable", "seq": seq if _fits(seq, int) else i, "author": "",
                    "role": "", "time": None, "why": why})
    return out

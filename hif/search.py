"""Why-search: a SQLite FTS5 index of what sessions said and decided, derived from the store.

The index is never the source of truth. It is built from a repository's mainline (one landing record
after another, by position, each landed session's snapshot read for its events) and from the open
sessions' event logs, and it can be deleted at any moment: the next catch-up builds it again. Each
reader keeps its own file (a working copy under ``.hif/``, each node replica in its cache directory),
in WAL mode so queries run while a catch-up writes.

One row per session; its text is split into five columns so that BM25's column weights rank a match
in a goal or a decision above one in the conversation:

- ``goal``: the session's goal;
- ``conversation``: what was said (``say``), checkpoint notes, an abandon's reason;
- ``decision``: each decision and why;
- ``rejected``: each rejected alternative of a decision (``hif search --rejected``);
- ``path``: the files the session changed.

Pieces inside a column are joined by newlines (newlines inside a piece become spaces), and the
``seq`` of the event each piece came from is kept beside the row, so a hit links to the exact event.

Beside the text, the index maps git commit ids to landings (``commits``): each landing that ``hif
import git`` made names its commit, and each commit a merge brought in is one of its iterations.
:meth:`SearchIndex.commits` finds them by a prefix of at least :data:`MIN_COMMIT` hex digits, and
each row says whether ``hif export git`` writes that commit back with the same id (``exact``).

A user's query is never handed to FTS5 as written: :func:`fts_expression` reads words, ``"phrases"``
and ``prefix*`` terms and writes a safe expression of quoted strings, or raises :class:`BadQuery`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hif.aio import together
from hif.errors import Ambiguous, BadQuery, CorruptObject, IndexDamaged, NotFound
from hif.mainline import LandingRecord
from hif.objects import decode
from hif.repo import Repo
from hif.session import SEQ_WIDTH

SCHEMA = 2  # 2: git commit ids (an index of version 1 is started anew and filled again)
KINDS = ("goal", "conversation", "decision", "rejected", "path")
# BM25 column weights, in KINDS order: goals and decisions count most, file paths least
WEIGHTS = (5.0, 1.0, 3.0, 2.0, 0.5)
SNIPPET_ORDER = ("goal", "decision", "rejected", "conversation", "path")  # where a snippet is taken from
MAX_QUERY = 256  # characters of a query
MAX_TERMS = 16  # words, phrases and prefixes in one query
MIN_PREFIX = 2  # letters before a ``*``: ``r*`` would expand to most of the vocabulary
MAX_LIMIT = 100  # results on one page
RANK_WINDOW = 5000  # a query matching more sessions ranks the newest this many (BM25 costs per match)
RESULT_CAP = 1000  # best matches a query pages through and counts facets over
MAX_OFFSET = RESULT_CAP - 1
FACET_VALUES = 10  # values listed per facet
MAX_PIECE = 16 * 1024  # characters indexed of one piece of text
MAX_DOC = 1 << 20  # characters indexed of one session
MAX_PATHS = 2000  # file paths indexed per session
BATCH = 256  # landing records read and written per transaction while catching up
OPEN_CAP = 1000  # open sessions indexed per repository (newest first)
SNIPPET_WORDS = 30  # words of context in a snippet
MIN_COMMIT = 7  # hex digits of a git commit id looked up (git's own shortest abbreviation)
MAX_COMMIT = 64  # hex digits of a whole SHA-256 commit id (SHA-1: 40)
COMMIT_CHOICES = 10  # commits listed when a prefix is ambiguous
_HL_OPEN, _HL_CLOSE = "\x02", "\x03"
_WORD = re.compile(r"\w+")
_TERM = re.compile(r'"([^"]*)"|([^\s"]+)')
_HEX = re.compile(r"[0-9a-f]+")


# -- queries ----------------------------------------------------------------------------------------


def fts_expression(text: str) -> str:
    """The user's query as a safe FTS5 expression: every word, phrase and prefix becomes a quoted
    string (all must match), so no FTS5 syntax of the user's ever reaches the index."""
    if not isinstance(text, str) or not text.strip():
        raise BadQuery("the query is empty: give a word to search for")
    if len(text) > MAX_QUERY:
        raise BadQuery(f"the query is too long ({len(text)} characters, at most {MAX_QUERY})")
    if text.count('"') % 2:
        raise BadQuery('a quote (") is not closed: write a phrase as "retry backoff"')
    parts: list[str] = []
    for m in _TERM.finditer(text):
        phrase, term = m.group(1), m.group(2)
        if phrase is not None:
            words = _WORD.findall(phrase)
            if words:
                parts.append('"' + " ".join(words) + '"')
            continue
        prefix = term.endswith("*")
        core = term.rstrip("*")
        if "*" in core:
            raise BadQuery(f"{term!r}: a * only ends a word, as in retr*")
        words = _WORD.findall(core)
        if prefix and (not words or len(words[-1]) < MIN_PREFIX):
            raise BadQuery(f"{term!r}: a prefix needs at least {MIN_PREFIX} letters before the *")
        if words:
            parts.append('"' + " ".join(words) + '"' + ("*" if prefix else ""))
    if not parts:
        raise BadQuery("the query has no word to search for (only punctuation)")
    if len(parts) > MAX_TERMS:
        raise BadQuery(f"the query has {len(parts)} terms, at most {MAX_TERMS}")
    return " AND ".join(parts)


def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(kinds))
    for k in out:
        if k not in KINDS:
            raise BadQuery(f"kind is one of {', '.join(KINDS)}, not {k!r}")
    return out


def scoped(expr: str, kinds: Sequence[str]) -> str:
    """``expr`` matched in the columns ``kinds`` only (all columns when empty)."""
    return f"{{{' '.join(kinds)}}} : ({expr})" if kinds else expr


@dataclass
class Query:
    """What to look for and where; empty fields do not filter. ``scope`` is the set of repository
    prefixes the caller may read (None: every one the index holds, a working copy's own index)."""

    text: str
    kinds: tuple[str, ...] = ()
    scope: Sequence[str] | None = None
    repo: str = ""  # one repository's name
    origin: str | None = None  # "" = local repositories only, a host = that node's mirrors
    author: str = ""
    role: str = ""
    state: str = ""  # landed | open
    since: float | None = None
    until: float | None = None
    pos_from: int | None = None
    pos_to: int | None = None
    limit: int = 20
    offset: int = 0
    facets: bool = True
    newest: bool = False  # newest first (a sessions list) instead of best first


@dataclass
class Hit:
    """One session found: where it is, who ran it, and the piece of text that matched."""

    repo: str
    origin: str  # "" for a local repository, the origin node's host for a mirror
    session: str
    state: str  # landed | open
    position: int | None
    time: float
    author: str
    role: str
    goal: str
    kind: str  # the column the snippet comes from
    seq: int | None  # the event the snippet comes from
    snippet: list[tuple[str, bool]]  # text pieces, True where they matched
    score: float

    def snippet_text(self, mark: tuple[str, str] = ("[", "]")) -> str:
        return "".join(f"{mark[0]}{t}{mark[1]}" if hit else t for t, hit in self.snippet)

    def to_json(self) -> dict[str, Any]:
        return {"repo": self.repo, "origin": self.origin or None, "session": self.session,
                "state": self.state, "position": self.position, "time": self.time,
                "author": self.author, "role": self.role, "goal": self.goal, "kind": self.kind,
                "seq": self.seq, "snippet": [[t, hit] for t, hit in self.snippet],
                "text": self.snippet_text(), "score": round(self.score, 4)}


@dataclass
class Results:
    """A page of hits, best first; ``total`` counts every match the caller may read (at most
    ``RANK_WINDOW``: ``capped`` says there were more, and the newest that many were ranked)."""

    query: str
    total: int
    capped: bool
    hits: list[Hit]
    offset: int
    facets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    @property
    def next(self) -> int | None:
        end = self.offset + len(self.hits)
        return end if end < min(self.total, RESULT_CAP) else None

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "total": self.total, "capped": self.capped,
                "results": [h.to_json() for h in self.hits], "offset": self.offset, "next": self.next,
                "facets": {k: [[v, n] for v, n in vs] for k, vs in self.facets.items()}}


# -- documents ----------------------------------------------------------------------------------------


@dataclass
class Doc:
    """A session's searchable text: per column, its pieces and the event each came from."""

    session: str
    state: str
    position: int | None
    time: float
    author: str
    role: str
    goal: str
    pieces: dict[str, list[tuple[int | None, str]]] = field(default_factory=lambda: {k: [] for k in KINDS})
    seen: int = -1  # the last event seq taken in (open sessions grow)
    size: int = 0

    def add(self, kind: str, seq: int | None, text: Any) -> None:
        if not isinstance(text, str) or not text.strip() or self.size >= MAX_DOC:
            return
        if kind == "path" and len(self.pieces["path"]) >= MAX_PATHS:
            return
        piece = " ".join(text[:MAX_PIECE].split())
        self.size += len(piece)
        self.pieces[kind].append((seq, piece))

    def take(self, events: Iterable[Any]) -> None:
        """Take in events (stored data: anything malformed is skipped, never a crash)."""
        for e in events:
            if not isinstance(e, dict):
                continue
            seq = e.get("seq") if isinstance(e.get("seq"), int) else None
            if seq is not None:
                self.seen = max(self.seen, seq)
            t = e.get("type")
            if t == "start":
                self.add("goal", seq, e.get("goal"))
            elif t == "say":
                self.add("conversation", seq, e.get("text"))
            elif t == "checkpoint":
                self.add("conversation", seq, e.get("note"))
            elif t == "abandon":
                self.add("conversation", seq, e.get("reason"))
            elif t == "decide":
                decision, why = e.get("decision"), e.get("why")
                self.add("decision", seq, " — ".join(x for x in (decision, why) if isinstance(x, str) and x))
                alternatives = e.get("alternatives")
                for alt in alternatives if isinstance(alternatives, list) else ():
                    self.add("rejected", seq, alt)
            elif t in ("write", "delete") and self.state == "open":
                self.add("path", seq, e.get("path"))

    def columns(self) -> list[str]:
        return ["\n".join(text for _, text in self.pieces[k]) for k in KINDS]

    def seqs(self) -> str:
        return json.dumps({k: [s for s, _ in self.pieces[k]] for k in KINDS if self.pieces[k]})


def landed_doc(rec: LandingRecord, index: int, snapshot: Any) -> Doc:
    """The document of the ``index``-th session of a landing record; its snapshot (None when it
    cannot be read) gives the events, the record alone the goal, author and paths."""
    s = rec.sessions[index]
    doc = Doc(s.session, "landed", rec.position, rec.time, s.author, s.role, s.goal)
    events = snapshot.get("events") if isinstance(snapshot, dict) else None
    if isinstance(events, list) and events:
        doc.take(events)
    else:
        doc.add("goal", 0, s.goal)
    for path in sorted(s.changes):
        doc.add("path", None, path)
    return doc


# -- git commits ------------------------------------------------------------------------------------


@dataclass
class CommitHit:
    """A git commit found: the landing it became (``iteration`` 0) or the iteration of a merge's
    landing it was brought in as (1, 2, ...), and whether ``hif export git`` writes it back with
    this same id (``exact``)."""

    commit: str
    position: int
    session: str
    iteration: int
    exact: bool

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "position": self.position, "session": self.session,
                "iteration": self.iteration, "exact": self.exact}


def commit_prefix(text: Any) -> str:
    """A git commit id (or its first digits) as the index holds it, lower case; a BadQuery saying
    what is wrong otherwise (not hex, too short, too long)."""
    if not isinstance(text, str) or not text:
        raise BadQuery("give a git commit id (hex digits)")
    t = text.lower()
    if not _HEX.fullmatch(t):
        raise BadQuery(f"{text[:80]!r} is not a git commit id: it is hex digits (0-9, a-f)")
    if len(t) < MIN_COMMIT:
        raise BadQuery(f"{t} is too short for a git commit id: give at least {MIN_COMMIT} hex digits")
    if len(t) > MAX_COMMIT:
        raise BadQuery(f"a git commit id has at most {MAX_COMMIT} hex digits, not {len(t)}")
    return t


def one_commit(hits: Sequence[CommitHit], prefix: str, where: str) -> CommitHit:
    """The one commit of ``hits`` (what :meth:`SearchIndex.commits` found for ``prefix`` in
    ``where``): NotFound when there is none, Ambiguous listing them when there are several."""
    if not hits:
        raise NotFound(f"no git commit {prefix} in {where} (only history imported from git has commit ids)")
    if len(hits) > 1:
        listed = hits[:COMMIT_CHOICES]
        more = len(hits) > COMMIT_CHOICES
        raise Ambiguous(
            f"{prefix} is the start of {'more than ' if more else ''}{len(listed)} git commits in {where}: "
            + ", ".join(f"{h.commit[:12]} (position {h.position})" for h in listed)
            + ("…" if more else "") + "; give more digits",
            [h.to_json() for h in listed])
    return hits[0]


def _git_id(value: Any) -> str | None:
    """A commit id as stored data names it, lower case; None when it is not one."""
    if isinstance(value, str) and MIN_COMMIT <= len(value) <= MAX_COMMIT:
        v = value.lower()
        if _HEX.fullmatch(v):
            return v
    return None


def commit_rows(rec: LandingRecord, snapshot: Any, exact_of: Callable[[str], bool]) -> list[CommitHit]:
    """The git commits a landing record came from, in the order ``hif export git`` writes them: the
    commits its merge brought in (its checkpoints), then its own. ``exact_of`` says whether an
    earlier commit is written back with its id (False for one never seen).

    A commit is exact when the importer found that git dropped nothing from it (its kept data
    says ``exact``: it checked the rebuilt commit's hash; older imports do not say, so are not
    claimed) and the exporter's rule (:mod:`hif.git.exporter`) keeps it: only a record of one
    session with ``extra["git"]`` is rebuilt from its commit (a snapshot that does not read: none),
    with the parents it names only when each was itself written back with its id (else the
    exporter gives it other parents, so another id)."""
    meta = rec.extra.get("git")
    own = _git_id(meta.get("commit")) if isinstance(meta, dict) else None
    if own is None or not rec.sessions:
        return []
    assert isinstance(meta, dict)
    sid = rec.sessions[0].session
    rebuilt = len(rec.sessions) == 1 and isinstance(snapshot, dict)
    here: dict[str, bool] = {}

    def exact(kept: dict[str, Any]) -> bool:
        parents = kept.get("parents", [])
        if kept.get("exact") is not True or not isinstance(parents, list):
            return False
        for p in parents:
            pid = _git_id(p)
            if pid is None or not (here[pid] if pid in here else exact_of(pid)):
                return False
        return True

    out: list[CommitHit] = []
    events = snapshot.get("events") if rebuilt else None
    iteration = 0
    for e in events if isinstance(events, list) else ():
        if not isinstance(e, dict) or e.get("type") != "checkpoint":
            continue
        iteration += 1
        side = e.get("git")
        cid = _git_id(side.get("commit")) if isinstance(side, dict) else None
        if cid is None:
            continue
        here[cid] = exact(side)
        out.append(CommitHit(cid, rec.position, sid, iteration, here[cid]))
    out.append(CommitHit(own, rec.position, sid, 0, rebuilt and exact(meta)))
    return out


# -- the index ------------------------------------------------------------------------------------------


_DDL = f"""
create table if not exists meta (key text primary key, value text);
create table if not exists repos (
    id integer primary key, prefix text unique not null, name text not null, origin text not null,
    position integer not null default 0, tree blob);
create table if not exists docs (
    id integer primary key, repo integer not null, session text not null, state text not null,
    position integer, time real not null, author text not null, role text not null, goal text not null,
    seqs text not null, seen integer not null default -1);
create unique index if not exists docs_session on docs (repo, session);
create index if not exists docs_state on docs (repo, state);
create table if not exists commits (
    repo integer not null, id text not null, position integer not null, session text not null,
    iteration integer not null, exact integer not null, primary key (repo, id)) without rowid;
create virtual table if not exists fts using fts5 (
    {", ".join(KINDS)}, tokenize = 'porter unicode61 remove_diacritics 2');
"""


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    db.execute("pragma journal_mode = wal")
    db.execute("pragma synchronous = normal")  # derived data: a lost tail is caught up again
    return db


class SearchIndex:
    """The index file of one reader. Opening it checks it; a damaged, foreign or deleted file is
    replaced by an empty one, which the next catch-up fills again from the store."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.rebuilt = 0  # how often this handle found the file damaged or gone and started anew
        self.db = self._open()

    # -- the file ---------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db: sqlite3.Connection | None = None
        try:
            db = _connect(self.path)
            ok = db.execute("pragma quick_check").fetchone()
            version = None
            if ok == ("ok",):
                db.executescript(_DDL)
                row = db.execute("select value from meta where key = 'schema'").fetchone()
                version = row[0] if row else None
                if version is None and db.execute("select count(*) from repos").fetchone()[0] == 0:
                    db.execute("insert or replace into meta values ('schema', ?)", (str(SCHEMA),))
                    version = str(SCHEMA)
            if version == str(SCHEMA):
                self._inode = os.stat(self.path).st_ino
                return db
        except sqlite3.DatabaseError:
            pass
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        return self._start_anew()

    def _start_anew(self) -> sqlite3.Connection:
        """Remove the file (and its WAL) and create an empty index."""
        self.rebuilt += 1
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")
        db = _connect(self.path)
        db.executescript(_DDL)
        db.execute("insert or replace into meta values ('schema', ?)", (str(SCHEMA),))
        self._inode = os.stat(self.path).st_ino
        return db

    def check_file(self) -> None:
        """Start anew when the file was deleted or replaced under this handle (cheap: one stat)."""
        try:
            same = os.stat(self.path).st_ino == self._inode
        except FileNotFoundError:
            same = False
        if not same:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            self.rebuilt += 1
            self.db = self._open()

    def damaged(self) -> None:
        """A query or write found the file damaged: start anew (the store still has everything)."""
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        self.db = self._start_anew()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()

    def size(self) -> int:
        return sum(os.path.getsize(f"{self.path}{s}") for s in ("", "-wal") if os.path.exists(f"{self.path}{s}"))

    # -- writing ----------------------------------------------------------------------------------

    def _repo_row(self, prefix: str, name: str, origin: str) -> tuple[int, int, bytes | None]:
        row = self.db.execute("select id, position, tree from repos where prefix = ?", (prefix,)).fetchone()
        if row is None:
            cur = self.db.execute("insert into repos (prefix, name, origin) values (?, ?, ?)",
                                  (prefix, name, origin))
            return int(cur.lastrowid or 0), 0, None
        return int(row[0]), int(row[1]), row[2]

    def _write(self, rid: int, docs: Sequence[Doc], position: int | None = None,
               tree: bytes | None = None, commits: Sequence[CommitHit] = ()) -> None:
        db = self.db
        db.execute("begin immediate")
        try:
            for d in docs:
                old = db.execute("select id from docs where repo = ? and session = ?", (rid, d.session)).fetchone()
                if old is not None:
                    db.execute("delete from fts where rowid = ?", old)
                    db.execute("delete from docs where id = ?", old)
                cur = db.execute(
                    "insert into docs (repo, session, state, position, time, author, role, goal, seqs, seen)"
                    " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rid, d.session, d.state, d.position, d.time, d.author, d.role, d.goal, d.seqs(), d.seen))
                db.execute(f"insert into fts (rowid, {', '.join(KINDS)}) values (?, ?, ?, ?, ?, ?)",
                           (cur.lastrowid, *d.columns()))
            # a commit id claimed twice (only a forged history could): the first landing keeps it
            db.executemany("insert or ignore into commits values (?, ?, ?, ?, ?, ?)",
                           [(rid, c.commit, c.position, c.session, c.iteration, int(c.exact)) for c in commits])
            if position is not None:
                db.execute("update repos set position = ?, tree = ? where id = ? and position < ?",
                           (position, tree, rid, position))
            db.execute("commit")
        except BaseException:
            db.execute("rollback")
            raise

    def forget(self, prefix: str) -> None:
        """Drop a repository's documents (its history changed under the index, or it is gone)."""
        row = self.db.execute("select id from repos where prefix = ?", (prefix,)).fetchone()
        if row is None:
            return
        self.db.execute("begin immediate")
        self.db.execute("delete from fts where rowid in (select id from docs where repo = ?)", row)
        self.db.execute("delete from docs where repo = ?", row)
        self.db.execute("delete from commits where repo = ?", row)
        self.db.execute("delete from repos where id = ?", row)
        self.db.execute("commit")

    async def catch_up(self, repo: Repo, origin: str = "", *, batch: int = BATCH) -> int:
        """Index the landings after the last position indexed, by position; returns how many
        sessions were added. Costs one probe when nothing is new. History that no longer matches
        what was indexed (a store replaced under the index) is dropped and indexed again."""
        self.check_file()
        try:
            rid, done, tree = self._repo_row(repo.prefix, repo.name, origin)
        except sqlite3.DatabaseError:
            self.damaged()
            rid, done, tree = self._repo_row(repo.prefix, repo.name, origin)
        if done:
            rec = await repo.mainline.peek(done)
            if rec is None or rec.tree != tree:
                self.forget(repo.prefix)
                rid, done, tree = self._repo_row(repo.prefix, repo.name, origin)
        head = await repo.mainline.head(done or None) if done else await repo.mainline.head()
        added = 0
        pos = done
        known: dict[str, bool] = {}  # the batch's commits, not written yet: exact or not

        def exact_of(cid: str) -> bool:
            return known[cid] if cid in known else self._exact(rid, cid)

        while pos < head:
            last = min(head, pos + batch)
            records = await _all([repo.mainline.record(p) for p in range(pos + 1, last + 1)])
            pairs = [(rec, i) for rec in records for i in range(len(rec.sessions))]
            snaps = await together([repo.objects.get_value("snapshot", rec.sessions[i].snapshot)
                                    for rec, i in pairs])
            snaps = [None if isinstance(snap, BaseException) else snap for snap in snaps]
            docs = [landed_doc(rec, i, snap) for (rec, i), snap in zip(pairs, snaps, strict=True)]
            first = {rec.position: snap for (rec, i), snap in zip(pairs, snaps, strict=True) if i == 0}
            commits: list[CommitHit] = []
            for rec in records:  # in position order: a commit's parents come before it
                for c in commit_rows(rec, first.get(rec.position), exact_of):
                    known.setdefault(c.commit, c.exact)
                    commits.append(c)
            self._write(rid, docs, last, records[-1].tree, commits)
            known.clear()
            added += len(docs)
            pos = last
        return added

    def _exact(self, rid: int, cid: str) -> bool:
        """Whether the commit ``cid`` indexed earlier is written back with its id (False: unknown)."""
        row = self.db.execute("select exact from commits where repo = ? and id = ?", (rid, cid)).fetchone()
        return bool(row and row[0])

    async def refresh_open(self, repo: Repo, origin: str = "") -> int:
        """Index the open sessions' new events (each session from the last event taken in) and drop
        sessions that closed; returns how many sessions changed."""
        rid, _, _ = self._repo_row(repo.prefix, repo.name, origin)
        open_now = sorted(await repo.sessions.list_open(), reverse=True)[:OPEN_CAP]
        rows = {s: (state, seen) for s, state, seen in self.db.execute(
            "select session, state, seen from docs where repo = ? and state = 'open'", (rid,))}
        gone = [s for s in rows if s not in set(open_now)]
        if gone:
            self.db.execute("begin immediate")
            for s in gone:
                self.db.execute("delete from fts where rowid in (select id from docs where repo = ? and session = ?"
                                " and state = 'open')", (rid, s))
                self.db.execute("delete from docs where repo = ? and session = ? and state = 'open'", (rid, s))
            self.db.execute("commit")
        landed = {s for (s,) in self.db.execute(
            f"select session from docs where repo = ? and state = 'landed' and session in"
            f" ({', '.join('?' * len(open_now))})", (rid, *open_now))} if open_now else set()
        changed = []
        for sid in open_now:
            if sid in landed:
                continue  # its open marker outlived its landing for a moment
            seen = rows[sid][1] if sid in rows else -1
            events = await _events_after(repo, sid, seen)
            if not events:
                continue
            doc = self._open_doc(rid, sid) if sid in rows else None
            if doc is None:
                start = events[0] if seen < 0 else None
                if not isinstance(start, dict) or start.get("type") != "start":
                    continue  # no start event (yet): no session to readers
                t = start.get("time")
                doc = Doc(sid, "open", None, float(t) if isinstance(t, (int, float)) else time.time(),
                          str(start.get("author", "")), str(start.get("role", "")), str(start.get("goal", "")))
            doc.take(events)
            changed.append(doc)
        if changed:
            self._write(rid, changed)
        return len(changed) + len(gone)

    def _open_doc(self, rid: int, sid: str) -> Doc | None:
        """An open session's document as indexed, to add its new events to."""
        row = self.db.execute(
            f"select d.time, d.author, d.role, d.goal, d.seqs, d.seen, {', '.join('f.' + k for k in KINDS)}"
            " from docs d join fts f on f.rowid = d.id where d.repo = ? and d.session = ?", (rid, sid)).fetchone()
        if row is None:
            return None
        doc = Doc(sid, "open", None, row[0], row[1], row[2], row[3], seen=row[5])
        seqs = json.loads(row[4])
        for k, text in zip(KINDS, row[6:], strict=True):
            for s, piece in zip(seqs.get(k, []), text.split("\n") if text else [], strict=False):
                doc.pieces[k].append((s, piece))
                doc.size += len(piece)
        return doc

    async def refresh(self, repo: Repo, origin: str = "") -> int:
        """Landings first (a session that landed replaces its open document), then open sessions."""
        return await self.catch_up(repo, origin) + await self.refresh_open(repo, origin)

    def indexed(self) -> dict[str, int]:
        """Position indexed per repository prefix."""
        return {p: n for p, n in self.db.execute("select prefix, position from repos")}

    # -- reading ----------------------------------------------------------------------------------

    def query(self, q: Query) -> Results:
        """Run ``q`` on a connection of its own (so queries may run in threads beside the writer).
        A damaged file raises IndexDamaged: the owner calls :meth:`damaged`, catches up, asks again."""
        base = fts_expression(q.text)
        check_kinds(q.kinds)
        if not 1 <= q.limit <= MAX_LIMIT:
            raise BadQuery(f"limit is between 1 and {MAX_LIMIT}")
        if not 0 <= q.offset <= MAX_OFFSET:
            raise BadQuery(f"offset is between 0 and {MAX_OFFSET}")
        try:
            db = _connect(self.path)
            try:
                return _run(db, q, base)
            finally:
                db.close()
        except sqlite3.DatabaseError as e:
            raise IndexDamaged(f"the search index {self.path} does not read ({e})") from None


    def commits(self, prefix: str, text: str) -> list[CommitHit]:
        """The git commits of repository ``prefix`` whose id starts with ``text`` (any case, at
        least MIN_COMMIT hex digits: a BadQuery else), at most COMMIT_CHOICES + 1 of them; read on a
        connection of its own, like :meth:`query` (IndexDamaged when the file does not read)."""
        start = commit_prefix(text)
        try:
            db = _connect(self.path)
            try:
                rows = db.execute(
                    "select c.id, c.position, c.session, c.iteration, c.exact from commits c"
                    " join repos r on r.id = c.repo where r.prefix = ? and c.id >= ? and c.id < ?"
                    " order by c.id limit ?", (prefix, start, start + "g", COMMIT_CHOICES + 1)).fetchall()
            finally:
                db.close()
        except sqlite3.DatabaseError as e:
            raise IndexDamaged(f"the search index {self.path} does not read ({e})") from None
        return [CommitHit(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]


def _filters(q: Query, expr: str) -> tuple[str, list[Any]]:
    where, params = ["fts match ?"], [expr]
    if q.scope is not None:
        where.append("d.repo in (select id from repos where prefix in (select value from json_each(?)))")
        params.append(json.dumps(list(q.scope)))
    for column, value in (("r.name", q.repo), ("d.role", q.role), ("d.state", q.state)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if q.author:
        where.append("d.author = ? collate nocase")
        params.append(q.author)
    if q.origin is not None:
        where.append("r.origin = ?")
        params.append(q.origin)
    for cond, value in (("d.time >= ?", q.since), ("d.time <= ?", q.until),
                        ("d.position >= ?", q.pos_from), ("d.position <= ?", q.pos_to)):
        if value is not None:
            where.append(cond)
            params.append(value)
    return " and ".join(where), params


_FROM = "from fts join docs d on d.id = fts.rowid join repos r on r.id = d.repo"


def _run(db: sqlite3.Connection, q: Query, base: str) -> Results:
    expr = scoped(base, q.kinds)
    where, params = _filters(q, expr)
    # access and every filter are applied here, in SQL, before anything is counted or ranked
    total = db.execute(f"select count(*) from (select 1 {_FROM} where {where} limit ?)",
                       (*params, RANK_WINDOW + 1)).fetchone()[0]
    capped = total > RANK_WINDOW
    if capped:  # BM25 costs per match: rank the newest RANK_WINDOW matches the caller may read
        lo = db.execute(f"select fts.rowid {_FROM} where {where} order by fts.rowid desc limit 1 offset ?",
                        (*params, RANK_WINDOW - 1)).fetchone()[0]
        where += " and fts.rowid >= ?"
        params.append(lo)
        total = RANK_WINDOW
    weights = ", ".join(str(w) for w in WEIGHTS)
    order = "d.position desc, d.time desc" if q.newest else "score, d.time desc"
    select = (f"select d.id, bm25(fts, {weights}) as score, r.name, r.origin, d.author, d.role, d.state"
              f" {_FROM} where {where} order by {order} limit ?")
    facets: dict[str, list[tuple[str, int]]] = {}
    if q.facets and total:
        rows = db.execute(select, (*params, RESULT_CAP)).fetchall()  # facets count the best RESULT_CAP
        page = rows[q.offset:q.offset + q.limit]
        for name, col in (("repository", 2), ("origin", 3), ("author", 4), ("role", 5), ("state", 6)):
            counts = Counter(r[col] or ("local" if name == "origin" else "") for r in rows)
            facets[name] = counts.most_common(FACET_VALUES)
        kinds = []
        for kind in q.kinds or KINDS:
            kwhere, kparams = _filters(q, scoped(base, (kind,)))
            n = db.execute(f"select count(*) from (select 1 {_FROM} where {kwhere} limit ?)",
                           (*kparams, RESULT_CAP)).fetchone()[0]
            if n:
                kinds.append((kind, n))
        facets["kind"] = kinds
    else:  # only the page is fetched
        page = db.execute(select + " offset ?", (*params, q.limit, q.offset)).fetchall() if total else []
    hits = [_hit(db, row[0], row[1], expr, q.kinds) for row in page]
    return Results(q.text, total, capped, [h for h in hits if h is not None], q.offset, facets)


def _hit(db: sqlite3.Connection, rowid: int, score: float, expr: str, kinds: Sequence[str]) -> Hit | None:
    cols = ", ".join(f"highlight(fts, {i}, '{_HL_OPEN}', '{_HL_CLOSE}')" for i in range(len(KINDS)))
    row = db.execute(
        f"select r.name, r.origin, d.session, d.state, d.position, d.time, d.author, d.role, d.goal, d.seqs,"
        f" {cols} {_FROM} where fts match ? and fts.rowid = ?", (expr, rowid)).fetchone()
    if row is None:
        return None
    texts = dict(zip(KINDS, row[10:], strict=True))
    seqs = json.loads(row[9])
    kind, seq, snippet = "goal", 0, [(row[8], False)]
    for k in SNIPPET_ORDER:
        if kinds and k not in kinds:
            continue
        text = texts[k] or ""
        if _HL_OPEN not in text:
            continue
        pieces = text.split("\n")
        i = next(n for n, p in enumerate(pieces) if _HL_OPEN in p)
        ks = seqs.get(k, [])
        kind, seq, snippet = k, ks[i] if i < len(ks) else None, _snippet(pieces[i])
        break
    return Hit(repo=row[0], origin=row[1], session=row[2], state=row[3], position=row[4], time=row[5],
               author=row[6], role=row[7], goal=row[8], kind=kind, seq=seq, snippet=snippet, score=score)


def _snippet(marked: str) -> list[tuple[str, bool]]:
    """The marked piece cut to a window of words around its first match, as (text, matched) parts."""
    start = marked.index(_HL_OPEN)
    before = marked[:start].split(" ")
    keep = max(0, len(before) - SNIPPET_WORDS // 3)
    head = "…" if keep else ""
    rest = " ".join(before[keep:]) + marked[start:]
    words = rest.split(" ")
    tail = "…" if len(words) > SNIPPET_WORDS else ""
    rest = " ".join(words[:SNIPPET_WORDS])
    if rest.count(_HL_OPEN) > rest.count(_HL_CLOSE):
        rest += _HL_CLOSE
    parts: list[tuple[str, bool]] = [(head, False)] if head else []
    for n, chunk in enumerate(rest.split(_HL_OPEN)):
        if n == 0:
            if chunk:
                parts.append((chunk, False))
            continue
        hit, _, plain = chunk.partition(_HL_CLOSE)
        parts.append((hit, True))
        if plain:
            parts.append((plain, False))
    if tail:
        parts.append((tail, False))
    return parts


async def _all(coros: list[Any]) -> list[Any]:
    out = []
    for r in await together(coros):
        if isinstance(r, BaseException):
            raise r
        out.append(r)
    return out


async def _events_after(repo: Repo, sid: str, since: int, *, limit: int = 500) -> list[Any]:
    """An open session's events after ``since`` (stored data: one that does not decode is skipped)."""
    prefix = f"{repo.prefix}sessions/{sid}/events/"
    after = prefix + f"{since:0{SEQ_WIDTH}d}" if since >= 0 else None
    out: list[Any] = []
    while True:
        keys = await repo.store.list_page(prefix, start_after=after, limit=limit)
        if not keys:
            return out
        for r in await together([repo.store.get(k) for k in keys]):
            if isinstance(r, NotFound):
                continue  # taken back (an event that reached a closed session)
            if isinstance(r, BaseException):
                raise r
            with contextlib.suppress(CorruptObject):
                out.append(decode(r))
        after = keys[-1]
        if len(keys) < limit:
            return out


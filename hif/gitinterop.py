"""Git interop: a Git branch's history as landed sessions (``hif import git``) and the mainline back
as a Git repository (``hif export git``).

Both directions go through Git's own documented stream formats, never Git's object files: the import
parses ``git fast-export`` as it streams (each blob is stored as it arrives; each commit's tree is its
first parent's tree with the commit's changes applied by ``hif.tree.apply``, so the cost follows the
size of the changes), and the export feeds ``git fast-import``, so Git itself builds and checks every
object that comes back.

Mapping (docs/architecture.md, "Git interop"):

- each commit of the branch's first-parent chain becomes one landed session at the next position:
  goal = the message's first line, a ``decide`` event with the rest, ``write``/``delete`` events with
  the exact changes against the first parent (a rename is a delete and an add);
- the commits a merge brings in (reachable from its other parents, not imported before) become the
  merge session's iterations: ``checkpoint`` events with their trees, in topological order;
- every record keeps the commit exactly (``extra["git"]``: id, parents, raw author and committer
  lines, raw message and encoding), and each checkpoint keeps its commit likewise, so the export can
  rebuild identical commits, and so identical commit ids when nothing was lost (signatures are);
- the mainline is the progress: its head record names the last imported commit, so a rerun continues
  with the commits after it, and a record (the commit point) is only written once every object it
  names is stored.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hif.errors import HifError, InvalidInput, InvalidPath, NotFound, PreconditionFailed
from hif.mainline import LandedSession, LandingRecord, log_key
from hif.objects import EMPTY_TREE, EXEC, FILE, LINK, Entry, encode
from hif.paths import check_link_name, check_path
from hif.repo import Repo
from hif.session import Session, new_session_id
from hif.tree import apply
from hif.tree import diff as tree_diff

Progress = Callable[[int, int], None]  # (commits done, commits in all)

BATCH = 256  # commits whose records are made durable together (two file-system syncs per batch)
BATCH_SECONDS = 1.0  # ... or fewer, so an interrupted import loses at most about a second of work
ROLE = "human"  # git knows no roles; its authors are taken as people
NO_GOAL = "(no commit message)"
SIDE_REF = "refs/hif-export/side"  # scratch ref for merged-in commits while fast-import runs
_MODES = {b"100644": FILE, b"100755": EXEC, b"120000": LINK, b"100664": FILE}
_GIT_MODES = {FILE: b"100644", EXEC: b"100755", LINK: b"120000"}
_IDENT = re.compile(rb"^(.*?) ?<([^<>]*)> (-?\d+) ([+-]\d{4})$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_ESCAPES = {ord("a"): 7, ord("b"): 8, ord("f"): 12, ord("n"): 10, ord("r"): 13, ord("t"): 9,
            ord("v"): 11, ord("\\"): 92, ord('"'): 34}
# variables that would point git at another repository than the one we name
_GIT_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
             "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_COMMON_DIR",
             "GIT_CEILING_DIRECTORIES", "GIT_QUARANTINE_PATH")


# -- running git -------------------------------------------------------------------------------


def git_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_VARS}
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **extra})
    return env


def git(args: list[str], *, git_dir: str | None = None, cwd: str | None = None,
        env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    cmd = ["git", *(["--git-dir", git_dir] if git_dir else []), *args]
    try:
        done = subprocess.run(cmd, cwd=cwd, env=env or git_env(), stdin=subprocess.DEVNULL,
                              capture_output=True)
    except FileNotFoundError:
        raise InvalidInput("the git command is not installed (hif's git interop runs it)") from None
    if check and done.returncode != 0:
        raise InvalidInput(f"git {args[0]} failed: {_first_line(done.stderr)}")
    return done


def _first_line(err: bytes) -> str:
    lines = [ln for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[0].removeprefix("fatal: ").strip() if lines else "no error message"


def _out(done: subprocess.CompletedProcess[bytes]) -> str:
    return done.stdout.decode("utf-8", "replace").strip()


def is_url(source: str) -> bool:
    """A remote to clone (``scheme://`` or scp-like ``user@host:path``) rather than a local path."""
    return "://" in source or bool(re.match(r"^[\w.-]+@[\w.-]+:", source))


# -- the source repository -----------------------------------------------------------------------


@dataclass
class GitSource:
    """A Git repository to import from, with the branch and the commit it is at."""

    git_dir: str
    label: str  # what the user named: a path or a URL
    branch: str | None  # e.g. "main"; None for a detached HEAD
    tip: str

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return git(list(args), git_dir=self.git_dir, check=check)

    @classmethod
    def open(cls, source: str, branch: str | None = None, *, mirror: Path | None = None) -> GitSource:
        """Open a local repository, or clone/fetch a URL into ``mirror`` (a bare copy kept for the
        next, incremental run). Refuses what cannot be imported, with one clear line."""
        if is_url(source):
            if mirror is None:
                raise InvalidInput(f"{source}: importing from a URL needs a place for its clone")
            git_dir = _mirror(source, mirror)
        else:
            git_dir = _local_git_dir(source)
        shallow = git(["rev-parse", "--is-shallow-repository"], git_dir=git_dir)
        if _out(shallow) == "true":
            raise InvalidInput(f"{source} is a shallow clone: its history is incomplete "
                               "(run git fetch --unshallow there first)")
        if branch is None:
            head = git(["symbolic-ref", "-q", "HEAD"], git_dir=git_dir, check=False)
            ref = _out(head) if head.returncode == 0 else "HEAD"
        else:
            ref = branch if branch.startswith("refs/") or branch == "HEAD" else f"refs/heads/{branch}"
        found = git(["rev-parse", "--verify", "-q", f"{ref}^{{commit}}"], git_dir=git_dir, check=False)
        if found.returncode != 0:
            if branch is not None:
                raise NotFound(f"no branch {branch} in {source}")
            raise InvalidInput(f"{source} is an empty repository (no commits to import)")
        name = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
        return cls(git_dir, source, name, _out(found))

    def first_parent_chain(self, last: str | None) -> list[str]:
        """The commits to land, oldest first: the first-parent chain from the tip back to ``last``."""
        args = ["rev-list", "--first-parent", "--reverse", "--parents", self.tip]
        if last:
            args.append(f"^{last}")
        rows = [ln.split() for ln in _out(self.run(*args)).splitlines() if ln]
        if last and rows and (len(rows[0]) < 2 or rows[0][1] != last):
            raise InvalidInput(
                f"{self.label}: the imported history ends at commit {last}, which is not on the "
                f"first-parent history of {self.branch or self.tip}; it was rewritten or is "
                "another branch (import it into a new repository)")
        return [r[0] for r in rows]

    def count(self, last: str | None) -> int:
        args = ["rev-list", "--count", self.tip, *([f"^{last}"] if last else [])]
        return int(_out(self.run(*args)) or 0)

    def is_ancestor(self, older: str, newer: str) -> bool:
        return self.run("merge-base", "--is-ancestor", older, newer, check=False).returncode == 0


def _local_git_dir(source: str) -> str:
    path = Path(source).absolute()
    if not path.is_dir():
        raise NotFound(f"not a git repository: {source} (no such directory)")
    # never let discovery climb into a parent directory's repository
    env = git_env(GIT_CEILING_DIRECTORIES=str(path.parent))
    found = git(["rev-parse", "--absolute-git-dir"], cwd=str(path), env=env, check=False)
    if found.returncode != 0:
        raise InvalidInput(f"not a git repository: {source}")
    return _out(found)


def _mirror(url: str, mirror: Path) -> str:
    """A bare clone of ``url`` in ``mirror``, brought up to date when it already exists."""
    if (mirror / "HEAD").exists():
        git(["fetch", "--quiet", "--prune", "origin", "+refs/heads/*:refs/heads/*"],
            git_dir=str(mirror))
        remote_head = git(["ls-remote", "--symref", "origin", "HEAD"], git_dir=str(mirror), check=False)
        m = re.match(r"ref: (refs/heads/\S+)\tHEAD", _out(remote_head))
        if m:
            git(["symbolic-ref", "HEAD", m.group(1)], git_dir=str(mirror))
        return str(mirror)
    mirror.parent.mkdir(parents=True, exist_ok=True)
    tmp = mirror.with_name(mirror.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    done = git(["clone", "--bare", "--quiet", "--", url, str(tmp)], check=False)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InvalidInput(f"cannot clone {url}: {_first_line(done.stderr)}")
    os.replace(tmp, mirror)
    return str(mirror)


# -- identities and messages ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ident:
    """An author or committer line as git wrote it, kept byte for byte."""

    raw: bytes

    def _parts(self) -> tuple[bytes, bytes, int, bytes]:
        m = _IDENT.match(self.raw)
        if m is None:
            return self.raw, b"", 0, b"+0000"
        return m.group(1), m.group(2), int(m.group(3)), m.group(4)

    @property
    def who(self) -> str:
        name, email, _, _ = self._parts()
        text = name.decode("utf-8", "replace").strip() or "unknown"
        return f"{text} <{email.decode('utf-8', 'replace')}>" if email else text

    @property
    def time(self) -> float:
        return float(self._parts()[2])


def _text(raw: bytes, encoding: str | None) -> str:
    try:
        return raw.decode(encoding or "utf-8", "replace")
    except LookupError:
        return raw.decode("utf-8", "replace")


def _keep(raw: bytes) -> str | bytes:
    """Text where it is UTF-8 (readable in JSON), the exact bytes otherwise."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _raw(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def goal_and_body(message: bytes, encoding: str | None) -> tuple[str, str]:
    """The first line is the goal; the rest (trimmed) is the decision note."""
    text = _text(message, encoding)
    first, _, rest = text.lstrip("\n").partition("\n")
    return first.strip() or NO_GOAL, rest.strip()


# -- reading git fast-export -----------------------------------------------------------------


@dataclass(slots=True)
class Commit:
    """One commit of the stream: its metadata, exact changes against its first parent, its tree."""

    oid: str
    author: Ident
    committer: Ident
    encoding: str | None
    message: bytes
    parents: list[str]
    changes: dict[str, Entry | None]
    tree: bytes = EMPTY_TREE

    def git_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "commit": self.oid, "parents": self.parents, "author": _keep(self.author.raw),
            "committer": _keep(self.committer.raw), "message": _keep(self.message),
        }
        if self.encoding:
            meta["encoding"] = self.encoding
        return meta


def unquote(path: bytes) -> bytes:
    """Undo git's C-style quoting of a path (``"a\\303\\251"`` -> ``a\xc3\xa9``)."""
    if not path.startswith(b'"'):
        return path
    if len(path) < 2 or not path.endswith(b'"'):
        raise InvalidInput(f"malformed quoted path in the git stream: {path!r}")
    body, out, i = path[1:-1], bytearray(), 0
    while i < len(body):
        c = body[i]
        if c != 92:  # backslash
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else -1
        if 48 <= nxt <= 51:  # \ooo
            out.append(int(body[i + 1:i + 4], 8))
            i += 4
        elif nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            raise InvalidInput(f"malformed quoted path in the git stream: {path!r}")
    return bytes(out)


def repo_path(raw: bytes, commit: str) -> str:
    """A git path as a hif path, or a clear refusal naming the commit and the path."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPath(f"commit {commit}: path {raw!r} is not UTF-8; hif cannot represent it") from None
    try:
        return check_path(text)
    except InvalidPath as e:
        raise InvalidPath(f"commit {commit}: path {text!r} cannot be represented in hif ({e})") from None


class FastExport:
    """A ``git fast-export`` process and a parser of its stream (the documented fast-import format):
    ``events`` hands each blob to the caller as it arrives and yields each :class:`Commit`, whose
    changes name the ids the caller returned for those blobs."""

    def __init__(self, source: GitSource, last: str | None) -> None:
        args = ["fast-export", "--reencode=no", "--show-original-ids", "--signed-tags=strip",
                "--tag-of-filtered-object=drop", "--reference-excluded-parents",
                "--use-done-feature", source.tip, *([f"^{last}"] if last else [])]
        # stderr goes to a file: a pipe nobody reads while the stream flows could fill and stall git
        self.err = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        try:
            self.proc = subprocess.Popen(
                ["git", "--git-dir", source.git_dir, *args], env=git_env(), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=self.err, bufsize=1 << 20)
        except FileNotFoundError:
            self.err.close()
            raise InvalidInput("the git command is not installed (hif's git interop runs it)") from None
        assert self.proc.stdout is not None
        self.f: IO[bytes] = self.proc.stdout
        self._back: bytes | None = None
        self.marks: dict[int, str] = {}  # commit mark -> commit id

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.err.close()

    def _line(self) -> bytes:
        if self._back is not None:
            line, self._back = self._back, None
            return line
        line = self.f.readline()
        if not line:
            self._failed("the stream ended early")
        return line[:-1] if line.endswith(b"\n") else line

    def _failed(self, what: str) -> None:
        rc = self.proc.wait()
        self.err.seek(0)
        err = self.err.read()
        raise InvalidInput(f"git fast-export failed: {_first_line(err) if rc else what}")

    def _data(self) -> bytes:
        line = self._line()
        if not line.startswith(b"data "):
            raise InvalidInput(f"unexpected line in the git stream: {line[:80]!r}")
        n = int(line[5:])
        data = self.f.read(n)
        if len(data) != n:
            self._failed("the stream ended inside a data block")
        if self.f.peek(1)[:1] == b"\n":  # the optional LF after data
            self.f.read(1)
        return data

    def _mark(self, line: bytes) -> int:
        if not line.startswith(b"mark :"):
            raise InvalidInput(f"unexpected line in the git stream: {line[:80]!r}")
        return int(line[6:])

    def _ref(self, text: bytes) -> str:
        if text.startswith(b":"):
            return self.marks[int(text[1:])]
        return text.decode()

    async def events(self, on_blob: Callable[[bytes], Awaitable[bytes]],
                     blob_ids: dict[int, bytes]) -> AsyncIterator[Commit]:
        """Yield each commit in topological order (parents first); blobs go to ``on_blob``
        (a coroutine function returning the blob's id) as they arrive."""
        while True:
            line = self._line()
            if not line or line.startswith((b"feature ", b"progress ", b"from ", b"reset ")):
                continue
            if line == b"done":
                return
            if line == b"blob":
                mark = self._mark(self._line())
                nxt = self._line()
                if not nxt.startswith(b"original-oid "):
                    self._back = nxt
                blob_ids[mark] = await on_blob(self._data())
            elif line.startswith(b"commit "):
                yield self._commit(blob_ids)
            else:
                raise InvalidInput(f"unexpected line in the git stream: {line[:80]!r}")

    def _commit(self, blob_ids: dict[int, bytes]) -> Commit:
        mark = self._mark(self._line())
        line = self._line()
        if not line.startswith(b"original-oid "):
            raise InvalidInput("git fast-export did not name the commit (git 2.21 or later is needed)")
        oid = line[13:].decode()
        self.marks[mark] = oid
        author = committer = None
        encoding: str | None = None
        while True:
            line = self._line()
            if line.startswith(b"author "):
                author = Ident(line[7:])
            elif line.startswith(b"committer "):
                committer = Ident(line[10:])
            elif line.startswith(b"encoding "):
                encoding = line[9:].decode("ascii", "replace")
            else:
                self._back = line
                break
        if committer is None:
            raise InvalidInput(f"commit {oid}: no committer in the git stream")
        message = self._data()
        parents: list[str] = []
        changes: dict[str, Entry | None] = {}
        while True:
            line = self.f.readline() if self._back is None else self._line() + b"\n"
            if not line or line == b"\n":
                break
            line = line[:-1]
            if line.startswith(b"from ") or line.startswith(b"merge "):
                parents.append(self._ref(line.split(b" ", 1)[1]))
            elif line.startswith(b"M "):
                mode, ref, raw = line[2:].split(b" ", 2)
                path = repo_path(unquote(raw), oid)
                kind = _MODES.get(mode)
                if mode == b"160000":
                    raise InvalidInput(f"commit {oid}: {path} is a submodule (a git link); "
                                       "hif cannot represent submodules")
                if kind is None or not ref.startswith(b":"):
                    raise InvalidInput(f"commit {oid}: {path} has mode {mode.decode()}, "
                                       "which hif cannot represent")
                if kind == LINK:
                    try:
                        check_link_name(path)
                    except InvalidPath as e:
                        raise InvalidPath(f"commit {oid}: {e}") from None
                changes[path] = Entry(kind, blob_ids[int(ref[1:])])
            elif line.startswith(b"D "):
                changes[repo_path(unquote(line[2:]), oid)] = None
            else:
                self._back = line  # the next command: this commit had no trailing blank line
                break
        return Commit(oid, author or committer, committer, encoding, message, parents, changes)


# -- import ----------------------------------------------------------------------------------


@dataclass
class ImportResult:
    source: str
    branch: str | None
    tip: str
    start: int  # the head before this run
    position: int  # the head after it
    sessions: int = 0  # sessions landed by this run
    commits: int = 0  # git commits read by this run (merged-in ones included)
    total: int = 0  # git commits this run had to import
    seconds: float = 0.0
    complete: bool = True  # False when stopped early (--max-commits)
    checked_out: bool | None = None  # set by the working copy

    @property
    def resumed(self) -> bool:
        return self.start > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "branch": self.branch, "tip": self.tip, "start": self.start,
            "position": self.position, "sessions": self.sessions, "commits": self.commits,
            "total": self.total, "seconds": round(self.seconds, 3), "complete": self.complete,
            "resumed": self.resumed, "up_to_date": self.complete and self.total == 0,
            "checked_out": self.checked_out,
            "commits_per_second": round(self.commits / self.seconds, 1) if self.seconds else None,
        }


async def last_imported(repo: Repo, head: int) -> str | None:
    """The git commit at the head of an imported mainline; refuses a mainline that is not one."""
    if head == 0:
        return None
    rec = await repo.mainline.record(head)
    meta = rec.extra.get("git")
    if not isinstance(meta, dict) or not isinstance(meta.get("commit"), str):
        raise InvalidInput(f"{repo.name}: position {head} did not come from git; importing continues "
                           "only a mainline that is an earlier import of the same history")
    return meta["commit"]


class _Importer:
    def __init__(self, repo: Repo, source: GitSource, head: int, result: ImportResult,
                 progress: Progress | None, max_sessions: int | None, batch: int) -> None:
        self.repo = repo
        self.db = repo.objects
        self.source = source
        self.position = head
        self.result = result
        self.progress = progress
        self.max_sessions = max_sessions
        self.batch_size = max(1, batch)
        self.trees: dict[str, bytes] = {}  # commit id -> hif tree, for every commit seen
        self.pending: dict[str, Commit] = {}  # merged-in commits waiting for their merge
        self.batch: list[tuple[LandingRecord, str, bytes]] = []  # (record, session, snapshot)
        self.scanned_down_to = head + 1  # earlier records not yet searched for commits' trees
        self.flushed = time.monotonic()

    async def tree_of(self, commit: str, child: str) -> bytes:
        tree = self.trees.get(commit)
        if tree is not None:
            return tree
        # a parent imported by an earlier run: search the mainline backwards (rare, and once)
        while self.scanned_down_to > 1 and commit not in self.trees:
            self.scanned_down_to -= 1
            rec = await self.repo.mainline.record(self.scanned_down_to)
            meta = rec.extra.get("git")
            if not isinstance(meta, dict):
                continue
            self.trees.setdefault(meta["commit"], rec.tree)
            if meta.get("merged"):
                for landed in rec.sessions:
                    snap = await self.db.get_value("snapshot", landed.snapshot)
                    for e in snap["events"]:
                        if e["type"] == "checkpoint" and isinstance(e.get("git"), dict):
                            self.trees.setdefault(e["git"]["commit"], e["tree"])
        if commit not in self.trees:
            raise InvalidInput(f"commit {child}: its parent {commit} is not in the imported history")
        return self.trees[commit]

    def take_merged(self, commit: Commit) -> list[Commit]:
        """The waiting commits a merge brings in: reachable from its other parents."""
        reach: set[str] = set()
        stack = list(commit.parents[1:])
        while stack:
            c = stack.pop()
            if c in self.pending and c not in reach:
                reach.add(c)
                stack.extend(self.pending[c].parents)
        out = [c for oid, c in self.pending.items() if oid in reach]  # stream order: parents first
        for c in out:
            del self.pending[c.oid]
        return out

    async def land(self, commit: Commit, merged: list[Commit]) -> None:
        """Write the session's snapshot and queue its record (written with the batch)."""
        base = self.position
        position = base + 1
        goal, body = goal_and_body(commit.message, commit.encoding)
        who = commit.author.who
        started = commit.author.time
        # session ids sort by start time (48-bit milliseconds); a date git allows but that cannot
        # be one (before 1970, or absurdly late) gets the current time instead
        sid = new_session_id(started if 0 <= started < 2**47 / 1000 else None)
        events: list[dict[str, Any]] = [
            {"type": "start", "author": who, "role": ROLE, "time": commit.author.time, "goal": goal,
             "base": base, "git": {"commit": commit.oid}},
        ]
        if body:
            events.append({"type": "decide", "author": who, "role": ROLE, "time": commit.author.time,
                           "decision": body, "why": f"the message of git commit {commit.oid}",
                           "alternatives": []})
        for n, side in enumerate(merged, 1):
            note, _ = goal_and_body(side.message, side.encoding)
            events.append({"type": "checkpoint", "author": side.author.who, "role": ROLE,
                           "time": side.author.time, "note": note, "iteration": n, "tree": side.tree,
                           "git": side.git_meta()})
        when = commit.committer.time
        for path, entry in sorted(commit.changes.items()):
            if entry is None:
                events.append({"type": "delete", "author": who, "role": ROLE, "time": when, "path": path})
            else:
                events.append({"type": "write", "author": who, "role": ROLE, "time": when, "path": path,
                               "kind": entry.kind, "blob": entry.oid})
        for seq, e in enumerate(events):
            e["seq"] = seq
        session = Session(sid, goal, base, who, ROLE, commit.author.time, events)
        snapshot = await self.repo.sessions.write_snapshot(session, commit.changes)
        meta = commit.git_meta()
        if self.source.branch:
            meta["branch"] = self.source.branch
        if merged:
            meta["merged"] = [c.oid for c in merged]
        parent_tree = self.trees[commit.parents[0]] if commit.parents else EMPTY_TREE
        record = LandingRecord(
            position=position, tree=commit.tree, parent_tree=parent_tree, time=when,
            sessions=[LandedSession(sid, snapshot, goal, who, ROLE, base, dict(commit.changes))],
            extra={"git": meta},
        )
        self.batch.append((record, sid, snapshot))
        self.position = position
        if len(self.batch) >= self.batch_size or time.monotonic() - self.flushed >= BATCH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        """Make the batch's records the commit point: objects first (synced), then records in order,
        then the derived parts (rollups, head hint) and the sessions' state markers."""
        self.flushed = time.monotonic()
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        repo = self.repo
        try:
            await repo.store.create_all(
                [(log_key(repo.prefix, r.position), r.to_bytes()) for r, _, _ in batch])
        except PreconditionFailed:
            self.position = batch[0][0].position - 1
            raise InvalidInput(f"{repo.name}: the mainline moved during the import (position "
                               f"{batch[0][0].position} was taken); rerun to check and continue") from None
        for rec, _, _ in batch:
            repo.mainline.remember(rec)
            self.result.sessions += 1
        for rec, _, _ in batch:
            await repo.rollups.extend(rec.position)
        await repo.mainline.advance_hint(batch[-1][0].position)
        await repo.store.create_all([
            (repo.sessions.state_key(sid), encode({"state": "landed", "position": rec.position,
                                                   "snapshot": snap}))
            for rec, sid, snap in batch
        ])
        self.result.position = batch[-1][0].position

    async def run(self, last: str | None) -> None:
        chain = self.source.first_parent_chain(last)
        if not chain:  # the tip is the last imported commit, or one before it
            if last != self.source.tip:
                raise InvalidInput(f"{self.source.label}: {self.source.branch or 'HEAD'} is at "
                                   f"{self.source.tip}, behind the import (it has {last} already)")
            return
        mainline = set(chain)
        self.result.total = self.source.count(last)
        stream = FastExport(self.source, last)
        blob_ids: dict[int, bytes] = {}
        try:
            async for commit in stream.events(self.db.put_blob, blob_ids):
                base = await self.tree_of(commit.parents[0], commit.oid) if commit.parents else EMPTY_TREE
                commit.tree = await apply(self.db, base, commit.changes)
                self.trees[commit.oid] = commit.tree
                self.result.commits += 1
                if commit.oid in mainline:
                    for p in commit.parents[1:]:
                        if p not in self.pending:
                            await self.tree_of(p, commit.oid)  # imported before: must be known
                    await self.land(commit, self.take_merged(commit))
                    if self.max_sessions is not None and self.result.sessions + len(self.batch) >= self.max_sessions:
                        self.result.complete = False
                        break
                else:
                    self.pending[commit.oid] = commit
                if self.progress is not None:
                    self.progress(self.result.commits, self.result.total)
        except HifError:
            await self.flush()  # what was read before the bad commit lands; that commit does not
            raise
        finally:
            stream.close()
        await self.flush()


async def import_git(repo: Repo, source: GitSource, *, progress: Progress | None = None,
                     max_sessions: int | None = None, batch: int = BATCH) -> ImportResult:
    """Land the commits of ``source`` not imported yet; see the module docstring for the mapping."""
    t0 = time.perf_counter()
    head = await repo.mainline.head()
    last = await last_imported(repo, head)
    if last is not None and not source.is_ancestor(last, source.tip):
        raise InvalidInput(f"{source.label} ({source.branch or 'HEAD'}) does not contain commit "
                           f"{last}, the last one imported into {repo.name}: it is another "
                           "repository or branch, or its history was rewritten")
    result = ImportResult(source.label, source.branch, source.tip, head, head)
    await _repair_states(repo, head)
    importer = _Importer(repo, source, head, result, progress, max_sessions, batch)
    with repo.store.deferred_sync():
        await importer.run(last)
    result.seconds = time.perf_counter() - t0
    return result


async def _repair_states(repo: Repo, head: int) -> None:
    """A crash between a batch's records and its state markers leaves sessions that landed without a
    marker. Markers are written in position order, so the missing ones are a suffix: find where it
    starts (newest first) and write them oldest first, so that a crash here keeps that true."""
    missing: list[tuple[int, LandedSession]] = []
    for pos in range(head, 0, -1):
        rec = await repo.mainline.record(pos)
        gaps = [s for s in rec.sessions if await repo.store.head(repo.sessions.state_key(s.session)) is None]
        if not gaps:
            break
        missing += [(pos, s) for s in gaps]
    for pos, s in reversed(missing):
        await repo.sessions.close(s.session, {"state": "landed", "position": pos, "snapshot": s.snapshot})


# -- export ----------------------------------------------------------------------------------


@dataclass
class ExportResult:
    path: str
    branch: str
    head: str  # the exported branch's commit id
    positions: int  # mainline positions exported (one commit each)
    commits: int  # commits written (merged-in ones included)
    notes: int
    original: int  # commits that came from git
    identical: int  # of those, how many got back their original id
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "branch": self.branch, "head": self.head,
                "positions": self.positions, "commits": self.commits, "notes": self.notes,
                "original_commits": self.original, "identical_commit_ids": self.identical,
                "seconds": round(self.seconds, 3)}


def _quote(path: str) -> bytes:
    raw = path.encode("utf-8")
    if not raw.startswith(b'"') and b"\n" not in raw:
        return raw
    out = bytearray(b'"')
    for c in raw:
        if c in (34, 92):
            out += b"\\" + bytes([c])
        elif c == 10:
            out += b"\\n"
        else:
            out.append(c)
    return bytes(out + b'"')


def _ident(who: str, when: float) -> bytes:
    """A git identity for a session's author: ``Name <email>`` kept as is, else an empty email."""
    m = re.match(r"^(.*?) ?<([^<>]*)>$", who)
    name, email = (m.group(1), m.group(2)) if m else (who, "")
    name = name.replace("<", "").replace(">", "").replace("\n", " ").strip() or "unknown"
    return f"{name} <{email}> {int(when)} +0000".encode()


def note_text(position: int, snaps: list[tuple[str, dict[str, Any]]]) -> str:
    """What git cannot hold: the sessions' conversation, decisions and iterations, readable."""
    out: list[str] = []
    for sid, snap in snaps:
        events = snap["events"]
        if out:
            out.append("")
        out += [f"hif session {sid} (position {position})", f"goal: {snap['goal']}",
                f"author: {snap['author']} ({snap['role']})"]
        says = [e for e in events if e["type"] == "say"]
        if says:
            out += ["", "conversation:"] + [f"  [{e['role']}] {e['author']}: {e['text']}" for e in says]
        decides = [e for e in events if e["type"] == "decide"]
        if decides:
            out += ["", "decisions:"]
            for e in decides:
                out.append(f"  - {e['decision']}")
                if e.get("why"):
                    out.append(f"    why: {e['why']}")
                out += [f"    rejected: {a}" for a in e.get("alternatives", [])]
        checkpoints = [e for e in events if e["type"] == "checkpoint"]
        if checkpoints:
            out += ["", "iterations:"] + [f"  {e['iteration']}. {e['note']}" for e in checkpoints]
    return "\n".join(out) + "\n"


class _Exporter:
    def __init__(self, repo: Repo, stdin: IO[bytes]) -> None:
        self.repo = repo
        self.db = repo.objects
        self.out = stdin
        self.next_mark = 0
        self.blob_marks: dict[bytes, int] = {}
        self.trees: dict[int, bytes] = {}  # commit mark -> hif tree
        self.by_commit: dict[str, int] = {}  # original git commit id -> mark
        self.originals: dict[int, str] = {}  # mark -> original commit id
        self.commits = 0

    def mark(self) -> int:
        self.next_mark += 1
        return self.next_mark

    def data(self, raw: bytes) -> None:
        self.out.write(b"data %d\n" % len(raw))
        self.out.write(raw)
        self.out.write(b"\n")

    async def changes(self, old: bytes, new: bytes) -> list[bytes]:
        """File commands taking ``old`` to ``new`` (blobs not yet sent are sent first)."""
        lines: list[bytes] = []
        async for path, _old, entry in tree_diff(self.db, old, new):
            if entry is None:
                lines.append(b"D " + _quote(path))
                continue
            mark = self.blob_marks.get(entry.oid)
            if mark is None:
                mark = self.blob_marks[entry.oid] = self.mark()
                self.out.write(b"blob\nmark :%d\n" % mark)
                self.data(await self.db.get_blob(entry.oid))
            lines.append(b"M %s :%d %s" % (_GIT_MODES[entry.kind], mark, _quote(path)))
        # deletions first, so a directory can give way to a file of the same name and back
        lines.sort(key=lambda ln: not ln.startswith(b"D "))
        return lines

    async def commit(self, ref: str, meta: dict[str, Any] | None, tree: bytes, parents: list[int],
                     author: bytes, committer: bytes, message: bytes, encoding: str | None) -> int:
        old = self.trees[parents[0]] if parents else EMPTY_TREE
        files = await self.changes(old, tree)
        mark = self.mark()
        if not parents:
            self.out.write(b"reset %s\n" % ref.encode())
        self.out.write(b"commit %s\nmark :%d\nauthor %s\ncommitter %s\n" % (ref.encode(), mark, author, committer))
        if encoding:
            self.out.write(b"encoding %s\n" % encoding.encode())
        self.data(message)
        for i, p in enumerate(parents):
            self.out.write(b"%s :%d\n" % (b"from" if i == 0 else b"merge", p))
        for ln in files:
            self.out.write(ln + b"\n")
        self.out.write(b"\n")
        self.trees[mark] = tree
        self.commits += 1
        if meta is not None:
            self.by_commit[meta["commit"]] = mark
            self.originals[mark] = meta["commit"]
        return mark

    def parent_marks(self, meta: dict[str, Any], fallback: int | None) -> list[int]:
        marks = [self.by_commit.get(p) for p in meta.get("parents", [])]
        if all(m is not None for m in marks):
            return [m for m in marks if m is not None]
        return [fallback] if fallback else []  # a parent git had but hif never saw: keep the line

    async def git_commit(self, ref: str, meta: dict[str, Any], tree: bytes, prev: int | None) -> int:
        return await self.commit(
            ref, meta, tree, self.parent_marks(meta, prev), _raw(meta["author"]), _raw(meta["committer"]),
            _raw(meta["message"]), meta.get("encoding"))


async def export_git(repo: Repo, dest: str | os.PathLike[str], *, branch: str | None = None,
                     bare: bool = False, progress: Progress | None = None) -> ExportResult:
    """Write the whole mainline as a new Git repository at ``dest``: one commit per position (plus
    the merged-in commits kept as iterations), sessions' conversation and decisions as notes."""
    t0 = time.perf_counter()
    head = await repo.mainline.head()
    if head == 0:
        raise InvalidInput(f"{repo.name} has nothing landed to export")
    path = Path(os.path.abspath(dest))
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InvalidInput(f"{path} exists and is not empty")
    if branch is None:
        meta = (await repo.mainline.record(head)).extra.get("git")
        branch = meta.get("branch") if isinstance(meta, dict) else None
        branch = branch or "main"
    if git(["check-ref-format", "--branch", branch], check=False).returncode != 0:
        raise InvalidInput(f"not a valid branch name: {branch}")
    created = not path.exists()
    git(["init", "--quiet", *(["--bare"] if bare else []), "--initial-branch", branch, str(path)])
    git_dir = str(path if bare else path / ".git")
    marks_file = Path(git_dir) / "hif-export-marks"
    errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        ["git", "--git-dir", git_dir, "fast-import", "--quiet", "--done",
         f"--export-marks={marks_file}"],
        env=git_env(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
    assert proc.stdin is not None
    ex = _Exporter(repo, proc.stdin)
    ref = f"refs/heads/{branch}"
    notes: list[tuple[int, str]] = []
    try:
        try:
            prev: int | None = None
            for pos in range(1, head + 1):
                rec = await repo.mainline.record(pos)
                snaps = [(s.session, await repo.objects.get_value("snapshot", s.snapshot))
                         for s in rec.sessions]
                meta = rec.extra.get("git") if len(rec.sessions) == 1 else None
                if isinstance(meta, dict) and isinstance(meta.get("commit"), str):
                    for e in snaps[0][1]["events"]:
                        side = e.get("git") if e["type"] == "checkpoint" else None
                        if isinstance(side, dict):
                            ex.out.write(b"reset %s\n" % SIDE_REF.encode())
                            await ex.git_commit(SIDE_REF, side, e["tree"], None)
                    mark = await ex.git_commit(ref, meta, rec.tree, prev)
                else:
                    goals = [s.goal for s in rec.sessions]
                    message = (goals[0] + "\n" + "".join(f"\nalso landed: {g}" for g in goals[1:])
                               + ("\n" if len(goals) > 1 else ""))
                    who = _ident(rec.sessions[0].author, rec.time)
                    mark = await ex.commit(ref, None, rec.tree, [prev] if prev else [], who, who,
                                           message.encode("utf-8"), None)
                notes.append((mark, note_text(pos, snaps)))
                prev = mark
                if progress is not None:
                    progress(pos, head)
            if notes:
                ex.out.write(b"commit refs/notes/hif\ncommitter hif <> %d +0000\n" % int(time.time()))
                ex.data(b"hif export git: the sessions' conversation and decisions\n")
                for mark, text in notes:
                    ex.out.write(b"N inline :%d\n" % mark)
                    ex.data(text.encode("utf-8"))
                ex.out.write(b"\n")
            ex.out.write(b"done\n")
            proc.stdin.close()
        except BrokenPipeError:
            pass
        if proc.wait() != 0:
            errors.seek(0)
            raise InvalidInput(f"git fast-import failed: {_first_line(errors.read())}")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if created:
            shutil.rmtree(path, ignore_errors=True)
        else:  # it was an empty directory: empty it again
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise
    finally:
        errors.close()
        with contextlib.suppress(OSError, ValueError):
            proc.stdin.close()
    marks: dict[int, str] = {}
    for line in marks_file.read_text().splitlines():
        m, _, sha = line.partition(" ")
        marks[int(m[1:])] = sha
    marks_file.unlink()
    git(["update-ref", "-d", SIDE_REF], git_dir=git_dir, check=False)
    if not bare:
        git(["reset", "--quiet", "--hard"], git_dir=git_dir, cwd=str(path))
    identical = sum(1 for m, orig in ex.originals.items() if marks.get(m) == orig)
    return ExportResult(str(path), branch, marks[prev or 0], head, ex.commits, len(notes),
                        len(ex.originals), identical, time.perf_counter() - t0)


__all__ = ["ExportResult", "FastExport", "GitSource", "ImportResult", "export_git", "import_git",
           "is_url", "unquote"]

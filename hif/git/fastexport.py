"""Reading ``git fast-export`` as it streams: commits, identities, messages and quoted paths."""

from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any

from hif.errors import InvalidInput, InvalidPath
from hif.git.source import GitSource, first_line, git_env
from hif.objects import EMPTY_TREE, EXEC, FILE, LINK, Entry
from hif.paths import check_link_name, check_path

NO_GOAL = "(no commit message)"
_MODES = {b"100644": FILE, b"100755": EXEC, b"120000": LINK, b"100664": FILE}
_IDENT = re.compile(rb"^(.*?) ?<([^<>]*)> (-?\d+) ([+-]\d{4})$")
_ESCAPES = {ord("a"): 7, ord("b"): 8, ord("f"): 12, ord("n"): 10, ord("r"): 13, ord("t"): 9,
            ord("v"): 11, ord("\\"): 92, ord('"'): 34}
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
    def name(self) -> str:
        """The name alone: the address stays in the commit's kept identity, not in every page."""
        return self._parts()[0].decode("utf-8", "replace").strip() or "unknown"

    @property
    def email(self) -> str:
        return self._parts()[1].decode("utf-8", "replace").strip()

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


def raw_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def goal_and_body(message: bytes, encoding: str | None) -> tuple[str, str]:
    """The first line is the goal; the rest (trimmed) is the body, the session's first message."""
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
    exact: bool = False  # hif export git rebuilds this very commit (set by the importer)

    def git_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "commit": self.oid, "parents": self.parents, "author": _keep(self.author.raw),
            "committer": _keep(self.committer.raw), "message": _keep(self.message),
            "exact": self.exact,
        }
        if self.encoding:
            meta["encoding"] = self.encoding
        return meta

    def rebuilt_id(self, tree_id: str) -> str:
        """The id of the commit ``git fast-import`` writes from what the stream kept (``tree_id``:
        git's id of its tree): the original id exactly when git dropped nothing (a signature, a
        ``mergetag``, any other extra header)."""
        body = b"".join([b"tree %s\n" % tree_id.encode(), *(b"parent %s\n" % p.encode() for p in self.parents),
                         b"author %s\ncommitter %s\n" % (self.author.raw, self.committer.raw),
                         b"encoding %s\n" % self.encoding.encode() if self.encoding else b"",
                         b"\n", self.message])
        algo = hashlib.sha256 if len(self.oid) == 64 else hashlib.sha1
        return algo(b"commit %d\0" % len(body) + body).hexdigest()


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
        raise InvalidInput(f"git fast-export failed: {first_line(err) if rc else what}")

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



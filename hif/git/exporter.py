"""``hif export git``: the mainline fed to ``git fast-import``, so Git itself builds and checks every
object; records that kept their commit rebuild it exactly (see :mod:`hif.git`)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hif.errors import InvalidInput
from hif.git.fastexport import raw_bytes
from hif.git.source import Progress, first_line, git, git_env
from hif.objects import EMPTY_TREE, EXEC, FILE, LINK
from hif.repo import Repo
from hif.tree import diff as tree_diff

SIDE_REF = "refs/hif-export/side"  # scratch ref for merged-in commits while fast-import runs
_GIT_MODES = {FILE: b"100644", EXEC: b"100755", LINK: b"120000"}
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
            ref, meta, tree, self.parent_marks(meta, prev), raw_bytes(meta["author"]), raw_bytes(meta["committer"]),
            raw_bytes(meta["message"]), meta.get("encoding"))


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
            raise InvalidInput(f"git fast-import failed: {first_line(errors.read())}")
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



"""Running git (with an environment that cannot point it at another repository) and the source
repository of an import: a local repository, or a bare mirror of a URL."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hif.errors import InvalidInput, NotFound

Progress = Callable[[int, int], None]  # (commits done, commits in all)

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
        raise InvalidInput(f"git {args[0]} failed: {first_line(done.stderr)}")
    return done


def first_line(err: bytes) -> str:
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

    def tree_ids(self, last: str | None) -> dict[str, str]:
        """Git's tree id of each commit to import (``tip ^last``), which its stream does not name:
        with it a commit rebuilt from the stream is checked against its id (one ``rev-list``)."""
        args = ["rev-list", "--format=%T", self.tip, *([f"^{last}"] if last else [])]
        lines = _out(self.run(*args)).splitlines()
        return {c.removeprefix("commit "): t for c, t in zip(lines[::2], lines[1::2], strict=True)}

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
        raise InvalidInput(f"cannot clone {url}: {first_line(done.stderr)}")
    os.replace(tmp, mirror)
    return str(mirror)



"""``hif import git`` and ``hif export git``, checked with git itself.

Every repository here is built by git (subprocesses with fixed authors and dates), imported with the
``hif`` command, exported again, and compared with ``git rev-parse``: equal trees at every commit, and
(since nothing is lost on the way) equal commit ids. Bad input must fail with one line and land
nothing half-way; an interrupted import (``--max-commits`` or SIGKILL) continues on the next run.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hif.git.fastexport import unquote
from hif.objects import Entry, encode, tree_bytes
from hif.repo import Repo
from hif.store import EmbeddedStore, ObjectStore

HIF = str(Path(sys.executable).parent / "hif")
MICELIO = str(Path(sys.executable).parent / "micelio")
ENV = {**os.environ, "HIF_AUTHOR": "tester", "HIF_ROLE": "human"}
ENV.pop("HIF_DEBUG", None)
T0 = 1_700_000_000


class Git:
    """A git repository built by a test, with deterministic authors and dates."""

    def __init__(self, path: Path, home: Path) -> None:
        self.path = path
        self.n = 0
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
            "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_AUTHOR_NAME": "Ada Lovelace", "GIT_AUTHOR_EMAIL": "ada@example.org",
            "GIT_COMMITTER_NAME": "Charles Babbage", "GIT_COMMITTER_EMAIL": "cb@example.org",
        }

    def __call__(self, *args: str, check: bool = True, cwd: Path | None = None) -> str:
        p = subprocess.run(["git", *args], cwd=cwd or self.path, env=self.env, capture_output=True,
                           timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"git {args}: {p.stderr.decode()}")
        return p.stdout.decode("utf-8", "replace").strip()

    @classmethod
    def init(cls, path: Path, home: Path) -> Git:
        g = cls(path, home)
        path.mkdir(parents=True)
        g("init", "-q", "-b", "main")
        return g

    def write(self, rel: str | bytes, data: bytes | str = b"", *, executable: bool = False) -> None:
        full = os.path.join(os.fsencode(self.path), rel if isinstance(rel, bytes) else os.fsencode(rel))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(full, 0o755 if executable else 0o644)

    def link(self, rel: str, target: str) -> None:
        full = self.path / rel
        full.parent.mkdir(parents=True, exist_ok=True)
        if full.is_symlink() or full.exists():
            full.unlink()
        os.symlink(target, full)

    def dates(self) -> None:
        self.n += 1
        self.env["GIT_AUTHOR_DATE"] = f"{T0 + 60 * self.n} +0200"
        self.env["GIT_COMMITTER_DATE"] = f"{T0 + 60 * self.n + 7} -0130"

    def commit(self, message: str) -> str:
        self("add", "-A")
        self.dates()
        self("commit", "-q", "--allow-empty", "-m", message)
        return self("rev-parse", "HEAD")

    def merge(self, *branches: str, message: str, unrelated: bool = False) -> str:
        self.dates()
        self("merge", "-q", "--no-ff", *(["--allow-unrelated-histories"] if unrelated else []),
             "-m", message, *branches)
        return self("rev-parse", "HEAD")


def hif(cwd: Path, *args: str, ok: bool | None = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([HIF, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
    if ok is True:
        assert p.returncode == 0, f"hif {args} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    elif ok is False:
        assert p.returncode != 0, f"hif {args} unexpectedly succeeded\n{p.stdout}"
    return p


def hjs(cwd: Path, *args: str) -> Any:
    return json.loads(hif(cwd, *args, "--json").stdout)


def one_error_line(p: subprocess.CompletedProcess[str], *says: str) -> str:
    assert p.returncode == 1, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert p.stdout == ""
    for s in says:
        assert s in lines[0], lines[0]
    return lines[0]


def build_rich(path: Path, home: Path) -> Git:
    """Every case the issue lists: binary, modes, symlinks, empty files, renames, merges (two-way,
    octopus, unrelated history, a branch that merged main in), unicode and odd names, a file replaced
    by a directory and back."""
    g = Git.init(path, home)
    g.write("README.md", "# demo\n")
    g.write("bin/data.bin", bytes(range(256)) * 4 + b"\x00\xff")
    g.write("empty.txt", b"")
    g.write("tool.sh", "#!/bin/sh\necho hi\n")
    g.link("readme-link", "README.md")
    g.commit("Initial import\n\nWhy: start the project.\nSecond line of the body.")
    g.write("tool.sh", "#!/bin/sh\necho hi\n", executable=True)
    g.write("café/naïve.txt", "unicode\n")
    g.write("日本/語.txt", "nihongo\n")
    g.write("sp ace/\"quoted\" odd.txt", "odd\n")  # a backslash or a tab is refused (tests/security)
    g.commit("Make tool executable; unicode names")
    g("checkout", "-q", "-b", "feature")
    g.write("feature.txt", "one\n")
    g.commit("Feature: first step")
    g.write("feature.txt", "one\ntwo\n")
    g.link("readme-link", "empty.txt")
    g.commit("Feature: second step")
    g("checkout", "-q", "main")
    g.write("README.md", "# demo\n\nmore\n")
    g.commit("Main moves on")
    g.merge("feature", message="Merge branch 'feature'")
    g("mv", "bin/data.bin", "bin/renamed.bin")
    g.write("tool.sh", "#!/bin/sh\necho hi\n", executable=False)
    g.commit("Rename the binary, drop the exec bit")
    g("checkout", "-q", "-b", "topic")
    g.write("topic.txt", "t1\n")
    g.commit("Topic 1")
    g("checkout", "-q", "main")
    g.write("main.txt", "m\n")
    g.commit("Main again")
    g("checkout", "-q", "topic")
    g.merge("main", message="Merge main into topic")
    g.write("topic.txt", "t1\nt2\n")
    g.commit("Topic 2")
    g("checkout", "-q", "-b", "o1", "main")
    g.write("o1.txt", "o1\n")
    g.commit("Octopus arm 1")
    g("checkout", "-q", "-b", "o2", "main")
    g.write("o2.txt", "o2\n")
    g.commit("Octopus arm 2")
    g("checkout", "-q", "main")
    g.merge("topic", "o1", "o2", message="Octopus merge")
    g("checkout", "-q", "--orphan", "other")
    g("rm", "-q", "-rf", ".")
    g.write("unrelated.txt", "elsewhere\n")
    g.commit("Unrelated root")
    g("checkout", "-q", "main")
    g.merge("other", message="Merge unrelated history", unrelated=True)
    (path / "README.md").unlink()
    g.write("README.md/inside.txt", "now a directory\n")
    g.commit("Replace a file by a directory")
    for p in (path / "README.md").iterdir():
        p.unlink()
    (path / "README.md").rmdir()
    g.write("README.md", "a file again\n")
    g.commit("And back to a file")
    g.commit("An empty commit")
    g.dates()
    g("commit", "-q", "--allow-empty", "--allow-empty-message", "-m", "")
    # a message without a final newline and with odd spacing, only possible through commit-tree
    g.dates()
    raw = subprocess.run(["git", "commit-tree", "HEAD^{tree}", "-p", "HEAD"], cwd=path, env=g.env,
                         input=b"  odd  subject\n\n\nbody without newline", capture_output=True, check=True)
    g("update-ref", "refs/heads/main", raw.stdout.decode().strip())
    return g


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The rich repository, imported once and exported once."""
    base = tmp_path_factory.mktemp("rich")
    g = build_rich(base / "src", base)
    doc = hjs(base, "import", "git", "src", "work")
    export = hjs(base / "work", "export", "git", str(base / "out"))
    return {"base": base, "git": g, "import": doc, "export": export, "out": Git(base / "out", base)}


def files_of(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every file below ``root`` (without .git/.hif): kind (f, x, l) and content or link target."""
    out: dict[str, tuple[str, bytes]] = {}
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if x not in (".git", ".hif") and not os.path.islink(os.path.join(d, x))]
        for n in names + [x for x in os.listdir(d) if os.path.islink(os.path.join(d, x)) and x not in names]:
            full = os.path.join(d, n)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                out[rel] = ("l", os.fsencode(os.readlink(full)))
            else:
                kind = "x" if os.stat(full).st_mode & 0o100 else "f"
                out[rel] = (kind, Path(full).read_bytes())
    return out


# -- the mapping --------------------------------------------------------------------------------


def changed_paths(g: Git, sha: str) -> list[str]:
    """What git says a commit changed against its first parent (renames as delete + add)."""
    parents = g("rev-list", "--parents", "-1", sha).split()[1:]
    against = [parents[0], sha] if parents else ["--root", sha]
    out = g("diff-tree", "-r", "-z", "--no-commit-id", "--no-renames", "--name-only", *against)
    return sorted(p for p in out.split("\0") if p)


def test_commits_become_sessions_in_order(rich: dict[str, Any]) -> None:
    g, work = rich["git"], rich["base"] / "work"
    chain = g("rev-list", "--first-parent", "--reverse", "main").split()
    everything = g("rev-list", "main").split()
    doc = rich["import"]
    assert doc["position"] == len(chain) and doc["sessions"] == len(chain)
    assert doc["commits"] == doc["total"] == len(everything)
    assert doc["complete"] and not doc["resumed"] and doc["checked_out"]
    assert doc["branch"] == "main" and doc["tip"] == chain[-1]
    assert doc["commits_per_second"] > 0
    log = hjs(work, "log")["landings"]
    assert [x["position"] for x in log] == list(range(len(chain), 0, -1))
    for pos, sha in enumerate(chain, 1):
        shown = hjs(work, "show", str(pos))
        assert shown["session"]["goal"] == (g("log", "-1", "--format=%s", sha) or "(no commit message)")
        # the author's name alone (the address stays in the kept commit), the role "imported"
        assert shown["session"]["author"] == "Ada Lovelace" and shown["session"]["role"] == "imported"
        # the author date starts the session, the committer date is the landing's time
        assert shown["session"]["started"] == int(g("log", "-1", "--format=%at", sha))
        assert log[len(chain) - pos]["time"] == int(g("log", "-1", "--format=%ct", sha))
        assert shown["session"]["events"][0]["git"] == {"commit": sha}
        body = g("log", "-1", "--format=%b", sha).strip()
        # the body is what the author said, line breaks kept, marked as the commit's message
        assert [c["text"] for c in shown["conversation"]] == ([body] if body else []) and not shown["decisions"]
        assert all(e["git"] == {"commit": sha} for e in shown["session"]["events"] if e["type"] == "say")
        assert sorted(c["path"] for c in shown["changes"]) == changed_paths(g, sha)
        # the commits a merge brings in are its iterations, each after its parents
        merged = set(g("rev-list", sha, f"^{sha}^1").split()) - {sha} if sha != chain[0] else set()
        notes = [it["note"] for it in shown["iterations"]]
        assert sorted(notes) == sorted(g("log", "-1", "--format=%s", c) for c in merged)


def test_merge_iterations_and_first_parent(rich: dict[str, Any]) -> None:
    work = rich["base"] / "work"
    octopus = next(x for x in hjs(work, "log")["landings"] if x["goal"] == "Octopus merge")
    shown = hjs(work, "show", str(octopus["position"]))
    notes = [it["note"] for it in shown["iterations"]]
    # Topic 1, Merge main into topic, Topic 2, and both arms: the whole merged history, in order
    assert set(notes) == {"Topic 1", "Merge main into topic", "Topic 2", "Octopus arm 1", "Octopus arm 2"}
    assert notes.index("Topic 1") < notes.index("Merge main into topic") < notes.index("Topic 2")
    assert [it["iteration"] for it in shown["iterations"]] == [1, 2, 3, 4, 5]
    # iterations can be diffed like any others: Topic 2 added a line to topic.txt
    unrelated = next(x for x in hjs(work, "log")["landings"] if x["goal"] == "Merge unrelated history")
    assert [it["note"] for it in hjs(work, "show", str(unrelated["position"]))["iterations"]] == ["Unrelated root"]


def test_working_copy_matches_git(rich: dict[str, Any]) -> None:
    base = rich["base"]
    files = files_of(base / "work")
    assert files == files_of(base / "src")
    assert files["tool.sh"][0] == "f" and files["readme-link"] == ("l", b"empty.txt")
    assert files["empty.txt"] == ("f", b"") and files["bin/renamed.bin"][1].startswith(bytes(range(256)))
    assert "bin/data.bin" not in files and files["README.md"] == ("f", b"a file again\n")
    assert files["sp ace/\"quoted\" odd.txt"] == ("f", b"odd\n")
    # the executable bit was there at position 2 and gone at the rename
    at2 = {e["path"]: e["kind"] for e in hjs(base / "work", "ls", "-r", "--at", "2")["entries"]}
    assert at2["tool.sh"] == "x" and at2["日本/語.txt"] == "f" and at2["readme-link"] == "l"


def test_round_trip_gives_identical_trees_and_commits(rich: dict[str, Any]) -> None:
    g, out = rich["git"], rich["out"]
    everything = g("rev-list", "main").split()
    for sha in everything:  # every commit, merged-in ones included
        assert out("rev-parse", f"{sha}^{{tree}}") == g("rev-parse", f"{sha}^{{tree}}")
    assert out("rev-parse", "main") == g("rev-parse", "main")
    assert set(out("rev-list", "main").split()) == set(everything)
    exp = rich["export"]
    assert exp["original_commits"] == exp["identical_commit_ids"] == exp["commits"] == len(everything)
    assert exp["positions"] == rich["import"]["position"] and exp["branch"] == "main"
    out("fsck", "--strict", "--no-progress")
    assert out("status", "--porcelain") == ""  # the files are checked out
    assert files_of(out.path) == files_of(g.path)
    assert out("for-each-ref", "--format=%(refname)") == "refs/heads/main\nrefs/notes/hif"


def test_notes_keep_the_sessions(rich: dict[str, Any]) -> None:
    g, out = rich["git"], rich["out"]
    chain = g("rev-list", "--first-parent", "--reverse", "main").split()
    first = out("notes", "--ref=hif", "show", chain[0])
    assert "(position 1)" in first and "goal: Initial import" in first
    assert "Why: start the project." in first
    octopus = out("notes", "--ref=hif", "show", g("rev-parse", ":/Octopus merge"))
    assert "iterations:" in octopus and "Octopus arm 2" in octopus
    assert len(out("notes", "--ref=hif", "list").splitlines()) == len(chain)


# -- resuming -----------------------------------------------------------------------------------


def test_resume_after_max_commits_and_incremental(tmp_path: Path) -> None:
    g = build_rich(tmp_path / "src", tmp_path)
    chain = g("rev-list", "--first-parent", "main").split()
    first = hjs(tmp_path, "import", "git", "src", "w", "--max-commits", "3")
    assert first["position"] == 3 and first["sessions"] == 3 and not first["complete"]
    assert hjs(tmp_path / "w", "status")["position"] == 3  # checked out what landed
    second = hjs(tmp_path / "w", "import", "git", str(tmp_path / "src"), ".")
    assert second["start"] == 3 and second["position"] == len(chain) and second["complete"]
    assert second["resumed"] and second["sessions"] == len(chain) - 3
    # new commits upstream: only they are imported
    g.write("new.txt", "new\n")
    g.commit("New upstream work")
    g("checkout", "-q", "-b", "late")
    g.write("late.txt", "late\n")
    g.commit("Late branch")
    g("checkout", "-q", "main")
    g.merge("late", message="Merge late")
    third = hjs(tmp_path, "import", "git", "src", "w")
    assert third["start"] == len(chain) and third["sessions"] == 2 and third["commits"] == 3
    assert (tmp_path / "w" / "late.txt").read_text() == "late\n"
    # the same branch merged again: its earlier commit (an iteration of an earlier run) is a parent
    g("checkout", "-q", "late")
    g.write("late.txt", "later\n")
    g.commit("Late branch, more")
    g("checkout", "-q", "main")
    g.merge("late", message="Merge late again")
    fourth = hjs(tmp_path, "import", "git", "src", "w")
    assert fourth["sessions"] == 1 and fourth["commits"] == 2
    shown = hjs(tmp_path / "w", "show", str(fourth["position"]))
    assert [it["note"] for it in shown["iterations"]] == ["Late branch, more"]
    # a crash between a batch's records and its state markers: the next run writes the markers
    data = tmp_path / "w" / ".hif" / "store" / "data" / "repos" / "local" / "w" / "sessions"
    newest = [x["session"] for x in hjs(tmp_path / "w", "log", "-n", "3")["landings"]]
    for sid in newest:
        (data / sid / "state").unlink()
    assert hif(tmp_path / "w", "show", newest[0], ok=False).returncode == 1
    again = hjs(tmp_path, "import", "git", "src", "w")
    assert again["up_to_date"] and again["sessions"] == 0
    for sid in newest:
        assert hjs(tmp_path / "w", "show", sid)["session"]["state"] == "landed"
    assert "is up to date with" in hif(tmp_path, "import", "git", "src", "w").stdout
    exp = hjs(tmp_path / "w", "export", "git", str(tmp_path / "out"))
    out = Git(tmp_path / "out", tmp_path)
    assert out("rev-parse", "main") == g("rev-parse", "main")
    assert exp["identical_commit_ids"] == len(g("rev-list", "main").split())


def fast_history(path: Path, home: Path, commits: int) -> Git:
    """A longer history quickly, through git fast-import: files in directories, with merges."""
    g = Git.init(path, home)
    rng = random.Random(7)
    lines = []
    for c in range(1, commits + 1):
        lines.append(f"commit refs/heads/main\nmark :{c}\n"
                     f"author A <a@x> {T0 + c} +0000\ncommitter A <a@x> {T0 + c} +0000\n")
        msg = f"change {c}\n".encode()
        lines.append(f"data {len(msg)}\n{msg.decode()}")
        if c > 1:
            lines.append(f"from :{c - 1}\n")
        for _ in range(rng.randint(1, 4)):
            content = f"{c} {rng.random()}\n"
            lines.append(f"M 100644 inline d{rng.randint(0, 9)}/f{rng.randint(0, 30)}.txt\n"
                         f"data {len(content)}\n{content}")
        lines.append("\n")
    p = subprocess.run(["git", "fast-import", "--quiet"], cwd=path, env=g.env, input="".join(lines).encode(),
                       capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    g("reset", "-q", "--hard")
    return g


def test_progress_bar_shows_commits_per_second(tmp_path: Path) -> None:
    """On a terminal, the import draws a progress bar on stderr: commits done of all, and commits/s."""
    n = 400
    fast_history(tmp_path / "src", tmp_path, n)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([HIF, "import", "git", "src", "w", "--no-checkout"], cwd=tmp_path,
                            env={**ENV, "TERM": "xterm", "COLUMNS": "120"}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # EIO: the import exited and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    assert proc.wait(timeout=300) == 0
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    assert "importing" in drawn and "commits/s" in drawn, drawn
    assert re.search(rf"\b\d+/{n}\b", drawn), drawn
    # and the summary on stdout gives the rate of the whole run
    assert re.search(rf"imported {n} commit\(s\) of src .* positions 1-{n} in [0-9.]+ s, [0-9,]+ commits/s", out), out
    # without a terminal (and with --json) nothing is drawn
    again = subprocess.run([HIF, "import", "git", "src", "w2", "--no-checkout", "--json"], cwd=tmp_path,
                           env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stderr == ""


@pytest.mark.slow
def test_killed_import_never_half_lands(tmp_path: Path) -> None:
    """SIGKILL the import at growing delays; each rerun continues where the last one stopped (a batch
    lands at least every second), and the end result is exact: every record complete, every session
    closed, git's commit at every position."""
    n = 600
    g = fast_history(tmp_path / "src", tmp_path, n)
    seen: list[int] = []
    log_dir = tmp_path / "w" / ".hif" / "store" / "data" / "repos" / "local" / "w" / "log"

    def landed() -> int:
        return len(os.listdir(log_dir)) if log_dir.is_dir() else 0

    for attempt in range(10):
        before = landed()
        proc = subprocess.Popen([HIF, "import", "git", "src", "w", "--no-checkout"], cwd=tmp_path, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # kill once this run has landed something (however loaded the machine is), a little later each time
        deadline = time.monotonic() + 120
        while landed() == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05 * attempt)
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (tmp_path / "w" / ".hif" / "config.json").exists():
            log = hjs(tmp_path / "w", "log", "-n", "1")["landings"]
            seen.append(log[0]["position"] if log else 0)
        if any(0 < p < n for p in seen) and len(seen) >= 3:
            break
    print("positions after each kill:", seen)
    assert any(0 < p < n for p in seen), seen  # killed in the middle at least once
    assert seen == sorted(seen)
    done = hjs(tmp_path, "import", "git", "src", "w")
    assert done["complete"] and done["position"] == n
    chain = g("rev-list", "--first-parent", "--reverse", "main").split()

    async def check(store: ObjectStore) -> None:
        r = Repo(store, "local/w")
        for pos in range(1, n + 1):
            rec = await r.mainline.record(pos)
            s = await r.sessions.load(rec.sessions[0].session)
            assert s.state == "landed" and s.position == pos
            assert rec.extra["git"]["commit"] == chain[pos - 1]

    asyncio.run(_with_store(tmp_path / "w" / ".hif" / "store", check))
    hif(tmp_path / "w", "export", "git", str(tmp_path / "out"), "--bare")
    assert Git(tmp_path / "out", tmp_path)("rev-parse", "main") == g("rev-parse", "main")


# -- bad input ----------------------------------------------------------------------------------


def test_bad_sources_leave_nothing(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    one_error_line(hif(tmp_path, "import", "git", "plain", "w", ok=None), "not a git repository: plain")
    one_error_line(hif(tmp_path, "import", "git", "nowhere", "w", ok=None), "not a git repository")
    # a directory inside another repository is not that repository
    g = Git.init(tmp_path / "src", tmp_path)
    (tmp_path / "src" / "sub").mkdir()
    one_error_line(hif(tmp_path, "import", "git", "src/sub", "w", ok=None), "not a git repository")
    one_error_line(hif(tmp_path, "import", "git", "src", "w", ok=None), "empty repository")
    g.write("a.txt", "a\n")
    g.commit("one")
    g.write("a.txt", "b\n")
    g.commit("two")
    one_error_line(hif(tmp_path, "import", "git", "src", "w", "--branch", "nope", ok=None), "no branch nope")
    g("clone", "-q", "--depth", "1", f"file://{tmp_path / 'src'}", str(tmp_path / "shallow"), cwd=tmp_path)
    one_error_line(hif(tmp_path, "import", "git", "shallow", "w", ok=None), "shallow clone")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    one_error_line(hif(tmp_path, "import", "git", "src", "full", ok=None), "exists and is not empty")
    assert not (tmp_path / "w").exists()
    err = json.loads(hif(tmp_path, "import", "git", "plain", "w", "--json", ok=False).stdout)
    assert err["error"]["type"] == "InvalidInput"


@pytest.mark.parametrize("case", ["reserved", "not-utf8", "submodule"])
def test_unrepresentable_commit_is_refused_by_name(tmp_path: Path, case: str) -> None:
    g = Git.init(tmp_path / "src", tmp_path)
    g.write("a.txt", "a\n")
    g.commit("one")
    g.write("b.txt", "b\n")
    g.commit("two")
    if case == "reserved":
        g.write(".hif/config.json", "{}\n")
        path = ".hif/config.json"
    elif case == "not-utf8":
        g.write(b"bad-\xff.txt", "x\n")
        path = "bad-"
    else:
        g("update-index", "--add", "--cacheinfo", f"160000,{g('rev-parse', 'HEAD')},vendor/lib")
        path = "vendor/lib"
    if case == "submodule":  # committed from the index as it is (add -A would drop the git link)
        g.dates()
        g("commit", "-q", "-m", "three, unrepresentable")
        bad = g("rev-parse", "HEAD")
    else:
        bad = g.commit("three, unrepresentable")
    g.write("c.txt", "c\n")
    g.commit("four")
    line = one_error_line(hif(tmp_path, "import", "git", "src", "w", ok=None), f"commit {bad}", path)
    assert "cannot represent" in line or "cannot be represented" in line
    # what came before is landed and whole; the bad commit and later ones are not
    log = hjs(tmp_path / "w", "log")["landings"]
    assert [x["goal"] for x in log] == ["two", "one"]
    for x in log:
        assert hjs(tmp_path / "w", "show", x["session"])["session"]["state"] == "landed"
    one_error_line(hif(tmp_path, "import", "git", "src", "w", ok=None), f"commit {bad}")
    assert len(hjs(tmp_path / "w", "log")["landings"]) == 2


def test_refuses_a_mainline_that_is_not_this_import(tmp_path: Path) -> None:
    g = Git.init(tmp_path / "src", tmp_path)
    g.write("a.txt", "a\n")
    g.commit("one")
    hif(tmp_path, "init", "native")
    (tmp_path / "native" / "x.txt").write_text("x\n")
    hif(tmp_path / "native", "session", "start", "native work")
    hif(tmp_path / "native", "land")
    one_error_line(hif(tmp_path, "import", "git", "src", "native", ok=None), "did not come from git")
    # a rewritten source no longer contains the imported commit
    hif(tmp_path, "import", "git", "src", "w")
    g.dates()
    g("commit", "-q", "--amend", "-m", "one, rewritten")
    one_error_line(hif(tmp_path, "import", "git", "src", "w", ok=None), "does not contain commit")
    # a branch that contains the import, but not on its first-parent history
    g.write("b.txt", "b\n")
    g.commit("two")
    hif(tmp_path, "import", "git", "src", "w2")
    g("checkout", "-q", "-b", "other", "main~1")
    g.write("c.txt", "c\n")
    g.commit("on other")
    g.merge("main", message="Merge main into other")
    one_error_line(hif(tmp_path, "import", "git", "src", "w2", "--branch", "other", ok=None),
                   "not on the first-parent history")
    one_error_line(hif(tmp_path, "import", "git", "src", "w2", "--name", "acme/other", ok=None),
                   "holds local/w2")


def test_import_from_a_url_and_fetch_on_rerun(tmp_path: Path) -> None:
    g = Git.init(tmp_path / "src", tmp_path)
    g.write("a.txt", "a\n")
    g.commit("one")
    g("checkout", "-q", "-b", "dev")  # HEAD names dev: the default branch of the URL
    g.write("b.txt", "b\n")
    g.commit("two on dev")
    url = f"file://{tmp_path / 'src'}"
    doc = hjs(tmp_path, "import", "git", url, "fromurl")
    work = Path(doc["root"])
    assert work == tmp_path / "fromurl" and (work / ".hif" / "git-source.git" / "HEAD").exists()
    assert doc["branch"] == "dev" and doc["position"] == 2
    g.write("c.txt", "c\n")
    g.commit("three")
    again = hjs(tmp_path, "import", "git", url, str(work))
    assert again["sessions"] == 1 and (work / "c.txt").read_text() == "c\n"
    one_error_line(hif(tmp_path, "import", "git", f"file://{tmp_path / 'missing'}", "w", ok=None),
                   "cannot clone")
    assert not (tmp_path / "w").exists()


# -- export of sessions that never were commits ---------------------------------------------------


def test_export_native_sessions_keeps_why_in_notes(tmp_path: Path) -> None:
    hif(tmp_path, "init", "demo")
    demo = tmp_path / "demo"
    hif(demo, "session", "start", "Add a greeting", "--author", "Ann <ann@example.org>")
    (demo / "hello.txt").write_text("hello\n")
    hif(demo, "say", "Formal or casual?", "--as", "agent", "--author", "bot")
    hif(demo, "decide", "Casual greeting", "--why", "the human asked for it", "--alternative", "formal")
    hif(demo, "checkpoint", "first draft")
    hif(demo, "land")
    hif(demo, "session", "start", "Executable script")
    (demo / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(demo / "run.sh", 0o755)
    os.symlink("hello.txt", demo / "hi")
    hif(demo, "land")
    doc = hjs(demo, "export", "git", "../out")
    assert doc["positions"] == doc["commits"] == doc["notes"] == 2 and doc["original_commits"] == 0
    out = Git(tmp_path / "out", tmp_path)
    out("fsck", "--strict", "--no-progress")
    assert out("log", "--format=%s|%an|%ae", "main").splitlines() == [
        "Executable script|tester|", "Add a greeting|Ann|ann@example.org"]
    note = out("notes", "--ref=hif", "show", "main~1")
    assert "[agent] bot: Formal or casual?" in note
    assert "- Casual greeting" in note and "why: the human asked for it" in note
    assert "rejected: formal" in note and "1. first draft" in note
    assert files_of(out.path) == files_of(demo)
    # and back: a re-import of the export gives the same trees at every position
    back = hjs(tmp_path, "import", "git", "out", "again")
    assert back["position"] == 2
    for pos in (1, 2):
        assert hjs(tmp_path / "again", "ls", "-r", "--at", str(pos)) == hjs(demo, "ls", "-r", "--at", str(pos))
    one_error_line(hif(demo, "export", "git", "../out", ok=None), "exists and is not empty")
    hif(tmp_path, "init", "void")
    one_error_line(hif(tmp_path / "void", "export", "git", "../o2", ok=None), "nothing landed")


# -- the forge ----------------------------------------------------------------------------------


def micelio(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MICELIO, "admin", "--store", str(store), *args], capture_output=True, text=True,
                          timeout=120)


def test_micelio_repo_import(tmp_path: Path) -> None:
    g = build_rich(tmp_path / "src", tmp_path)
    store = tmp_path / "store"
    assert micelio(store, "user", "create", "alice").returncode == 0
    bad = micelio(store, "repo", "import", "alice/proj", str(tmp_path / "nowhere"))
    assert bad.returncode == 1 and bad.stderr.startswith("error: not a git repository")
    r = micelio(store, "repo", "import", "alice/proj", str(tmp_path / "src"), "--max-commits", "2", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["name"] == "alice/proj" and doc["owner"] == "alice" and doc["import"]["position"] == 2
    # `micelio import` (the top-level spelling, store from the environment) continues it
    r = subprocess.run([MICELIO, "import", "alice/proj", str(tmp_path / "src"), "--json"], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "MICELIO_STORE": str(store)})
    assert r.returncode == 0, r.stderr
    chain = g("rev-list", "--first-parent", "main").split()
    doc = json.loads(r.stdout)["import"]
    assert doc["start"] == 2 and doc["position"] == len(chain) and doc["resumed"] and doc["complete"]
    r = subprocess.run([MICELIO, "import", "--store", str(store), "alice/proj", str(tmp_path / "src")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and f"up to date with {tmp_path / 'src'} at position {len(chain)}" in r.stdout
    assert micelio(store, "repo", "import", "nobody/proj", str(tmp_path / "src")).stderr.startswith(
        "error: no user or organisation nobody")

    async def check(s: ObjectStore) -> tuple[Any, int, str]:
        from node.accounts import Accounts
        from node.authdb import AuthDB

        accounts = Accounts(AuthDB(s, tmp_path / "cache"))
        repo = Repo(s, "alice/proj")
        head = await repo.mainline.head()
        return await accounts.get_repo("alice/proj"), head, (await repo.mainline.record(head)).extra["git"]["commit"]

    meta, head, last = asyncio.run(_with_store(store, check))
    assert meta["owner"] == "alice" and head == len(chain) and last == chain[0]
    assert asyncio.run(_with_store(store, lambda s: _registered(s, tmp_path, "nobody/proj"))) is None


async def _with_store(path: Path, body: Any) -> Any:
    store = EmbeddedStore(path)
    try:
        return await body(store)
    finally:
        await store.close()


async def _registered(store: ObjectStore, tmp: Path, name: str) -> Any:
    from node.accounts import Accounts
    from node.authdb import AuthDB

    return await Accounts(AuthDB(store, tmp / "cache2")).get_repo(name)


# -- pieces -------------------------------------------------------------------------------------


def test_unquote() -> None:
    assert unquote(b"plain name") == b"plain name"
    assert unquote(b'"caf\\303\\251"') == "café".encode()
    assert unquote(b'"a\\"b\\\\c\\td\\ne"') == b'a"b\\c\td\ne'


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=40).filter(lambda s: "/" not in s and "\x00" not in s
                                                                 and s not in (".", "..")),
                       st.tuples(st.sampled_from("fxld"), st.binary(min_size=32, max_size=32)),
                       max_size=40))
def test_tree_bytes_is_canonical_cbor(entries: dict[str, tuple[str, bytes]]) -> None:
    tree = {n: Entry(k, o) for n, (k, o) in entries.items()}
    rows = [[n, e.kind, e.oid] for n, e in sorted(tree.items(), key=lambda kv: kv[0].encode("utf-8", "surrogatepass"))]
    try:
        expected = encode(["tree", rows])
    except Exception:
        return  # names cbor2 cannot encode (lone surrogates) are refused elsewhere
    assert tree_bytes(tree) == expected

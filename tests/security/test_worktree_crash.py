"""Moving a working copy is crash-safe: ``hif pull`` / ``hif goto`` killed at any point, then run
again, always complete, leave exactly the target tree and a clean status, and never overwrite a file
that someone changed after the kill.

The kill points are deterministic: the command runs under a CPython audit hook (``sys.addaudithook``,
no change to hif) that counts the file-system writes it makes inside the working copy (opens for
writing, renames, removals, directory and link creation) and sends the process SIGKILL just before
the n-th one. A counting run measures how many writes a move makes; each seed picks its kill point
in that range, so the kills spread over the whole move: before the journal, among the file writes,
between the stat cache and the state, before the journal goes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from forge import Forge
from test_crash import env, hif, hif_json
from test_remote import Hif, setup_repo

pytestmark = pytest.mark.slow

NAME = "crash/worktree"

RUNNER = r'''
import atexit, os, signal, sys

root = os.path.realpath(os.getcwd())
kill_at, count_file = int(sys.argv[1]), sys.argv[2]
n = 0
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT
PATH_EVENTS = {"os.rename": 0, "os.remove": 0, "os.mkdir": 0, "os.rmdir": 0, "os.symlink": 1}


def inside(p):
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    if not isinstance(p, str):
        return False  # a file descriptor
    p = os.path.abspath(p)
    return p == root or p.startswith(root + os.sep)


def hook(event, args):
    global n
    if event == "open":
        path, mode, flags = args
        if not ((isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & WRITE):
            return
    elif event in PATH_EVENTS:
        path = args[PATH_EVENTS[event]]
    else:
        return
    if inside(path):
        n += 1
        if n == abs(kill_at):  # negative: stopped (SIGSTOP) there instead, as a slow move would be
            os.kill(os.getpid(), signal.SIGKILL if kill_at > 0 else signal.SIGSTOP)


def report():
    with open(count_file, "w") as f:
        f.write(str(n))


if count_file != "-":
    atexit.register(report)
sys.addaudithook(hook)
sys.argv = ["hif", *sys.argv[3:]]
from hif.__main__ import main

main()
'''


def run_hooked(ws: Path, kill_at: int, count_file: Path | None, *args: str,
               environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``hif ARGS`` in ``ws``, SIGKILLed just before its ``kill_at``-th write in the working copy
    (0: never); with ``count_file``, the number of writes it made is written there."""
    return subprocess.run([sys.executable, "-c", RUNNER, str(kill_at), str(count_file or "-"), *args],
                          cwd=ws, env=environ or env(), capture_output=True, text=True, timeout=120)


def snapshot(root: Path) -> dict[str, tuple[str, str | bytes]]:
    """Everything in a working copy but ``.hif``: files (content, executable or not), links, and
    directories (an empty one left behind counts as a difference)."""
    out: dict[str, tuple[str, str | bytes]] = {}
    for dirpath, dirs, files in os.walk(root):
        rel = Path(dirpath).relative_to(root).as_posix()
        if rel == ".":
            dirs.remove(".hif")
            rel = ""
        for name in dirs + files:
            p = Path(dirpath, name)
            key = f"{rel}/{name}" if rel else name
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[key] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[key] = ("dir", "")
            else:
                out[key] = ("exec" if st.st_mode & stat.S_IXUSR else "file", p.read_bytes())
    return out


def _land(ws: Path, goal: str, writes: dict[str, str | None], links: dict[str, str] | None = None,
          execs: set[str] | None = None) -> None:
    hif(ws, "session", "start", goal)
    for path, text in writes.items():
        p = ws / path
        if text is None:
            if p.is_dir() and not p.is_symlink():
                import shutil

                shutil.rmtree(p)
            else:
                p.unlink()
            continue
        if p.is_dir() and not p.is_symlink():
            import shutil

            shutil.rmtree(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for path, target in (links or {}).items():
        p = ws / path
        if p.is_symlink() or p.exists():
            p.unlink()
        p.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, p)
    for path in execs or set():
        (ws / path).chmod(0o755)
    hif(ws, "land")


def build_history(tmp_path: Path, rng: random.Random) -> tuple[Path, Path, dict[int, dict[str, Any]]]:
    """A repository with four positions that differ in hundreds of files, files that become
    directories and back, links, and an executable bit; a working copy ``ws`` of it; and the
    expected contents at each position (a fresh working copy moved there)."""
    main = tmp_path / "main"
    hif(tmp_path, "init", str(main), "--name", NAME)
    body = lambda k, v: f"file {k} version {v}\n" + "y" * rng.randrange(0, 6000) + "\n"  # noqa: E731
    files = {f"d{k % 6}/s{k % 4}/f{k}.txt": body(k, 1) for k in range(160)}
    files |= {"swap": "a file that becomes a directory\n", "dirswap/inner.txt": "a directory that becomes a file\n",
              "tool.sh": "#!/bin/sh\necho 1\n", "README": "v1\n"}
    _land(main, "first", files, links={"link": "README", "d0/up": "../README"})
    v2: dict[str, str | None] = {p: body(i, 2) for i, p in enumerate(sorted(files)) if i % 2 == 0 and p.endswith(".txt")}
    v2 |= {p: None for p in sorted(files)[1:60:3]}
    v2 |= {f"new/n{k % 5}/g{k}.txt": body(k, 2) for k in range(60)}
    v2 |= {"swap": None, "swap/a.txt": "now a directory\n", "dirswap/inner.txt": None,
           "dirswap": "now a file\n", "README": "v2\n"}
    _land(main, "second", v2, links={"link": "tool.sh"}, execs={"tool.sh"})
    v3: dict[str, str | None] = {f"new/n{k % 5}/g{k}.txt": body(k, 3) for k in range(0, 60, 2)}
    v3 |= {f"d{k % 6}/s{k % 4}/f{k}.txt": body(k, 3) for k in range(100, 160)}
    v3 |= {"swap/a.txt": None, "swap": "a file again\n", "late/z.txt": "last\n"}
    _land(main, "third", v3)
    v4: dict[str, str | None] = {f"d{k % 6}/s{k % 4}/f{k}.txt": body(k, 4) for k in range(0, 160, 3)}
    v4 |= {"dirswap": None, "dirswap/inner.txt": "a directory again\n", "new/n0/g0.txt": None}
    _land(main, "fourth", v4, links={"link": "late/z.txt"})
    ws = tmp_path / "ws"
    hif(main, "workspace", "add", str(ws))
    expected = {}
    for pos in range(5):
        exp = tmp_path / f"expected-{pos}"
        hif(main, "workspace", "add", str(exp))
        hif(exp, "goto", str(pos))
        expected[pos] = snapshot(exp)
    assert len(expected[1]) > 180 and expected[1] != expected[2] != expected[3] != expected[4]
    return main, ws, expected


def move_args(target: int, head: int) -> list[str]:
    return ["pull"] if target == head else ["goto", str(target)]


def check_at(ws: Path, expected: dict[str, Any], position: int, what: str) -> None:
    assert snapshot(ws) == expected, f"{what}: the files are not those of position {position}"
    for quick in ("1", "0"):  # the fast path and the full CLI
        p = subprocess.run([sys.executable, "-m", "hif", "status", "--json"], cwd=ws, capture_output=True,
                           text=True, env={**env(), "HIF_QUICK_STATUS": quick}, timeout=60)
        assert p.returncode == 0, f"{what}: {p.stdout}{p.stderr}"
        doc = json.loads(p.stdout)
        assert doc["changes"] == [] and doc["position"] == position, f"{what}: {doc}"
    assert json.loads((ws / ".hif" / "state.json").read_text()) == {"position": position, "session": None}
    assert not (ws / ".hif" / "move.json").exists(), what


def test_pull_and_goto_killed_at_random_points(tmp_path: Path) -> None:
    rng = random.Random(14013)
    main, ws, expected = build_history(tmp_path, rng)
    head = 4
    counter = tmp_path / "count"
    counts: dict[tuple[int, int], int] = {}
    probe = tmp_path / "probe"  # measures each move's writes, without killing it
    hif(main, "workspace", "add", str(probe))

    def writes(start: int, target: int) -> int:
        if (start, target) not in counts:
            hif(probe, "goto", str(start))
            p = run_hooked(probe, 0, counter, *move_args(target, head))
            assert p.returncode == 0, p.stdout + p.stderr
            counts[start, target] = int(counter.read_text())
            assert counts[start, target] > 100, counts  # a move long enough to cut in its middle
        return counts[start, target]

    position = head
    interrupted = journals = 0
    seeds = 36
    for seed in range(seeds):
        srng = random.Random(seed)
        target = srng.choice([p for p in range(head + 1) if p != position])
        args = move_args(target, head)
        total = writes(position, target)
        # stratified over the seeds: every stretch of the move gets its kills
        kill_at = 1 + (seed * total) // seeds + srng.randrange(max(1, total // seeds))
        what = f"seed {seed}: {' '.join(args)} from {position} killed before write {kill_at}/{total}"
        p = run_hooked(ws, kill_at, None, *args)
        assert p.returncode == -signal.SIGKILL, f"{what}: not killed: {p.stdout}{p.stderr}"
        interrupted += 1
        pending = (ws / ".hif" / "move.json").exists()
        journals += pending
        if seed % 4 == 1:  # a plain status first: it must not call the half-moved copy clean
            st = hif(ws, "status")
            assert "no changes" in st.stdout
            assert snapshot(ws) == expected[target if pending else position] or not pending, what
            if pending:
                assert "finished an interrupted move" in st.stderr, f"{what}: {st.stderr}"
        if seed % 3 == 2:  # the rerun killed too, while it finishes the move
            again = run_hooked(ws, 1 + srng.randrange(total), None, *args)
            assert again.returncode in (0, -signal.SIGKILL), f"{what}: {again.stdout}{again.stderr}"
        rerun = hif(ws, *args, check=False)
        assert rerun.returncode == 0, f"{what}: the rerun failed: {rerun.stdout}{rerun.stderr}"
        check_at(ws, expected[target], target, what)
        position = target
    assert interrupted == seeds and journals > seeds // 2, (interrupted, journals)


def test_files_changed_after_the_kill_are_kept(tmp_path: Path) -> None:
    rng = random.Random(1402)
    main, ws, expected = build_history(tmp_path, rng)
    head = 4
    counter = tmp_path / "count"
    for start, target in ((1, 4), (4, 2)):
        hif(ws, "goto", str(start))
        probe = run_hooked(ws, 0, counter, *move_args(target, head))
        assert probe.returncode == 0
        total = int(counter.read_text())
        hif(ws, "goto", str(start))
        before, after = expected[start], expected[target]
        moved = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p)
                       and all(e is None or e[0] == "file" for e in (before.get(p), after.get(p)))
                       and all(before.get(d, ("dir",))[0] == "dir" == after.get(d, ("dir",))[0]
                               for d in _parents(p)))
        added = [p for p in moved if p not in before]
        removed = [p for p in moved if p not in after]
        changed = [p for p in moved if p in before and p in after]
        assert added and removed and len(changed) > 4
        # edited: files the move had already written, files it had not reached yet, a file it would
        # have added, one it would have removed, and a file the move does not touch at all
        edits = {changed[0]: "", changed[1]: "user edit, early\n", changed[-1]: "user edit, late\n",
                 changed[len(changed) // 2]: "user edit, middle\n", added[-1]: "user file where one is added\n",
                 removed[0]: "user edit of a removed file\n"}
        untouched = next(p for p, e in after.items() if e[0] == "file" and before.get(p) == e)
        edits[untouched] = "user edit, untouched\n"
        p = run_hooked(ws, total // 2, None, *move_args(target, head))
        assert p.returncode == -signal.SIGKILL
        assert snapshot(ws) not in (before, after)  # killed in the middle of the move
        for path, text in edits.items():
            (ws / path).parent.mkdir(parents=True, exist_ok=True)
            (ws / path).write_text(text)
        rerun = hif(ws, *move_args(target, head), check=False)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        for path, text in edits.items():
            assert (ws / path).read_text() == text, f"{path}: the user's edit was overwritten"
            if path != untouched:
                assert f"kept {path}" in rerun.stderr, rerun.stderr
        got = snapshot(ws)
        want = {k: v for k, v in after.items()}
        for path, text in edits.items():
            want[path] = ("file", text.encode())
        for path in edits:  # the directories a kept file needs
            want.update({d: ("dir", "") for d in _parents(path)})
        assert got == want
        doc = hif_json(ws, "status")
        assert doc["position"] == target
        assert {c["path"] for c in doc["changes"]} == set(edits)
        assert not (ws / ".hif" / "move.json").exists()
        assert hif(ws, *move_args(target, head)).returncode == 0  # the kept changes are no obstacle where nothing moves
        # the edits undone by hand, the working copy moves on as usual
        for path in edits:
            (ws / path).unlink()
        hif(ws, "session", "start", "clean up")
        hif(ws, "session", "abandon")
        check_at(ws, expected[target], target, f"{start}->{target} after clean-up")


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def test_sync_killed_is_finished_or_undone(tmp_path: Path) -> None:
    """``hif sync`` moves the files of an open session onto the head: killed before it records its
    sync event, the move is undone (the session's files over the old base); after, it is finished.
    Either way the rerun completes with the session's changes on the head."""
    rng = random.Random(1403)
    main = tmp_path / "main"
    hif(tmp_path, "init", str(main), "--name", NAME)
    _land(main, "first", {f"d{k % 5}/f{k}.txt": f"base {k}\n" for k in range(150)})
    ws = tmp_path / "ws"
    hif(main, "workspace", "add", str(ws))
    sid = hif_json(ws, "session", "start", "ours")["session"]
    ours = {f"d{k % 5}/f{k}.txt": f"ours {k}\n" for k in range(0, 150, 7)} | {"mine/new.txt": "ours\n"}
    for path, text in ours.items():
        (ws / path).parent.mkdir(parents=True, exist_ok=True)
        (ws / path).write_text(text)
    hif(ws, "say", "recorded")
    outcomes = {"undone": 0, "finished": 0, "not begun": 0}
    for seed in range(10):
        srng = random.Random(seed)
        theirs = {f"d{k % 5}/f{k}.txt": f"theirs {seed} {k}\n" + "z" * rng.randrange(4000)
                  for k in range(150) if k % 7 and srng.random() < 0.6}
        _land(main, f"theirs {seed}", theirs)
        head = seed + 2
        fresh = tmp_path / f"fresh-{seed}"
        hif(main, "workspace", "add", str(fresh))
        after = snapshot(fresh)
        for path, text in ours.items():
            after[path] = ("file", text.encode())
        after["mine"] = ("dir", "")
        before = snapshot(ws)
        # about two writes per file moved, then the stat cache and the state twice. Even seeds kill
        # among the files; odd ones walk the kill point up from the end of the files until a kill
        # lands between the sync event and the journal's removal (an undone sync can be killed again)
        n = 2 * len(theirs)
        kill_at = 1 + srng.randrange(n) if seed % 2 == 0 else n + 6
        for _ in range(30):
            p = run_hooked(ws, kill_at, None, "sync")
            assert p.returncode in (0, -signal.SIGKILL), p.stdout + p.stderr
            if p.returncode == 0:
                outcomes["not begun"] += 1  # the kill point lay beyond the end: completed
                break
            st = hif(ws, "status")  # opening the working copy settles the move
            if "undid an interrupted sync" in st.stderr:
                outcomes["undone"] += 1
                assert snapshot(ws) == before
            elif "finished an interrupted move" in st.stderr:
                outcomes["finished"] += 1
                assert snapshot(ws) == after
                break
            else:  # killed before the journal was written, or after it went
                outcomes["not begun"] += 1
                assert snapshot(ws) in (before, after)
                if snapshot(ws) == after:
                    break
            if seed % 2 == 0:
                break
            kill_at += 1
        rerun = hif(ws, "sync", check=False)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert snapshot(ws) == after, f"seed {seed}"
        doc = hif_json(ws, "status")
        assert doc["position"] == head and doc["session"]["id"] == sid
        assert {c["path"] for c in doc["changes"]} == set(ours)
        assert json.loads((ws / ".hif" / "state.json").read_text()) == {"position": head, "session": sid}
    assert outcomes["undone"] and outcomes["finished"], outcomes


def test_forge_clone_pull_killed(forge: Forge, tmp_path: Path) -> None:
    """The same in a clone of a forge repository: finishing the move reads what it needs through
    the clone's cache (and the forge), and the result equals a fresh clone at that position."""
    rng = random.Random(1404)
    cli = Hif(tmp_path / "config")
    url = setup_repo(cli, forge, tmp_path, "acme/crash")
    writer = tmp_path / "writer"
    cli.run(tmp_path, "clone", url, str(writer))
    versions: list[dict[str, str]] = []
    for v in range(3):
        files = {f"d{k % 4}/f{k}.txt": f"v{v} {k}\n" + "w" * rng.randrange(3000)
                 for k in range(120) if v == 0 or rng.random() < 0.7}
        versions.append(files)
        cli.run(writer, "session", "start", f"version {v}")
        for path, text in files.items():
            (writer / path).parent.mkdir(parents=True, exist_ok=True)
            (writer / path).write_text(text)
        cli.run(writer, "land")
    expected = {}
    for pos in (1, 2, 3):
        exp = tmp_path / f"expected-{pos}"
        cli.run(tmp_path, "clone", url, str(exp))
        cli.run(exp, "goto", str(pos))
        expected[pos] = snapshot(exp)
    ws = tmp_path / "ws"
    cli.run(tmp_path, "clone", url, str(ws))
    position = 3
    for seed in range(10):
        srng = random.Random(seed)
        target = srng.choice([p for p in (1, 2, 3) if p != position])
        args = move_args(target, 3)
        changed = sum(1 for p in expected[position].keys() | expected[target].keys()
                      if expected[position].get(p) != expected[target].get(p))
        p = run_hooked(ws, 1 + srng.randrange(2 * changed), None, *args, environ=cli.env)
        assert p.returncode in (0, -signal.SIGKILL), p.stdout + p.stderr
        rerun = cli.run(ws, *args)
        assert snapshot(ws) == expected[target], f"seed {seed}: {' '.join(args)} from {position}"
        assert cli.js(ws, "status")["changes"] == [], rerun.stderr
        assert json.loads((ws / ".hif" / "state.json").read_text()) == {"position": target, "session": None}
        position = target


def test_a_running_move_is_not_taken_for_an_interrupted_one(tmp_path: Path) -> None:
    """While a move runs (here: stopped in its middle), another command neither finishes it under
    its feet nor reports the half-moved files: it says the working copy is busy. Once the mover is
    gone (killed), the rerun completes."""
    main, ws, expected = build_history(tmp_path, random.Random(1405))
    hif(ws, "goto", "1")
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, "-60", "-", "pull"], cwd=ws, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # until it stops itself at its 60th write
            with open(f"/proc/{proc.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    break
            assert proc.poll() is None
            subprocess.run(["sleep", "0.05"])
        else:
            raise AssertionError("the pull never reached its 60th write")
        half = snapshot(ws)
        assert half not in (expected[1], expected[4])
        for args in (["status"], ["status", "--json"], ["pull"], ["goto", "2"], ["session", "start", "x"]):
            p = hif(ws, *args, check=False)
            assert p.returncode == 1, f"{args}: {p.stdout}{p.stderr}"
            assert "another hif command is moving this working copy" in p.stdout + p.stderr, args
        assert snapshot(ws) == half  # nothing touched
    finally:
        proc.kill()
        proc.wait(timeout=30)
    rerun = hif(ws, "pull")
    assert "finished an interrupted move to position 4" in rerun.stderr
    check_at(ws, expected[4], 4, "after the stopped pull was killed")


def test_a_journal_naming_trees_the_store_lacks_says_what_to_do(tmp_path: Path) -> None:
    """A ``.hif/move.json`` that is valid JSON but names a tree the store lacks (either end, both,
    of a goto or a sync) cannot be finished: every command stops with one line naming the journal,
    the tree and how to give up the move, instead of "object … is missing"; nothing is touched,
    and once the journal is removed the working copy works again."""
    import asyncio

    from hif.objects import EMPTY_TREE
    from hif.repo import Repo
    from hif.store import EmbeddedStore

    main = tmp_path / "main"
    hif(tmp_path, "init", str(main), "--name", NAME)
    _land(main, "first", {"a.txt": "one\n", "d/b.txt": "two\n"})
    _land(main, "second", {"a.txt": "three\n"})
    ws = tmp_path / "ws"
    hif(main, "workspace", "add", str(ws))
    hif(ws, "goto", "1")

    async def trees() -> list[bytes]:
        store = EmbeddedStore(main / ".hif" / "store")
        try:
            repo = Repo(store, NAME)
            return [await repo.mainline.tree_at(p) for p in (0, 1, 2)]
        finally:
            await store.close()

    t0, t1, t2 = asyncio.run(trees())
    assert t0 == EMPTY_TREE and t1 != t2
    missing = [bytes([n]) * 32 for n in (0xab, 0x01)]
    cases = [("goto", t1, missing[0]), ("goto", missing[0], t2), ("goto", missing[0], missing[1]),
             ("sync", t1, missing[1]), ("goto", t0, missing[1])]
    journal = ws / ".hif" / "move.json"
    before = snapshot(ws)
    for op, src, dst in cases:
        doc = {"op": op, "from": {"position": 1, "session": None, "tree": src.hex()},
               "to": {"position": 2, "session": None, "tree": dst.hex()}}
        journal.write_text(json.dumps(doc))
        lacking = next(t for t in (src, dst) if t in missing)
        for args in (["status"], ["status", "--json"], ["pull"], ["goto", "2"], ["session", "start", "x"], ["log"]):
            p = hif(ws, *args, check=False)
            what = f"{op} {args}: {p.stdout}{p.stderr}"
            assert p.returncode == 1, what
            if "--json" in args:
                lines = [json.loads(p.stdout)["error"]["message"]]
            else:
                lines = p.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in p.stderr, what
            assert ".hif/move.json" in lines[0] and lacking.hex() in lines[0], what
            assert "remove .hif/move.json" in lines[0] and "is missing" not in lines[0], what
        assert snapshot(ws) == before and journal.exists()
    journal.unlink()
    assert hif_json(ws, "status")["changes"] == []
    hif(ws, "pull")
    assert (ws / "a.txt").read_text() == "three\n"

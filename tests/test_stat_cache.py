"""The stat cache (``.hif/index``) and ``hif status`` over it: every kind of change is seen on both
the quick path (``python -m hif``, the ``hif`` command) and the full CLI (``python -m hif.cli``), with
the directory check in one process and split over two; a corrupt or old-format cache is rebuilt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cbor2
import pytest

import hif.objects
import hif.worktree.workspace
from hif import Repository
from hif.objects import Entry
from hif.worktree.index import MAGIC, RACY_NS, Index, fast_candidates, verify_dirs

FILES = {"top.txt": "top\n", "a/one.txt": "one\n", "a/two.txt": "two\n", "a/b/deep.txt": "deep\n",
         "c/three.txt": "three\n", "c/run.sh": "#!/bin/sh\n"}
MODES = [("quick", "0"), ("quick", "2"), ("quick", "3"), ("full", "0"), ("full", "2")]  # (path, HIF_PARALLEL_STAT)


def status(root: Path, how: str = "quick", parallel: str = "2", *, as_json: bool = True) -> str:
    module = "hif" if how == "quick" else "hif.cli"
    env = {**os.environ, "HIF_AUTHOR": "tester", "HIF_ROLE": "human", "HIF_PARALLEL_STAT": parallel}
    env.pop("HIF_DEBUG", None)
    env.pop("HIF_QUICK_STATUS", None)
    p = subprocess.run([sys.executable, "-m", module, "status", *(["--json"] if as_json else [])], cwd=root,
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stdout + p.stderr
    return p.stdout


def changes(root: Path, how: str = "quick", parallel: str = "2") -> dict[str, str]:
    """path -> action (with the new kind for added and modified files)."""
    doc = json.loads(status(root, how, parallel))
    return {c["path"]: c["action"] + (f":{c['new']['kind']}" if c["new"] else "") for c in doc["changes"]}


def age(root: Path, seconds: int = 100) -> None:
    """Move every working file's mtime into the past, out of the racy window of any later save."""
    t = time.time_ns() - seconds * 1_000_000_000
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".hif"]
        for name in filenames:
            os.utime(os.path.join(dirpath, name), ns=(t, t), follow_symlinks=False)


@pytest.fixture(params=["listed", "dir-stats"])
def wc(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A working copy at position 1 holding FILES, its stat cache settled (every file trusted);
    with "dir-stats" the cache also knows each directory's stat, so status does not list them."""
    r = Repository.init(tmp_path / "w")
    with r:
        r.start_session("files")
        for path, text in FILES.items():
            r.write(path, text)
        (r.root / "c/run.sh").chmod(0o755)
        r.land()
    age(r.root)
    assert changes(r.root) == {}  # re-reads the aged files once and saves the cache
    if request.param == "dir-stats":
        time.sleep(2.1)  # a directory's ctime cannot be set back: wait until it is out of the racy window
        assert changes(r.root) == {}  # lists each directory once more and caches its stat
    return r.root


def test_a_settled_cache_vouches_for_every_directory(wc: Path, request: pytest.FixtureRequest) -> None:
    idx = Index.load(wc / ".hif" / "index")
    assert idx.snapshot is not None and not idx.dirty
    cand = fast_candidates(idx)
    assert sorted(idx.snapshot.dirs[i] for i in cand) == ["", "a", "a/b", "c"]
    bad, learned = verify_dirs(str(wc), idx.snapshot, cand, idx.written_ns - RACY_NS)
    assert bad == []  # the fast path holds: no file is read
    known = [i for i in cand if idx.snapshot.dstat[i] != (0, 0)]
    if "dir-stats" in request.node.callspec.id:
        assert known == cand and learned == []  # no directory is listed, nothing new to save
    else:
        assert known == []
    for how in ("quick", "full"):
        assert status(wc, how, as_json=False) == "position 1\nno open session\n  no changes\n"


@pytest.mark.parametrize(("how", "parallel"), MODES)
def test_every_kind_of_change(wc: Path, how: str, parallel: str) -> None:
    (wc / "a/one.txt").write_text("ONE\n")  # same size, new content
    (wc / "a/two.txt").unlink()
    (wc / "top.txt").unlink()
    os.symlink("a/one.txt", wc / "top.txt")  # file -> symlink
    (wc / "c/three.txt").chmod(0o755)  # mode only
    (wc / "new.txt").write_text("new\n")
    (wc / "n/m").mkdir(parents=True)  # a new directory tree
    (wc / "n/m/x.txt").write_text("x\n")
    (wc / "a/b/deep.txt").unlink()
    (wc / "a/b/deep.txt").mkdir()  # file -> directory
    (wc / "a/b/deep.txt/in.txt").write_text("in\n")
    assert changes(wc, how, parallel) == {
        "a/one.txt": "modified:f", "a/two.txt": "deleted", "top.txt": "modified:l",
        "c/three.txt": "modified:x", "new.txt": "added:f", "n/m/x.txt": "added:f",
        "a/b/deep.txt": "deleted", "a/b/deep.txt/in.txt": "added:f",
    }
    assert changes(wc, how, parallel) == changes(wc, "full", "0")  # the saved cache agrees


@pytest.mark.parametrize(("how", "parallel"), MODES)
def test_directory_replaced(wc: Path, how: str, parallel: str) -> None:
    os.rename(wc / "a", wc / "a-moved")
    os.symlink("a-moved", wc / "a")  # a symlink to a directory with the very same files
    (wc / "c/three.txt").unlink()
    (wc / "c/run.sh").unlink()
    (wc / "c").rmdir()
    (wc / "c").write_text("now a file\n")  # directory -> file
    got = changes(wc, how, parallel)
    assert got == {
        "a": "added:l", "a/one.txt": "deleted", "a/two.txt": "deleted", "a/b/deep.txt": "deleted",
        "a-moved/one.txt": "added:f", "a-moved/two.txt": "added:f", "a-moved/b/deep.txt": "added:f",
        "c": "added:f", "c/three.txt": "deleted", "c/run.sh": "deleted",
    }
    (wc / "a").unlink()
    os.rename(wc / "a-moved", wc / "a")
    (wc / "c").unlink()
    (wc / "c").mkdir()
    assert changes(wc, how, parallel) == {"c/three.txt": "deleted", "c/run.sh": "deleted"}


def test_exec_bit_and_back(wc: Path) -> None:
    (wc / "c/run.sh").chmod(0o644)
    assert changes(wc) == {"c/run.sh": "modified:f"}
    (wc / "c/run.sh").chmod(0o755)
    assert changes(wc) == {}


@pytest.mark.parametrize("how", ["quick", "full"])
def test_racy_write_with_the_same_stat_is_seen(tmp_path: Path, how: str) -> None:
    """A file rewritten in place with the same size and mtime right after the cache was saved
    (inside the timestamp granularity) is still re-read, because its mtime is too recent."""
    r = Repository.init(tmp_path / "w")
    with r:
        r.start_session("files")
        r.write("f.txt", "aaaa\n")
        r.land()
    f = r.root / "f.txt"
    assert changes(r.root, how) == {}
    before = os.lstat(f)
    with open(f, "r+b") as fh:  # same inode, same size
        fh.write(b"bbbb\n")
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.lstat(f)
    assert (after.st_size, after.st_mtime_ns, after.st_ino, after.st_mode) == (
        before.st_size, before.st_mtime_ns, before.st_ino, before.st_mode)
    assert changes(r.root, how) == {"f.txt": "modified:f"}


@pytest.mark.parametrize("damage", ["missing", "empty", "garbage", "truncated", "flipped", "old-cbor"])
def test_a_bad_cache_is_rebuilt(wc: Path, damage: str) -> None:
    path = wc / ".hif" / "index"
    good = path.read_bytes()
    assert good.startswith(MAGIC)
    if damage == "missing":
        path.unlink()
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(os.urandom(5000))
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "flipped":
        at = len(good) // 2
        path.write_bytes(good[:at] + bytes([good[at] ^ 0x40]) + good[at + 1:])
    else:  # the format before this one: a CBOR map of lists
        path.write_bytes(cbor2.dumps({"position": 1, "tree": b"\0" * 32, "written_ns": 0,
                                      "entries": {"top.txt": ["f", b"\0" * 32, [5, 0, 0, 0o100644], "f", b"\0" * 32]}}))
    assert Index.load(path).dirty  # treated as absent
    (wc / "a/one.txt").write_text("changed\n")
    for how in ("quick", "full"):
        assert changes(wc, how) == {"a/one.txt": "modified:f"}
    assert path.read_bytes().startswith(MAGIC)  # rewritten in the current format


def test_quick_and_full_print_the_same(wc: Path) -> None:
    (wc / "a/one.txt").write_text("changed\n")
    (wc / "c/three.txt").unlink()
    (wc / "z.txt").write_text("z\n")
    for as_json in (False, True):
        assert status(wc, "quick", as_json=as_json) == status(wc, "full", as_json=as_json)
    assert "  M a/one.txt\n" in status(wc, as_json=False)


def test_an_open_session_goes_to_the_full_cli(wc: Path) -> None:
    with Repository.open(wc) as r:
        sid = r.start_session("more").id
    (wc / "top.txt").write_text("changed\n")
    out = status(wc, "quick", as_json=False)
    assert out == status(wc, "full", as_json=False)
    assert f"session {sid}: more" in out and "  M top.txt" in out


def test_index_api_round_trip(tmp_path: Path) -> None:
    """What checkout and rebuilds do through the Index API survives save and load, including a
    change to one directory of a loaded cache (the others are copied as they were)."""
    oid = hif.objects.digest(b"x")
    other = hif.objects.digest(b"y")
    idx = Index(dirty=True)
    idx.position, idx.tree = 3, hif.objects.EMPTY_TREE
    for i in range(50):
        path = f"d{i % 5}/s{i % 3}/f{i}.txt"
        idx.set_base(path, Entry("f", oid))
        idx.remember(path, os.lstat(tmp_path), Entry("x" if i % 7 == 0 else "f", other if i % 4 == 0 else oid))
    idx.set_base("gone.txt", Entry("l", oid))  # base only: deleted in the working copy
    path = tmp_path / "index"
    idx.save(path)
    loaded = Index.load(path)
    assert (loaded.position, loaded.tree, loaded.written_ns) == (3, idx.tree, idx.written_ns)
    assert loaded.base_entries() == idx.base_entries()
    assert loaded.entries == idx.entries
    loaded = Index.load(path)
    loaded.forget_work("d1/s1/f1.txt")
    loaded.set_base("d1/s1/f1.txt", None)  # neither base nor work: gone from the cache
    loaded.set_base("d2/new.txt", Entry("f", other))
    loaded.save(path)
    again = Index.load(path)
    expect = dict(idx.entries)
    del expect["d1/s1/f1.txt"]
    assert again.get("d2/new.txt") is not None
    assert {p: e for p, e in again.entries.items() if p != "d2/new.txt"} == expect


def test_kinds_agree_with_hif_objects() -> None:
    w, o = hif.worktree.workspace, hif.objects
    assert (w.FILE, w.EXEC, w.LINK, w.DIR) == (o.FILE, o.EXEC, o.LINK, o.DIR)

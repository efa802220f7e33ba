"""Crash safety: SIGKILL ``hif land`` (and raw store writers) at random moments, then check nothing tore.

The claims under test (docs/architecture.md): every write becomes visible in one atomic step, the log
record is the single linearisation point of landing, and a retry after a crash lands the session
exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hif.mainline import log_key
from hif.objects import EMPTY_TREE, decode
from hif.repo import Repo
from hif.store import EmbeddedStore, check_key
from hif.tree import apply, walk

pytestmark = pytest.mark.slow

HIF = str(Path(sys.executable).with_name("hif"))
if not os.path.exists(HIF):  # pragma: no cover
    HIF = shutil.which("hif") or HIF
NAME = "crash/test"


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "HIF_DEBUG"}
    e.update(HIF_AUTHOR="crasher", HIF_ROLE="agent")
    return e


def hif(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([HIF, *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"hif {' '.join(args)} exited {p.returncode}: {p.stdout}{p.stderr}")
    return p


def hif_json(cwd: Path, *args: str) -> Any:
    return json.loads(hif(cwd, *args, "--json").stdout)


# -- store consistency -----------------------------------------------------------------------------


async def _check_store(root: Path) -> dict[str, int]:
    """Verify the whole repository; return session id -> landing position."""
    store = EmbeddedStore(root)
    repo = Repo(store, NAME)
    db = repo.objects
    # the log is gap-free: keys are exactly log/1..log/N
    keys = [k async for k in store.iter_keys(repo.prefix + "log/")]
    positions = [int(k.rsplit("/", 1)[1]) for k in keys]
    assert positions == list(range(1, len(positions) + 1)), positions
    head = await repo.mainline.head()
    assert head == len(positions)
    assert await repo.mainline.head_hint() <= head, "the head hint may lag, never lead"
    landed: dict[str, int] = {}
    seen: Counter[str] = Counter()
    prev = EMPTY_TREE
    for pos in range(1, head + 1):
        assert keys[pos - 1] == log_key(repo.prefix, pos)
        rec = await repo.mainline.record(pos)  # decodes, and checks the position field
        assert rec.position == pos
        assert rec.parent_tree == prev, f"record {pos} does not continue record {pos - 1}"
        assert await apply(db, rec.parent_tree, rec.changes()) == rec.tree, f"tree of {pos}"
        for s in rec.sessions:
            seen[s.session] += 1
            landed[s.session] = pos
            await db.get_value("snapshot", s.snapshot)
        prev = rec.tree
    assert all(c == 1 for c in seen.values()), f"a session landed twice: {seen}"
    async for _path, entry in walk(db, prev):
        await db.get_blob(entry.oid)
    # nothing half-written is visible: every file under data/ is a proper key with a whole value
    data = root / "data"
    for dirpath, _dirs, files in os.walk(data):
        for f in files:
            key = Path(dirpath, f).relative_to(data).as_posix()
            check_key(key)
            assert not f.startswith(".") and not f.endswith(".tmp"), key
            if key.startswith(db.prefix):
                await db.get_canonical(bytes.fromhex(key[len(db.prefix):]))  # re-verifies the hash
            elif "/sessions/" in key or key.endswith(("/head", "/meta")) or "/open/" in key:
                decode(await store.get(key))
    for sid, pos in landed.items():
        state = await repo.sessions.state(sid)
        if state is not None:
            assert state["state"] == "landed" and state["position"] == pos
    await store.close()
    return landed


def check_store(root: Path) -> dict[str, int]:
    return asyncio.run(_check_store(root))


# -- hif land killed at random moments -------------------------------------------------------------


def _write_files(ws: Path, rng: random.Random, it: int) -> dict[str, str]:
    files = {}
    for k in range(20):
        path = f"d{k % 4}/s{k % 3}/f{rng.randrange(40)}.txt"
        files[path] = f"iteration {it} file {k}\n" + "x" * rng.randrange(10, 20_000) + "\n"
    for path, text in files.items():
        (ws / path).parent.mkdir(parents=True, exist_ok=True)
        (ws / path).write_text(text)
    return files


def test_land_killed_at_random_moments(tmp_path: Path) -> None:
    rng = random.Random(20240601)
    main = tmp_path / "main"
    hif(tmp_path, "init", str(main), "--name", NAME)
    store_root = main / ".hif" / "store"
    ws = tmp_path / "ws"
    hif(main, "workspace", "add", str(ws))
    outcomes: Counter[str] = Counter()
    for it in range(15):
        sid = hif_json(ws, "session", "start", f"crash iteration {it}")["session"]
        expected = _write_files(ws, rng, it)
        head = it  # one landing per earlier iteration
        proc = subprocess.Popen([HIF, "land", "--json"], cwd=ws, env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        repo_dir = store_root / "data" / "repos" / NAME
        if it % 3 == 0:  # anywhere: mostly before the record, sometimes after
            time.sleep(rng.uniform(0.0, 0.3))
        else:  # just after the record (or the session's closing) became visible
            target = repo_dir / "log" / f"{head + 1:012d}" if it % 3 == 1 else (
                repo_dir / "sessions" / sid / "state")
            deadline = time.monotonic() + 20
            while proc.poll() is None and not target.exists() and time.monotonic() < deadline:
                time.sleep(0.0005)
            time.sleep(rng.uniform(0.0, 0.01))
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=30)

        landed = check_store(store_root)
        state = json.loads((ws / ".hif" / "state.json").read_text())
        if state["session"] is None:
            # the killed process got to the very end: it landed, once, and moved the working copy
            assert sid in landed, f"iteration {it}: no session in the working copy, none landed"
            outcomes["completed"] += 1
        else:
            assert state["session"] == sid
            before = landed.get(sid)
            rerun = hif(ws, "land", "--json", check=False)
            assert rerun.returncode == 0, f"iteration {it} (killed: {code}): {rerun.stdout}{rerun.stderr}"
            doc = json.loads(rerun.stdout)
            assert doc["session"] == sid
            if before is not None:
                assert doc["already_landed"] and doc["position"] == before
                outcomes["already"] += 1
            else:
                assert not doc["already_landed"]
                outcomes["landed on rerun"] += 1
            landed = check_store(store_root)
        assert sid in landed
        state = json.loads((ws / ".hif" / "state.json").read_text())
        assert state == {"position": landed[sid], "session": None}
        # the working copy is clean and holds the session's files
        assert hif_json(ws, "status")["changes"] == []
        for path, text in expected.items():
            assert (ws / path).read_text() == text
    assert len(landed) == 15
    # every landing is visible, once, in the log of a fresh working copy
    fresh = tmp_path / "fresh"
    hif(main, "workspace", "add", str(fresh))
    rows = hif_json(fresh, "log")["landings"]
    assert sorted(r["position"] for r in rows) == list(range(1, 16))
    assert Counter(r["session"] for r in rows) == Counter({s: 1 for s in landed})
    # the kills did interrupt landings both before and after their linearisation point
    assert outcomes["landed on rerun"] > 0 and outcomes["already"] > 0, outcomes


async def _land_in_process(store_root: Path, sid: str, *, forget_close: bool) -> int:
    """Land ``sid`` as a ``hif land`` would have before being killed (the working copy untouched)."""
    from hif.landing import land

    store = EmbeddedStore(store_root)
    repo = Repo(store, NAME)
    res = await land(repo, await repo.sessions.load(sid))
    if forget_close:  # killed between creating the record and closing the session
        await store.delete(f"{repo.prefix}sessions/{sid}/state")
    await store.close()
    return res.position


@pytest.mark.parametrize("forget_close", [False, True], ids=["after-close", "after-record"])
def test_rerun_after_kill_past_the_record(tmp_path: Path, forget_close: bool) -> None:
    main = tmp_path / "main"
    hif(tmp_path, "init", str(main), "--name", NAME)
    store_root = main / ".hif" / "store"
    hif(main, "session", "start", "first")
    (main / "a.txt").write_text("a\n")
    hif(main, "land")
    sid = hif_json(main, "session", "start", "second")["session"]
    (main / "a.txt").write_text("a changed\n")
    (main / "dir").mkdir()
    (main / "dir" / "b.txt").write_text("b\n")
    hif(main, "say", "record the files")  # the events are in the store before the 'crash'
    pos = asyncio.run(_land_in_process(store_root, sid, forget_close=forget_close))
    assert pos == 2
    rerun = hif(main, "land", "--json", check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    doc = json.loads(rerun.stdout)
    assert doc["already_landed"] and doc["position"] == 2 and doc["session"] == sid
    assert hif(main, "land", check=False).returncode == 1  # no session is open any more
    landed = check_store(store_root)
    assert landed[sid] == 2 and len(landed) == 2
    assert json.loads((main / ".hif" / "state.json").read_text()) == {"position": 2, "session": None}
    assert hif_json(main, "status")["changes"] == []
    assert hif_json(main, "session", "show", sid)["session"]["state"] == "landed"


# -- raw store writers killed at random moments ----------------------------------------------------

VALUES = '''
import hashlib

def value(key, n):
    """A self-describing value: anyone can tell a whole one from a torn or mixed one."""
    seed = hashlib.sha256(f"{key}|{n}".encode()).digest()
    size = 200 + int.from_bytes(seed[:3], "big") % 400_000
    body = (seed * (size // 32 + 1))[:size]
    return f"{key}|{n}|{size}|".encode() + body

def parse(key, data):
    k, n, size, _ = data.split(b"|", 3)
    assert k.decode() == key, (key, k)
    assert data == value(key, int(n)), f"{key}: torn or foreign value"
    return int(n)
'''

WRITER = VALUES + '''
import asyncio, random, sys
from hif.errors import NotFound, PreconditionFailed
from hif.store import EmbeddedStore

async def main(root, run, cas_only):
    store = EmbeddedStore(root, fsync=run % 2 == 0)
    rng = random.Random(run)
    done = 0
    while cas_only == 0 or done < cas_only:
        op = 0 if cas_only else rng.randrange(4)
        if op == 0:
            key = "cas/0" if cas_only else f"cas/{rng.randrange(3)}"
            try:
                data, etag = await store.get_with_etag(key)
            except NotFound:
                try:
                    await store.put(key, value(key, 0), if_none_match=True)
                except PreconditionFailed:
                    pass
                continue
            try:
                await store.put(key, value(key, parse(key, data) + 1), if_match=etag)
                done += 1
            except PreconditionFailed:
                pass
        elif op == 1:
            key = f"pia/{rng.randrange(60)}"
            try:
                await store.put(key, value(key, run * 1000 + rng.randrange(1000)), if_none_match=True)
            except PreconditionFailed:
                pass
        elif op == 2:
            key = f"plain/{rng.randrange(5)}"
            await store.put(key, value(key, rng.randrange(10**6)))
        else:
            key = f"deep/{rng.randrange(3)}/k{rng.randrange(3)}"
            if rng.random() < 0.3:
                await store.delete(key)
            else:
                try:
                    await store.put(key, value(key, rng.randrange(10**6)), if_none_match=True)
                except PreconditionFailed:
                    pass

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
'''

_ns: dict[str, Any] = {}
exec(VALUES, _ns)  # the same functions the writers use
parse_value = _ns["parse"]


def _writer(root: Path, run: int, cas_only: int = 0) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(run), str(cas_only)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _check_values(root: Path) -> dict[str, int]:
    out = {}
    data = root / "data"
    for dirpath, _dirs, files in os.walk(data):
        for f in files:
            key = Path(dirpath, f).relative_to(data).as_posix()
            check_key(key)
            out[key] = parse_value(key, (data / key).read_bytes())
    return out


def test_store_writers_killed_never_tear(tmp_path: Path) -> None:
    rng = random.Random(7)
    root = tmp_path / "store"
    EmbeddedStore(root, create=True)
    counters: dict[str, int] = {}
    for rnd in range(12):
        procs = [_writer(root, 2 * rnd), _writer(root, 2 * rnd + 1)]
        time.sleep(rng.uniform(0.15, 0.6))
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait(timeout=30)
            assert p.stderr is not None
            err = p.stderr.read().decode()
            p.stderr.close()
            assert p.returncode == -signal.SIGKILL, f"a writer failed before the kill: {err}"
        values = _check_values(root)
        for key, n in values.items():
            if key.startswith("cas/"):
                assert n >= counters.get(key, 0), f"{key} went back from {counters[key]} to {n}"
                counters[key] = n
    assert any(k.startswith("pia/") for k in values)
    assert sum(counters.values()) > 0, "the writers made no progress"
    # no lock was left held by a killed writer: a last one finishes its 30 increments
    start = counters.get("cas/0", 0)
    p = _writer(root, 999, cas_only=30)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err.decode()
    values = _check_values(root)
    assert values["cas/0"] == start + 30

"""Large sessions: recording many files syncs the store once for all their objects and events, not
twice per object (``hif land`` of 10,000 new files spent 56 of its 58 s in fsync), and the batch of
events (:meth:`SessionStore.append_many`) keeps append's promises: in order, no number taken twice,
nothing left in a session that closed meanwhile."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hif.errors import SessionClosed
from hif.objects import FILE, blob_bytes, digest, encode
from hif.repo import Repo
from hif.session import SEQ_WIDTH, Session, make_event
from hif.store import ObjectStore, open_store

HIF = str(Path(sys.executable).with_name("hif"))
# runs argv, then prints its peak RSS in KiB (os.wait4: the child's own rusage)
PEAK = ("import os, sys\npid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ)\n"
        "_, status, ru = os.wait4(pid, 0)\nprint(ru.ru_maxrss)\nsys.exit(os.waitstatus_to_exitcode(status))")
FILES = 120  # above the batch threshold (64): the old code made 4 fsyncs per file for these


def hif(cwd: Path, *args: str, strace: Path | None = None) -> str:
    cmd = [HIF, *args]
    if strace is not None:  # count the syncs the command makes (its own threads included)
        cmd = ["strace", "-f", "-c", "-U", "name,calls", "-e", "trace=fsync,fdatasync,syncfs,sync",
               "-o", str(strace), *cmd]
    env = {**os.environ, "HIF_AUTHOR": "ana"}
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def syncs(strace: Path) -> int:
    """Sync calls in an ``strace -c`` summary (every row but the total)."""
    rows = re.findall(r"^\s*(fsync|fdatasync|syncfs|sync)\s+(\d+)\s*$", strace.read_text(), re.M)
    return sum(int(n) for _, n in rows)


def workspace(tmp_path: Path) -> Path:
    hif(tmp_path, "init", "r")
    return tmp_path / "r"


@pytest.mark.parametrize("change", ["add", "modify", "delete", "mixed"])
def test_landing_many_files_syncs_a_few_times_not_per_file(tmp_path: Path, change: str) -> None:
    ws = workspace(tmp_path)
    names = [f"d{i % 7}/f{i:04d}.txt" for i in range(FILES)]
    if change != "add":  # land the files first, then change them in the measured session
        hif(ws, "session", "start", "seed")
        for n in names:
            (ws / n).parent.mkdir(exist_ok=True)
            (ws / n).write_text(f"seed {n}\n")
        hif(ws, "land")
    hif(ws, "session", "start", f"{change} {FILES} files")
    for i, n in enumerate(names):
        path = ws / n
        path.parent.mkdir(exist_ok=True)
        if change == "delete" or change == "mixed" and i % 3 == 0:
            path.unlink()
        else:
            path.write_text(f"{change} {n}\n" * (1 + i % 5))
    trace = tmp_path / "strace.txt"
    hif(ws, "land", strace=trace)
    # old code: two fsyncs per blob and per event (file and directory), 4 x FILES in all
    assert syncs(trace) <= 40, trace.read_text()  # now: 4 syncfs, 2 fsyncs per tree and per record value
    # and everything landed: the files, their contents, one event per file
    listed = {line.split()[-1] for line in hif(ws, "ls", "-r").splitlines()}
    for i, n in enumerate(names):
        gone = change == "delete" or change == "mixed" and i % 3 == 0
        assert (n in listed) != gone, n
        if not gone and i % 17 == 0:  # a sample's contents (a process each)
            assert hif(ws, "cat", n) == f"{change} {n}\n" * (1 + i % 5)
    doc = json.loads(hif(ws, "log", "--json", "-n", "1"))
    sid = doc["landings"][0]["session"]
    shown = json.loads(hif(ws, "show", sid, "--json"))
    assert len(shown["changes"]) == FILES, shown["changes"][:3]


def _event(repo: Repo, path: str, oid: bytes) -> dict[str, object]:
    return make_event("write", "ana", "agent", repo.clock(), path=path, kind=FILE, blob=oid)


def with_session(make_store: Callable[[], ObjectStore], goal: str,
                 body: Callable[[ObjectStore, Repo, Session, bytes], Awaitable[None]]) -> None:
    """Run ``body`` on a fresh store holding one repository with one open session and one blob."""
    async def main() -> None:
        store = make_store()
        try:
            repo = Repo(store, "t/r")
            await repo.ensure(description="t")
            s = await repo.sessions.start(goal, "ana", "agent", 0)
            await body(store, repo, s, await repo.objects.put_blob(b"x\n"))
        finally:
            await store.close()

    asyncio.run(main())


def test_append_many_numbers_in_order_around_a_concurrent_writer(make_store: Callable[[], ObjectStore]) -> None:
    async def body(store: ObjectStore, repo: Repo, s: Session, oid: bytes) -> None:
        # in one batch, as a large record appends them
        first = [_event(repo, f"a{i}.txt", oid) for i in range(5)]
        got = await repo.sessions.append_many(s.id, first, s.next_seq)
        assert [e["seq"] for e in got] == [1, 2, 3, 4, 5]
        # another writer took numbers the next batch would use (at its start, in its middle)
        for taken in (6, 8):
            other = {**_event(repo, f"other{taken}.txt", oid), "seq": taken}
            await store.put(f"{repo.prefix}sessions/{s.id}/events/{taken:0{SEQ_WIDTH}d}", encode(other),
                            if_none_match=True)
        second = [_event(repo, f"b{i}.txt", oid) for i in range(4)]
        got = await repo.sessions.append_many(s.id, second, 6)
        assert [e["path"] for e in got] == [e["path"] for e in second]
        seqs = [e["seq"] for e in got]
        assert seqs == sorted(seqs) and not {6, 8} & set(seqs), seqs
        events = await repo.sessions.events(s.id)
        numbers = [e["seq"] for e in events]
        assert numbers == sorted(set(numbers)), numbers  # in order, no number twice
        paths = [e["path"] for e in events if e["type"] == "write"]
        assert sorted(paths) == sorted([*(f"a{i}.txt" for i in range(5)), *(f"b{i}.txt" for i in range(4)),
                                       "other6.txt", "other8.txt"])
        assert len(paths) == len(set(paths))  # nothing appended twice
        loaded = await repo.sessions.load(s.id)
        assert set(loaded.changes) == set(paths)

    with_session(make_store, "batch", body)


def test_append_many_to_a_closed_session_leaves_nothing(make_store: Callable[[], ObjectStore]) -> None:
    async def body(store: ObjectStore, repo: Repo, s: Session, oid: bytes) -> None:
        snap = await repo.sessions.write_snapshot(s, {})
        await repo.sessions.close(s.id, {"state": "abandoned", "snapshot": snap})
        for n in (2, 3, 70):  # a small batch and a large one
            with pytest.raises(SessionClosed):
                await repo.sessions.append_many(s.id, [_event(repo, f"f{i}.txt", oid) for i in range(n)],
                                                s.next_seq, group=n >= 64)
        assert [e["seq"] for e in await repo.sessions.events(s.id)] == [0]

    with_session(make_store, "closed", body)


def test_a_new_workspace_is_written_by_the_writer_threads(tmp_path: Path) -> None:
    """``hif workspace add`` creates its files on the clone's writer threads (file creation overlaps
    reading the blobs), and what it writes is the tree: contents, executable bits, links."""
    ws = workspace(tmp_path)
    hif(ws, "session", "start", "tree")
    names = [f"d{i % 9}/e{i % 4}/f{i:04d}.txt" for i in range(FILES)]
    for i, n in enumerate(names):
        (ws / n).parent.mkdir(parents=True, exist_ok=True)
        (ws / n).write_text(f"{n}\n" * (1 + i % 3))
        if i % 10 == 0:
            (ws / n).chmod(0o755)
    (ws / "link").symlink_to("d0/e0/f0000.txt")
    hif(ws, "land")
    other = tmp_path / "other"
    trace = tmp_path / "opens.txt"
    cmd = ["strace", "-f", "-e", "trace=openat", "-o", str(trace), HIF, "workspace", "add", str(other)]
    p = subprocess.run(cmd, cwd=ws, env={**os.environ, "HIF_AUTHOR": "ana"}, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    creators = {line.split()[0] for line in trace.read_text().splitlines()
                if str(other) + "/d" in line and "O_EXCL" in line}
    assert len(creators) >= 2, creators  # the old code created every file on the main thread
    for i, n in enumerate(names):
        got = other / n
        assert got.read_text() == f"{n}\n" * (1 + i % 3)
        assert bool(got.stat().st_mode & 0o100) == (i % 10 == 0), n
    assert os.readlink(other / "link") == "d0/e0/f0000.txt"
    assert "no changes" in hif(other, "status")


def test_put_blobs_new_stored_and_repeated(make_store: Callable[[], ObjectStore]) -> None:
    """A batch of blobs: all new (one batch), some already stored by another writer (each on its
    own), the same content twice in one batch; every blob then reads back."""
    async def body(store: ObjectStore, repo: Repo, s: Session, oid: bytes) -> None:
        fresh = [f"new {i}\n".encode() for i in range(10)]
        await repo.objects.put_blobs(fresh)
        other = Repo(store, "t/r")  # another writer (its own caches) stores two of the next batch
        mixed = [f"mixed {i}\n".encode() for i in range(6)]
        await other.objects.put_blob(mixed[0])
        await other.objects.put_blob(mixed[4])
        await repo.objects.put_blobs([*mixed, mixed[2], b"x\n"])
        reader = Repo(store, "t/r")
        for content in [*fresh, *mixed, b"x\n"]:
            assert await reader.objects.get_blob(digest(blob_bytes(content))) == content

    with_session(make_store, "blobs", body)


def test_a_large_record_stores_its_events_in_groups(tmp_path: Path) -> None:
    """A record of 600 new files writes its 600 write events as two stored values (one file each on
    the embedded store), not one per event: the store then creates about one file per new file, as
    git does; and every reader still sees 600 events, in order, each with its own number."""
    ws = workspace(tmp_path)
    hif(ws, "session", "start", "grouped")
    n = 600
    for i in range(n):
        d = ws / f"g{i % 3}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:04d}.txt").write_text(f"{i}\n")
    hif(ws, "land")
    sid = json.loads(hif(ws, "log", "--json", "-n", "1"))["landings"][0]["session"]
    config = json.loads((ws / ".hif" / "config.json").read_text())
    stored = [p for p in Path(config["store"].removeprefix("file://")).rglob(f"sessions/{sid}/events/*")]
    assert 2 <= len(stored) <= 4, len(stored)  # old code: 601 (the start event and one per write)
    assert len(json.loads(hif(ws, "show", sid, "--json"))["changes"]) == n

    async def read() -> list[dict[str, Any]]:
        store = open_store(config["store"])
        try:
            return await Repo(store, config["repo"]).sessions.events(sid)
        finally:
            await store.close()

    events = asyncio.run(read())
    assert [e["seq"] for e in events] == list(range(n + 1))
    assert sorted(e["path"] for e in events if e["type"] == "write") == \
        sorted(f"g{i % 3}/f{i:04d}.txt" for i in range(n))


def test_grouped_events_from_any_cursor_and_a_stale_appender(make_store: Callable[[], ObjectStore]) -> None:
    """A batch of 1,200 events is stored as three groups. Read from any cursor (inside a group, at
    its edges, past the end), with or without a limit, the reader gets exactly the events after it;
    a writer that read only the start event appends after the groups, never inside one."""
    async def body(store: ObjectStore, repo: Repo, s: Session, oid: bytes) -> None:
        n = 1200
        got = await repo.sessions.append_many(s.id, [_event(repo, f"f{i}.txt", oid) for i in range(n)], 1,
                                              group=True)
        assert [e["seq"] for e in got] == list(range(1, n + 1))
        keys = await store.list_page(f"{repo.prefix}sessions/{s.id}/events/", limit=5000)
        assert len(keys) <= 4, len(keys)  # the start event and three groups (old code: 1,201 keys)
        # a writer whose view is the start event alone: its number is taken, it appends after the groups
        late = await repo.sessions.append(s.id, _event(repo, "late.txt", oid), 1)
        assert late["seq"] == n + 1
        total = n + 2
        for since in (-1, 0, 1, 2, 100, 511, 512, 513, 700, 1023, 1024, 1025, 1199, 1200, 1201, 1205):
            want = list(range(since + 1, total))
            assert [e["seq"] for e in await repo.sessions.events_after(s.id, since)] == want, since
            assert [e["seq"] for e in await repo.sessions.events_after(s.id, since, lenient=True)] == want
            # a page at a time: whole values, each page's last event the next cursor
            seen, cursor = [], since
            while page := await repo.sessions.events_after(s.id, cursor, limit=10):
                seen += [e["seq"] for e in page]
                cursor = page[-1]["seq"]
            assert seen == want, since
        assert [e["seq"] for e in await repo.sessions.events(s.id)] == list(range(total))
        assert len((await repo.sessions.load(s.id)).changes) == n + 1

    with_session(make_store, "groups", body)


def test_landing_holds_a_batch_of_contents_not_the_session(tmp_path: Path) -> None:
    """``hif land`` of 200 MiB of new files streams them: the scan keeps a few MiB of contents and a
    batch of blobs holds at most 32 MiB, so the process stays far below the session's size (the
    old code held every new file's content from the scan to the end: more than 200 MiB)."""
    ws = workspace(tmp_path)
    hif(ws, "session", "start", "heavy")
    files, size = 800, 256 << 10
    for i in range(files):
        d = ws / f"h{i % 8}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:04d}.bin").write_bytes(os.urandom(size))  # incompressible: stored as large as it is
    # a small launcher spawns it: a child forked from this (large) process would start from its peak
    p = subprocess.run([sys.executable, "-S", "-c", PEAK, HIF, "land"], cwd=ws, capture_output=True, text=True,
                       env={**os.environ, "HIF_AUTHOR": "ana"}, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    peak_mib = int(p.stdout.split()[-1]) / 1024
    assert peak_mib < files * size / (1 << 20) * 0.75, peak_mib
    assert len(hif(ws, "ls", "-r").splitlines()) == files

"""A clone's checkout: files written on background threads while the next objects arrive.

Creating a file is a handful of system calls (open, write, fstat, close) during which Python releases
the GIL, so threads that only write files overlap with the one that receives and verifies the
objects: the checkout then costs about the larger of the two instead of their sum (and a file system
busy with other work creates files faster from two threads than from one). The writers own the stat
cache while they run and save it now and then, so an interrupted clone resumes.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from hif.objects import LINK, Entry
from hif.paths import check_entry_path
from hif.worktree.workspace import WorkTree

SLICE = 50_000  # files per streamed request (the forge takes up to 100,000 ids)
BATCH = 128  # files handed to a writing thread at once: one queue operation, not one per file
BATCH_BYTES = 4 << 20  # ... or fewer when they are large
DEPTH = 8  # batches waiting for each thread: with the above, bounds the contents held in memory
THREADS = 2  # file-writing threads: a file system busy with other work creates files faster in parallel
SAVE_EVERY = 1.0  # seconds between two saves of the stat cache (or ten times what one save took)


class FileWriter:
    """Writes new working files on a few threads, each directory's files on one of them in order;
    :meth:`close` waits for them and reports the first error."""

    def __init__(self, work: WorkTree, threads: int = THREADS, *, base: bool = False) -> None:
        self.work = work
        self.base = base  # also note each file's entry as the stat cache's base (a new workspace)
        self._lock = threading.Lock()  # the stat cache and directory creation are shared
        self._queues: list[queue.Queue[list[tuple[str, Entry, bytes]] | None]] = []
        self._batches: list[list[tuple[str, Entry, bytes]]] = []
        self._sizes: list[int] = []  # bytes of content in each batch being filled
        self._threads: list[threading.Thread] = []
        self._dirs: set[str] = set()  # directories made or checked: each once
        self._error: BaseException | None = None
        self._saved, self._save_cost = time.monotonic(), 0.0
        for i in range(threads):
            self._queues.append(queue.Queue(DEPTH))
            self._batches.append([])
            self._sizes.append(0)
            self._threads.append(threading.Thread(target=self._run, args=(self._queues[i],),
                                                  name=f"hif-checkout-{i}", daemon=True))
            self._threads[-1].start()

    def write(self, path: str, entry: Entry, content: bytes) -> None:
        # one directory's files go to one thread: threads never race on creating a directory's
        # entries, and files of different directories are created in parallel
        i = hash(path.rpartition("/")[0]) % len(self._queues)
        batch = self._batches[i]
        batch.append((path, entry, content))
        self._sizes[i] += len(content)
        if len(batch) >= BATCH or self._sizes[i] >= BATCH_BYTES:
            if self._error is not None:  # stop feeding writers once one failed
                raise self._error
            self._queues[i].put(batch)
            self._batches[i] = []
            self._sizes[i] = 0

    def close(self, *, raise_error: bool = True) -> None:
        """Write what is queued, then stop the threads; raise the first error (unless another one is
        already on its way, which the caller passes on instead)."""
        for q, batch in zip(self._queues, self._batches, strict=True):
            if batch:
                q.put(batch)
            q.put(None)
        self._batches = [[] for _ in self._queues]
        for t in self._threads:
            t.join()
        if raise_error and self._error is not None:
            raise self._error

    def _run(self, q: queue.Queue[list[tuple[str, Entry, bytes]] | None]) -> None:
        while True:
            batch = q.get()
            if batch is None:
                return
            if self._error is not None:
                continue  # keep draining, so that the feeding thread never blocks on a full queue
            try:
                self._write(batch)
            except BaseException as e:  # handed to the feeding thread, which raises it
                self._error = self._error or e

    def _write(self, batch: list[tuple[str, Entry, bytes]]) -> None:
        work, dirs, lock = self.work, self._dirs, self._lock
        idx = work.index
        root = str(work.root)
        done: list[tuple[str, os.stat_result, Entry]] = []
        for path, entry, content in batch:
            parent = path.rpartition("/")[0]
            if parent and parent not in dirs:
                with lock:
                    if parent not in dirs:
                        work._make_parents(path)  # creates them, refusing to write through a symlink
                        while parent and parent not in dirs:
                            dirs.add(parent)
                            parent = parent.rpartition("/")[0]
            if entry.kind != LINK:
                try:  # a new file: created exclusively, nothing to protect
                    done.append((path, WorkTree._create(f"{root}/{path}", entry, content), entry))
                    continue
                except FileExistsError:
                    pass
            with lock:  # a link, or something in the way: the careful path
                work.write_file(path, entry, content)
                if self.base:
                    idx.set_base(path, entry)
        with lock:
            for path, st, entry in done:
                idx.remember(path, st, entry)
                if self.base:
                    idx.set_base(path, entry)
            now = time.monotonic()
            if now - self._saved >= max(SAVE_EVERY, 10 * self._save_cost):  # O(files): keep it rare
                work.save_index()
                self._saved = time.monotonic()
                self._save_cost = self._saved - now


def check_out(work: WorkTree, todo: Sequence[tuple[str, Entry]],
              blobs: Callable[[Sequence[bytes]], Iterator[tuple[bytes, bytes]]]) -> None:
    """Write each ``(path, entry)`` of ``todo`` with its blob's content from ``blobs`` (which yields
    ``(id, content)`` for the ids asked, in order), a slice at a time; each blob is asked once per
    slice however many files share it. The stat cache is saved on the way, and when this fails, so
    that a rerun skips what was written; on success the caller saves it once, with its position."""
    writer = FileWriter(work)
    try:
        for start in range(0, len(todo), SLICE):
            where: dict[bytes, list[tuple[str, Entry]]] = {}
            for path, entry in todo[start:start + SLICE]:
                check_entry_path(path, entry.kind)  # defence in depth: trees are checked when read
                where.setdefault(entry.oid, []).append((path, entry))
            for oid, content in blobs(list(where)):
                for path, entry in where[oid]:
                    writer.write(path, entry, content)
    except BaseException:
        writer.close(raise_error=False)
        work.save_index()
        raise
    try:
        writer.close()
    except BaseException:
        work.save_index()
        raise


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """A checkout allocates objects by the hundred thousand and frees few of them, so the cyclic
    collector would walk them again and again (about 3% of a clone) for garbage it does not make."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()

"""Heavy work of the API and the web UI (blame, diffs, highlighting) off the event loop, and a
content-addressed cache of its results.

The work runs in one small thread pool per process (:data:`WORKERS` threads, at most
:data:`QUEUED` jobs waiting beyond them: more is refused with :class:`~node.errors.Busy`, a 503 with
``Retry-After``), so a request that needs seconds of CPU never holds the event loop, and a burst of
heavy requests cannot queue without end while cheap ones keep being answered.

Results are kept in files under the node's cache directory (``<cache_dir>/ui/<kind>/<key>``), keyed
by content ids (a blob's id, the bytes of a landing record): the store is content-addressed and a
mainline position is written once, so an entry never goes stale and is never invalidated. The
directory is a cache: deleting it loses nothing. It holds at most ``Config.results_max`` bytes (all
kinds together): past that, the entries used longest ago are dropped (a read marks an entry used).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from quart import Quart, current_app, request

from hif.blame import BlameLine, blame
from hif.repo import Repo
from hif.store.embedded import EmbeddedStore
from hif.store.threaded import ThreadedStore
from node.context import Node, node_of
from node.errors import Busy

T = TypeVar("T")
AFTER = "micelio.after_response"  # the ASGI scope's key for work to start once the response is sent

WORKERS = 2  # threads doing heavy work per process (the machine class has 2 CPUs)
QUEUED = 64  # heavy jobs waiting for a thread at most; beyond, a request is refused (503)
ENTRY_MAX = 16 << 20  # bytes of one cached result at most (bigger ones are not kept)
KEEP = 0.8  # an eviction drops the least recently used entries until this share of the cap is left
TOUCH_AFTER = 60.0  # seconds: a read marks an entry used again at most this often (one utime)

_pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="heavy")
_lock = threading.Lock()
_pending = 0


async def offload(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in the heavy-work pool; refused (503) when the pool's queue is full."""
    global _pending
    with _lock:
        if _pending >= WORKERS + QUEUED:
            raise Busy("the node is busy with other heavy requests; try again in a moment", retry_after=1)
        _pending += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_pool, fn, *args)
    finally:
        with _lock:
            _pending -= 1


def pending() -> int:
    """Heavy jobs running or waiting for a thread now (a figure for operators and tests)."""
    with _lock:
        return _pending


def after_response(fn: Callable[[], object]) -> None:
    """Start ``fn()`` once this request's response has been handed to the server (its last byte
    sent), not before: background work a page asks for (highlighting for the next view) must not
    take the CPU, or the GIL, from the page that is still being compressed and written."""
    request.scope.setdefault(AFTER, []).append(fn)


def install(app: Quart) -> None:
    """Run the work :func:`after_response` deferred when the ASGI call of its request returns, which
    is after the response's last ``send`` (or when the client went away)."""
    inner = app.asgi_app

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await inner(scope, receive, send)
        finally:
            for fn in scope.pop(AFTER, ()):
                fn()

    app.asgi_app = asgi  # type: ignore[method-assign]


class Budget:
    """The bytes the cache directory's entries take, kept under ``limit``: counted by a scan of the
    directory, then as entries are written. Past the limit, the entries read or written longest ago
    (file times) are dropped until :data:`KEEP` of it is left. The directory is scanned again after
    ``(1 - KEEP) * limit`` bytes written here, so other replicas' writes are counted too, and a scan
    costs one walk of the directory per fifth of the cap written."""

    def __init__(self, root: Path, limit: int) -> None:
        self.root, self.limit = root, limit
        self.used = 0
        self.unscanned: int | None = None  # bytes written since the last scan (None: never scanned)
        self.lock = threading.Lock()

    def _entries(self) -> list[tuple[float, int, Path]]:
        out = []
        for path in self.root.glob("*/*/*"):
            with contextlib.suppress(OSError):
                st = path.stat()
                if not path.name.startswith(".tmp-"):
                    out.append((st.st_mtime, st.st_size, path))
        return out

    def added(self, size: int) -> None:
        """``size`` more bytes were written: drop the oldest entries if the cap is passed."""
        with self.lock:
            self.used += size
            if self.unscanned is not None:
                self.unscanned += size
                if self.used <= self.limit and self.unscanned <= self.limit * (1 - KEEP):
                    return
            entries = self._entries()
            self.used, self.unscanned = sum(size for _, size, _ in entries), 0
            if self.used <= self.limit:
                return
            for _, size, path in sorted(entries, key=lambda e: e[0]):
                if self.used <= self.limit * KEEP:
                    break
                with contextlib.suppress(OSError):
                    path.unlink()
                    self.used -= size


class DiskCache:
    """Immutable results in files, one per key (written to a temporary file, then renamed, so a
    reader sees a whole entry or none, and two replicas writing the same key write the same bytes)."""

    def __init__(self, root: Path, kind: str, budget: Budget | None = None) -> None:
        self.root = root / "ui" / kind
        self.budget = budget

    def _file(self, key: str) -> Path:
        if len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError("cache keys are hex digests")
        return self.root / key[:2] / key

    def get(self, key: str) -> bytes | None:
        path = self._file(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if self.budget is not None:  # used again: the last to be dropped
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < time.time() - TOUCH_AFTER:
                    os.utime(path)
        return data

    def put(self, key: str, value: bytes) -> None:
        """Keep ``value``; a failure to write (full disk, read-only) only loses the cache entry."""
        if len(value) > ENTRY_MAX:
            return
        target = self._file(key)
        if target.exists():  # keyed by content: the same bytes are there already
            return
        with contextlib.suppress(OSError):
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(value)
                os.replace(tmp, target)
            except OSError:
                os.unlink(tmp)
                raise
            if self.budget is not None:
                self.budget.added(len(value))


def cache(kind: str, node: Node | None = None) -> DiskCache:
    """The running node's cache of ``kind`` (``blame``, ``highlight``), all kinds under one cap;
    ``node``: the node (an API handler's ``ctx.node``), by default the current Quart app's."""
    node = node if node is not None else node_of(current_app)  # type: ignore[arg-type]
    caches = node.extensions.setdefault("heavy-caches", {})
    if kind not in caches:
        config = node.config
        root = Path(config.cache_dir)  # type: ignore[arg-type]
        if "" not in caches:
            caches[""] = Budget(root / "ui", config.results_max)
        caches[kind] = DiskCache(root, kind, caches[""])
    return caches[kind]  # type: ignore[no-any-return]


async def cached_blame(repo: Repo, path: str, at: int, node: Node | None = None) -> list[BlameLine]:
    """Blame ``path`` at ``at`` off the event loop, through the node's blame cache (the API and the
    web UI share it; ``node`` as for :func:`cache`)."""
    results = cache("blame", node)
    inner = repo.store.inner if isinstance(repo.store, ThreadedStore) else None
    if isinstance(inner, EmbeddedStore):  # the whole walk in one worker: no thread hop per read
        return await offload(_blame_in_thread, inner, repo, path, at, results)
    return await blame(repo, path, at, cache=results, offload=offload)


def _blame_in_thread(store: EmbeddedStore, repo: Repo, path: str, at: int, results: DiskCache) -> list[BlameLine]:
    """Blame in a heavy-work thread, on a loop of its own over the disk store itself: the embedded
    store's reads block briefly and need no event loop, so the walk's thousands of reads cost no
    hop to a store thread and back each, and the server's loop is not involved at all."""
    return asyncio.run(blame(Repo(store, repo.name, prefix=repo.prefix), path, at, cache=results))

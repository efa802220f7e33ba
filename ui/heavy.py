"""Heavy page work (blame, diffs, highlighting) off the event loop, and a content-addressed cache of
its results.

The work runs in one small thread pool per process (:data:`WORKERS` threads, at most
:data:`QUEUED` jobs waiting beyond them: more is a 503 with ``Retry-After``), so a page that needs
seconds of CPU never holds the event loop, and a burst of heavy pages cannot queue without end while
cheap pages keep being answered.

Results are kept in files under the node's cache directory (``<cache_dir>/ui/<kind>/<key>``), keyed
by content ids (a blob's id, the bytes of a landing record): the store is content-addressed and a
mainline position is written once, so an entry never goes stale and is never invalidated. The
directory is a cache: deleting it loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from quart import current_app

from node.context import node_of
from node.errors import Busy
from ui.render import Highlighter

T = TypeVar("T")

WORKERS = 2  # threads doing heavy page work per process (the machine class has 2 CPUs)
QUEUED = 64  # heavy jobs waiting for a thread at most; beyond, a page is refused (503)
ENTRY_MAX = 16 << 20  # bytes of one cached result at most (bigger ones are not kept)

_pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ui-heavy")
_lock = threading.Lock()
_pending = 0


async def offload(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in the heavy-work pool; refused (503) when the pool's queue is full."""
    global _pending
    with _lock:
        if _pending >= WORKERS + QUEUED:
            raise Busy("the node is busy rendering other pages; try again in a moment", retry_after=1)
        _pending += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_pool, fn, *args)
    finally:
        with _lock:
            _pending -= 1


class DiskCache:
    """Immutable results in files, one per key (written to a temporary file, then renamed, so a
    reader sees a whole entry or none, and two replicas writing the same key write the same bytes)."""

    def __init__(self, root: Path, kind: str) -> None:
        self.root = root / "ui" / kind

    def _file(self, key: str) -> Path:
        if len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError("cache keys are hex digests")
        return self.root / key[:2] / key

    def get(self, key: str) -> bytes | None:
        try:
            return self._file(key).read_bytes()
        except OSError:
            return None

    def put(self, key: str, value: bytes) -> None:
        """Keep ``value``; a failure to write (full disk, read-only) only loses the cache entry."""
        if len(value) > ENTRY_MAX:
            return
        target = self._file(key)
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


def cache(kind: str) -> DiskCache:
    """The running node's cache of ``kind`` (``blame``, ``highlight``)."""
    caches = current_app.extensions.setdefault("ui-caches", {})
    if kind not in caches:
        caches[kind] = DiskCache(Path(node_of(current_app).config.cache_dir), kind)  # type: ignore[arg-type]
    return caches[kind]  # type: ignore[no-any-return]


def warm_later(hl: Highlighter) -> None:
    """Highlight in the background what a page showed plain, so the next view has it; called once
    the page is rendered, so the page does not share the pool with its own warming."""
    if hl.later:
        job = asyncio.ensure_future(offload(hl.fill))
        job.add_done_callback(lambda f: f.cancelled() or f.exception())  # a busy pool skips the warming

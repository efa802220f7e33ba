"""Heavy page work off the event loop: the pool and the content-addressed result cache are the
node's (``node/heavy.py``, which the API's blame shares); what is the web UI's own is warming the
highlight cache after a page.
"""

from __future__ import annotations

import asyncio

from node.heavy import DiskCache, after_response, cache, offload
from ui.render import Highlighter

__all__ = ["DiskCache", "cache", "offload", "warm_later"]


def warm_later(hl: Highlighter) -> None:
    """Highlight in the background what a page showed plain, so the next view has it; started once
    the page has been sent (``after_response``), so the page shares neither the pool nor the CPU
    with its own warming."""
    if hl.later:
        after_response(lambda: _warm(hl))


def _warm(hl: Highlighter) -> None:
    job = asyncio.ensure_future(offload(hl.fill))
    job.add_done_callback(lambda f: f.cancelled() or f.exception())  # a busy pool skips the warming

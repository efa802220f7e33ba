"""Heavy page work off the event loop: the pool and the content-addressed result cache are the
node's (``node/heavy.py``, which the API's blame shares); what is the web UI's own is warming the
highlight cache after a page.
"""

from __future__ import annotations

import asyncio

from node.heavy import DiskCache, after_response, cache, offload
from ui.render import Highlighter

__all__ = ["DiskCache", "cache", "offload", "warm_later"]


WARM_AFTER = 0.5  # seconds from a page's last byte handed to the server to its warming's start


def warm_later(hl: Highlighter) -> None:
    """Highlight in the background what a page showed plain, so the next view has it. Started
    :data:`WARM_AFTER` seconds after the page has been handed to the server (``after_response``):
    the server may still be writing its last chunks then (the transport takes them while the ASGI
    call returns), and the client reading them, so the page shares neither the pool nor the CPUs
    (two on this machine class) with its own warming; the next view comes later than that."""
    if hl.later:
        after_response(lambda: asyncio.get_running_loop().call_later(WARM_AFTER, _warm, hl))


def _warm(hl: Highlighter) -> None:
    job = asyncio.ensure_future(offload(hl.fill))
    job.add_done_callback(lambda f: f.cancelled() or f.exception())  # a busy pool skips the warming

"""JSON from strangers, parsed with limits: nesting depth and items per array or object.

``json.loads`` recurses once per nesting level, so ``[[[[...]]]]`` 100 000 deep ends in a
``RecursionError`` (a 500 with a traceback), and a million-element array costs memory and time in
every loop that walks it. Before parsing, a cheap pre-scan finds the deepest nesting: strings are
cut out with one regular expression, the brackets left are kept (``bytes.translate``) and their
running depth is summed in C (``itertools.accumulate``); the commas left bound the items in
all, so a document that would parse into hundreds of thousands of objects is refused before it
is parsed. After parsing, containers are counted
only when the text is long enough to hold one over the limit. Every JSON body that comes from
outside (inbox activities, fetched actor and key documents, WebFinger answers) goes through
:func:`loads`.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from hif.errors import InvalidInput

MAX_DEPTH = 32  # nested arrays/objects; our activities need 5, the fediverse's rarely 10
MAX_ITEMS = 10_000  # elements of one array or members of one object
MAX_TOTAL = 50_000  # items in the whole document, counted before parsing (memory: a few MiB)

# A string, or an unterminated one up to the end (a lone backslash included): every quote that
# opens a string is consumed by one match, so the scan stays linear. Without the end-of-text
# branch, each quote inside an unterminated string (``"\"\"\"...``) would start a new scan to
# the end: quadratic, minutes of CPU for one 1 MiB body before any signature is checked.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.S)
_OPEN, _CLOSE = b"[{", b"]}"
_OTHER = bytes(b for b in range(256) if b not in _OPEN + _CLOSE)
_DELTA = [0] * 256
for _b in _OPEN:
    _DELTA[_b] = 1
for _b in _CLOSE:
    _DELTA[_b] = -1


class MalformedJSON(InvalidInput):
    """A JSON body that does not parse or is nested deeper / holds more items than allowed."""


def _shape(data: bytes) -> tuple[int, int]:
    """(deepest nesting, items in all) of ``data``, strings cut out: items are at most the commas
    plus the containers, so this bounds what parsing would build before it is built."""
    bare = _STRING.sub(b"", data)
    brackets = bare.translate(None, _OTHER)
    opens = brackets.count(b"[") + brackets.count(b"{")
    deepest = opens if opens <= 1 else max(accumulate(map(_DELTA.__getitem__, brackets)))
    return deepest, opens + bare.count(b",")


def depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in ``data`` (strings do not count)."""
    return _shape(data)[0]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(
    data: bytes | str, what: str = "the body", *, max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS, max_total: int = MAX_TOTAL,
) -> Any:
    """Parse ``data`` or raise :class:`MalformedJSON` (HTTP 400) saying which limit it broke."""
    raw = data.encode() if isinstance(data, str) else data
    d, total = _shape(raw)
    if d > max_depth:
        raise MalformedJSON(f"{what} is nested {d} deep (at most {max_depth})")
    if total > max_total:  # 1 MiB of `[{},{},...]` would be 20 MiB of dicts once parsed
        raise MalformedJSON(f"{what} holds about {total} items in all (at most {max_total})")
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise MalformedJSON(f"{what} is not valid JSON") from None
    if len(raw) > 2 * max_items:  # n items need at least 2n - 1 bytes: shorter texts cannot
        stack = [value]
        while stack:
            v = stack.pop()
            if isinstance(v, dict):
                if len(v) > max_items:
                    raise MalformedJSON(f"{what} has an object of {len(v)} members (at most "
                                        f"{max_items})")
                stack.extend(x for x in v.values() if isinstance(x, (dict, list)))
            elif isinstance(v, list):
                if len(v) > max_items:
                    raise MalformedJSON(f"{what} has an array of {len(v)} items (at most "
                                        f"{max_items})")
                stack.extend(x for x in v if isinstance(x, (dict, list)))
    return value

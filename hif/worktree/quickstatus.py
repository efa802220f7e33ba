"""``hif status`` without click or the SDK, in the common case that needs only the working copy.

With no open session, no move journal (an interrupted ``hif pull``/``goto`` is finished by the full
CLI) and a stat cache current for the working copy's position, status is the working files against
the cache: no store, no forge, no session record to read. The ``hif`` command
(:mod:`hif.__main__`) tries this first and hands anything else to the click CLI, so a status on a
large tree does not pay for importing click and the whole SDK (most of the CLI's start-up). The
output is the CLI's, byte for byte (the tests run both paths and compare).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

MARK = {"added": "A", "modified": "M", "deleted": "D"}

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hif.objects import Entry


def action(old: Entry | None, new: Entry | None) -> str:
    return "added" if old is None else "deleted" if new is None else "modified"


def status_text(position: int, session: str | None, changes: list[tuple[str, str]]) -> str:
    """The text of ``hif status``; ``session`` is ``"<id>: <goal>"`` or None, ``changes`` are
    (action, path) in path order. Shared with the CLI so the two paths cannot drift apart."""
    lines = [f"position {position}", f"session {session}" if session else "no open session"]
    lines += [f"  {MARK[a]} {p}" for a, p in changes]
    if not changes:
        lines.append("  no changes")
    return "\n".join(lines)


def run(args: list[str]) -> int | None:
    """Answer ``hif status [--json]`` and return the exit code, or None if the full CLI must (another
    command or option, an open session, a stat cache to rebuild, any error to report)."""
    if args not in ([], ["--json"]) or os.environ.get("HIF_QUICK_STATUS") == "0":
        return None
    try:
        return _run(bool(args))
    except KeyboardInterrupt:  # reported as the CLI does (hif.cli.output.fail)
        if args:
            doc = {"error": {"type": "HifError", "message": "interrupted"}}
            sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        else:
            sys.stderr.write("error: interrupted\n")
        return 1


def _run(as_json: bool) -> int | None:
    import gc

    # the quick path imports as little as it can (start-up time)
    from hif.errors import HifError
    from hif.worktree.workspace import WorkTree, find_root  # (as above)

    gc.disable()  # a short run whose objects (a stat per file) make no cycles: no collections to pay for

    try:
        work = WorkTree(find_root(Path.cwd()))
        if work.move_pending():
            return None  # a move half done (or still running): the CLI finishes it, or says it is busy
        state = work.state()
        idx = work.index
        if state.session is not None or idx.dirty or idx.position != state.position or not idx.tree:
            return None  # what Repository._ensure_index would rebuild, or a session to load
        changes = work.changes_vs_index()
        work.save_index()
    except (HifError, OSError, ValueError):
        return None  # the full CLI reports it
    if as_json:
        doc = {"position": state.position, "session": None, "changes": [
            {"path": p, "action": action(idx.base_of(p), new),
             "old": _json(idx.base_of(p)), "new": _json(new)}
            for p, new in sorted(changes.items())]}
        out = json.dumps(doc, indent=2, sort_keys=True, default=str)
    else:
        out = status_text(state.position, None, [(action(idx.base_of(p), new), p) for p, new in sorted(changes.items())])
    try:
        sys.stdout.write(out + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (``| head``): nothing more to say
        return 1
    return 0


def _json(e: Entry | None) -> dict[str, str] | None:
    return e.to_json() if e is not None else None

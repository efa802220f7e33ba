"""What every hif command prints and how it fails: ``--json`` (exactly one document, errors too, as
``{"error": {...}}``), the one mapping of errors to exit codes (0 success, 1 error, 2 usage,
3 landing conflict, 4 the forge wants other credentials: ``HifError.exit_code``), sizes and times.
``micelio``'s CLI prints the same way."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from hif.errors import ConflictError, HifError
from hif.porcelain import MoveReport

F = Callable[..., Any]


def emit(ctx_json: bool, doc: Any, text: str | Callable[[], str]) -> None:
    if ctx_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))
    else:
        out = text() if callable(text) else text
        if out:
            click.echo(out.rstrip("\n"))


def command(group: click.Group, name: str | None = None, **kw: Any) -> Callable[[F], click.Command]:
    """Register a command with ``--json`` and the one error handler every command shares."""

    def deco(fn: F) -> click.Command:
        @click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
        @functools.wraps(fn)
        def wrapper(as_json: bool, **kwargs: Any) -> None:
            try:
                fn(as_json, **kwargs)
            except HifError as e:
                fail(as_json, e)
            except KeyboardInterrupt:
                fail(as_json, HifError("interrupted"))
            except OSError as e:
                fail(as_json, HifError(f"{e.strerror or e}: {e.filename}" if e.filename else str(e)))

        return group.command(name, **kw)(wrapper)

    return deco


def fail(as_json: bool, e: HifError) -> None:
    doc: dict[str, Any] = {"type": type(e).__name__, "message": str(e)}
    if isinstance(e, ConflictError):
        doc["conflicts"] = [c.to_json() for c in e.conflicts]
    if as_json:
        click.echo(json.dumps({"error": doc}, indent=2, sort_keys=True))
    else:
        click.echo(f"error: {e}", err=True)
        if isinstance(e, ConflictError):
            for c in e.conflicts:
                who = ", ".join(f"session {s} (position {p})" for p, s in c.sessions)
                click.echo(f"  {c.path}: {c.reason}; landed by {who}", err=True)
            click.echo("  bring the session up to date with: hif sync", err=True)
    sys.exit(e.exit_code)
def size_text(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover

def note_finished_move(m: MoveReport) -> None:
    """Tell the user (on stderr: ``--json`` output stays one document) that an interrupted move was
    finished, and which files were left as someone changed them."""
    if m.op == "unknown":
        click.echo("note: an unreadable move journal was dropped; hif status shows the files as they are",
                   err=True)
        return
    what = "undid an interrupted sync" if m.undone else f"finished an interrupted move to position {m.position}"
    click.echo(f"note: {what}", err=True)
    for path in m.kept:
        click.echo(f"  kept {path}: changed since the move began (hif status shows it)", err=True)


def run_guarded(group: click.Group, prog_name: str, debug_env: str) -> None:
    """Run a command line (``hif``, ``micelio``) behind the last line of defence: an unexpected error
    is one line and exit 1, never a traceback to a user; with ``debug_env`` set, the traceback."""
    try:
        group(prog_name=prog_name)
    except Exception as e:
        if os.environ.get(debug_env):
            raise
        click.echo(f"error: internal error: {type(e).__name__}: {e}", err=True)
        sys.exit(1)

"""Commands that read history: log, show, cat, ls, blame."""

from __future__ import annotations

import sys

import click

from hif.cli.app import cli, repo
from hif.cli.output import command, emit
from hif.porcelain.views import commit_line, record_summary, show_doc, show_text, when

# -- history -------------------------------------------------------------------------------------


@command(cli)
@click.option("--path", "path", default=None, help="Only landings that touched this path (file or directory).")
@click.option("-n", "limit", type=click.IntRange(min=1), default=None, help="At most N landings.")
def log(as_json: bool, path: str | None, limit: int | None) -> None:
    """Landed sessions, newest first."""
    with repo(as_json) as r:
        rel = r.work.to_repo_path(path) if path is not None else None
        recs = r.log(limit=limit, path=rel)
        rows = [row for rec in recs for row in record_summary(rec)]

        def text() -> str:
            if not rows:
                return "nothing landed yet"
            return "\n".join(
                f"{x['position']:>6}  {x['session']}  {'git ' + x['git'][:10] + '  ' if x['git'] else ''}"
                f"{when(x['time'])}  {x['author']} ({x['role']})  "
                f"{x['goal']}  [{len(x['files'])} file(s): {', '.join(x['files'][:3])}"
                f"{', …' if len(x['files']) > 3 else ''}]"
                for x in rows
            )

        emit(as_json, {"landings": rows}, text)


@command(cli)
@click.argument("ref")
def show(as_json: bool, ref: str) -> None:
    """Show a landing (by POSITION), a session (by id) or the landing an imported git commit became
    (git:SHA, or SHA: at least 7 hex digits): goal, conversation, decisions, diff."""
    with repo(as_json) as r:
        s, rec, commit = r.resolve(ref)
        diffs = r.session_diffs(s, rec)
        doc = show_doc(s, rec, diffs)
        if commit is not None:
            doc["git"] = commit.to_json()

        def text() -> str:
            shown = show_text(s, rec, diffs)
            return shown if commit is None else commit_line(commit) + "\n" + shown

        emit(as_json, doc, text)


@command(cli)
@click.argument("path")
@click.option("--at", type=int, default=None, help="Position (default: the working copy's).")
def cat(as_json: bool, path: str, at: int | None) -> None:
    """Print a file as it is at a position."""
    with repo(as_json) as r:
        rel = r.work.to_repo_path(path)
        data = r.cat(rel, at=at)
        if as_json:
            emit(True, {"path": rel, "size": len(data), "content": data.decode("utf-8", "replace")}, "")
        else:
            sys.stdout.buffer.write(data)


@command(cli)
@click.argument("path", default=".")
@click.option("--at", type=int, default=None, help="Position (default: the working copy's).")
@click.option("-r", "--recursive", is_flag=True, help="Every file below PATH.")
def ls(as_json: bool, path: str, at: int | None, recursive: bool) -> None:
    """List a directory as it is at a position."""
    with repo(as_json) as r:
        rel = r.work.to_repo_path(path)
        items = r.ls(rel, at=at, recursive=recursive)
        emit(as_json, {"entries": [{"path": p, **e.to_json()} for p, e in items]},
             lambda: "\n".join(f"{e.kind} {e.oid.hex()[:12]}  {p}{'/' if e.kind == 'd' else ''}" for p, e in items))


@command(cli)
@click.argument("path")
@click.option("--at", type=int, default=None, help="Position (default: the working copy's).")
def blame(as_json: bool, path: str, at: int | None) -> None:
    """For each line, the session that last changed it, with its goal."""
    with repo(as_json) as r:
        rel = r.work.to_repo_path(path)
        lines = r.blame(rel, at=at)
        emit(as_json, {"path": rel, "lines": [b.to_json() for b in lines]},
             lambda: "\n".join(f"{b.position:>5} {b.session[:10]} {b.goal[:28]:<28} {b.line:>4}| {b.text}"
                               for b in lines))



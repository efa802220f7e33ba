"""``hif import git`` and ``hif export git``."""

from __future__ import annotations

import click

from hif.cli.app import cli, repo
from hif.cli.output import command, emit
from hif.cli.progress import CommitBar, TransferBar
from hif.porcelain import Repository


@cli.group("import")
def import_group() -> None:
    """Bring history in from another version-control system."""


@command(import_group, "git")
@click.argument("source")
@click.argument("directory", required=False)
@click.option("--branch", default=None, help="Branch to import (default: the one HEAD names).")
@click.option("--name", default=None, help="Repository name as owner/name (first run; default local/DIR).")
@click.option("--store", default=None, help="Store URL (first run; default DIR/.hif/store).")
@click.option("--no-checkout", is_flag=True, help="Import only; do not write the files.")
@click.option("--max-commits", type=click.IntRange(min=1), default=None, hidden=True,
              help="Stop after landing N commits (to test resuming).")
def import_git(as_json: bool, source: str, directory: str | None, branch: str | None, name: str | None,
               store: str | None, no_checkout: bool, max_commits: int | None) -> None:
    """Import SOURCE (a git repository path or URL) as landed sessions into DIRECTORY.

    Each commit of the branch's first-parent history becomes a session; the commits a merge brings
    in become its iterations. Run it again to continue an interrupted import or to add new commits.
    """
    bar = CommitBar("importing") if TransferBar.wanted(as_json) else None
    try:
        r, res = Repository.import_git(source, directory, branch=branch, name=name, store=store,
                                       checkout=not no_checkout, max_sessions=max_commits, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    with r:
        doc = {"root": str(r.root), "repo": r.name, **res.to_json()}

        def text() -> str:
            where = f"{r.name} in {r.root}"
            if res.complete and res.total == 0:
                return f"{where} is up to date with {source} ({res.branch or res.tip}) at position {res.position}"
            rate = f", {res.commits / res.seconds:,.0f} commits/s" if res.seconds else ""
            out = (f"imported {res.commits:,} commit(s) of {source} ({res.branch or res.tip}) into {where}: "
                   f"positions {res.start + 1}-{res.position} in {res.seconds:.1f} s{rate}")
            if not res.complete:
                out += "\nstopped early; run the same command again to continue"
            if res.checked_out is False:
                out += "\nthe working copy was not moved (open session or local changes): hif pull"
            return out

        emit(as_json, doc, text)


@cli.group("export")
def export_group() -> None:
    """Write the mainline out for another version-control system."""


@command(export_group, "git")
@click.argument("directory")
@click.option("--branch", default=None, help="Branch name (default: the imported one, else main).")
@click.option("--bare", is_flag=True, help="A bare repository (no files checked out).")
def export_git(as_json: bool, directory: str, branch: str | None, bare: bool) -> None:
    """Write the mainline as a new git repository in DIRECTORY: one commit per position, the
    sessions' conversation and decisions as notes (refs/notes/hif)."""
    bar = CommitBar("exporting") if TransferBar.wanted(as_json) else None
    with repo(as_json) as r:
        try:
            res = r.export_git(directory, branch=branch, bare=bare, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        emit(as_json, res.to_json(),
             f"exported {res.positions} position(s) as {res.commits} commit(s) to {res.path} "
             f"(branch {res.branch}, notes in refs/notes/hif; {res.identical} of {res.original} "
             f"imported commit(s) kept their id)")



"""``hif search``: sessions found by what was said and decided."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from hif.cli.app import cli, repo
from hif.cli.output import command, emit
from hif.porcelain.views import when

if TYPE_CHECKING:
    from hif.search import Results

KIND_NAMES = ("goal", "conversation", "decision", "rejected", "path")


@command(cli)
@click.argument("query")
@click.option("--rejected", is_flag=True, help="Only sessions where it was a rejected alternative.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(KIND_NAMES),
              help="Only matches in this kind of text (repeatable).")
@click.option("--remote", is_flag=True, help="Ask the forge this working copy is a clone of.")
@click.option("--all", "everywhere", is_flag=True,
              help="Every repository on the forge you may read, mirrors included (implies --remote).")
@click.option("-n", "limit", type=click.IntRange(1, 100), default=20, show_default=True,
              help="At most N sessions.")
def search(as_json: bool, query: str, rejected: bool, kinds: tuple[str, ...], remote: bool,
           everywhere: bool, limit: int) -> None:
    """Sessions whose goal, conversation, decisions, rejected alternatives or files match QUERY:
    words (all must match), "a phrase" and prefix* terms; best first."""
    with repo(as_json) as r:
        found = r.search(query, kinds=("rejected",) if rejected else kinds, remote=remote,
                         everywhere=everywhere, limit=limit)
        emit(as_json, found.to_json(), lambda: _text(found))


def _text(found: Results) -> str:
    if not found.hits:
        return f"no session matches {found.query!r}"
    out = []
    for h in found.hits:
        where = f"position {h.position}" if h.position is not None else "open"
        origin = f" (mirror of {h.origin})" if h.origin else ""
        out.append(f"{where}  {h.repo}{origin}  {h.session}  {when(h.time)}  {h.author} ({h.role})  {h.goal}")
        event = f" #{h.seq}" if h.seq is not None else ""
        out.append(f"    {h.kind}{event}: {h.snippet_text()}")
    more = f"{found.total}{'+' if found.capped else ''}"
    out.append(f"{len(found.hits)} of {more} session(s)")
    return "\n".join(out)

"""Commands of a session's conversation: session start/list/show/abandon, say, decide, checkpoint."""

from __future__ import annotations

import click

from hif.cli.app import author_option, cli, repo, role_option
from hif.cli.history import show_doc, show_text
from hif.cli.output import command, emit
from hif.errors import InvalidInput

# -- sessions ------------------------------------------------------------------------------------


@cli.group()
def session() -> None:
    """Start, list, show and abandon sessions."""


@command(session, "start")
@click.argument("goal")
@role_option
@author_option
def session_start(as_json: bool, goal: str, role: str | None, author: str | None) -> None:
    """Open a session with GOAL; file changes and conversation are recorded into it."""
    with repo(as_json) as r:
        h = r.start_session(goal, role=role, author=author)
        emit(as_json, {"session": h.id, "goal": goal.strip(), "base": r.position},
             f"started session {h.id} at position {r.position}: {goal.strip()}")


@command(session, "list")
def session_list(as_json: bool) -> None:
    """Open sessions of the repository (landed ones are in hif log)."""
    with repo(as_json) as r:
        items = r.sessions()
        current = r.session_id

        def text() -> str:
            if not items:
                return "no open sessions"
            return "\n".join(
                f"{'*' if s.id == current else ' '} {s.id}  base {s.base}  {s.author} ({s.role})  {s.goal}"
                for s in items
            )

        emit(as_json, {"sessions": [s.to_json(events=False) for s in items], "current": current}, text)


@command(session, "show")
@click.argument("session_id", required=False)
def session_show(as_json: bool, session_id: str | None) -> None:
    """Show a session (default: the open one)."""
    with repo(as_json) as r:
        sid = session_id or r.session_id
        if sid is None:
            raise InvalidInput("no open session here; name one: hif session show ID")
        s = r.load_session(sid)
        rec = r.record_at(s.position) if s.position else None
        diffs = r.session_diffs(s, rec)
        emit(as_json, show_doc(s, rec, diffs), lambda: show_text(s, rec, diffs))


@command(session, "abandon")
@click.option("--reason", default="abandoned", help="Why the session is given up.")
@role_option
@author_option
def session_abandon(as_json: bool, reason: str, role: str | None, author: str | None) -> None:
    """Close the open session without landing; the working copy returns to its base."""
    with repo(as_json) as r:
        s = r.abandon(reason, role=role, author=author)
        emit(as_json, {"session": s.id, "state": "abandoned"}, f"abandoned session {s.id}")


@command(cli)
@click.argument("text")
@role_option
@author_option
def say(as_json: bool, text: str, role: str | None, author: str | None) -> None:
    """Add a message to the open session's conversation."""
    with repo(as_json) as r:
        e = r.say(text, role=role, author=author)
        emit(as_json, {"seq": e["seq"], "role": e["role"], "author": e["author"]}, "")


@command(cli)
@click.argument("decision")
@click.option("--why", required=True, help="The rationale.")
@click.option("--alternative", "alternatives", multiple=True, help="A rejected alternative (repeatable).")
@role_option
@author_option
def decide(as_json: bool, decision: str, why: str, alternatives: tuple[str, ...], role: str | None,
           author: str | None) -> None:
    """Record a decision with its rationale and rejected alternatives."""
    with repo(as_json) as r:
        e = r.decide(decision, why=why, alternatives=list(alternatives), role=role, author=author)
        emit(as_json, {"seq": e["seq"]}, "")


@command(cli)
@click.argument("note")
@role_option
@author_option
def checkpoint(as_json: bool, note: str, role: str | None, author: str | None) -> None:
    """Mark an iteration: the files as they are now, with a note."""
    with repo(as_json) as r:
        e = r.checkpoint(note, role=role, author=author)
        emit(as_json, {"seq": e["seq"], "iteration": e["iteration"], "tree": e["tree"].hex()},
             f"iteration {e['iteration']}: {note}")



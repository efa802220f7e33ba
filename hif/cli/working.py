"""Commands on the working copy and the mainline: status, diff, land, sync, goto, pull, check."""

from __future__ import annotations

import sys

import click

from hif.cli.app import author_option, cli, repo, role_option
from hif.cli.output import command, emit

# -- working copy --------------------------------------------------------------------------------


@command(cli)
def status(as_json: bool) -> None:
    """Changes in the working copy against its position, and the open session."""
    # the ``hif`` command's quick path prints the same
    from hif.worktree.quickstatus import status_text

    with repo(as_json) as r:
        st = r.status()

        def text() -> str:
            session = f"{st.session.id}: {st.session.goal}" if st.session else None
            return status_text(st.position, session, [(c.action, c.path) for c in st.changes])

        emit(as_json, st.to_json(), text)


@command(cli)
@click.option("--stat", "show_stat", is_flag=True, help="Only the number of changed lines per file.")
def diff(as_json: bool, show_stat: bool) -> None:
    """The working copy's changes as a unified diff."""
    with repo(as_json) as r:
        items = r.diff()
        doc = {"files": [{**c.to_json(), "added": a, "removed": d, **({} if show_stat else {"diff": t})}
                         for c, t, (a, d) in items]}

        def text() -> str:
            if show_stat:
                rows = [f" {c.path} | +{a} -{d}" for c, _, (a, d) in items]
                rows.append(f" {len(items)} file(s) changed, {sum(a for *_, (a, _) in items)} insertions(+), "
                            f"{sum(d for *_, (_, d) in items)} deletions(-)")
                return "\n".join(rows)
            return "".join(t for _, t, _ in items)

        emit(as_json, doc, text)


@command(cli)
@role_option
@author_option
def land(as_json: bool, role: str | None, author: str | None) -> None:
    """Land the open session on the mainline (exit 3 and the conflicting paths on conflict)."""
    with repo(as_json) as r:
        sid = r.session_id
        res = r.land(role=role, author=author)
        extra = f" (merged: {', '.join(res.merged)})" if res.merged else ""
        verb = "already landed" if res.already else "landed"
        # the history plumbing: only land needs it here (start-up time)
        from hif.history import NO_DECISION, undecided

        bare = r.landed is not None and undecided(r.landed)  # said, never made up from the text
        note = f"\nnote: {NO_DECISION}" if bare else ""
        emit(as_json, {**res.to_json(), "decided": not bare},
             f"{verb} session {sid} at position {res.position}{extra}{note}")


@command(cli)
@role_option
@author_option
def sync(as_json: bool, role: str | None, author: str | None) -> None:
    """Bring the open session onto the latest mainline; conflicts are written with markers."""
    with repo(as_json) as r:
        res = r.sync(role=role, author=author)

        def text() -> str:
            lines = [f"session now based on position {res.position}"]
            lines += [f"  updated {p}" for p in res.updated]
            lines += [f"  merged {p}" for p in res.merged]
            lines += [f"  CONFLICT {c['path']}: {c['reason']}" for c in res.conflicts]
            if res.conflicts:
                lines.append("resolve the conflict markers, then hif land")
            return "\n".join(lines)

        emit(as_json, res.to_json(), text)
        if res.conflicts:
            sys.exit(3)


@command(cli)
@click.argument("position", type=int)
def goto(as_json: bool, position: int) -> None:
    """Move the working copy to an older (or newer) position."""
    with repo(as_json) as r:
        changed = r.goto(position)
        emit(as_json, {"position": position, "changed": changed},
             f"at position {position} ({len(changed)} file(s) changed)")


@command(cli)
def pull(as_json: bool) -> None:
    """Bring a working copy without an open session to the latest position."""
    with repo(as_json) as r:
        changed = r.pull()
        emit(as_json, {"position": r.position, "changed": changed},
             f"at position {r.position} ({len(changed)} file(s) changed)")


@command(cli)
@click.argument("names", nargs=-1)
@role_option
@author_option
def check(as_json: bool, names: tuple[str, ...], role: str | None, author: str | None) -> None:
    """Run the checks hif.toml declares (all, or NAMES) on the open session's tree: a cached result
    is reused, each result is signed and attached to the session. Exit 1 if one failed."""
    with repo(as_json) as r:
        run = r.check(list(names) or None, role=role, author=author)

        def text() -> str:
            lines = [f"note: {n}" for n in run.notes]
            for c in run.reports:
                how = "cached" if c.cached else "ran"
                lines.append(f"{c.status.upper():6} {c.check}  ({how}, {c.duration:.2f} s, exit {c.exit}, "
                             f"log {c.log.hex()[:12]})")
                if c.status == "failed" and c.output:
                    tail = c.output.decode(errors="replace").rstrip("\n").splitlines()[-20:]
                    lines += [f"  | {line}" for line in tail]
            lines.append(f"attested for tree {run.tree.hex()[:12]} of session {run.session}")
            return "\n".join(lines)

        emit(as_json, run.to_json(), text)
        if not run.ok:
            sys.exit(1)



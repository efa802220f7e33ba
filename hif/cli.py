"""The ``hif`` command line: a thin shell over :class:`hif.Repository`.

Every command takes ``--json`` and then prints exactly one JSON document (errors too, as
``{"error": {...}}``). Exit codes: 0 success, 1 error, 2 usage, 3 landing conflict, 4 the forge
wants other credentials.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hif.errors import ConflictError, HifError, InvalidInput
from hif.mainline import LandingRecord
from hif.porcelain import MoveReport, Repository
from hif.session import ROLES, Session

F = Callable[..., Any]


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


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


class TransferBar:
    """Object transfers with a forge as a rich progress display on stderr. It appears at the first
    transfer (so commands that move nothing print nothing) and only on a terminal, never with --json."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    @staticmethod
    def wanted(as_json: bool) -> bool:
        return not as_json and sys.stderr.isatty()

    def __call__(self, direction: str, objects: int, nbytes: int) -> None:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"),
                TextColumn("{task.completed:,.0f} objects"), TextColumn("{task.fields[size]}"),
                TimeElapsedColumn(), console=Console(stderr=True), transient=True,
            )
            self._progress.start()
        task = self._tasks.get(direction)
        if task is None:
            label = "fetching" if direction == "fetch" else "sending"
            task = self._tasks[direction] = self._progress.add_task(label, total=None, size="", nbytes=0)
        done = self._progress.tasks[task].fields["nbytes"] + nbytes
        self._progress.update(task, advance=objects, nbytes=done, size=size_text(done))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def size_text(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


class _Opened:
    """``with repo(as_json) as r``: the working copy, with a progress bar on forge transfers."""

    def __init__(self, as_json: bool) -> None:
        self.bar = TransferBar() if TransferBar.wanted(as_json) else None
        self.repo: Repository | None = None

    def __enter__(self) -> Repository:
        self.repo = Repository.open(Path.cwd())
        self.repo.set_progress(self.bar)
        if self.repo.finished_move is not None:
            note_finished_move(self.repo.finished_move)
        return self.repo

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.repo is not None:
            self.repo.close()


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


def repo(as_json: bool = False) -> _Opened:
    return _Opened(as_json)


role_option = click.option("--as", "role", type=click.Choice(ROLES), default=None,
                           help="Role of the author of this event (default: $HIF_ROLE or human).")
author_option = click.option("--author", default=None, help="Author name (default: $HIF_AUTHOR or the user).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="micelio", prog_name="hif")
def cli() -> None:
    """hif: version control that keeps why, not only what."""


# -- init / workspace ----------------------------------------------------------------------------


@command(cli)
@click.argument("directory", default=".")
@click.option("--store", default=None, help="Store URL: a path (default DIR/.hif/store) or s3://bucket/prefix.")
@click.option("--name", default=None, help="Repository name as owner/name (default local/DIR).")
def init(as_json: bool, directory: str, store: str | None, name: str | None) -> None:
    """Create a repository and its working copy in DIRECTORY."""
    with Repository.init(directory, store=store, name=name) as r:
        emit(as_json, {"root": str(r.root), "repo": r.name, "store": r.config["store"]},
             f"initialised {r.name} in {r.root}")


@cli.group()
def workspace() -> None:
    """Several working copies over one store."""


@command(workspace, "add")
@click.argument("directory")
def workspace_add(as_json: bool, directory: str) -> None:
    """Add another working copy of this repository in DIRECTORY (at the head)."""
    with repo(as_json) as r, r.add_workspace(directory) as w:
        emit(as_json, {"root": str(w.root), "position": w.position}, f"workspace {w.root} at position {w.position}")


# -- forges --------------------------------------------------------------------------------------


@command(cli)
@click.argument("url")
@click.option("--token", prompt=True, hide_input=True, help="An API token (mcl_...) of the forge.")
def login(as_json: bool, url: str, token: str) -> None:
    """Check a token with the forge at URL and keep it for later commands (in credentials.json, 0600)."""
    from hif.remote import login as remote_login

    who = remote_login(url, token)
    from hif.keys import register_on_forge  # the key that signs attestations (hif check)

    note = ""
    try:
        who["public_key"] = register_on_forge(who["url"]).hex()
    except HifError as e:  # a read-only token, an older forge: logging in still worked
        who["public_key"] = None
        note = f"\nthe signing key was not registered ({e}); hif check attestations will be refused"
    emit(as_json, who, f"logged in to {who['url']} as {who['user']}{note}")


@command(cli)
@click.argument("url")
def logout(as_json: bool, url: str) -> None:
    """Forget the token kept for the forge at URL."""
    from hif.remote import logout as remote_logout

    out = remote_logout(url)
    emit(as_json, out, f"logged out of {out['url']}" if out["removed"] else f"not logged in to {out['url']}")


@cli.group("repo")
def repo_group() -> None:
    """Repositories on a forge."""


remote_option = click.option("--remote", default=None,
                             help="Forge URL (default: the only forge you are logged in to).")


@command(repo_group, "create")
@click.argument("name")
@click.option("--private", is_flag=True, help="Only members can read it (default: public).")
@click.option("--description", default=None, help="One line about the repository.")
@remote_option
def repo_create(as_json: bool, name: str, private: bool, description: str | None, remote: str | None) -> None:
    """Create repository NAME (owner/name) on a forge."""
    from hif.remote import create_repo

    meta = create_repo(name, private=private, description=description, remote=remote)
    emit(as_json, meta, f"created {'private' if meta.get('private') else 'public'} repository "
                        f"{meta['name']} on {meta['remote']}\nclone it with: hif clone {meta['url']}")


@command(repo_group, "list")
@remote_option
def repo_list(as_json: bool, remote: str | None) -> None:
    """Repositories of a forge that you can read."""
    from hif.remote import list_repos

    base, repos = list_repos(remote)

    def text() -> str:
        if not repos:
            return f"no repositories on {base}"
        return "\n".join(f"{r['name']:<40} {'private' if r.get('private') else 'public ':<8} "
                         f"head {r.get('head', 0):<6} {r.get('description') or ''}" for r in repos)

    emit(as_json, {"remote": base, "repos": repos}, text)


@command(cli)
@click.argument("url")
@click.argument("directory", required=False)
@click.option("--sparse", "sparse", multiple=True, metavar="DIR",
              help="Check out only this directory (repeatable) and the root files.")
def clone(as_json: bool, url: str, directory: str | None, sparse: tuple[str, ...]) -> None:
    """Make a working copy of the forge repository at URL (http(s)://host/owner/name) in DIRECTORY.

    Running it again on an interrupted clone fetches only what is still missing. With --sparse only
    the tree objects and files inside those directories are fetched; other files are read on demand
    (hif cat, hif ls) and cannot be changed from this working copy.
    """
    bar = TransferBar() if TransferBar.wanted(as_json) else None
    try:
        r = Repository.clone(url, directory, progress=bar, sparse=list(sparse) or None)
    finally:
        if bar is not None:
            bar.close()
    with r:
        assert r.remote is not None
        objs = r.remote.objects
        doc = {"root": str(r.root), "repo": r.name, "remote": r.remote.client.base_url,
               "position": r.position, "resumed": r.resumed, "fetched_objects": objs.fetched_objects,
               "sparse": r.cone.cones if r.cone else None,
               "fetched_bytes": objs.fetched_bytes}
        emit(as_json, doc, f"{'finished cloning' if r.resumed else 'cloned'} {r.name} into {r.root} at "
                           f"position {r.position} ({objs.fetched_objects} objects, "
                           f"{size_text(objs.fetched_bytes)} fetched)")


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


# -- working copy --------------------------------------------------------------------------------


@command(cli)
def status(as_json: bool) -> None:
    """Changes in the working copy against its position, and the open session."""
    from hif.quickstatus import status_text  # the ``hif`` command's quick path prints the same

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
        emit(as_json, res.to_json(), f"{verb} session {sid} at position {res.position}{extra}")


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


# -- history -------------------------------------------------------------------------------------


def record_summary(rec: LandingRecord) -> list[dict[str, Any]]:
    return [{"position": rec.position, "session": s.session, "goal": s.goal, "author": s.author,
             "role": s.role, "time": rec.time, "files": sorted(s.changes)} for s in rec.sessions]


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
                f"{x['position']:>6}  {x['session']}  {when(x['time'])}  {x['author']} ({x['role']})  "
                f"{x['goal']}  [{len(x['files'])} file(s): {', '.join(x['files'][:3])}"
                f"{', …' if len(x['files']) > 3 else ''}]"
                for x in rows
            )

        emit(as_json, {"landings": rows}, text)


def _attest_summary(s: Session) -> list[dict[str, Any]]:
    from hif.checks import attest_summary  # imported lazily: only sessions with checks need it

    return attest_summary(s) if s.of_type("attest") else []


def show_doc(s: Session, rec: LandingRecord | None, diffs: list[Any]) -> dict[str, Any]:
    return {
        "session": s.to_json(),
        "position": rec.position if rec else None,
        "conversation": [{"role": e["role"], "author": e["author"], "text": e["text"], "time": e["time"]}
                         for e in s.of_type("say")],
        "decisions": [{"decision": e["decision"], "why": e["why"], "alternatives": e["alternatives"],
                       "author": e["author"], "role": e["role"]} for e in s.of_type("decide")],
        "iterations": [{"iteration": e["iteration"], "note": e["note"], "tree": e["tree"].hex()}
                       for e in s.of_type("checkpoint")],
        "checks": _attest_summary(s),
        "changes": [{**c.to_json(), "diff": t} for c, t in diffs],
    }


def show_text(s: Session, rec: LandingRecord | None, diffs: list[Any]) -> str:
    head = f"position {rec.position} · " if rec else ""
    out = [f"{head}session {s.id} ({s.state})", f"goal: {s.goal}",
           f"author: {s.author} ({s.role}) · started {when(s.started)} · base {s.events[0]['base']}"]
    if rec:
        out.append(f"landed: {when(rec.time)}")
    conv = s.of_type("say")
    if conv:
        out += ["", "conversation:"] + [f"  [{e['role']}] {e['author']}: {e['text']}" for e in conv]
    decs = s.of_type("decide")
    if decs:
        out += ["", "decisions:"]
        for e in decs:
            out.append(f"  - {e['decision']}")
            out.append(f"    why: {e['why']}")
            out += [f"    rejected: {a}" for a in e["alternatives"]]
    cps = s.of_type("checkpoint")
    if cps:
        out += ["", "iterations:"] + [f"  {e['iteration']}. {e['note']}" for e in cps]
    if s.of_type("attest"):
        out += ["", "checks:"] + [
            f"  {a['status']:6} {a['check']} ({'cached, ' if a['cached'] else ''}{a['duration']} s) "
            f"tree {str(a['tree'])[:12]} signed by {a['signer']}" for a in _attest_summary(s)]
    mark = {"added": "A", "modified": "M", "deleted": "D"}
    out += ["", "changes:"] + [f"  {mark[c.action]} {c.path}" for c, _ in diffs]
    if not diffs:
        out.append("  (none)")
    out.append("")
    out += [t.rstrip("\n") for _, t in diffs if t]
    return "\n".join(out)


@command(cli)
@click.argument("ref")
def show(as_json: bool, ref: str) -> None:
    """Show a landing (by POSITION) or a session (by id): goal, conversation, decisions, diff."""
    with repo(as_json) as r:
        s, rec = r.resolve_ref(ref)
        diffs = r.session_diffs(s, rec)
        emit(as_json, show_doc(s, rec, diffs), lambda: show_text(s, rec, diffs))


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


# -- git interop ---------------------------------------------------------------------------------


class CommitBar:
    """Commits done of all, with commits/s, as a rich progress bar on stderr (a terminal only, never
    with --json); it appears at the first commit."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            class Rate(TextColumn):
                def render(self, task: Any) -> Any:
                    from rich.text import Text

                    return Text(f"{task.speed or 0:,.0f} commits/s")

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(""),
                TimeElapsedColumn(), console=Console(stderr=True), transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=total)
        self._progress.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


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


# -- federation: offering a session to a repository on another forge ----------------------------


@command(cli)
@click.argument("url")
def offer(as_json: bool, url: str) -> None:
    """Offer the open session to the repository at URL on another forge (your forge sends it,
    signed); its maintainers land or reject it, and the outcome comes back to your forge."""
    with repo(as_json) as r:
        sid = r.session_id
        if r.remote is None:
            raise InvalidInput("hif offer needs a clone of a forge repository (hif clone URL)")
        if sid is None:
            raise InvalidInput("no open session to offer (hif session start GOAL)")
        r.record()  # the working copy's changes go into the session first
        doc = r.remote.offer(sid, url)
        emit(as_json, doc, f"offered session {sid} to {doc.get('target', url)} "
                           f"(offer {doc.get('id')}); the outcome will show on your forge")


def main() -> None:
    try:
        cli(prog_name="hif")
    except Exception as e:  # the last line of defence: never a traceback to a user
        if os.environ.get("HIF_DEBUG"):
            raise
        click.echo(f"error: internal error: {type(e).__name__}: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

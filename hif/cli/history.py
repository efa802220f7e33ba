"""Commands that read history: log, show, cat, ls, blame."""

from __future__ import annotations

import sys
from typing import Any

import click

from hif.cli.app import cli, repo
from hif.cli.output import command, emit, when
from hif.mainline import LandingRecord
from hif.session import Session, provenance_of

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
        "conversation": [{"role": e["role"], "author": e["author"], "text": e["text"], "time": e["time"],
                          **({"kind": e["kind"]} if e.get("kind") else {}), **provenance_of(e)}
                         for e in s.of_type("say")],
        "decisions": [{"decision": e["decision"], "why": e["why"], "alternatives": e["alternatives"],
                       "author": e["author"], "role": e["role"], **provenance_of(e)} for e in s.of_type("decide")],
        "writes": [{"path": e["path"], "seq": e["seq"], **provenance_of(e)}
                   for e in s.of_type("write", "delete") if provenance_of(e)],
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
        out += ["", "conversation:"] + [
            f"  [{e['role']}{'/' + str(e['kind']) if e.get('kind') else ''}] {e['author']}{_via(e)}: {e['text']}"
            for e in conv]
    decs = s.of_type("decide")
    if decs:
        out += ["", "decisions:"]
        for e in decs:
            out.append(f"  - {e['decision']}{_via(e)}")
            out.append(f"    why: {e['why']}")
            out += [f"    rejected: {a}" for a in e["alternatives"]]
    cps = s.of_type("checkpoint")
    if cps:
        out += ["", "iterations:"] + [f"  {e['iteration']}. {e['note']}" for e in cps]
    if s.of_type("attest"):
        out += ["", "checks:"] + [
            f"  {a['status']:6} {a['check']} ({'cached, ' if a['cached'] else ''}{a['duration']} s) "
            f"tree {str(a['tree'])[:12]} signed by {a['signer']}" for a in _attest_summary(s)]
    tooled = [e for e in s.of_type("write", "delete") if provenance_of(e)]
    if tooled:
        out += ["", "edits by agents:"] + [f"  {e['type']} {e['path']}{_via(e)}" for e in tooled]
    mark = {"added": "A", "modified": "M", "deleted": "D"}
    out += ["", "changes:"] + [f"  {mark[c.action]} {c.path}" for c, _ in diffs]
    if not diffs:
        out.append("  (none)")
    out.append("")
    out += [t.rstrip("\n") for _, t in diffs if t]
    return "\n".join(out)


def _via(e: dict[str, Any]) -> str:
    """`` (via claude-code, model m, Edit call c)``: which agent produced an event, when one did."""
    p = provenance_of(e)
    parts = [p[k] if k == "agent" else f"{k.replace('_', ' ')} {p[k]}" for k in p if k != "agent_session"]
    return f" (via {', '.join(parts)})" if parts else ""


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



"""What a landing or a session looks like to a reader, as data and as text: the one rendering that
``hif show``/``hif log``, the MCP server's tools and resources (``hif mcp``) and the node's MCP
endpoint share, so every client reads the same document."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from hif.porcelain.base import FileChange
from hif.session import provenance_of

if TYPE_CHECKING:
    from hif.mainline import LandingRecord
    from hif.repo import Repo
    from hif.search import CommitHit
    from hif.session import Session


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def record_summary(rec: LandingRecord) -> list[dict[str, Any]]:
    """One row per landed session; ``git`` names the commit an imported landing came from (read
    from the record itself, so free), else None."""
    meta = rec.extra.get("git")
    commit = meta.get("commit") if isinstance(meta, dict) and len(rec.sessions) == 1 else None
    return [{"position": rec.position, "session": s.session, "goal": s.goal, "author": s.author,
             "role": s.role, "time": rec.time, "files": sorted(s.changes),
             "git": commit if isinstance(commit, str) else None} for s in rec.sessions]


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


def commit_line(c: CommitHit) -> str:
    """What ``hif show git:SHA`` says first: which commit, and whether the export gives it back."""
    where = f"iteration {c.iteration} of this landing" if c.iteration else "this landing"
    same = ("; hif export git writes it back with this id" if c.exact
            else "; hif export git may give it another id (a signature or legacy file mode git does not"
                 " keep, in it or an ancestor, or an import older than this check)")
    return f"git commit {c.commit}: {where}{same}"


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



async def session_diffs(repo: Repo, s: Session, rec: LandingRecord | None) -> list[tuple[FileChange, str]]:
    """A session's changes with their unified diffs: what its landing applied (``rec``), or, while
    open, its changes against its base."""
    # diffing and the history plumbing: only diffs and shows load them (start-up time)
    from hif.history import session_changes
    from hif.merge import unified_diff  # (with the line above: start-up time)

    out = []
    for c in await session_changes(repo, s, rec):
        a = await repo.objects.get_blob(c.old.oid) if c.old else None
        b = await repo.objects.get_blob(c.new.oid) if c.new else None
        out.append((FileChange(c.path, c.action, c.old, c.new), unified_diff(a, b, c.path)))
    return out

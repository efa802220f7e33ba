"""Commands for coding agents (docs/agents.md): ``hif agent install|uninstall|hook``, ``hif import
transcript``, ``hif import agent-trace`` and ``hif export agent-trace``. The hook itself is
:mod:`hif.cli.agenthook`, which :mod:`hif.__main__` runs before click is imported."""

from __future__ import annotations

import difflib
import json
import os
import sys
from pathlib import Path

import click

from hif.agents import settings as agent_settings
from hif.agents.formats import AGENTS, TRANSCRIPTS
from hif.cli.app import author_option, cli, repo, role_option
from hif.cli.interop import export_group, import_group
from hif.cli.output import command, emit
from hif.worktree.workspace import find_root


@cli.group()
def agent() -> None:
    """Record a coding agent's work (Claude Code, Gemini CLI) through its hooks."""


def _change_settings(agent_name: str, as_json: bool, change: str, program: str) -> None:
    root = find_root(Path.cwd())
    rel = agent_settings.SETTINGS[agent_name]
    path = root / rel
    old = path.read_text() if path.exists() else ""
    current = agent_settings.parse(old, rel)
    if change == "install":
        new_value = agent_settings.install(agent_name, current, program)
    else:
        new_value = agent_settings.uninstall(agent_name, current)
    new = agent_settings.render(new_value) if new_value or old else ""
    changed = new_value != current
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(new)
        os.replace(tmp, path)  # a reader sees the old settings or the new, never half
    diff = "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        f"a/{rel}", f"b/{rel}")) if changed else ""
    done = "installed" if change == "install" else "uninstalled"
    emit(as_json, {"agent": agent_name, "settings": str(path), "changed": changed, "diff": diff},
         lambda: (diff + f"{done} hif's hooks for {agent_name} in {rel}") if changed
         else f"{rel} already {'has' if change == 'install' else 'has no'} hif's hooks for {agent_name}: nothing changed")


@command(agent, "install")
@click.argument("agent_name", metavar="AGENT", type=click.Choice(AGENTS))
@click.option("--program", default="hif", show_default=True,
              help="How the agent runs hif (a full path if hif is not on its PATH).")
def agent_install(as_json: bool, agent_name: str, program: str) -> None:
    """Write hif's hooks into AGENT's project settings (kept with the others; shown as a diff)."""
    _change_settings(agent_name, as_json, "install", program)


@command(agent, "uninstall")
@click.argument("agent_name", metavar="AGENT", type=click.Choice(AGENTS))
def agent_uninstall(as_json: bool, agent_name: str) -> None:
    """Take hif's hooks out of AGENT's project settings (nothing else is touched)."""
    _change_settings(agent_name, as_json, "uninstall", "hif")


@agent.command("hook", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1)
def agent_hook(args: tuple[str, ...]) -> None:
    """What AGENT's hook runs at EVENT (hif agent hook AGENT EVENT, the hook input on stdin).

    Always exits 0 and prints nothing the agent would take for an answer; problems go to
    .hif/agent-hook.log."""
    from hif.cli.agenthook import run  # the same code as the quick path of hif.__main__

    sys.exit(run(list(args)))


@command(import_group, "transcript")
@click.argument("fmt", metavar="FORMAT", type=click.Choice(TRANSCRIPTS))
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--goal", default=None, help="Goal of the session opened when none is (default: the first prompt).")
def import_transcript(as_json: bool, fmt: str, file: str, goal: str | None) -> None:
    """Add an agent's transcript FILE to the open session (one is opened when none is): prompts,
    replies, plans and notes, secrets redacted; files the agent wrote whole become writes."""
    with repo(as_json) as r:
        res = r.import_transcript(fmt, file, goal=goal)
        emit(as_json, res, f"imported {res['events']} event(s) from {file} into session {res['session']}"
             + (f" ({res['malformed']} malformed line(s) skipped)" if res["malformed"] else "")
             + (f" ({res['too_long']} over-long line(s) skipped)" if res["too_long"] else "")
             + (f" ({res['skipped_writes']} write(s) outside this working copy skipped)"
                if res["skipped_writes"] else ""))


@command(import_group, "agent-trace")
@click.argument("file", type=click.File("rb"))
@role_option
@author_option
def import_agent_trace(as_json: bool, file: click.utils.LazyFile, role: str | None, author: str | None) -> None:
    """Attach the Agent Trace record in FILE ('-': stdin) to the open session."""
    from hif.agents.trace import MAX_RECORD  # only this command reads records (start-up time)

    data = file.read(MAX_RECORD + 1)
    with repo(as_json) as r:
        res = r.import_agent_trace(data, role=role, author=author)
        emit(as_json, res, f"attached {res['summary']} to session {res['session']}")


@command(export_group, "agent-trace")
@click.argument("ref", metavar="POSITION|SESSION")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write to a file (default: stdout).")
def export_agent_trace(as_json: bool, ref: str, output: str | None) -> None:
    """Print the Agent Trace record of a landed session's changes (JSON; the schema's version 0.1.0)."""
    with repo(as_json) as r:
        doc = r.agent_trace(ref)
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    Path(output).write_text(text)
    emit(as_json, {"output": output, "id": doc["id"]}, f"wrote {output}")


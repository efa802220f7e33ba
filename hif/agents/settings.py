"""The hook entries ``hif agent install`` writes into an agent's project settings, and takes out again.

Claude Code reads ``.claude/settings.json``, Gemini CLI ``.gemini/settings.json``; both keep hooks as
``{"hooks": {EVENT: [{"matcher": ..., "hooks": [{"type": "command", "command": ...}]}]}}``. hif's
entries are the commands that start with ``hif agent hook ``: installing updates them in place (or
adds a group at the end), uninstalling removes them and any group or event left empty. Every other
key, event, group and hook is kept as it is, in its order, so installing twice changes nothing and
uninstalling gives back what was there before.
"""

from __future__ import annotations

import json
from typing import Any

from hif.agents.formats import HOOK_EVENTS, HOOK_TOOLS
from hif.errors import InvalidInput

SETTINGS = {"claude-code": ".claude/settings.json", "gemini-cli": ".gemini/settings.json"}
MARK = "hif agent hook "
# how long an agent waits for the hook: seconds for Claude Code, milliseconds for Gemini CLI
TIMEOUT = {"claude-code": 10, "gemini-cli": 10_000}


def ours(hook: Any) -> bool:
    return isinstance(hook, dict) and isinstance(hook.get("command"), str) and MARK in hook["command"]


def _entry(agent: str, event: str, program: str) -> dict[str, Any]:
    hook: dict[str, Any] = {"type": "command", "command": f"{program} agent hook {agent} {event}",
                            "timeout": TIMEOUT[agent]}
    if agent == "gemini-cli":
        hook = {"name": f"hif-{event}", **hook}
    group: dict[str, Any] = {"hooks": [hook]}
    if event in ("PostToolUse", "AfterTool"):
        group = {"matcher": HOOK_TOOLS[agent], **group}
    return group


def parse(text: str, where: str) -> dict[str, Any]:
    """Settings as read (empty text: none yet); anything but a JSON object is refused, never replaced."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise InvalidInput(f"{where} is not JSON ({e}); fix it or move it away first") from None
    if not isinstance(value, dict) or not isinstance(value.get("hooks", {}), dict):
        raise InvalidInput(f"{where} is not a JSON object with a hooks object; fix it or move it away first")
    return value


def install(agent: str, settings: dict[str, Any], program: str = "hif") -> dict[str, Any]:
    """``settings`` with hif's hook entries for ``agent`` present and current."""
    out = json.loads(json.dumps(settings))  # a deep copy: the caller's value is left alone
    hooks = out.setdefault("hooks", {})
    for event in HOOK_EVENTS[agent]:
        want = _entry(agent, event, program)
        groups = hooks.get(event)
        if not isinstance(groups, list):
            hooks[event] = [want]
            continue
        mine = [i for i, g in enumerate(groups) if isinstance(g, dict) and any(map(ours, g.get("hooks") or []))]
        if not mine:
            groups.append(want)
            continue
        first = groups[mine[0]]
        others = [h for h in first.get("hooks") or [] if not ours(h)]
        if others:  # a group shared with someone else's hooks: ours leave it, a group of our own is added
            first["hooks"] = others
            groups.insert(mine[0] + 1, want)
        else:
            groups[mine[0]] = want
        for i in reversed(mine[1:]):  # duplicates of ours (an edited file): one is enough
            _drop_ours(groups, i)
    return out


def _drop_ours(groups: list[Any], i: int) -> None:
    g = groups[i]
    kept = [h for h in g.get("hooks") or [] if not ours(h)]
    if kept:
        g["hooks"] = kept
    else:
        del groups[i]


def uninstall(agent: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without hif's hook entries for ``agent`` (nothing else changed)."""
    out = json.loads(json.dumps(settings))
    hooks = out.get("hooks")
    if not isinstance(hooks, dict):
        return out
    for event in list(hooks):
        groups = hooks[event]
        if not isinstance(groups, list):
            continue
        for i in reversed(range(len(groups))):
            g = groups[i]
            if isinstance(g, dict) and any(ours(h) and f" {agent} " in h["command"] for h in g.get("hooks") or []):
                kept = [h for h in g.get("hooks") or [] if not (ours(h) and f" {agent} " in h["command"])]
                if kept:
                    g["hooks"] = kept
                else:
                    del groups[i]
        if not groups:
            del hooks[event]
    if not hooks:
        del out["hooks"]
    return out


def render(settings: dict[str, Any]) -> str:
    return json.dumps(settings, indent=2) + "\n"

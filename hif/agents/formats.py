"""What coding agents tell hif, read into neutral :class:`Item` s: their hook inputs (one JSON document
on stdin per event) and their transcripts (JSON lines). Vendors promise neither format, so everything
is read defensively: a field of the wrong type is as good as absent, a record of a kind not known here
becomes a note, a line that is not JSON is skipped and counted. Nothing here raises on bad input.

Supported agents (docs/agents.md): ``claude-code`` (hooks and transcripts), ``gemini-cli`` (hooks),
``codex`` (transcripts: the rollout JSONL under ``~/.codex/sessions``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from hif.errors import TooLarge

AGENTS = ("claude-code", "gemini-cli")  # agents with hooks
TRANSCRIPTS = ("claude-code", "codex")  # transcript formats
MAX_LINE = 1 << 20  # one transcript line; a longer one is skipped and counted
MAX_TRANSCRIPT = 256 << 20  # bytes of a transcript file import reads
NOTE_EXCERPT = 2000  # characters of an unknown record kept as a note
GOAL_CHARS = 200  # a session opened from a prompt takes its goal from the prompt's first line

# tools whose call writes one file, and the input field naming it
CLAUDE_WRITES = {"Write": "file_path", "Edit": "file_path", "MultiEdit": "file_path",
                 "NotebookEdit": "notebook_path"}
GEMINI_WRITES = {"write_file": "file_path", "replace": "file_path"}
# the hook events each agent's configuration names (hif agent install)
HOOK_EVENTS = {
    "claude-code": ("SessionStart", "UserPromptSubmit", "PostToolUse", "Stop", "SessionEnd"),
    "gemini-cli": ("SessionStart", "BeforeAgent", "AfterTool", "AfterAgent", "SessionEnd"),
}
# the tools a PostToolUse / AfterTool hook is called for (the rest cost the agent nothing)
HOOK_TOOLS = {
    "claude-code": "Write|Edit|MultiEdit|NotebookEdit|TodoWrite|ExitPlanMode",
    "gemini-cli": "write_file|replace|write_todos",
}


class Item:
    """One thing an agent did: ``what`` is ``prompt`` (the person's), ``reply`` (the agent's), ``write``
    (a file, ``path`` as the agent named it, ``content`` when a transcript holds it), ``note``
    (``kind`` plan, todo or note), ``tail`` (read the reply from the transcript), ``begin`` or ``end``
    (of the agent's session)."""

    __slots__ = ("content", "kind", "model", "path", "text", "time", "tool", "tool_call", "what")

    def __init__(self, what: str, text: str = "", *, path: str | None = None, content: bytes | None = None,
                 kind: str | None = None, tool: str | None = None, tool_call: str | None = None,
                 model: str | None = None, time: float | None = None) -> None:
        self.what, self.text, self.path, self.content, self.kind = what, text, path, content, kind
        self.tool, self.tool_call, self.model, self.time = tool, tool_call, model, time

    def __repr__(self) -> str:
        return f"Item({self.what!r}, {self.text[:40]!r}, path={self.path!r}, kind={self.kind!r})"


def text_of(value: Any) -> str:
    """A string field, or '' when it is absent or of another type."""
    return value if isinstance(value, str) else ""


def short(value: Any, limit: int = 200) -> str | None:
    """A short identifying string (ids, models, tool names): None unless a usable one."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = "".join(c for c in value.strip() if c.isprintable())
    return text[:limit] or None


def goal_of(prompt: str) -> str:
    """A session's goal from the prompt that opened it: its first non-blank line, trimmed."""
    line = next((x.strip() for x in prompt.splitlines() if x.strip()), "")
    return line if len(line) <= GOAL_CHARS else line[: GOAL_CHARS - 1].rstrip() + "…"


def todos_text(todos: Any) -> str:
    """A todo list (Claude Code's TodoWrite, Gemini CLI's write_todos) as lines ``[x] task``."""
    mark = {"completed": "x", "in_progress": ">", "cancelled": "-", "blocked": "!"}
    lines = []
    for t in todos if isinstance(todos, list) else []:
        if isinstance(t, dict):
            task = text_of(t.get("content")) or text_of(t.get("description"))
            if task:
                lines.append(f"[{mark.get(text_of(t.get('status')), ' ')}] {task}")
    return "\n".join(lines)


# -- hook inputs ---------------------------------------------------------------------------------


def hook_items(agent: str, event: str, data: dict[str, Any]) -> list[Item]:
    """The items one hook call reports (``event`` as configured, else the input's own name)."""
    event = short(data.get("hook_event_name")) or event
    if agent == "claude-code":
        return _claude_hook(event, data)
    if agent == "gemini-cli":
        return _gemini_hook(event, data)
    return []


def _claude_hook(event: str, data: dict[str, Any]) -> list[Item]:
    if event == "SessionStart":
        return [Item("begin", model=short(data.get("model")))]
    if event == "UserPromptSubmit":
        prompt = text_of(data.get("prompt"))
        return [Item("prompt", prompt)] if prompt.strip() else []
    if event == "PostToolUse":
        return _tool_item(short(data.get("tool_name")), data.get("tool_input"), short(data.get("tool_use_id")),
                          CLAUDE_WRITES)
    if event in ("Stop", "SubagentStop"):
        return [Item("tail")]
    if event == "SessionEnd":
        return [Item("end")]
    return []


def _gemini_hook(event: str, data: dict[str, Any]) -> list[Item]:
    if event == "SessionStart":
        return [Item("begin")]
    if event == "BeforeAgent":
        prompt = text_of(data.get("prompt"))
        return [Item("prompt", prompt)] if prompt.strip() else []
    if event == "AfterAgent":
        reply = text_of(data.get("prompt_response"))
        return [Item("reply", reply)] if reply.strip() else []
    if event == "AfterTool":
        return _tool_item(short(data.get("tool_name")), data.get("tool_input"), None, GEMINI_WRITES)
    if event == "SessionEnd":
        return [Item("end")]
    return []


def _tool_item(tool: str | None, args: Any, call: str | None, writes: dict[str, str]) -> list[Item]:
    if tool is None or not isinstance(args, dict):
        return []
    if tool in writes:
        path = text_of(args.get(writes[tool]))
        return [Item("write", path=path, tool=tool, tool_call=call)] if path else []
    if tool in ("TodoWrite", "write_todos"):
        text = todos_text(args.get("todos"))
        return [Item("note", text, kind="todo", tool=tool, tool_call=call)] if text else []
    if tool == "ExitPlanMode":
        plan = text_of(args.get("plan"))
        return [Item("note", plan, kind="plan", tool=tool, tool_call=call)] if plan.strip() else []
    return []


# -- transcripts ---------------------------------------------------------------------------------


class Counts:
    """What a transcript read skipped: lines that were not JSON objects, and lines too long."""

    __slots__ = ("malformed", "read", "too_long")

    def __init__(self) -> None:
        self.read = self.malformed = self.too_long = 0

    def to_json(self) -> dict[str, int]:
        return {"lines": self.read, "malformed": self.malformed, "too_long": self.too_long}


def read_lines(path: str, counts: Counts) -> Iterator[bytes]:
    """The lines of the file at ``path``, read as they stream: a line longer than :data:`MAX_LINE` is
    skipped (and counted) without being held, a file past :data:`MAX_TRANSCRIPT` bytes is refused."""
    total, long = 0, False
    with open(path, "rb") as f:
        while line := f.readline(MAX_LINE + 1):
            total += len(line)
            if total > MAX_TRANSCRIPT:
                raise TooLarge(f"{path} is over {MAX_TRANSCRIPT >> 20} MiB; import it in parts")
            if long or len(line) > MAX_LINE:  # a long line's pieces are read and dropped
                if not long:
                    counts.read += 1
                    counts.too_long += 1
                long = not line.endswith(b"\n")
                continue
            yield line


def json_lines(lines: Iterable[bytes], counts: Counts) -> Iterator[dict[str, Any]]:
    """The JSON objects of ``lines`` (bytes, each at most :data:`MAX_LINE` long: longer is counted)."""
    for raw in lines:
        if not raw.strip():
            continue
        counts.read += 1
        if len(raw) > MAX_LINE:
            counts.too_long += 1
            continue
        try:
            value = json.loads(raw)
        except ValueError:  # not JSON, or not UTF-8
            counts.malformed += 1
            continue
        if isinstance(value, dict):
            yield value
        else:
            counts.malformed += 1


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _excerpt(record: dict[str, Any]) -> str:
    text = json.dumps(record, sort_keys=True, default=str)
    return text if len(text) <= NOTE_EXCERPT else text[: NOTE_EXCERPT - 1] + "…"


def _seconds(stamp: Any) -> float | None:
    """An ISO 8601 time as seconds since 1970, or None (imported lazily: only transcripts have times)."""
    if not isinstance(stamp, str):
        return None
    from datetime import datetime  # only a transcript import needs it (start-up time of the hook)

    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def claude_transcript(records: Iterable[dict[str, Any]], *, replies_only: bool = False) -> Iterator[Item]:
    """Claude Code's transcript (``~/.claude/projects/<dir>/<session>.jsonl``). ``replies_only``: just the
    agent's text (what a Stop hook reads from the transcript's new tail)."""
    for r in records:
        kind, when = r.get("type"), _seconds(r.get("timestamp"))
        message = r.get("message") if isinstance(r.get("message"), dict) else {}
        if kind == "assistant":
            model = short(message.get("model"))
            for b in _blocks(message.get("content")):
                if b.get("type") == "text" and text_of(b.get("text")).strip():
                    yield Item("reply", b["text"], model=model, time=when)
                elif b.get("type") == "tool_use" and not replies_only:
                    yield from _claude_tool_use(b, model, when)
        elif replies_only:
            continue
        elif kind == "user":
            if r.get("isMeta") is True:
                continue  # text the agent injected, not typed by the person
            for b in _blocks(message.get("content")):
                if b.get("type") == "text" and text_of(b.get("text")).strip():
                    yield Item("prompt", b["text"], time=when)
                # tool results are the tools' output, not the conversation
        elif kind == "summary":
            if text_of(r.get("summary")).strip():
                yield Item("note", r["summary"], kind="note", time=when)
        elif kind in ("file-history-snapshot", "progress"):
            continue  # the agent's own bookkeeping
        else:
            yield Item("note", f"{short(kind) or 'record'}: {_excerpt(r)}", kind="note", time=when)


def _claude_tool_use(b: dict[str, Any], model: str | None, when: float | None) -> Iterator[Item]:
    tool, call, args = short(b.get("name")), short(b.get("id")), b.get("input")
    if not isinstance(args, dict) or tool is None:
        return
    if tool == "Write" and isinstance(args.get("content"), str) and text_of(args.get("file_path")):
        yield Item("write", path=args["file_path"], content=args["content"].encode(), tool=tool, tool_call=call,
                   model=model, time=when)
    elif tool in CLAUDE_WRITES and text_of(args.get(CLAUDE_WRITES[tool])):
        # the transcript holds the edit, not the file it made: named, and recorded when the file is
        yield Item("note", f"{tool} {args[CLAUDE_WRITES[tool]]}", kind="note", tool=tool, tool_call=call,
                   model=model, time=when)
    else:
        for item in _tool_item(tool, args, call, {}):
            item.model, item.time = model, when
            yield item


def codex_transcript(records: Iterable[dict[str, Any]]) -> Iterator[Item]:
    """Codex CLI's rollout (``~/.codex/sessions/YYYY/MM/DD/rollout-*.jsonl``): ``session_meta``,
    ``turn_context`` (the model), ``response_item`` (messages, tool calls), ``event_msg`` (the same
    again as user-interface events: skipped). An older layout has the items bare, without ``payload``."""
    model: str | None = None
    for r in records:
        kind, when = r.get("type"), _seconds(r.get("timestamp"))
        payload = r.get("payload") if isinstance(r.get("payload"), dict) else None
        if kind == "turn_context" and payload is not None:
            model = short(payload.get("model")) or model
            continue
        if kind in ("session_meta", "event_msg", "compacted"):
            continue
        item = payload if kind == "response_item" and payload is not None else r
        itype = item.get("type")
        if itype == "message":
            role = item.get("role")
            text = "\n".join(text_of(b.get("text")) for b in _blocks(item.get("content"))
                             if b.get("type") in ("input_text", "output_text", "text")).strip()
            if not text:
                continue
            if role == "assistant":
                yield Item("reply", text, model=model, time=when)
            elif role == "user" and text.startswith(("<environment_context>", "<user_instructions>")):
                continue  # what Codex sends with every conversation, not the person's words
            elif role == "user":
                yield Item("prompt", text, time=when)
            else:
                yield Item("note", text, kind="note", time=when)
        elif itype in ("function_call", "custom_tool_call", "local_shell_call"):
            name = short(item.get("name")) or itype
            args = item.get("arguments") if "arguments" in item else item.get("input")
            text = args if isinstance(args, str) else json.dumps(args, default=str)
            yield Item("note", f"{name}: {text[:NOTE_EXCERPT]}", kind="note", tool=name,
                       tool_call=short(item.get("call_id")), model=model, time=when)
        elif itype in ("function_call_output", "custom_tool_call_output", "reasoning"):
            continue  # tool output and the model's private reasoning are not the conversation
        elif "id" in r and "instructions" in r and kind is None:
            continue  # the older layout's first line: session metadata
        else:
            yield Item("note", f"{short(itype) or short(kind) or 'record'}: {_excerpt(r)}", kind="note", time=when)


def transcript_items(fmt: str, records: Iterable[dict[str, Any]]) -> Iterator[Item]:
    return claude_transcript(records) if fmt == "claude-code" else codex_transcript(records)

"""The catalogue of hif's MCP tools and resources: their names, the descriptions a model reads to
use them well, the parameters they share, and :func:`build_server`, which registers a backend's
methods under those names. A backend is an object with one method per tool it serves (the working
copy's :class:`hif.mcp.local.LocalTools`, the node's ``node.mcp.NodeTools``): adding a tool is one
entry in :data:`TOOLS` and one method per backend.

Every tool answers a JSON document; a deliberate hif error comes back as a tool error (``isError``)
whose text is the CLI's one line (the ``HifError`` message), never a traceback."""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from hif.errors import ConflictError, HifError, NotFound
from hif.search import KINDS
from hif.session import ROLES, check_provenance, clean_provenance

INSTRUCTIONS = """\
hif records why code changed, not only what. Work happens in a session: start one with a goal
(session_start), then as you work record the conversation (say: the user's messages with
role "human", your own replies and plans with role "agent"), every decision you make (decide:
what you chose, why, and the options you rejected), and the files you change (edit them on disk,
or call write). Mark iterations with checkpoint, then land the session on the mainline (land).
A landing conflict comes back as data: call sync, fix the conflict markers, land again.
Before deciding, search earlier sessions: the same question may have been decided, or your option
rejected, before. Read the history with log, show, blame, cat and ls, or the hif:// resources."""

# What a model reads for each tool. Written for a model: when to call it, what it records, what
# comes back. The order is the order tools are listed in.
TOOLS: dict[str, str] = {
    "status": "The current position on the mainline, the open session (if any) and the files changed "
              "since. Call it first to know whether a session is open.",
    "session_start": "Open a session with a goal (one sentence: what this work is for). Everything "
                     "recorded afterwards (conversation, decisions, file changes) belongs to it "
                     "until it lands or is abandoned. Only one session is open at a time.",
    "session_show": "A session (default: the open one) as a document: goal, conversation, decisions, "
                    "iterations and its changes with diffs.",
    "session_list": "The open sessions of the repository (landed ones are in log).",
    "session_abandon": "Close the open session without landing it, giving the reason; its file "
                       "changes are dropped. Use when the work is given up, not to start over.",
    "say": "Record one message of the conversation in the open session. Call it for every message "
           "that matters to why the change was made: the user's request and answers (role "
           "\"human\", their words as given) and your own replies, plans and findings (role "
           "\"agent\"). The conversation is kept with the change and shown to reviewers.",
    "decide": "Record a decision. Call it every time you choose between options (a design, a "
              "library, an algorithm, a fix over another fix, not doing something), with: the "
              "decision (what you chose), why (the reason that settled it), and alternatives: each "
              "option you considered and rejected, one per item, each saying briefly why not. An "
              "alternative is a real option someone could have taken instead, not a restatement of "
              "the decision. A session with no decision lands with a notice; decisions are never "
              "made up afterwards, so record them when you make them.",
    "write": "Write a file (UTF-8 text, the whole new content) and record it in the open session; "
             "in a working copy the file on disk is written too. For clients that do not edit files "
             "themselves: in a working copy, edits made on disk are recorded at the next event anyway.",
    "checkpoint": "Mark an iteration of the open session: the files as they are now, with a note "
                  "saying what this iteration is (e.g. \"tests pass\", \"first draft\").",
    "diff": "The open session's file changes as unified diffs (stat: only counts per file).",
    "land": "Land the open session on the mainline: its changes become the next position, with the "
            "conversation and decisions. Changes that do not overlap with sessions landed since "
            "are merged. A conflict is returned as data (landed: false, the conflicting paths and "
            "the sessions that changed them): then call sync, resolve the markers, and land again.",
    "sync": "Bring the open session onto the latest mainline: clean merges are applied, and each "
            "conflict is written into the file with conflict markers to resolve before landing.",
    "log": "Landed sessions, newest first: position, session, goal, author and files; optionally "
           "only those that touched a path.",
    "show": "One landing (by position number) or session (by id) as a document: goal, "
            "conversation, decisions with their rejected alternatives, iterations, and the diff.",
    "blame": "For each line of a file, the landed session that last changed it, with its goal "
             "(then call show on that session to read why).",
    "cat": "A file's content at a position (default: the working copy's position).",
    "ls": "The entries of a directory at a position (default: the top directory).",
    "search": "Find earlier sessions by what was said and decided: their goals, conversations, "
              "decisions, the alternatives they rejected, and the files they changed. Search before "
              "you decide something (a design, a library, an approach): an earlier session may have "
              "decided the same question, or rejected the option you are about to take, and why. "
              "Search before starting work, to find related sessions. Every word must match; "
              "\"a phrase\" in quotes; retr* matches words starting with retr. Each result names its "
              "session (and position, once landed) and the matching text: read it whole with show.",
}
READ_ONLY = frozenset({"status", "session_show", "session_list", "diff", "log", "show", "blame", "cat", "ls",
                       "search"})

# The resources: sessions and landings as documents a person or a model can read.
SESSIONS = "Open sessions and the latest landings, each with its hif:// address."
SESSION = "A session as a readable document: goal, conversation, decisions, iterations, changes."
LANDING = "A landing (position on the mainline) as a readable document: its session and diff."

# -- parameters the backends share -----------------------------------------------------------

Goal = Annotated[str, Field(description="What the session is for, in one sentence.")]
Text = Annotated[str, Field(description="The message, as said.")]
Role = Annotated[Literal["human", "agent"], Field(
    description="Who said or did it: \"human\" for the user, \"agent\" for you (the model).")]
Author = Annotated[str | None, Field(description="Who, by name (default: this server's user).")]
Decision = Annotated[str, Field(description="What was chosen.")]
Why = Annotated[str, Field(description="The reason that settled it.")]
Alternatives = Annotated[list[str], Field(
    description="Each option considered and rejected, one per item, with why not.")]
FilePath = Annotated[str, Field(description="A file path relative to the top of the repository.")]
Content = Annotated[str, Field(description="The whole new content of the file (UTF-8 text).")]
Note = Annotated[str, Field(description="What this iteration is.")]
Reason = Annotated[str, Field(description="Why the session is given up.")]
Ref = Annotated[str, Field(description="A position number (a landing) or a session id.")]
SessionId = Annotated[str | None, Field(description="A session id (default: the open session).")]
At = Annotated[int | None, Field(description="A position on the mainline (default: the current one).")]
Limit = Annotated[int, Field(ge=1, le=500, description="At most this many landings.")]
LogPath = Annotated[str | None, Field(description="Only landings that touched this file or directory.")]
Dir = Annotated[str, Field(description="A directory path ('' or '.' for the top).")]
Recursive = Annotated[bool, Field(description="Every file below the directory, not only its entries.")]
Stat = Annotated[bool, Field(description="Only the number of changed lines per file.")]
SearchText = Annotated[str, Field(
    description="The words to find (all must match); \"a phrase\" in quotes, retr* for a prefix.")]
SearchKinds = Annotated[list[Literal[KINDS]] | None, Field(  # type: ignore[valid-type]
    description="Only in these parts of a session: goal, conversation, decision (what was chosen and "
                "why), rejected (the alternatives turned down), path (changed files). Default: all.")]
SearchAuthor = Annotated[str | None, Field(description="Only sessions started by this author.")]
SearchRole = Annotated[Literal[ROLES] | None, Field(  # type: ignore[valid-type]
    description="Only sessions started by this role (imported: commits brought in from git).")]
SearchState = Annotated[Literal["landed", "open"] | None, Field(description="Only landed, or only open, sessions.")]
SearchLimit = Annotated[int, Field(ge=1, le=100, description="At most this many results.")]
Offset = Annotated[int, Field(ge=0, le=999, description="Skip this many results (the previous answer's next).")]
Model = Annotated[str | None, Field(
    description="Your model id, e.g. claude-sonnet-4-5, if you know it: recorded with the event, so a "
                "reader knows which model said or did it.")]

Doc = dict[str, Any]
log = logging.getLogger("hif.mcp")


def plain(value: Any) -> Any:
    """A JSON-ready copy of a document: object ids (bytes) as hex, tuples as lists."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def conflict_doc(e: ConflictError) -> Doc:
    """A landing refused for conflicts, as data: what a model needs to go on (sync, then land)."""
    return {"landed": False, "error": str(e), "conflicts": [c.to_json() for c in e.conflicts],
            "next": "call sync to merge the landed changes (conflicts get markers), resolve them, land again"}


# the provenance of the events the current tool call records (set by :func:`guarded`)
_origin: ContextVar[dict[str, str]] = ContextVar("hif_mcp_origin")
# the client's name as its transport knows it, for a request the protocol brings without one (a
# stateless HTTP server hears clientInfo only in the initialize request: node/mcp.py)
announced: ContextVar[str | None] = ContextVar("hif_mcp_announced", default=None)


def origin(model: str | None = None) -> dict[str, str]:
    """The provenance (hif.session.PROVENANCE) of an event the current tool call records: the MCP
    client's name as ``agent``, ``tool`` as ``mcp:<tool>``, and ``model`` when the model names it
    (checked: a bad one is refused with one line, before anything is recorded)."""
    return {**_origin.get({}), **check_provenance({"model": model})}


def caller_origin(ctx: Context, tool: str) -> dict[str, str]:
    """Who calls ``tool``: the client's name from its ``initialize`` (``clientInfo``; over HTTP, from
    each request's envelope when the client speaks the protocol without a handshake, else what the
    transport :data:`announced`), cleaned, not refused: the name is not the model's to fix, and a
    call must not fail for it."""
    try:
        params = ctx.session.client_params
    except ValueError:  # no request context (not over a transport)
        params = None
    name = clean_provenance(params.client_info.name if params is not None else announced.get())
    return {"tool": f"mcp:{tool}", **({"agent": name} if name else {})}


def tool_error(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def guarded(fn: Callable[..., Awaitable[Any]], tool: str, *, local: bool) -> Callable[..., Awaitable[Any]]:
    """Tool ``tool``: ``fn`` with the caller's provenance set for the events it records
    (:func:`origin`), whose deliberate errors come back as tool errors carrying the CLI's one line,
    and whose unexpected ones as one line too, never a traceback: on the user's own machine
    (``local``) naming the error as the CLI does, to a remote client only that it happened (the text
    may hold the server's details; the traceback goes to the server's log)."""

    @functools.wraps(fn)
    async def call(*args: Any, mcp_context: Context, **kwargs: Any) -> Any:
        token = _origin.set(caller_origin(mcp_context, tool))
        try:
            return plain(await fn(*args, **kwargs))
        except HifError as e:
            return tool_error(str(e))
        except Exception as e:  # the last line of defence, as the CLI's run_guarded
            if local:
                return tool_error(f"internal error: {type(e).__name__}: {e}")
            log.exception("MCP tool %s failed", fn.__name__)
            return tool_error("internal error (see the server's log)")
        finally:
            _origin.reset(token)

    # the SDK reads the signature (the tool's input schema) and injects the request's Context into
    # the parameter annotated with it: fn's parameters, plus that one (left out of the schema)
    # (annotations resolved here: they are strings in fn's module, which the SDK would not look in)
    sig = inspect.signature(fn, eval_str=True)
    extra = inspect.Parameter("mcp_context", inspect.Parameter.KEYWORD_ONLY, annotation=Context)
    call.__signature__ = sig.replace(parameters=[*sig.parameters.values(), extra])  # type: ignore[attr-defined]
    call.__annotations__ = {**typing.get_type_hints(fn, include_extras=True), "mcp_context": Context}
    return call


def readable(fn: Callable[..., Awaitable[str]]) -> Callable[..., Awaitable[str]]:
    """A resource whose hif errors reach the client as a resource error with their one line."""

    @functools.wraps(fn)
    async def read(*args: Any, **kwargs: Any) -> str:
        try:
            return await fn(*args, **kwargs)
        except NotFound as e:
            raise ResourceNotFoundError(str(e)) from None
        except HifError as e:
            raise ResourceError(str(e)) from None

    return read


@dataclass(frozen=True)
class Resource:
    """One resource (or template, when ``uri`` has ``{parameters}``) a backend serves."""

    uri: str
    name: str
    description: str
    read: Callable[..., Awaitable[str]]


def build_server(backend: Any, resources: list[Resource], *, name: str = "hif", local: bool = True) -> MCPServer:
    """An MCP server with every tool of :data:`TOOLS` that ``backend`` has a method for, and
    ``resources``; ``local`` for a server of the user's own working copy (see :func:`guarded`)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    server: MCPServer = MCPServer(name, instructions=INSTRUCTIONS, log_level="WARNING")
    # the SDK configures the root logger (logging.basicConfig): the process's logging stays its own
    root.handlers[:] = handlers
    root.setLevel(level)
    for tool, description in TOOLS.items():
        fn = getattr(backend, tool, None)
        if fn is None:
            continue
        server.add_tool(guarded(fn, tool, local=local), name=tool, description=description,
                        annotations=ToolAnnotations(read_only_hint=tool in READ_ONLY))
    for r in resources:
        server.resource(r.uri, name=r.name, description=r.description, mime_type="text/plain")(readable(r.read))
    return server

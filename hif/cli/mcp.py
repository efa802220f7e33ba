"""``hif mcp``: this working copy as an MCP server on stdio (:mod:`hif.mcp.local`)."""

from __future__ import annotations

from hif.cli.app import cli, repo
from hif.cli.output import fail
from hif.errors import HifError


@cli.command("mcp")
def mcp() -> None:
    """Serve this working copy to an MCP client (a coding agent) on stdin/stdout: its tools start,
    record and land sessions (say, decide, write, checkpoint, land...) and read history."""
    try:
        with repo() as r:  # refused here, with one line, outside a working copy
            root = r.root
    except HifError as e:
        fail(False, e)
    # the MCP SDK (pydantic, starlette, anyio): only this command loads it (start-up time)
    from hif.mcp.local import serve

    serve(root)

"""hif as an MCP server: the tools and resources a model is given (:mod:`hif.mcp.tools`), served
for a working copy over stdio (:mod:`hif.mcp.local`, ``hif mcp``) and by a forge node over streamable
HTTP (``node/mcp.py``). Both call the code the CLI and the HTTP API call; nothing here is a second
implementation of hif, only the words a model reads and the shape of the answers.

Importing this package imports the MCP SDK (pydantic, starlette): the ``hif`` command imports it
only in ``hif mcp``."""

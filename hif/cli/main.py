"""The ``hif`` command's full CLI (``hif.__main__`` answers a plain ``hif status`` before it): every
command module registered on the group, and the last line of defence against a traceback."""

from __future__ import annotations

from hif.cli import agents, history, interop, mcp, repos, search, server, sessions, working  # noqa: F401 - registers the commands
from hif.cli.app import cli
from hif.cli.output import run_guarded


def main() -> None:
    run_guarded(cli, "hif", "HIF_DEBUG")

"""The ``hif`` command's full CLI (``hif.__main__`` answers a plain ``hif status`` before it): every
command module registered on the group, and the last line of defence against a traceback."""

from __future__ import annotations

import os
import sys

import click

from hif.cli import history, interop, repos, sessions, working  # noqa: F401 - registers the commands
from hif.cli.app import cli


def main() -> None:
    try:
        cli(prog_name="hif")
    except Exception as e:  # the last line of defence: never a traceback to a user
        if os.environ.get("HIF_DEBUG"):
            raise
        click.echo(f"error: internal error: {type(e).__name__}: {e}", err=True)
        sys.exit(1)

"""The ``hif`` click group, the options several commands share, and the opened working copy."""

from __future__ import annotations

from pathlib import Path

import click

from hif.cli.output import note_finished_move
from hif.cli.progress import TransferBar
from hif.porcelain import Repository
from hif.session import ROLES


class _Opened:
    """``with repo(as_json) as r``: the working copy, with a progress bar on forge transfers."""

    def __init__(self, as_json: bool) -> None:
        self.bar = TransferBar() if TransferBar.wanted(as_json) else None
        self.repo: Repository | None = None

    def __enter__(self) -> Repository:
        self.repo = Repository.open(Path.cwd())
        self.repo.set_progress(self.bar)
        if self.repo.finished_move is not None:
            note_finished_move(self.repo.finished_move)
        return self.repo

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.repo is not None:
            self.repo.close()


def repo(as_json: bool = False) -> _Opened:
    return _Opened(as_json)


# "imported" is git import's own role: nobody says or decides as it by hand
role_option = click.option("--as", "role", type=click.Choice([r for r in ROLES if r != "imported"]), default=None,
                           help="Role of the author of this event (default: $HIF_ROLE or human).")
author_option = click.option("--author", default=None, help="Author name (default: $HIF_AUTHOR or the user).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="micelio", prog_name="hif")
def cli() -> None:
    """hif: version control that keeps why, not only what."""


remote_option = click.option("--remote", default=None,
                             help="Forge URL (default: the only forge you are logged in to).")



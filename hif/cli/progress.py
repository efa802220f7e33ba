"""Progress displays on stderr (rich, imported at the first report): object transfers with a forge
and commits of a git import. Only on a terminal, never with --json."""

from __future__ import annotations

import sys
from typing import Any

from hif.cli.output import size_text


class TransferBar:
    """Object transfers with a forge as a rich progress display on stderr. It appears at the first
    transfer (so commands that move nothing print nothing) and only on a terminal, never with --json."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    @staticmethod
    def wanted(as_json: bool) -> bool:
        return not as_json and sys.stderr.isatty()

    def __call__(self, direction: str, objects: int, nbytes: int) -> None:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"),
                TextColumn("{task.completed:,.0f} objects"), TextColumn("{task.fields[size]}"),
                TimeElapsedColumn(), console=Console(stderr=True), transient=True,
            )
            self._progress.start()
        task = self._tasks.get(direction)
        if task is None:
            label = "fetching" if direction == "fetch" else "sending"
            task = self._tasks[direction] = self._progress.add_task(label, total=None, size="", nbytes=0)
        done = self._progress.tasks[task].fields["nbytes"] + nbytes
        self._progress.update(task, advance=objects, nbytes=done, size=size_text(done))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class CommitBar:
    """Commits done of all, with commits/s, as a rich progress bar on stderr (a terminal only, never
    with --json); it appears at the first commit."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            class Rate(TextColumn):
                def render(self, task: Any) -> Any:
                    from rich.text import Text

                    return Text(f"{task.speed or 0:,.0f} commits/s")

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(""),
                TimeElapsedColumn(), console=Console(stderr=True), transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=total)
        self._progress.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None



"""The user-level API: ``hif.Repository`` over a working copy. The CLI is a thin shell around it.

:class:`Repository` is assembled from one class per topic, each in its module: the ground
(:mod:`~hif.porcelain.base`: opening, the coroutine runner, result types), the working copy
(:mod:`~hif.porcelain.workcopy`: status, diff, moves between positions), sessions
(:mod:`~hif.porcelain.sessions`: events, land, sync, check), history (:mod:`~hif.porcelain.history`)
and repositories made from elsewhere (:mod:`~hif.porcelain.clone`: clone, git interop, workspaces),
and search (:mod:`~hif.porcelain.search`: the why-search index of :mod:`hif.search`).
The working-copy half of ``hif check`` is :mod:`hif.porcelain.checks`, imported when a check runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hif.errors import NotARepository
from hif.porcelain.base import FileChange, MoveReport, Status, SyncResult
from hif.porcelain.clone import Cloning
from hif.porcelain.history import History
from hif.porcelain.search import Searching
from hif.porcelain.sessions import SessionHandle, Sessions

if TYPE_CHECKING:
    from hif.blame import BlameLine


class Repository(Sessions, History, Cloning, Searching):
    """A hif working copy and the repository it works on."""


__all__ = ["BlameLine", "FileChange", "MoveReport", "NotARepository", "Repository", "SessionHandle", "Status", "SyncResult"]

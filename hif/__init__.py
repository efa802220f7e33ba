"""hif: the version-control core of Micelio. Sessions, not commits: the goal, the conversation, the
decisions and every iteration of the files are kept."""

from __future__ import annotations

from hif.errors import HifError

TYPE_CHECKING = False  # not imported from typing, which a quick ``hif status`` does without
if TYPE_CHECKING:
    from hif.porcelain import Repository, SessionHandle

__all__ = ["HifError", "Repository", "SessionHandle"]


def __getattr__(name: str) -> object:
    """``hif.Repository`` and ``hif.SessionHandle`` on first use: importing any ``hif`` module (say
    ``hif.worktree.index`` for a quick ``hif status``) then does not load the whole SDK."""
    if name in ("Repository", "SessionHandle"):
        # the SDK loads on first use: a quick ``hif status`` imports hif without it (start-up time)
        from hif import porcelain

        return getattr(porcelain, name)
    raise AttributeError(f"module 'hif' has no attribute {name!r}")

"""hif: the version-control core of Micelio. Sessions, not commits: the goal, the conversation, the
decisions and every iteration of the files are kept."""

from hif.errors import HifError
from hif.porcelain import Repository, SessionHandle

__all__ = ["HifError", "Repository", "SessionHandle"]

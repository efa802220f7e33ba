"""Errors only the node raises; everything else is a :class:`hif.errors.HifError` with its status."""

from __future__ import annotations

from hif.errors import AuthRequired, HifError, InvalidInput, NotFound, PermissionDenied, TooLarge

__all__ = [
    "AuthRequired",
    "Busy",
    "Exists",
    "HifError",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
]


PayloadTooLarge = TooLarge  # one "too large" error for every layer (hif.errors.TooLarge)


class Exists(HifError):
    """A repository, organisation or user with that name already exists."""

    http_status = 409


class RateLimited(HifError):
    http_status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Busy(RateLimited):
    """The heavy-work pool (``node/heavy.py``: blame, diffs, highlighting) is full: come back in a
    moment."""

    http_status = 503

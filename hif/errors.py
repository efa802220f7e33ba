"""Every error hif raises on purpose. The CLI and the forge turn these into exit codes / HTTP statuses."""

from __future__ import annotations


class HifError(Exception):
    """Base of all deliberate hif errors; its message is one readable line for a user."""

    exit_code = 1
    http_status = 400
    session: str | None = None  # the open session it concerns, when the caller could not know its id

    @property
    def response_status(self) -> int:
        """The status an HTTP client is answered with: a lost conditional write (412 inside) is a
        conflict to the client (409), who did not send the precondition. The one place of that rule
        for every layer's error responses (node.wire, federation.routes, the UI)."""
        return 409 if self.http_status == 412 else self.http_status


class StoreError(HifError):
    """The object store failed or is unreachable (after retries)."""

    http_status = 503


class NotFound(HifError):
    """A key, object, position, session or path does not exist."""

    http_status = 404


class PreconditionFailed(StoreError):
    """A conditional write lost: put-if-absent on an existing key, or an if-match on a changed one."""

    http_status = 412


class CorruptObject(HifError):
    """An object's bytes do not match its hash or do not decode."""

    http_status = 422


class IndexDamaged(CorruptObject):
    """A derived index (the search index) does not read: its owner starts it anew from the store."""


class InvalidPath(HifError):
    """A repository path is unsafe or unrepresentable (``..``, absolute, empty component...)."""

    http_status = 422


class TooLarge(HifError):
    """Input over a documented size limit (a request body, an object's expanded size): refused while
    reading, before anything is kept. The one "too large" error of every layer (413 over HTTP)."""

    http_status = 413


class InvalidInput(HifError):
    """Anything else a user gave that cannot be accepted (empty goal, bad position...)."""

    http_status = 400


class BadQuery(InvalidInput):
    """A search query that cannot be read (an unclosed quote, a lone ``*``, too long): answered with
    what to change, never passed to the index as it is (400, exit 1)."""


class Ambiguous(InvalidInput):
    """A short id names more than one thing (a git commit prefix shared by several commits): the
    caller gives more characters; ``candidates`` lists what it could mean (409, exit 1)."""

    http_status = 409

    def __init__(self, message: str, candidates: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.candidates = candidates or []


class NotARepository(HifError):
    """The directory is not inside a hif working copy."""


class NoOpenSession(HifError):
    """A command needs an open session and there is none."""


class SessionClosed(HifError):
    """The session has already landed or been abandoned."""

    http_status = 409


class DirtyWorkingCopy(HifError):
    """An operation would overwrite changes that are not in a session."""

    http_status = 409


class WorkingCopyBusy(HifError):
    """Another live hif process is moving this working copy (it holds the move journal's lock)."""

    http_status = 409


class AuthRequired(HifError):
    """The forge wants credentials (none given, or the token is unknown, expired or revoked)."""

    exit_code = 4
    http_status = 401


class PermissionDenied(HifError):
    """The credentials are valid but do not allow this (scope, role, or an agent token's session)."""

    exit_code = 4
    http_status = 403


class ServerRefused(HifError):
    """The warm command server may not be used: its socket directory is not this user's and private,
    its socket is not a socket, or the server turned the command down. Commands then run without it;
    ``hif server status`` says why."""


class RemoteError(HifError):
    """The forge could not be reached or answered something hif cannot use."""

    http_status = 502


class ConflictError(HifError):
    """Landing found true overlaps with sessions landed since the session's base."""

    exit_code = 3
    http_status = 409

    def __init__(self, conflicts: list[Conflict]) -> None:
        self.conflicts = conflicts
        paths = ", ".join(sorted({c.path for c in conflicts}))
        super().__init__(f"conflict with landed sessions on: {paths}")


class Conflict:
    """One conflicting path and the landed sessions (with positions) that changed it."""

    __slots__ = ("path", "sessions", "reason")

    def __init__(self, path: str, sessions: list[tuple[int, str]], reason: str) -> None:
        self.path = path
        self.sessions = sessions
        self.reason = reason

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "reason": self.reason,
            "sessions": [{"position": p, "session": s} for p, s in self.sessions],
        }

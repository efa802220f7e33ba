"""Every error federation raises on purpose, in one place: each is a ``hif.errors`` type (what it is
to a client: its HTTP status), named for what went wrong between nodes. The routes turn them into
responses through :attr:`hif.errors.HifError.response_status`."""

from __future__ import annotations

from hif.errors import (
    AuthRequired,
    HifError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    RemoteError,
    TooLarge,
)


class MalformedJSON(InvalidInput):
    """A JSON body that does not parse or is nested deeper / holds more items than allowed."""


class BadSignature(AuthRequired):
    """The request is unsigned, badly signed, stale or replayed (HTTP 401)."""


class Refused(PermissionDenied):
    """The operator's policy forbids this address or domain."""


class UnknownHost(NotFound):
    """DNS answered that the host does not exist (NXDOMAIN): retrying cannot help."""


class AnswerTooLarge(RemoteError):
    """A peer's answer was longer than the cap for its kind (a fault of the peer: 502)."""


class Busy(HifError):
    """Too many lookups in flight (for one host, one address or in all): try again shortly (HTTP
    503 with Retry-After). Our own saturation, never cached as a failure of the peer."""

    http_status = 503
    retry_after = 5


class PoolFull(RemoteError):
    """Every connection of one of our pools was in use for the whole wait: our saturation, not the
    peer's fault (HTTP 503 with Retry-After, never cached as the peer's failure). A
    :class:`RemoteError`, so a delivery retries it like any unreachable peer."""

    http_status = 503
    retry_after = 5


class PeerError(RemoteError):
    """A peer answered with an error status or could not be reached; ``status`` is its HTTP status
    (0: not reached), which decides whether trying again can help."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class DeliveryFailed(PeerError):
    """A peer refused or failed a delivery."""


class MirrorConflict(HifError):
    """An envelope claims a position the mirror holds with other bytes (HTTP 409)."""

    http_status = 409


class MirrorStuck(HifError):
    """A position could not be applied: the mirror stays before it (every later one waits) until it
    can. The message says which and why; it is kept in the mirror's ``sync`` record for the operator
    (``micelio federation status``, the mirror's pages). The status is the cause's."""

    def __init__(self, position: int, cause: HifError) -> None:
        super().__init__(f"position {position} could not be applied: {cause}")
        self.position = position
        self.http_status = cause.http_status


class TooManyOffers(HifError):
    """A remote actor or host has too many offers waiting, or sent too many lately (HTTP 429: the
    offering node retries later, when maintainers have reviewed some)."""

    http_status = 429


class OfferTooLarge(TooLarge):
    """An offered bundle is larger than the most this node takes (HTTP 413: the offering node
    stops)."""

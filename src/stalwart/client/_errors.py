"""Errors of the KV client, all under :class:`stalwart.errors.StalwartError`."""

from __future__ import annotations

from stalwart.errors import DeadlineExceededError, StalwartError, UnavailableError


class KVError(StalwartError):
    """Base of the errors the KV client raises on purpose."""


class KVTimeoutError(DeadlineExceededError, KVError):
    """The call did not finish within its timeout. A write's outcome is unknown."""


class KVUnavailableError(UnavailableError, KVError):
    """No node could serve the call within the retry budget (none reachable, or no leader)."""


class KVOutcomeUnknownError(UnavailableError, KVError):
    """The client gave up on a write it had sent: it may or may not have been applied.

    Raised instead of :class:`KVUnavailableError` once an attempt of the write may have reached
    a leader (sent on a connection that then dropped or went silent, or answered ``unknown``).
    Retrying with a new call is a new write; read the key to learn what happened.
    """


class KVRequestError(KVError):
    """The cluster refused the request as malformed or out of bounds; nothing changed."""


class KVCompactedError(KVError):
    """A watch asked for revisions older than the bounded history the store keeps."""

    def __init__(self, since_revision: int, compacted_revision: int) -> None:
        super().__init__(
            f"revisions after {since_revision} are no longer kept (history compacted through "
            f"{compacted_revision}); re-read the keys and watch from their revision"
        )
        self.since_revision = since_revision
        self.compacted_revision = compacted_revision


class ConnectionLostError(KVUnavailableError):
    """The connection closed while a request was in flight (internal: the client retries)."""


__all__ = [
    "ConnectionLostError",
    "KVCompactedError",
    "KVError",
    "KVOutcomeUnknownError",
    "KVRequestError",
    "KVTimeoutError",
    "KVUnavailableError",
]

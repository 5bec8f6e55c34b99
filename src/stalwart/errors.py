"""The one error hierarchy of stalwart.

Every error that stalwart raises on purpose is a :class:`StalwartError`. Subpackages add their
own subclasses next to their code (for example ``stalwart.lock.LockLost``); the ones here are
shared by several packages.

Naming follows h11: a *local* error means this side refused to do something (a bad request, a
wrong configuration); a *remote* error means the other side sent something we cannot accept.
"""

from __future__ import annotations


class StalwartError(Exception):
    """Root of every error stalwart raises on purpose."""


class ConfigError(StalwartError):
    """The configuration is wrong: a bad option, a missing file, an impossible combination."""


class DecodeError(StalwartError):
    """Bytes from outside could not be decoded into a valid message or record.

    Raised for unknown type tags, wrong field types, out-of-bound sizes, truncated data and
    trailing bytes. Decoders never raise anything else on bad input.
    """


class FrameTooLargeError(DecodeError):
    """A frame header announced more bytes than the configured limit; nothing was buffered."""

    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(f"frame of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class AuthenticationError(StalwartError):
    """A peer or client failed authentication (wrong or missing cluster key)."""


class StorageError(StalwartError):
    """Stable storage failed or was used wrongly."""


class CorruptionError(StorageError):
    """Stored data is damaged somewhere other than a torn tail; refusing to serve it.

    ``path`` and ``offset`` say exactly where the first bad byte was found.
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class ProtocolError(StalwartError):
    """A protocol refused a request; raised before any state changed."""


class NotLeaderError(ProtocolError):
    """This node cannot serve the request because it is not the leader.

    ``leader_hint`` names the node believed to lead, or ``None`` when unknown.
    """

    def __init__(self, leader_hint: str | None) -> None:
        hint = f"; try {leader_hint}" if leader_hint is not None else "; leader unknown"
        super().__init__(f"not the leader{hint}")
        self.leader_hint = leader_hint


class UnavailableError(StalwartError):
    """The service could not be reached or could not make progress in time."""


class DeadlineExceededError(UnavailableError):
    """An operation did not finish within its deadline; its outcome may be unknown."""


class RemoteProtocolError(StalwartError):
    """A peer or server answered something that does not follow its protocol (garbage)."""


__all__ = [
    "AuthenticationError",
    "ConfigError",
    "CorruptionError",
    "DeadlineExceededError",
    "DecodeError",
    "FrameTooLargeError",
    "NotLeaderError",
    "ProtocolError",
    "RemoteProtocolError",
    "StalwartError",
    "StorageError",
    "UnavailableError",
]

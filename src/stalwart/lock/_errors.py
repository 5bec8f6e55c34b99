"""Typed errors of stalwart.lock, all rooted at :class:`stalwart.errors.StalwartError`."""

from __future__ import annotations

from stalwart.errors import DeadlineExceededError, RemoteProtocolError, StalwartError, UnavailableError


class LockError(StalwartError):
    """A lock operation was refused or misused (for example releasing a lock twice)."""


class LockLost(LockError):
    """The lease behind a held lock could not be kept; the holder must stop acting on it."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"lock {name!r} lost: {reason}")
        self.name = name
        self.reason = reason


class NotAcquired(LockError):
    """A non-blocking or bounded acquisition did not get the lock; nothing is held."""

    def __init__(self, name: str, reason: str = "held by another owner") -> None:
        super().__init__(f"lock {name!r} not acquired: {reason}")
        self.name = name
        self.reason = reason


class LockTimeout(NotAcquired, DeadlineExceededError):
    """The lock was not acquired within the caller's timeout; nothing is held."""


class StaleToken(LockError):
    """A fenced write carried a token lower than the highest the resource has already seen."""

    def __init__(self, resource: str, token: int, highest: int) -> None:
        super().__init__(f"fenced write to {resource!r} rejected: token {token} < highest seen {highest}")
        self.resource = resource
        self.token = token
        self.highest = highest


class BackendError(LockError):
    """The lock server failed: unreachable, closed the connection, or answered garbage."""


class BackendUnavailable(BackendError, UnavailableError):
    """The lock server could not be reached or did not answer in time (every call is bounded)."""


class BackendProtocolError(BackendError, RemoteProtocolError):
    """The lock server answered something that is not a valid reply (garbage or wrong type)."""


__all__ = [
    "BackendError",
    "BackendProtocolError",
    "BackendUnavailable",
    "LockError",
    "LockLost",
    "LockTimeout",
    "NotAcquired",
    "StaleToken",
]

"""Errors raised by the clocks package."""

from __future__ import annotations

from stalwart.errors import StalwartError


class ClockError(StalwartError):
    """A clock refused an operation (bad input or an exhausted counter); nothing changed."""


class ClockOffsetError(ClockError):
    """A remote hybrid-logical timestamp is further ahead of local physical time than allowed.

    Accepting it would drag this node's clock (and every clock it talks to) into the future, so
    the update is refused before any state changes. ``ahead_ms`` is how far ahead it was.
    """

    def __init__(self, remote_wall_ms: int, physical_time_ms: int, max_offset_ms: int) -> None:
        ahead_ms = remote_wall_ms - physical_time_ms
        super().__init__(
            f"remote timestamp is {ahead_ms} ms ahead of local physical time "
            f"(limit {max_offset_ms} ms): refusing it"
        )
        self.remote_wall_ms = remote_wall_ms
        self.physical_time_ms = physical_time_ms
        self.max_offset_ms = max_offset_ms
        self.ahead_ms = ahead_ms


class InvalidReplicaError(StalwartError, ValueError):
    """A replica or node id is not a non-empty string."""

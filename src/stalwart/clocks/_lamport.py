"""Lamport clocks (Lamport 1978): a scalar consistent with happened-before."""

from __future__ import annotations

from dataclasses import dataclass

from stalwart.clocks import _codec as c
from stalwart.clocks._errors import ClockError

MAX_LAMPORT = 2**63 - 1  # a limit on everything: the counter never wraps silently


@dataclass(frozen=True, slots=True, order=True)
class LamportTimestamp:
    """A Lamport time made total by a node id tiebreak: compare as ``(time, node)``."""

    time: int
    node: str


class LamportClock:
    """``tick`` before a local event or send; ``receive(t)`` when a message stamped ``t`` arrives.

    If event a happened before event b then ``stamp(a) < stamp(b)``; the converse does not hold
    (use a vector clock to detect concurrency).
    """

    __slots__ = ("_node", "_time")

    def __init__(self, node: str, time: int = 0) -> None:
        self._node = c.check_replica(node)
        if type(time) is not int or not 0 <= time <= MAX_LAMPORT:
            raise ClockError(f"Lamport time must be an int in [0, {MAX_LAMPORT}], got {time!r}")
        self._time = time

    @property
    def time(self) -> int:
        return self._time

    @property
    def node(self) -> str:
        return self._node

    def tick(self) -> LamportTimestamp:
        if self._time >= MAX_LAMPORT:
            raise ClockError("Lamport clock exhausted")
        self._time += 1
        return LamportTimestamp(self._time, self._node)

    def receive(self, remote_time: int) -> LamportTimestamp:
        """Observe a remote time and tick past it."""
        if type(remote_time) is not int or not 0 <= remote_time < MAX_LAMPORT:
            raise ClockError(f"remote Lamport time must be an int in [0, {MAX_LAMPORT}), got {remote_time!r}")
        self._time = max(self._time, remote_time)
        return self.tick()

    def __repr__(self) -> str:
        return f"LamportClock({self._node!r}, time={self._time})"

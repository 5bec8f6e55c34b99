"""Hybrid logical clocks (Kulkarni, Demirbas, Madappa, Avva, Leone 2014).

An HLC timestamp ``(wall_ms, logical)`` stays within the clock offset of physical time, yet
respects happened-before like a Lamport clock. Physical time is passed in (the package is pure).
A ``max_offset_ms`` guard refuses a remote timestamp further ahead of local physical time than
the cluster's bounded clock offset: a node with a runaway clock cannot drag the cluster forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from stalwart.clocks import _codec as c
from stalwart.clocks._errors import ClockError, ClockOffsetError

MAX_LOGICAL = 2**31 - 1  # as CockroachDB: the logical counter fits 32 bits or the clock refuses
MAX_WALL_MS = 2**62


@dataclass(frozen=True, slots=True, order=True)
class HLCTimestamp:
    """Totally ordered as ``(wall_ms, logical, node)``: ``node`` is the deterministic tiebreak."""

    wall_ms: int
    logical: int
    node: str

    def __post_init__(self) -> None:
        if type(self.wall_ms) is not int or not 0 <= self.wall_ms <= MAX_WALL_MS:
            raise ClockError(f"wall_ms must be an int in [0, {MAX_WALL_MS}], got {self.wall_ms!r}")
        if type(self.logical) is not int or not 0 <= self.logical <= MAX_LOGICAL:
            raise ClockError(f"logical must be an int in [0, {MAX_LOGICAL}], got {self.logical!r}")
        if not isinstance(self.node, str) or not self.node:
            raise ClockError("node must be a non-empty str")

    def encode(self) -> list[object]:
        return [self.wall_ms, self.logical, self.node]

    @classmethod
    def decode(cls, raw: object) -> Self:
        wall, logical, node = c.fixed(raw, 3, "HLCTimestamp")
        return cls(
            c.int_in(wall, "wall_ms", 0, MAX_WALL_MS),
            c.int_in(logical, "logical", 0, MAX_LOGICAL),
            c.text(node, "HLC node"),
        )

    def to_bytes(self) -> bytes:
        return c.pack(604, 1, self.encode())

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        return cls.decode(c.unpack(data, 604, frozenset({1}), "HLCTimestamp")[1])


class HybridLogicalClock:
    """One node's HLC. ``now(pt)`` for a local event or send, ``update(remote, pt)`` on receive.

    Guarantees: timestamps this clock issues strictly increase; ``update`` returns a timestamp
    greater than ``remote``; ``wall_ms`` never exceeds the largest physical time seen
    (local, or remote within ``max_offset_ms``).
    """

    __slots__ = ("_logical", "_max_offset_ms", "_node", "_wall_ms")

    def __init__(self, node: str, max_offset_ms: int = 500) -> None:
        self._node = c.check_replica(node)
        if type(max_offset_ms) is not int or max_offset_ms < 0:
            raise ClockError(f"max_offset_ms must be a non-negative int, got {max_offset_ms!r}")
        self._max_offset_ms = max_offset_ms
        self._wall_ms = 0
        self._logical = 0

    @property
    def last(self) -> HLCTimestamp:
        return HLCTimestamp(self._wall_ms, self._logical, self._node)

    @property
    def max_offset_ms(self) -> int:
        return self._max_offset_ms

    def now(self, physical_time_ms: int) -> HLCTimestamp:
        """A timestamp for a local event or send at local physical time ``physical_time_ms``."""
        _check_pt(physical_time_ms)
        if physical_time_ms > self._wall_ms:
            wall, logical = physical_time_ms, 0
        else:
            wall, logical = self._wall_ms, self._logical + 1
        return self._commit(wall, logical)

    def update(self, remote: HLCTimestamp, physical_time_ms: int) -> HLCTimestamp:
        """Observe ``remote`` (a receive) at local physical time ``physical_time_ms``.

        Raises :class:`ClockOffsetError` (and changes nothing) when ``remote.wall_ms`` is more
        than ``max_offset_ms`` ahead of ``physical_time_ms``.
        """
        _check_pt(physical_time_ms)
        if remote.wall_ms - physical_time_ms > self._max_offset_ms:
            raise ClockOffsetError(remote.wall_ms, physical_time_ms, self._max_offset_ms)
        wall = max(self._wall_ms, remote.wall_ms, physical_time_ms)
        if wall == self._wall_ms == remote.wall_ms:
            logical = max(self._logical, remote.logical) + 1
        elif wall == self._wall_ms:
            logical = self._logical + 1
        elif wall == remote.wall_ms:
            logical = remote.logical + 1
        else:
            logical = 0
        out = self._commit(wall, logical)
        assert (out.wall_ms, out.logical) > (remote.wall_ms, remote.logical)  # why: receive after send
        return out

    def _commit(self, wall: int, logical: int) -> HLCTimestamp:
        if logical > MAX_LOGICAL:
            raise ClockError("HLC logical counter exhausted: physical time is not advancing")
        before = (self._wall_ms, self._logical)
        self._wall_ms, self._logical = wall, logical
        # Why: monotonicity is the property every user of the clock relies on.
        assert (wall, logical) > before
        return HLCTimestamp(wall, logical, self._node)

    def __repr__(self) -> str:
        return f"HybridLogicalClock({self._node!r}, last=({self._wall_ms}, {self._logical}))"


def _check_pt(physical_time_ms: int) -> None:
    if type(physical_time_ms) is not int or not 0 <= physical_time_ms <= MAX_WALL_MS:
        raise ClockError(f"physical_time_ms must be an int in [0, {MAX_WALL_MS}], got {physical_time_ms!r}")

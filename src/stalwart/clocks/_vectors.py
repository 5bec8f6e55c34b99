"""Vector clocks and version vectors: one counter per node, compared pointwise."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from typing import ClassVar, Self

from stalwart.clocks import _codec as c
from stalwart.clocks._errors import ClockError

Dot = tuple[str, int]
"""One event: ``(replica, counter)``; the counter-th event of that replica (counters start at 1)."""

MAX_VECTOR_ENTRIES = 65_536  # decode limit: a vector with more nodes than this is refused


class Ordering(enum.Enum):
    """How two vectors relate under the happened-before partial order."""

    BEFORE = "before"  # every entry <=, at least one <
    AFTER = "after"
    EQUAL = "equal"
    CONCURRENT = "concurrent"  # each has an entry greater than the other's


class _CounterVector:
    """An immutable map node -> counter; absent entries are 0 (zeros are never stored)."""

    __slots__ = ("_entries",)
    _TAG: ClassVar[int]
    _WHAT: ClassVar[str]

    def __init__(self, entries: Mapping[str, int] | None = None) -> None:
        clean: dict[str, int] = {}
        for node, count in (entries or {}).items():
            c.check_replica(node)
            if type(count) is not int or count < 0:
                raise ClockError(f"{self._WHAT}: counter for {node!r} must be a non-negative int")
            if count:
                clean[node] = count
        self._entries = clean

    @classmethod
    def _trusted(cls, entries: dict[str, int]) -> Self:
        out = cls.__new__(cls)
        out._entries = entries
        return out

    def __getitem__(self, node: str) -> int:
        return self._entries.get(node, 0)

    def get(self, node: str) -> int:
        return self._entries.get(node, 0)

    def items(self) -> Iterator[tuple[str, int]]:
        return iter(sorted(self._entries.items()))

    def as_dict(self) -> dict[str, int]:
        return dict(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def increment(self, node: str) -> Self:
        """A new vector with ``node``'s counter one higher."""
        c.check_replica(node)
        entries = dict(self._entries)
        entries[node] = entries.get(node, 0) + 1
        return self._trusted(entries)

    def merge(self, other: Self) -> Self:
        """The pointwise maximum (the least upper bound)."""
        entries = dict(self._entries)
        for node, count in other._entries.items():
            if count > entries.get(node, 0):
                entries[node] = count
        return self._trusted(entries)

    def compare(self, other: Self) -> Ordering:
        less = greater = False
        for node in self._entries.keys() | other._entries.keys():
            a, b = self._entries.get(node, 0), other._entries.get(node, 0)
            less = less or a < b
            greater = greater or a > b
        if less and greater:
            return Ordering.CONCURRENT
        if less:
            return Ordering.BEFORE
        return Ordering.AFTER if greater else Ordering.EQUAL

    def descends(self, other: Self) -> bool:
        """True when this vector has seen everything ``other`` has (``other <= self``)."""
        return all(self._entries.get(n, 0) >= k for n, k in other._entries.items())

    def concurrent(self, other: Self) -> bool:
        return self.compare(other) is Ordering.CONCURRENT

    def __le__(self, other: Self) -> bool:
        return other.descends(self)

    def __lt__(self, other: Self) -> bool:
        return self.compare(other) is Ordering.BEFORE

    def prune(self, node: str) -> Self:
        """Drop ``node``'s entry. Safe only once no vector it will be compared with still
        carries that entry (the node left and every replica has seen its final events)."""
        entries = dict(self._entries)
        entries.pop(node, None)
        return self._trusted(entries)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._entries == other._entries

    def __hash__(self) -> int:
        return hash(frozenset(self._entries.items()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.items())!r})"

    def to_bytes(self) -> bytes:
        return c.pack(self._TAG, 1, [[n, k] for n, k in self.items()])

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        _, body = c.unpack(data, cls._TAG, frozenset({1}), cls._WHAT)
        return cls._trusted(decode_counts(body, cls._WHAT))


def decode_counts(body: object, what: str) -> dict[str, int]:
    """Decode ``[[node, positive count], ...]`` with unique nodes."""
    out: dict[str, int] = {}
    for pair in c.seq(body, what, MAX_VECTOR_ENTRIES):
        node, count = c.fixed(pair, 2, f"{what} entry")
        node = c.text(node, f"{what} node")
        if node in out:
            raise c.DecodeError(f"{what}: duplicate node {node!r}")
        out[node] = c.int_in(count, f"{what} counter", 1)
    return out


class VectorClock(_CounterVector):
    """A vector clock over events (Fidge/Mattern): ``tick`` on a local event or a send,
    ``receive`` on a delivery; ``compare`` tells happened-before from concurrent."""

    __slots__ = ()
    _TAG = 601
    _WHAT = "VectorClock"

    def tick(self, node: str) -> VectorClock:
        return self.increment(node)

    def receive(self, node: str, remote: VectorClock) -> VectorClock:
        """The clock after ``node`` delivers a message stamped ``remote``."""
        return self.merge(remote).increment(node)


class VersionVector(_CounterVector):
    """A version vector over replicas' updates: entry ``r: n`` means updates ``(r, 1..n)`` seen."""

    __slots__ = ()
    _TAG = 602
    _WHAT = "VersionVector"

    def contains(self, dot: Dot) -> bool:
        """Has this vector seen event ``dot``?"""
        return 0 < dot[1] <= self._entries.get(dot[0], 0)

    def next_dot(self, replica: str) -> Dot:
        """The dot ``replica``'s next update gets."""
        return (replica, self._entries.get(replica, 0) + 1)

    def add_dot(self, dot: Dot) -> VersionVector:
        """The vector with ``dot`` included; it must extend its replica's entry contiguously."""
        node, n = dot
        if n > self._entries.get(node, 0) + 1:
            raise ClockError(f"dot {dot!r} leaves a gap after {self._entries.get(node, 0)}")
        if n <= self._entries.get(node, 0):
            return self
        entries = dict(self._entries)
        entries[node] = n
        return self._trusted(entries)

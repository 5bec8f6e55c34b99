"""Dotted version vectors (Preguiça, Baquero, Almeida et al. 2010/2012) and DVV sets.

A :class:`DottedVersionVector` names one write precisely: its own ``dot`` plus the causal
``context`` the writer had seen. A :class:`DVVSet` is the server-side sibling store for one key
in a multi-master store: it keeps exactly the values not superseded by a later write, so
concurrent writes are kept as siblings and nothing stale survives.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from stalwart.clocks import _codec as c
from stalwart.clocks._errors import ClockError
from stalwart.clocks._vectors import Dot, Ordering, VersionVector, decode_counts

V = TypeVar("V")

MAX_SIBLINGS = 4_096  # decode limit; riak-style sibling explosion is a modelling bug, not data


@dataclass(frozen=True, slots=True)
class DottedVersionVector:
    """One version: ``dot`` (the write itself) and ``context`` (what its writer had seen)."""

    dot: Dot
    context: VersionVector

    def __post_init__(self) -> None:
        c.check_replica(self.dot[0])
        if type(self.dot[1]) is not int or self.dot[1] < 1:
            raise ClockError(f"dot counter must be a positive int, got {self.dot[1]!r}")

    def covers(self, dot: Dot) -> bool:
        return dot == self.dot or self.context.contains(dot)

    def compare(self, other: DottedVersionVector) -> Ordering:
        """BEFORE when ``other``'s writer had seen this write, AFTER for the converse."""
        if self.dot == other.dot:
            return Ordering.EQUAL
        if other.context.contains(self.dot):
            return Ordering.BEFORE
        if self.context.contains(other.dot):
            return Ordering.AFTER
        return Ordering.CONCURRENT


class DVVSet(Generic[V]):
    """The siblings of one key and the causal context they cover.

    Invariant: every sibling's dot is covered by ``context`` (dots per server are contiguous:
    a dot below a server's counter that is not a sibling was superseded). A write needs only
    the context the client read (``context`` of a previous read) to drop exactly the siblings
    it had seen.
    """

    __slots__ = ("_context", "_siblings")

    def __init__(self) -> None:
        self._context = VersionVector()
        self._siblings: dict[Dot, V] = {}

    @property
    def context(self) -> VersionVector:
        """What a client reading now has seen; pass it back with its next write."""
        return self._context

    def values(self) -> list[V]:
        """The siblings' values, oldest dot first within a server, servers in name order."""
        return [self._siblings[d] for d in sorted(self._siblings)]

    def siblings(self) -> Iterator[tuple[DottedVersionVector, V]]:
        for dot in sorted(self._siblings):
            yield DottedVersionVector(dot, self._context), self._siblings[dot]

    def __len__(self) -> int:
        return len(self._siblings)

    def update(self, server: str, client_context: VersionVector, value: V) -> DottedVersionVector:
        """Coordinate a write at ``server``: drop the siblings the client had seen, add this one."""
        c.check_replica(server)
        if not self._context.descends(client_context):
            raise ClockError("client context is ahead of this replica: it read from elsewhere; sync first")
        dot = self._context.next_dot(server)
        self._siblings = {d: v for d, v in self._siblings.items() if not client_context.contains(d)}
        self._siblings[dot] = value
        self._context = self._context.add_dot(dot)
        # Why: the causal context must cover every live sibling, or a sync could resurrect one.
        assert all(self._context.contains(d) for d in self._siblings)
        return DottedVersionVector(dot, client_context)

    def sync(self, other: DVVSet[V]) -> None:
        """Join another replica's set into this one (commutative, associative, idempotent)."""
        keep = {
            d: v for d, v in self._siblings.items() if d in other._siblings or not other._context.contains(d)
        }
        for d, v in other._siblings.items():
            if d not in self._siblings and not self._context.contains(d):
                keep[d] = v
        self._siblings = keep
        self._context = self._context.merge(other._context)
        assert all(self._context.contains(d) for d in self._siblings)

    def copy(self) -> DVVSet[V]:
        out: DVVSet[V] = DVVSet()
        out._context = self._context
        out._siblings = dict(self._siblings)
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DVVSet) and (self._context, self._siblings) == (
            other._context,
            other._siblings,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"DVVSet(context={self._context!r}, values={self.values()!r})"

    def to_bytes(self) -> bytes:
        """Encode (sibling values must be atoms: None, bool, int, float, str, bytes, tuple)."""
        for v in self._siblings.values():
            c.check_atom(v, "DVVSet value")
        sibs = [[d[0], d[1], v] for d, v in sorted(self._siblings.items())]
        return c.pack(603, 1, [[[n, k] for n, k in self._context.items()], sibs])

    @classmethod
    def from_bytes(cls, data: bytes) -> DVVSet[Any]:
        _, body = c.unpack(data, 603, frozenset({1}), "DVVSet")
        raw_ctx, raw_sibs = c.fixed(body, 2, "DVVSet")
        ctx = VersionVector._trusted(decode_counts(raw_ctx, "DVVSet context"))
        out: DVVSet[Any] = DVVSet()
        out._context = ctx
        for item in c.seq(raw_sibs, "DVVSet siblings", MAX_SIBLINGS):
            node, n, value = c.fixed(item, 3, "DVVSet sibling")
            dot = (c.text(node, "sibling node"), c.int_in(n, "sibling counter", 1))
            if dot in out._siblings or not ctx.contains(dot):
                raise c.DecodeError(f"DVVSet: sibling {dot!r} duplicated or outside the context")
            out._siblings[dot] = c.atom(value, "DVVSet value")
        return out

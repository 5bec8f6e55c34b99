"""Counters: G-Counter, PN-Counter, and a bounded (non-negative) counter.

Pruning (G/PN): ``heir.prune(departed)`` folds the departed replica's entries into the heir's
own and records ``departed`` as pruned; every replica that merges that delta drops the departed
entries and ignores them forever after. Safe only when (1) the departed replica will never
update again, (2) the heir has already merged the departed replica's final state, and
(3) exactly one replica prunes a given departed replica. Otherwise increments are lost
(1, 2) or counted twice (3). The pruned set costs one id per departed replica.
"""

from __future__ import annotations

from typing import Self

from stalwart.clocks import _codec as c
from stalwart.clocks._vectors import MAX_VECTOR_ENTRIES, decode_counts
from stalwart.crdt._base import CRDT, amount
from stalwart.crdt._errors import InsufficientRightsError, InvalidOperationError


def _join_counts(mine: dict[str, int], theirs: dict[str, int], pruned: set[str]) -> None:
    for r, n in theirs.items():
        if n > mine.get(r, 0) and r not in pruned:
            mine[r] = n


def _decode_pruned(raw: object) -> set[str]:
    items = c.seq(raw, "pruned replicas", MAX_VECTOR_ENTRIES)
    return set(c.unique([c.text(r, "pruned replica") for r in items], "pruned replicas"))


class _Counter(CRDT):
    """Shared machinery: named count vectors (``P``, ``N``) and the pruned-replica set."""

    __slots__ = ("_pruned", "_vecs")
    _VECTORS: tuple[str, ...] = ("p",)

    def __init__(self, replica: str) -> None:
        super().__init__(replica)
        self._vecs: tuple[dict[str, int], ...] = tuple({} for _ in self._VECTORS)
        self._pruned: set[str] = set()

    def _delta(self, vecs: tuple[dict[str, int], ...], pruned: set[str] | None = None) -> Self:
        out = self.__class__.__new__(self.__class__)
        out._replica = self._replica
        out._vecs = vecs
        out._pruned = pruned or set()
        return out

    def _bump(self, which: int, n: int) -> Self:
        if self._replica in self._pruned:
            raise InvalidOperationError(f"replica {self._replica!r} was pruned and may not act again")
        if amount(n) == 0:  # zero entries are never stored (canonical states compare equal)
            return self._delta(tuple({} for _ in self._vecs))
        vec = self._vecs[which]
        vec[self._replica] = vec.get(self._replica, 0) + n
        delta_vecs = tuple(
            ({self._replica: vec[self._replica]} if i == which else {}) for i in range(len(self._vecs))
        )
        return self._delta(delta_vecs)

    def _merge(self, other: Self) -> None:
        newly = other._pruned - self._pruned
        self._pruned |= newly
        for mine, theirs in zip(self._vecs, other._vecs, strict=True):
            for r in newly:
                mine.pop(r, None)
            _join_counts(mine, theirs, self._pruned)

    def prune(self, departed: str) -> Self:
        """Fold ``departed``'s counts into this replica's and forget it (see module docstring)."""
        c.check_replica(departed)
        if departed == self._replica:
            raise InvalidOperationError("a replica cannot prune itself; another replica is the heir")
        if self._replica in self._pruned:
            raise InvalidOperationError(f"replica {self._replica!r} was pruned and may not act again")
        me = self._replica
        for vec in self._vecs:
            moved = vec.pop(departed, 0)
            if moved:
                vec[me] = vec.get(me, 0) + moved
        self._pruned.add(departed)
        return self._delta(tuple({me: v[me]} if me in v else {} for v in self._vecs), {departed})

    @property
    def pruned(self) -> frozenset[str]:
        return frozenset(self._pruned)

    def forget_pruned(self, departed: str) -> None:
        """Drop the pruned marker for ``departed`` (local; not a delta). Safe only once no state
        or delta still carrying the departed replica's counts can arrive here any more."""
        self._pruned.discard(departed)

    def _state(self) -> object:
        return (self._vecs, self._pruned)

    def copy(self) -> Self:
        return self._delta(tuple(dict(v) for v in self._vecs), set(self._pruned))

    def is_bottom(self) -> bool:
        return not self._pruned and not any(self._vecs)

    def _encode(self) -> object:
        return [[[r, n] for r, n in sorted(v.items())] for v in self._vecs] + [sorted(self._pruned)]

    @classmethod
    def _decode(cls, replica: str, body: object) -> Self:
        items = c.fixed(body, len(cls._VECTORS) + 1, cls.__name__)
        out = cls(replica)
        out._vecs = tuple(decode_counts(raw, f"{cls.__name__} counts") for raw in items[:-1])
        out._pruned = _decode_pruned(items[-1])
        if any(r in out._pruned for v in out._vecs for r in v):
            raise c.DecodeError(f"{cls.__name__}: a pruned replica still has a count")
        return out


class GCounter(_Counter):
    """Grow-only counter. State: one count per replica (O(replicas)); delta: one entry."""

    __slots__ = ()
    _TAG = 610

    @property
    def value(self) -> int:
        return sum(self._vecs[0].values())

    def increment(self, n: int = 1) -> GCounter:
        return self._bump(0, n)


class PNCounter(_Counter):
    """Increment/decrement counter: two G-Counters (P and N); value = sum(P) - sum(N)."""

    __slots__ = ()
    _TAG = 611
    _VECTORS = ("p", "n")

    @property
    def value(self) -> int:
        return sum(self._vecs[0].values()) - sum(self._vecs[1].values())

    def increment(self, n: int = 1) -> PNCounter:
        return self._bump(0, n)

    def decrement(self, n: int = 1) -> PNCounter:
        return self._bump(1, n)


class BoundedCounter(CRDT):
    """A counter that never goes below zero, without coordination on the fast path
    (Balegas et al., "Extending eventually consistent cloud databases for enforcing numeric
    invariants", SRDS 2015).

    Each replica may decrement only up to the *rights* it holds: its own increments plus rights
    transferred to it, minus rights it transferred away and its decrements. ``transfer(n, to)``
    hands rights to a peer. State: a transfer matrix ``R[(i, j)]`` (``R[(i, i)]`` = increments
    by i) and decrements ``U[i]``, joined pointwise by max: O(replicas^2) worst case.
    The value is never negative in a state built from full states or causally delivered deltas;
    a delta merged ahead of its causes (a decrement before the increments that funded it) may
    show a transiently negative value until the rest arrives.
    Pruning is not supported: a leaving replica should first transfer its rights away.
    """

    __slots__ = ("_dec", "_rights")
    _TAG = 612

    def __init__(self, replica: str) -> None:
        super().__init__(replica)
        self._rights: dict[tuple[str, str], int] = {}
        self._dec: dict[str, int] = {}

    @property
    def value(self) -> int:
        return sum(n for (i, j), n in self._rights.items() if i == j) - sum(self._dec.values())

    def rights(self, replica: str | None = None) -> int:
        """How much ``replica`` (default: this one) may decrement right now, as seen here."""
        me = self._replica if replica is None else replica
        got = sum(n for (i, j), n in self._rights.items() if j == me)  # includes R[(me, me)]
        gave = sum(n for (i, j), n in self._rights.items() if i == me and j != me)
        return got - gave - self._dec.get(me, 0)

    def _delta(self, rights: dict[tuple[str, str], int], dec: dict[str, int]) -> BoundedCounter:
        out = BoundedCounter.__new__(BoundedCounter)
        out._replica, out._rights, out._dec = self._replica, rights, dec
        return out

    def _add_right(self, to: str, n: int) -> BoundedCounter:
        if n == 0:  # zero entries are never stored (canonical states compare equal)
            return self._delta({}, {})
        key = (self._replica, to)
        self._rights[key] = self._rights.get(key, 0) + n
        return self._delta({key: self._rights[key]}, {})

    def increment(self, n: int = 1) -> BoundedCounter:
        return self._add_right(self._replica, amount(n))

    def decrement(self, n: int = 1) -> BoundedCounter:
        """Decrement by ``n`` or raise :class:`InsufficientRightsError` (nothing changes)."""
        have = self.rights()
        if amount(n) > have:
            raise InsufficientRightsError(self._replica, n, have)
        if n == 0:
            return self._delta({}, {})
        self._dec[self._replica] = self._dec.get(self._replica, 0) + n
        assert self.rights() >= 0  # why: local rights never go negative, so the sum never does
        return self._delta({}, {self._replica: self._dec[self._replica]})

    def transfer(self, n: int, to: str) -> BoundedCounter:
        """Give ``n`` of this replica's rights to replica ``to``."""
        c.check_replica(to)
        if to == self._replica:
            raise InvalidOperationError("cannot transfer rights to oneself")
        have = self.rights()
        if amount(n) > have:
            raise InsufficientRightsError(self._replica, n, have)
        return self._add_right(to, n)

    def _merge(self, other: BoundedCounter) -> None:
        for k, n in other._rights.items():
            if n > self._rights.get(k, 0):
                self._rights[k] = n
        _join_counts(self._dec, other._dec, set())

    def _state(self) -> object:
        return (self._rights, self._dec)

    def copy(self) -> BoundedCounter:
        return self._delta(dict(self._rights), dict(self._dec))

    def is_bottom(self) -> bool:
        return not self._rights and not self._dec

    def _encode(self) -> object:
        rights = [[i, j, n] for (i, j), n in sorted(self._rights.items())]
        return [rights, [[r, n] for r, n in sorted(self._dec.items())]]

    @classmethod
    def _decode(cls, replica: str, body: object) -> BoundedCounter:
        raw_rights, raw_dec = c.fixed(body, 2, "BoundedCounter")
        out = cls(replica)
        for item in c.seq(raw_rights, "BoundedCounter rights", MAX_VECTOR_ENTRIES):
            i, j, n = c.fixed(item, 3, "BoundedCounter right")
            key = (c.text(i, "from replica"), c.text(j, "to replica"))
            if key in out._rights:
                raise c.DecodeError(f"BoundedCounter: duplicate right {key!r}")
            out._rights[key] = c.int_in(n, "right", 1)
        out._dec = decode_counts(raw_dec, "BoundedCounter decrements")
        return out

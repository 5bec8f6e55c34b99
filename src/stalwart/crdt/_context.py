"""The compact causal context of the dot-based CRDTs: a version vector plus a dot cloud.

A dot ``(r, n)`` is *in* the context when ``n <= vv[r]`` or it sits in ``cloud[r]``. Dots that
arrive out of order wait in the cloud and fold into the vector as soon as the gap below them
fills (compaction), so a replica that has seen everything holds one integer per replica and
nothing per removed element: no tombstones.

Invariant (canonical form, so equal contexts compare equal): every ``k`` in ``cloud[r]`` is
``> vv[r] + 1``; no empty cloud sets; no zero entries in ``vv``; a *pruned* replica (one that
left for good, see docs/crdt.md "Pruning") has no entry in ``vv`` or ``cloud``: all of its dots
count as seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from stalwart.clocks import _codec as c
from stalwart.clocks._vectors import MAX_VECTOR_ENTRIES, Dot, decode_counts

MAX_CLOUD_DOTS = 16_777_216  # decode limit


class CausalContext:
    __slots__ = ("_cloud", "_pruned", "_vv")

    def __init__(self) -> None:
        self._vv: dict[str, int] = {}
        self._cloud: dict[str, set[int]] = {}
        self._pruned: set[str] = set()

    @classmethod
    def from_dots(cls, dots: Iterable[Dot]) -> CausalContext:
        ctx = cls()
        for dot in dots:
            ctx.add(dot)
        return ctx

    def contains(self, dot: Dot) -> bool:
        r, n = dot
        if n <= self._vv.get(r, 0):
            return True
        cloud = self._cloud.get(r)
        return (cloud is not None and n in cloud) or r in self._pruned

    @property
    def pruned(self) -> frozenset[str]:
        return frozenset(self._pruned)

    def prune(self, replica: str) -> None:
        """Mark ``replica`` as gone for good: all its dots count as seen, its entries go."""
        self._pruned.add(replica)
        self._vv.pop(replica, None)
        self._cloud.pop(replica, None)

    def forget_pruned(self, replica: str) -> None:
        """Drop the pruned marker (see docs/crdt.md for when this is safe)."""
        self._pruned.discard(replica)

    def add(self, dot: Dot) -> None:
        r, n = dot
        if r in self._pruned:
            return
        top = self._vv.get(r, 0)
        if n <= top:
            return
        if n == top + 1:
            self._vv[r] = n
            self._compact(r)
        else:
            self._cloud.setdefault(r, set()).add(n)

    def _compact(self, r: str, drop_covered: bool = False) -> None:
        """Fold ``cloud[r]`` into ``vv[r]`` while contiguous. ``drop_covered`` first discards cloud
        dots at or below ``vv[r]`` (needed only after the vector jumped, in :meth:`join`)."""
        cloud = self._cloud.get(r)
        if not cloud:
            return
        top = self._vv.get(r, 0)
        if drop_covered:
            cloud.difference_update([k for k in cloud if k <= top])
        while top + 1 in cloud:
            top += 1
            cloud.remove(top)
        if top:
            self._vv[r] = top
        if not cloud:
            del self._cloud[r]

    def next_dot(self, replica: str) -> Dot:
        """A fresh dot for ``replica``'s next event, added to the context."""
        dot = (replica, self._vv.get(replica, 0) + 1)
        # Why: a replica's own dots are contiguous in its own context; a cloud entry here would
        # mean a dot of ours was issued elsewhere (two replicas sharing an id).
        assert replica not in self._cloud, f"replica {replica!r} has dots out of order: ids shared?"
        assert replica not in self._pruned, "a pruned replica must not act (mutators check first)"
        self._vv[replica] = dot[1]
        return dot

    def join(self, other: CausalContext) -> None:
        for r in other._pruned - self._pruned:
            self.prune(r)
        for r, n in other._vv.items():
            if n > self._vv.get(r, 0) and r not in self._pruned:
                self._vv[r] = n
                self._compact(r, drop_covered=True)
        for r, ks in other._cloud.items():
            for k in ks:
                self.add((r, k))

    def iter_dots(self) -> Iterator[Dot]:
        for r, n in self._vv.items():
            for k in range(1, n + 1):
                yield (r, k)
        for r, ks in self._cloud.items():
            for k in ks:
                yield (r, k)

    def dot_count(self) -> int:
        return sum(self._vv.values()) + sum(len(ks) for ks in self._cloud.values())

    def max_counter(self, replica: str) -> int:
        cloud = self._cloud.get(replica)
        return max(self._vv.get(replica, 0), max(cloud) if cloud else 0)

    def replicas(self) -> set[str]:
        return set(self._vv) | set(self._cloud)

    def copy(self) -> CausalContext:
        out = CausalContext()
        out._vv = dict(self._vv)
        out._cloud = {r: set(ks) for r, ks in self._cloud.items()}
        out._pruned = set(self._pruned)
        return out

    def state(self) -> tuple[dict[str, int], dict[str, set[int]], set[str]]:
        return self._vv, self._cloud, self._pruned

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CausalContext) and self.state() == other.state()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CausalContext(vv={self._vv!r}, cloud={self._cloud!r}, pruned={self._pruned!r})"

    def encode(self) -> list[object]:
        vv = [[r, n] for r, n in sorted(self._vv.items())]
        cloud = [[r, sorted(ks)] for r, ks in sorted(self._cloud.items())]
        return [vv, cloud, sorted(self._pruned)]

    @classmethod
    def decode(cls, raw: object) -> CausalContext:
        raw_vv, raw_cloud, raw_pruned = c.fixed(raw, 3, "causal context")
        ctx = cls()
        ctx._vv = decode_counts(raw_vv, "causal context vector")
        total = 0
        for item in c.seq(raw_cloud, "dot cloud", MAX_VECTOR_ENTRIES):
            r, ks = c.fixed(item, 2, "dot cloud entry")
            r = c.text(r, "dot cloud replica")
            counters = c.seq(ks, "dot cloud counters")
            total += len(counters)
            if total > MAX_CLOUD_DOTS:
                raise c.DecodeError(f"dot cloud exceeds {MAX_CLOUD_DOTS} dots")
            for k in counters:
                ctx.add((r, c.int_in(k, "dot counter", 1)))  # canonicalises
        for r in c.seq(raw_pruned, "pruned replicas", MAX_VECTOR_ENTRIES):
            ctx.prune(c.text(r, "pruned replica"))  # canonicalises (drops its entries)
        return ctx

"""Dot stores and the one join every dot-based CRDT shares (Almeida, Shoker, Baquero 2018).

A causal CRDT's state is a *dot store* (which events are live, with a payload each) plus a
:class:`CausalContext` (every event ever seen). Joining ``(s, c)`` with ``(s', c')`` keeps a dot
when both hold it, or when one holds it and the other has never seen it; a dot one side holds
and the other has seen but no longer holds was removed there, and goes.

Cost: the removal scan walks whichever is smaller, the other side's context or our store, and
the additions walk the other side's store, so merging a delta costs O(|delta|), not O(|state|).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable, Iterable, KeysView
from typing import Any, Generic, Protocol, Self, TypeVar

from stalwart.clocks import _codec as c
from stalwart.clocks._vectors import Dot
from stalwart.crdt._base import CRDT
from stalwart.crdt._context import CausalContext
from stalwart.crdt._errors import InvalidOperationError

P = TypeVar("P")
MAX_STORE_DOTS = 16_777_216  # decode limit


class DotStore(Protocol):
    def has_dot(self, dot: Dot) -> bool: ...
    def dots(self) -> Iterable[Dot]: ...
    def dot_count(self) -> int: ...
    def add_missing_from(self, other: Self, ctx: CausalContext) -> list[Dot]: ...
    def remove_dots(self, dots: Iterable[Dot]) -> None: ...
    def is_empty(self) -> bool: ...
    def copy(self) -> Self: ...
    def state(self) -> object: ...
    def rehome(self, old: Dot, new: Dot) -> None: ...
    def extract(self, dots: Iterable[Dot]) -> Self: ...


class DotFunStore(Generic[P]):
    """A map dot -> payload, indexed by ``key_of(payload)`` (an element, or None)."""

    __slots__ = ("entries", "index", "key_of")

    def __init__(self, key_of: Callable[[P], Hashable]) -> None:
        self.entries: dict[Dot, P] = {}
        self.index: dict[Hashable, set[Dot]] = {}
        self.key_of = key_of

    def has_dot(self, dot: Dot) -> bool:
        return dot in self.entries

    def dots(self) -> KeysView[Dot]:
        return self.entries.keys()

    def dot_count(self) -> int:
        return len(self.entries)

    def dots_of(self, key: Hashable) -> set[Dot]:
        return self.index.get(key, set())

    def put(self, dot: Dot, payload: P) -> None:
        self.entries[dot] = payload
        self.index.setdefault(self.key_of(payload), set()).add(dot)

    def drop(self, dot: Dot) -> None:
        key = self.key_of(self.entries.pop(dot))
        group = self.index[key]
        group.discard(dot)
        if not group:
            del self.index[key]

    def add_missing_from(self, other: DotFunStore[P], ctx: CausalContext) -> list[Dot]:
        added = [d for d in other.entries if d not in self.entries and not ctx.contains(d)]
        for d in added:
            self.put(d, other.entries[d])
        return added

    def remove_dots(self, dots: Iterable[Dot]) -> None:
        for d in dots:
            if d in self.entries:
                self.drop(d)

    def is_empty(self) -> bool:
        return not self.entries

    def copy(self) -> DotFunStore[P]:
        out: DotFunStore[P] = DotFunStore(self.key_of)
        out.entries = dict(self.entries)
        out.index = {k: set(v) for k, v in self.index.items()}
        return out

    def state(self) -> object:
        return self.entries

    def rehome(self, old: Dot, new: Dot) -> None:
        """Give the payload of live dot ``old`` the fresh dot ``new`` instead (pruning)."""
        payload = self.entries[old]
        self.drop(old)
        self.put(new, payload)

    def extract(self, dots: Iterable[Dot]) -> DotFunStore[P]:
        """A new store holding only ``dots`` (which must be live here) and their payloads."""
        out: DotFunStore[P] = DotFunStore(self.key_of)
        for d in dots:
            out.put(d, self.entries[d])
        return out

    def encode(self, payload: Callable[[P], object]) -> list[object]:
        return [[d[0], d[1], payload(p)] for d, p in self.entries.items()]

    @classmethod
    def decode(
        cls, raw: object, key_of: Callable[[P], Hashable], payload: Callable[[object], P]
    ) -> DotFunStore[P]:
        store: DotFunStore[P] = cls(key_of)
        for item in c.seq(raw, "dot store", MAX_STORE_DOTS):
            r, n, p = c.fixed(item, 3, "dot store entry")
            dot = (c.text(r, "dot replica"), c.int_in(n, "dot counter", 1))
            if dot in store.entries:
                raise c.DecodeError(f"dot store: duplicate dot {dot!r}")
            store.put(dot, payload(p))
        return store


S = TypeVar("S", bound=DotStore)


def causal_join(store: S, ctx: CausalContext, other_store: S, other_ctx: CausalContext) -> None:
    """Join ``(other_store, other_ctx)`` into ``(store, ctx)`` in place (see module docstring)."""
    newly_pruned = other_ctx.pruned - ctx.pruned
    if newly_pruned:  # rare: a replica was pruned; its live dots were re-homed by the heir
        store.remove_dots([d for d in store.dots() if d[0] in newly_pruned and not other_store.has_dot(d)])
    if other_ctx.dot_count() <= store.dot_count():
        doomed = [d for d in other_ctx.iter_dots() if store.has_dot(d) and not other_store.has_dot(d)]
    else:
        doomed = [d for d in store.dots() if other_ctx.contains(d) and not other_store.has_dot(d)]
    store.remove_dots(doomed)
    added = store.add_missing_from(other_store, ctx)
    ctx.join(other_ctx)
    # Why: a live dot outside the context would be resurrected or lost by the next join.
    assert all(ctx.contains(d) for d in added)


def check_store_in_context(store: DotStore, ctx: CausalContext, what: str) -> None:
    """Decode-time validation: every live dot is inside the causal context and none belongs to
    a pruned replica (pruning re-homes those)."""
    pruned = ctx.pruned
    for d in store.dots():
        if not ctx.contains(d) or d[0] in pruned:
            raise c.DecodeError(f"{what}: live dot {d!r} is outside the causal context or pruned")


class CausalCRDT(CRDT, Generic[S]):
    """Base of the dot-based CRDTs: a store plus a causal context, joined by :func:`causal_join`."""

    __slots__ = ("_ctx", "_store")

    def __init__(self, replica: str) -> None:
        super().__init__(replica)
        self._store: S = self._empty_store()
        self._ctx = CausalContext()

    @abc.abstractmethod
    def _empty_store(self) -> S:
        """A new empty store of this replica's kind."""

    @classmethod
    @abc.abstractmethod
    def _value_of(cls, store: S) -> Any: ...

    @classmethod
    def _from_parts(cls, replica: str, store: S, ctx: CausalContext) -> Self:
        """An instance over ``store`` and ``ctx`` *without copying them* (OR-Map views share)."""
        out = cls.__new__(cls)
        out._replica = replica
        out._store = store
        out._ctx = ctx
        return out

    @property
    def value(self) -> Any:
        return self._value_of(self._store)

    @property
    def context(self) -> CausalContext:
        """The causal context (read-only by convention; a copy is cheap to take)."""
        return self._ctx

    def _merge(self, other: Self) -> None:
        causal_join(self._store, self._ctx, other._store, other._ctx)

    def _state(self) -> object:
        return (self._store.state(), self._ctx.state())

    def copy(self) -> Self:
        return self._from_parts(self._replica, self._store.copy(), self._ctx.copy())

    def is_bottom(self) -> bool:
        return self._store.is_empty() and self._ctx.dot_count() == 0 and not self._ctx.pruned

    def prune(self, departed: str) -> Self:
        """Make this replica the heir of ``departed``: re-home its live dots as fresh dots of
        ours and mark it pruned; returns the delta. See docs/crdt.md "Pruning" for the
        conditions under which this is safe (the departed replica's final state has been
        merged here and it will never act again)."""
        c.check_replica(departed)
        if departed == self._replica:
            raise InvalidOperationError("a replica cannot prune itself; another replica is the heir")
        self._check_active()
        old = sorted(d for d in self._store.dots() if d[0] == departed)  # O(state): a rare event
        new = [self._ctx.next_dot(self._replica) for _ in old]
        for o, n in zip(old, new, strict=True):
            self._store.rehome(o, n)
        self._ctx.prune(departed)
        delta_ctx = CausalContext.from_dots(new)
        delta_ctx.prune(departed)
        return self._from_parts(self._replica, self._store.extract(new), delta_ctx)

    def _check_active(self) -> None:
        """Refuse (before any change) a mutation by a replica that has been pruned."""
        if self._replica in self._ctx.pruned:
            raise InvalidOperationError(f"replica {self._replica!r} was pruned and may not act again")

    def forget_pruned(self, departed: str) -> None:
        """Drop the pruned marker for ``departed`` (local; not a delta). Safe only once no state
        or delta that still carries the departed replica's dots can arrive here any more."""
        self._ctx.forget_pruned(departed)

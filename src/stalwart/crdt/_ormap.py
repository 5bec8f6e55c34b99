"""OR-Map: keys map to nested causal CRDTs that share the map's causal context.

Reset-remove semantics (riak_dt map, Almeida et al. 2018): ``remove(k)`` removes the dots under
``k`` that this replica has seen; a concurrent update to ``k`` survives, carrying only its own
new dots (for a nested set: the elements added concurrently, not the ones the remove saw).
Values are homogeneous: the map is built with its value type (``ORSet``, ``MVRegister``,
``EWFlag``, ``DWFlag``, ``RWSet``, or ``ORMap.of(...)`` for nested maps).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Self

from stalwart.clocks import _codec as c
from stalwart.clocks._vectors import Dot
from stalwart.crdt._base import element
from stalwart.crdt._causal import CausalCRDT, DotStore, check_store_in_context
from stalwart.crdt._context import CausalContext
from stalwart.crdt._dotfun import DWFlag, EWFlag, MVRegister, ORSet, RWSet, _DotFunCRDT
from stalwart.crdt._errors import IncompatibleMergeError, InvalidElementError

MAX_MAP_DEPTH = 8  # nested map specs deeper than this are refused (bounded recursion)
MAX_MAP_KEYS = 16_777_216  # decode limit
_LEAVES: dict[int, type[_DotFunCRDT[Any]]] = {
    cls._TAG: cls for cls in (ORSet, RWSet, MVRegister, EWFlag, DWFlag)
}


@dataclass(frozen=True, slots=True)
class MapOf:
    """The value type of a nested OR-Map: ``ORMap.of(ORSet)``."""

    value_type: ValueType


ValueType = type[_DotFunCRDT[Any]] | MapOf


def _describe(vt: ValueType, depth: int = 0) -> object:
    if depth > MAX_MAP_DEPTH:
        raise InvalidElementError(f"OR-Maps nested deeper than {MAX_MAP_DEPTH}")
    if isinstance(vt, MapOf):
        return [ORMap._TAG, _describe(vt.value_type, depth + 1)]
    if vt in _LEAVES.values():
        return [vt._TAG]
    raise InvalidElementError(
        f"OR-Map values must be causal CRDTs (ORSet, RWSet, MVRegister, flags, ORMap.of(...)), got {vt!r}"
    )


def _parse(raw: object, depth: int = 0) -> ValueType:
    if depth > MAX_MAP_DEPTH:
        raise c.DecodeError(f"OR-Map value types nested deeper than {MAX_MAP_DEPTH}")
    items = c.seq(raw, "OR-Map value type")
    if len(items) == 1 and type(items[0]) is int and items[0] in _LEAVES:
        return _LEAVES[items[0]]
    if len(items) == 2 and items[0] == ORMap._TAG and type(items[0]) is int:
        return MapOf(_parse(items[1], depth + 1))
    raise c.DecodeError(f"OR-Map: unknown value type {raw!r}")


class MapStore:
    """key -> nested store, plus an index dot -> key for O(delta) removals."""

    __slots__ = ("children", "index", "value_type")

    def __init__(self, value_type: ValueType) -> None:
        self.value_type = value_type
        self.children: dict[Hashable, Any] = {}
        self.index: dict[Dot, Hashable] = {}

    def new_child(self) -> Any:
        vt = self.value_type
        return MapStore(vt.value_type) if isinstance(vt, MapOf) else vt._new_store()

    def has_dot(self, dot: Dot) -> bool:
        return dot in self.index

    def dots(self) -> Iterable[Dot]:
        return self.index.keys()

    def dot_count(self) -> int:
        return len(self.index)

    def add_missing_from(self, other: MapStore, ctx: CausalContext) -> list[Dot]:
        added: list[Dot] = []
        for key, theirs in other.children.items():
            mine = self.children.get(key)
            if mine is None:
                mine = self.new_child()
            new = mine.add_missing_from(theirs, ctx)
            if new:
                self.children[key] = mine
                for d in new:
                    self.index[d] = key
                added.extend(new)
        return added

    def remove_dots(self, dots: Iterable[Dot]) -> None:
        by_key: dict[Hashable, list[Dot]] = {}
        for d in dots:
            key = self.index.pop(d, _ABSENT)
            if key is not _ABSENT:
                by_key.setdefault(key, []).append(d)
        for key, group in by_key.items():
            child = self.children[key]
            child.remove_dots(group)
            if child.is_empty():
                del self.children[key]

    def reindex(self, key: Hashable, touched: Iterable[Dot]) -> None:
        """After a nested mutation at ``key``: file its new dots, forget its removed ones."""
        child = self.children.get(key)
        for d in touched:
            if child is not None and child.has_dot(d):
                self.index[d] = key
            else:
                self.index.pop(d, None)
        if child is not None and child.is_empty():
            del self.children[key]

    def is_empty(self) -> bool:
        return not self.children

    def rebuild_index(self) -> None:
        """Recompute the dot index (and drop empty children) from the children themselves."""
        self.children = {k: v for k, v in self.children.items() if not v.is_empty()}
        self.index = {d: k for k, v in self.children.items() for d in v.dots()}

    def rehome(self, old: Dot, new: Dot) -> None:
        key = self.index.pop(old)
        self.children[key].rehome(old, new)
        self.index[new] = key

    def extract(self, dots: Iterable[Dot]) -> MapStore:
        out = MapStore(self.value_type)
        by_key: dict[Hashable, list[Dot]] = {}
        for d in dots:
            by_key.setdefault(self.index[d], []).append(d)
        for key, group in by_key.items():
            out.children[key] = self.children[key].extract(group)
            out.index.update(dict.fromkeys(group, key))
        return out

    def copy(self) -> MapStore:
        out = MapStore(self.value_type)
        out.children = {k: v.copy() for k, v in self.children.items()}
        out.index = dict(self.index)
        return out

    def state(self) -> object:
        return {k: v.state() for k, v in self.children.items()}

    def value(self) -> dict[Any, Any]:
        vt = self.value_type
        if isinstance(vt, MapOf):
            return {k: v.value() for k, v in self.children.items()}
        return {k: vt._value_of(v) for k, v in self.children.items()}

    def encode(self) -> list[object]:
        vt = self.value_type
        enc: Callable[[Any], object] = (lambda s: s.encode()) if isinstance(vt, MapOf) else vt._encode_store
        return [[k, enc(v)] for k, v in self.children.items()]

    @classmethod
    def decode(cls, raw: object, value_type: ValueType) -> MapStore:
        store = cls(value_type)
        for item in c.seq(raw, "OR-Map entries", MAX_MAP_KEYS):
            raw_key, raw_child = c.fixed(item, 2, "OR-Map entry")
            key = c.atom(raw_key, "OR-Map key")
            if key in store.children:
                raise c.DecodeError(f"OR-Map: duplicate key {key!r}")
            if isinstance(value_type, MapOf):
                child: Any = MapStore.decode(raw_child, value_type.value_type)
            else:
                child = value_type._decode_store(raw_child)
            if child.is_empty():
                raise c.DecodeError(f"OR-Map: key {key!r} has an empty value")
            for d in child.dots():
                if d in store.index:
                    raise c.DecodeError(f"OR-Map: dot {d!r} appears under two keys")
                store.index[d] = key
            store.children[key] = child
        return store


_ABSENT: Any = object()
_: type[DotStore] = MapStore  # MapStore satisfies the DotStore protocol


class ORMap(CausalCRDT[MapStore]):
    """A map from atoms to nested causal CRDTs with reset-remove semantics.

    >>> m = ORMap("a", ORSet)
    >>> delta = m.update("fruit", lambda s: s.add("apple"))
    >>> m.value
    {'fruit': frozenset({'apple'})}
    """

    __slots__ = ("_value_type",)
    _TAG = 650

    def __init__(self, replica: str, value_type: ValueType) -> None:
        _describe(value_type)  # validates
        self._value_type = value_type
        super().__init__(replica)

    @staticmethod
    def of(value_type: ValueType) -> MapOf:
        """The value type for a map of maps: ``ORMap("a", ORMap.of(MVRegister))``."""
        _describe(value_type)
        return MapOf(value_type)

    @property
    def value_type(self) -> ValueType:
        return self._value_type

    def _empty_store(self) -> MapStore:
        return MapStore(self._value_type)

    @classmethod
    def _value_of(cls, store: MapStore) -> dict[Any, Any]:
        return store.value()

    @classmethod
    def _from_parts(cls, replica: str, store: MapStore, ctx: CausalContext) -> Self:
        out = super()._from_parts(replica, store, ctx)
        out._value_type = store.value_type
        return out

    def _check_compatible(self, other: Self) -> None:
        if other._value_type != self._value_type:
            raise IncompatibleMergeError(
                f"OR-Map value types differ: {self._value_type!r} vs {other._value_type!r}"
            )

    def _state(self) -> object:
        return (_describe(self._value_type), self._store.state(), self._ctx.state())

    def _encode(self) -> object:
        return [_describe(self._value_type), self._store.encode(), self._ctx.encode()]

    @classmethod
    def _decode(cls, replica: str, body: object) -> Self:
        raw_type, raw_store, raw_ctx = c.fixed(body, 3, "ORMap")
        value_type = _parse(raw_type)
        store = MapStore.decode(raw_store, value_type)
        ctx = CausalContext.decode(raw_ctx)
        check_store_in_context(store, ctx, "ORMap")
        return cls._from_parts(replica, store, ctx)

    def _view(self, key: Hashable) -> Any:
        """A CRDT over the child store at ``key`` sharing this map's context (not copied)."""
        child = self._store.children.get(key)
        if child is None:
            child = self._store.new_child()
        vt = self._value_type
        if isinstance(vt, MapOf):
            return ORMap._from_parts(self._replica, child, self._ctx)
        return vt._from_parts(self._replica, child, self._ctx)

    def update(self, key: object, mutate: Callable[[Any], Any]) -> ORMap:
        """Apply ``mutate`` (which calls one mutator of the value type and returns its delta)
        to the value at ``key``, creating it if absent; returns the map's delta."""
        element(key, "OR-Map key")
        self._check_active()
        view = self._view(key)
        delta = mutate(view)
        expected = ORMap if isinstance(self._value_type, MapOf) else self._value_type
        if not view._store.is_empty():
            self._store.children[key] = view._store
        if type(delta) is not expected:
            # The mutation may already have happened: rebuild the dot index before refusing, so
            # this replica stays consistent (O(state), only on this misuse).
            self._store.rebuild_index()
            raise IncompatibleMergeError(f"update must return the value's delta ({expected.__name__})")
        self._store.reindex(key, delta._ctx.iter_dots())
        out = MapStore(self._value_type)
        if not delta._store.is_empty():
            out.children[key] = delta._store
            out.index = dict.fromkeys(delta._store.dots(), key)
        return ORMap._from_parts(self._replica, out, delta._ctx)

    def remove(self, key: object) -> ORMap:
        """Remove the value at ``key`` as seen here (reset-remove); a concurrent update survives."""
        element(key, "OR-Map key")
        self._check_active()
        child = self._store.children.get(key)
        seen = list(child.dots()) if child is not None else []
        self._store.remove_dots(seen)
        return ORMap._from_parts(self._replica, MapStore(self._value_type), CausalContext.from_dots(seen))

    def get(self, key: object) -> Any:
        """A detached copy of the value at ``key`` (None when absent); mutate via :meth:`update`."""
        child = self._store.children.get(key)
        if child is None:
            return None
        vt = self._value_type
        cls: Any = ORMap if isinstance(vt, MapOf) else vt
        return cls._from_parts(self._replica, child.copy(), self._ctx.copy())

    def __contains__(self, key: object) -> bool:
        try:
            return key in self._store.children
        except TypeError:
            return False

    def __len__(self) -> int:
        return len(self._store.children)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._store.children)

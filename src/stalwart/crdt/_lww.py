"""Sets and registers without dots: G-Set, 2P-Set, LWW-Element-Set, LWW-Register.

LWW types order writes by :class:`stalwart.clocks.HLCTimestamp` ``(wall_ms, logical, node)``;
the node id breaks ties between replicas, so the winner is deterministic everywhere. Give each
replica its own :class:`stalwart.clocks.HybridLogicalClock` and feed it the timestamps you
merge (``clock.update(ts, now_ms)``) so a write issued after seeing another wins over it.
"""

from __future__ import annotations

from typing import Any

from stalwart.clocks import _codec as c
from stalwart.clocks._hlc import HLCTimestamp
from stalwart.crdt._base import CRDT, element
from stalwart.crdt._errors import InvalidOperationError, PreconditionError

MAX_SET_ELEMENTS = 16_777_216  # decode limit


def _elements(raw: object, what: str) -> set[Any]:
    items = c.seq(raw, what, MAX_SET_ELEMENTS)
    return set(c.unique([c.atom(x, what) for x in items], what))


def _timestamp(ts: object) -> HLCTimestamp:
    if not isinstance(ts, HLCTimestamp):
        raise InvalidOperationError(f"expected an HLCTimestamp, got {type(ts).__name__}")
    return ts


class GSet(CRDT):
    """Grow-only set. State O(elements); delta of ``add``: one element."""

    __slots__ = ("_items",)
    _TAG = 620

    def __init__(self, replica: str) -> None:
        super().__init__(replica)
        self._items: set[Any] = set()

    @property
    def value(self) -> frozenset[Any]:
        return frozenset(self._items)

    def add(self, item: object) -> GSet:
        self._items.add(element(item))
        out = GSet(self._replica)
        out._items.add(item)
        return out

    def __contains__(self, item: object) -> bool:
        try:
            return item in self._items
        except TypeError:  # unhashable: cannot be an element
            return False

    def _merge(self, other: GSet) -> None:
        self._items |= other._items

    def _state(self) -> object:
        return self._items

    def copy(self) -> GSet:
        out = GSet(self._replica)
        out._items = set(self._items)
        return out

    def is_bottom(self) -> bool:
        return not self._items

    def _encode(self) -> object:
        return list(self._items)

    @classmethod
    def _decode(cls, replica: str, body: object) -> GSet:
        out = cls(replica)
        out._items = _elements(body, "GSet element")
        return out


class TwoPSet(CRDT):
    """Two-phase set: an element can be added, then removed once, never re-added.

    ``remove`` requires the element to be present locally (:class:`PreconditionError`).
    State: added plus removed elements (removed ones are tombstones, kept forever).
    """

    __slots__ = ("_added", "_removed")
    _TAG = 621

    def __init__(self, replica: str) -> None:
        super().__init__(replica)
        self._added: set[Any] = set()
        self._removed: set[Any] = set()

    @property
    def value(self) -> frozenset[Any]:
        return frozenset(self._added - self._removed)

    def _delta(self, added: set[Any], removed: set[Any]) -> TwoPSet:
        out = TwoPSet(self._replica)
        out._added, out._removed = added, removed
        return out

    def add(self, item: object) -> TwoPSet:
        self._added.add(element(item))
        return self._delta({item}, set())

    def remove(self, item: object) -> TwoPSet:
        element(item)
        if item not in self._added or item in self._removed:
            raise PreconditionError(f"2P-Set: cannot remove {item!r}: not present here")
        self._removed.add(item)
        return self._delta(set(), {item})

    def _merge(self, other: TwoPSet) -> None:
        self._added |= other._added
        self._removed |= other._removed

    def _state(self) -> object:
        return (self._added, self._removed)

    def copy(self) -> TwoPSet:
        return self._delta(set(self._added), set(self._removed))

    def is_bottom(self) -> bool:
        return not self._added and not self._removed

    def _encode(self) -> object:
        return [list(self._added), list(self._removed)]

    @classmethod
    def _decode(cls, replica: str, body: object) -> TwoPSet:
        raw_added, raw_removed = c.fixed(body, 2, "TwoPSet")
        out = cls(replica)
        out._added = _elements(raw_added, "TwoPSet added")
        out._removed = _elements(raw_removed, "TwoPSet removed")
        return out


def _rank(ts: HLCTimestamp, present: bool) -> tuple[HLCTimestamp, bool]:
    # Higher timestamp wins; on an identical timestamp the remove wins (False < True is
    # inverted by ``not``): deterministic, so merge stays commutative.
    return (ts, not present)


class LWWElementSet(CRDT):
    """Last-writer-wins element set: per element, the add or remove with the highest HLC
    timestamp wins (a remove wins an exact tie). State: one timestamp per element ever seen."""

    __slots__ = ("_entries",)
    _TAG = 622

    def __init__(self, replica: str) -> None:
        super().__init__(replica)
        self._entries: dict[Any, tuple[HLCTimestamp, bool]] = {}

    @property
    def value(self) -> frozenset[Any]:
        return frozenset(e for e, (_, present) in self._entries.items() if present)

    def _put(self, item: Any, ts: HLCTimestamp, present: bool) -> None:
        old = self._entries.get(item)
        if old is None or _rank(ts, present) > _rank(*old):
            self._entries[item] = (ts, present)

    def _op(self, item: object, timestamp: HLCTimestamp, present: bool) -> LWWElementSet:
        element(item)
        ts = _timestamp(timestamp)
        self._put(item, ts, present)
        out = LWWElementSet(self._replica)
        out._entries[item] = (ts, present)
        return out

    def add(self, item: object, timestamp: HLCTimestamp) -> LWWElementSet:
        return self._op(item, timestamp, True)

    def remove(self, item: object, timestamp: HLCTimestamp) -> LWWElementSet:
        return self._op(item, timestamp, False)

    def __contains__(self, item: object) -> bool:
        try:
            entry = self._entries.get(item)
        except TypeError:  # unhashable: cannot be an element
            return False
        return entry is not None and entry[1]

    def _merge(self, other: LWWElementSet) -> None:
        for item, (ts, present) in other._entries.items():
            self._put(item, ts, present)

    def _state(self) -> object:
        return self._entries

    def copy(self) -> LWWElementSet:
        out = LWWElementSet(self._replica)
        out._entries = dict(self._entries)
        return out

    def is_bottom(self) -> bool:
        return not self._entries

    def _encode(self) -> object:
        return [[e, ts.encode(), present] for e, (ts, present) in self._entries.items()]

    @classmethod
    def _decode(cls, replica: str, body: object) -> LWWElementSet:
        out = cls(replica)
        for item in c.seq(body, "LWWElementSet", MAX_SET_ELEMENTS):
            e, ts, present = c.fixed(item, 3, "LWWElementSet entry")
            e = c.atom(e, "LWWElementSet element")
            if e in out._entries:
                raise c.DecodeError(f"LWWElementSet: duplicate element {e!r}")
            out._entries[e] = (HLCTimestamp.decode(ts), c.boolean(present, "present"))
        return out


class LWWRegister(CRDT):
    """Last-writer-wins register over HLC timestamps. Equal timestamps (a misuse: one clock
    issued the same timestamp twice) fall back to comparing the values' encodings, so merge
    stays deterministic. ``value`` is None until the first write."""

    __slots__ = ("_timestamp", "_value")
    _TAG = 630

    def __init__(self, replica: str) -> None:
        super().__init__(replica)
        self._timestamp: HLCTimestamp | None = None
        self._value: Any = None

    @property
    def value(self) -> Any:
        return self._value

    @property
    def timestamp(self) -> HLCTimestamp | None:
        return self._timestamp

    def _offer(self, ts: HLCTimestamp, value: Any) -> None:
        cur = self._timestamp
        if cur is None or (ts, c.packed_key(value)) > (cur, c.packed_key(self._value)):
            self._timestamp, self._value = ts, value

    def set(self, value: object, timestamp: HLCTimestamp) -> LWWRegister:
        element(value, "LWWRegister value")
        ts = _timestamp(timestamp)
        self._offer(ts, value)
        out = LWWRegister(self._replica)
        out._timestamp, out._value = ts, value
        return out

    def _merge(self, other: LWWRegister) -> None:
        if other._timestamp is not None:
            self._offer(other._timestamp, other._value)

    def _state(self) -> object:
        return (self._timestamp, self._value)

    def copy(self) -> LWWRegister:
        out = LWWRegister(self._replica)
        out._timestamp, out._value = self._timestamp, self._value
        return out

    def is_bottom(self) -> bool:
        return self._timestamp is None

    def _encode(self) -> object:
        return None if self._timestamp is None else [self._timestamp.encode(), self._value]

    @classmethod
    def _decode(cls, replica: str, body: object) -> LWWRegister:
        out = cls(replica)
        if body is not None:
            raw_ts, value = c.fixed(body, 2, "LWWRegister")
            out._timestamp = HLCTimestamp.decode(raw_ts)
            out._value = c.atom(value, "LWWRegister value")
        return out

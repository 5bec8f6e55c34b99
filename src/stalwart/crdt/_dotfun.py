"""The dot-based CRDTs whose store is one :class:`DotFunStore`: sets, multi-value register, flags.

Each mutator is one :meth:`_DotFunCRDT._replace`: drop every live dot under a key (the events
this replica has *seen*) and optionally add one fresh dot with a payload. The delta carries the
new dot and, in its context, the dropped ones: O(dots of that key), never O(state).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Hashable, Iterator
from typing import Any, Generic, Self, TypeVar

from stalwart.clocks import _codec as c
from stalwart.crdt._base import element
from stalwart.crdt._causal import CausalCRDT, DotFunStore, check_store_in_context
from stalwart.crdt._context import CausalContext

P = TypeVar("P")


class _Nothing(enum.Enum):
    """Marks "no new dot" in :meth:`_DotFunCRDT._replace` (None is a valid payload)."""

    NOTHING = 0


NOTHING = _Nothing.NOTHING


class _DotFunCRDT(CausalCRDT[DotFunStore[P]], Generic[P]):
    __slots__ = ()

    @staticmethod
    def _key_of(payload: P) -> Hashable:
        """Which entries a write replaces: by default one key, so every write replaces them all
        (registers and flags); sets key by element."""
        return None

    @staticmethod
    def _encode_payload(payload: P) -> object:
        """Payloads are stored as they are unless a type says otherwise."""
        return payload

    @staticmethod
    @abc.abstractmethod
    def _decode_payload(raw: object) -> P: ...

    @classmethod
    def _new_store(cls) -> DotFunStore[P]:
        return DotFunStore(cls._key_of)

    @classmethod
    def _encode_store(cls, store: DotFunStore[P]) -> object:
        return store.encode(cls._encode_payload)

    @classmethod
    def _decode_store(cls, raw: object) -> DotFunStore[P]:
        return DotFunStore.decode(raw, cls._key_of, cls._decode_payload)

    def _empty_store(self) -> DotFunStore[P]:
        return self._new_store()

    def _encode(self) -> object:
        return [self._encode_store(self._store), self._ctx.encode()]

    @classmethod
    def _decode(cls, replica: str, body: object) -> Self:
        raw_store, raw_ctx = c.fixed(body, 2, cls.__name__)
        store = cls._decode_store(raw_store)
        ctx = CausalContext.decode(raw_ctx)
        check_store_in_context(store, ctx, cls.__name__)
        return cls._from_parts(replica, store, ctx)

    def _replace(self, key: Hashable, payload: P | _Nothing) -> Self:
        """Drop the live dots under ``key``; add a fresh dot carrying ``payload`` unless NOTHING."""
        self._check_active()
        seen = list(self._store.dots_of(key))
        self._store.remove_dots(seen)
        delta_store = self._new_store()
        if not isinstance(payload, _Nothing):
            assert self._key_of(payload) == key  # why: the index would file it elsewhere
            dot = self._ctx.next_dot(self._replica)
            self._store.put(dot, payload)
            delta_store.put(dot, payload)
            seen.append(dot)
        return self._from_parts(self._replica, delta_store, CausalContext.from_dots(seen))


class ORSet(_DotFunCRDT[Any]):
    """Observed-remove (add-wins) set. ``remove(x)`` removes only the adds of ``x`` it has seen;
    an add concurrent with a remove survives. No tombstones: removed elements leave nothing in
    the state but their dots inside the compact causal context."""

    __slots__ = ()
    _TAG = 623

    @staticmethod
    def _key_of(payload: Any) -> Hashable:
        return payload  # type: ignore[no-any-return]

    @staticmethod
    def _decode_payload(raw: object) -> Any:
        return c.atom(raw, "ORSet element")

    @classmethod
    def _value_of(cls, store: DotFunStore[Any]) -> frozenset[Any]:
        return frozenset(store.index)

    def add(self, item: object) -> ORSet:
        return self._replace(element(item), item)

    def remove(self, item: object) -> ORSet:
        return self._replace(element(item), NOTHING)

    def __contains__(self, item: object) -> bool:
        try:
            return item in self._store.index
        except TypeError:  # unhashable: cannot be an element
            return False

    def __len__(self) -> int:
        return len(self._store.index)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._store.index)


class RWSet(_DotFunCRDT[tuple[Any, bool]]):
    """Remove-wins set: an add concurrent with a remove of the same element loses.

    Each element keeps the dots of its latest concurrent adds/removes (payload ``(x, is_add)``);
    ``x`` is present when it has dots and all of them are adds. Cost: a removed element keeps
    one remove dot per concurrent remover (a bounded tombstone) until it is added again.
    """

    __slots__ = ()
    _TAG = 624

    @staticmethod
    def _key_of(payload: tuple[Any, bool]) -> Hashable:
        return payload[0]  # type: ignore[no-any-return]

    @staticmethod
    def _encode_payload(payload: tuple[Any, bool]) -> object:
        return [payload[0], payload[1]]

    @staticmethod
    def _decode_payload(raw: object) -> tuple[Any, bool]:
        item, is_add = c.fixed(raw, 2, "RWSet entry")
        return (c.atom(item, "RWSet element"), c.boolean(is_add, "RWSet is_add"))

    @classmethod
    def _value_of(cls, store: DotFunStore[tuple[Any, bool]]) -> frozenset[Any]:
        entries = store.entries
        return frozenset(k for k, dots in store.index.items() if all(entries[d][1] for d in dots))

    def add(self, item: object) -> RWSet:
        return self._replace(element(item), (item, True))

    def remove(self, item: object) -> RWSet:
        return self._replace(element(item), (item, False))

    def __contains__(self, item: object) -> bool:
        try:
            dots = self._store.index.get(item)
        except TypeError:  # unhashable: cannot be an element
            return False
        return dots is not None and all(self._store.entries[d][1] for d in dots)


class MVRegister(_DotFunCRDT[Any]):
    """Multi-value register: ``write`` replaces every value it has seen; concurrent writes are
    all kept, and ``value`` is the frozenset of them (one element once writes are ordered)."""

    __slots__ = ()
    _TAG = 631

    @staticmethod
    def _decode_payload(raw: object) -> Any:
        return c.atom(raw, "MVRegister value")

    @classmethod
    def _value_of(cls, store: DotFunStore[Any]) -> frozenset[Any]:
        return frozenset(store.entries.values())

    def write(self, value: object) -> MVRegister:
        return self._replace(None, element(value, "MVRegister value"))

    def clear(self) -> MVRegister:
        """Remove every value seen (a concurrent write survives)."""
        return self._replace(None, NOTHING)


class EWFlag(_DotFunCRDT[bool]):
    """Enable-wins flag: starts False; an enable concurrent with a disable wins."""

    __slots__ = ()
    _TAG = 640

    @staticmethod
    def _decode_payload(raw: object) -> bool:
        if raw is not True:
            raise c.DecodeError("EWFlag: live dots must carry True")
        return True

    @classmethod
    def _value_of(cls, store: DotFunStore[bool]) -> bool:
        return bool(store.entries)

    def enable(self) -> EWFlag:
        return self._replace(None, True)

    def disable(self) -> EWFlag:
        return self._replace(None, NOTHING)


class DWFlag(_DotFunCRDT[bool]):
    """Disable-wins flag: starts False; a disable concurrent with an enable wins.

    Live dots carry True (enable) or False (disable); the flag is on when there are dots and all
    are enables. Cost: a disabled flag keeps one dot per concurrent disabler.
    """

    __slots__ = ()
    _TAG = 641

    @staticmethod
    def _decode_payload(raw: object) -> bool:
        return c.boolean(raw, "DWFlag dot")

    @classmethod
    def _value_of(cls, store: DotFunStore[bool]) -> bool:
        return bool(store.entries) and all(store.entries.values())

    def enable(self) -> DWFlag:
        return self._replace(None, True)

    def disable(self) -> DWFlag:
        return self._replace(None, False)

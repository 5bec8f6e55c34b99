"""The contract every CRDT type implements (see docs/crdt.md)."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Self

from stalwart.clocks import _codec as c
from stalwart.clocks._errors import ClockError
from stalwart.crdt._errors import IncompatibleMergeError, InvalidElementError, InvalidOperationError
from stalwart.errors import DecodeError

FORMAT_VERSION = 1


def element(value: object, what: str = "element") -> Any:
    """Validate a caller's element/key/value: it must be an atom."""
    try:
        c.check_atom(value, what)
    except TypeError as exc:
        raise InvalidElementError(str(exc)) from exc
    return value


def amount(n: object, what: str = "n") -> int:
    """Validate a counter amount: a non-negative int."""
    if type(n) is not int or n < 0:
        raise InvalidOperationError(f"{what} must be a non-negative int, got {n!r}")
    return n


class CRDT(abc.ABC):
    """A state-based CRDT replica with delta mutators.

    - every mutator changes this replica in place and returns a *delta*: a small state of the
      same type that, merged anywhere, has the mutation's effect;
    - ``merge(other)`` joins a delta or a full state in place (commutative, associative,
      idempotent);
    - ``value`` is a plain Python value; ``==`` compares states (not replica ids);
    - ``to_bytes`` / ``from_bytes`` are versioned and validated (``DecodeError`` on bad bytes).
    """

    __slots__ = ("_replica",)
    _TAG: ClassVar[int]

    def __init__(self, replica: str) -> None:
        self._replica = c.check_replica(replica)

    @property
    def replica(self) -> str:
        return self._replica

    @property
    @abc.abstractmethod
    def value(self) -> Any:
        """The current value as a plain Python value."""

    @abc.abstractmethod
    def _merge(self, other: Self) -> None: ...

    @abc.abstractmethod
    def _state(self) -> object:
        """What equality compares."""

    @abc.abstractmethod
    def _encode(self) -> object: ...

    @classmethod
    @abc.abstractmethod
    def _decode(cls, replica: str, body: object) -> Self: ...

    @abc.abstractmethod
    def copy(self) -> Self:
        """An independent copy with the same replica id."""

    @abc.abstractmethod
    def is_bottom(self) -> bool:
        """True for the empty state (a delta that changes nothing anywhere)."""

    def merge(self, other: Self) -> None:
        """Join ``other`` (a delta or a full state of the same type) into this replica."""
        if type(other) is not type(self):
            raise IncompatibleMergeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        self._check_compatible(other)
        self._merge(other)

    def _check_compatible(self, other: Self) -> None:
        del other

    def to_bytes(self) -> bytes:
        return c.pack(self._TAG, FORMAT_VERSION, [self._replica, self._encode()])

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode and validate; raises ``stalwart.errors.DecodeError`` on anything malformed."""
        _, body = c.unpack(data, cls._TAG, frozenset({FORMAT_VERSION}), cls.__name__)
        replica, state = c.fixed(body, 2, cls.__name__)
        replica = c.text(replica, f"{cls.__name__} replica")
        try:
            return cls._decode(replica, state)
        except DecodeError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, ClockError) as exc:
            # Belt and braces: validators should have caught it; the caller still only sees
            # DecodeError for bad bytes.
            raise DecodeError(f"{cls.__name__}: malformed state: {exc!r}") from exc

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._state() == other._state()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._replica!r}, value={self.value!r})"

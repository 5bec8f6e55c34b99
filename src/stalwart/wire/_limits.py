"""Decode limits (per call, chosen by the receiver) and per-field bounds (part of the schema)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from stalwart.errors import ConfigError

MIB = 1024 * 1024
INT_MIN = -(2**63)  # msgpack integers are int64 or uint64: nothing outside can be sent
UINT_MAX = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Limits:
    """What :func:`stalwart.wire.decode` accepts from a peer. Every limit is inclusive.

    The total size bounds everything else: msgpack needs at least one byte per value, so a
    message of ``max_message_bytes`` can never hold more values than that.
    """

    max_message_bytes: int = 16 * MIB
    """Size of the whole encoded message."""
    max_str_bytes: int = 1 * MIB
    """UTF-8 size of any one string."""
    max_bin_bytes: int = 16 * MIB
    """Size of any one ``bytes`` value."""
    max_collection_len: int = 1_000_000
    """Items in any one tuple, frozenset or dict (msgpack array or map)."""
    max_depth: int = 32
    """Nesting of messages and collections; the envelope itself is depth 1."""

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "max_str_bytes", "max_bin_bytes", "max_collection_len"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ConfigError(f"Limits.{name} must be a non-negative int, got {value!r}")
        if type(self.max_depth) is not int or not 1 <= self.max_depth <= 200:
            # Above ~200 the decoder's own recursion would approach Python's recursion limit.
            raise ConfigError(f"Limits.max_depth must be an int in 1..200, got {self.max_depth!r}")


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class MaxLen:
    """``Annotated[str, MaxLen(64)]``: at most this many code points, bytes, or items.

    Counts code points for ``str`` (not UTF-8 bytes; :attr:`Limits.max_str_bytes` bounds
    those), bytes for ``bytes``, items for ``tuple[X, ...]``, ``frozenset`` and ``dict``.
    Checked by both ``encode`` and ``decode``.
    """

    n: int

    def __post_init__(self) -> None:
        if type(self.n) is not int or self.n < 0:
            raise ConfigError(f"MaxLen needs a non-negative int, got {self.n!r}")


@dataclass(frozen=True, slots=True)
class Bounds:
    """``Annotated[int, Bounds(0, 100)]``: the value lies in ``[lo, hi]`` (inclusive).

    Either side may be ``None`` (unbounded on that side). Applies to ``int`` and ``float``.
    Checked by both ``encode`` and ``decode``.
    """

    lo: int | float | None = None
    hi: int | float | None = None

    def __post_init__(self) -> None:
        for side in (self.lo, self.hi):
            if side is not None and (type(side) not in (int, float) or math.isnan(side)):
                raise ConfigError(f"Bounds sides must be int, float or None, got {side!r}")
        if self.lo is not None and self.hi is not None and self.lo > self.hi:
            raise ConfigError(f"Bounds({self.lo}, {self.hi}) is empty")

"""Versioned msgpack envelopes and validators shared by clocks and crdt (private).

Every encoded value is ``[type_tag, version, body]``. Decoding checks the tag and version and
validates the body's shape; any problem is a :class:`stalwart.errors.DecodeError`, never
another exception: callers feed these functions bytes from the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack

from stalwart.clocks._errors import InvalidReplicaError
from stalwart.errors import DecodeError

__all__ = ["DecodeError"]  # re-exported for the validators' callers

T = TypeVar("T")

# Atoms are the values CRDT elements, keys and register values may take: they are hashable,
# survive a msgpack round trip unchanged, and compare equal only to themselves.
Atom = None | bool | int | float | str | bytes | tuple[Any, ...]

MAX_ATOM_DEPTH = 8  # tuples nested deeper than this are refused (bounded recursion)
MAX_INPUT_BYTES = 512 * 1024 * 1024  # a limit on everything: refuse absurd inputs up front
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def pack(tag: int, version: int, body: object) -> bytes:
    """Encode ``body`` under a type tag and a format version."""
    out = msgpack.packb([tag, version, body], use_bin_type=True)
    assert isinstance(out, bytes)  # packb returns bytes when no stream is given
    return out


def unpack(data: object, tag: int, versions: frozenset[int], what: str) -> tuple[int, Any]:
    """Decode an envelope written by :func:`pack`; returns ``(version, body)``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > MAX_INPUT_BYTES:
        raise DecodeError(f"{what}: {len(data)} bytes exceeds the {MAX_INPUT_BYTES} byte limit")
    try:
        obj = msgpack.unpackb(bytes(data), use_list=False, raw=False, strict_map_key=False, timestamp=0)
    except Exception as exc:  # msgpack raises many kinds (ValueError, ExtraData, StackError...)
        raise DecodeError(f"{what}: not valid msgpack: {exc!r}") from exc
    if not isinstance(obj, tuple) or len(obj) != 3:
        raise DecodeError(f"{what}: expected [tag, version, body]")
    got_tag, version, body = obj
    if type(got_tag) is not int or got_tag != tag:
        raise DecodeError(f"{what}: wrong type tag {got_tag!r}, expected {tag}")
    if type(version) is not int or version not in versions:
        raise DecodeError(f"{what}: unsupported format version {version!r}")
    return version, body


def packed_key(value: object) -> bytes:
    """A deterministic total-order key for atoms (used only for tiebreaks and sorting)."""
    out = msgpack.packb(value, use_bin_type=True)
    assert isinstance(out, bytes)
    return out


def check_atom(value: object, what: str = "value", depth: int = 0) -> None:
    """Raise ``TypeError`` unless ``value`` is an atom (see :data:`Atom`)."""
    if value is None or isinstance(value, bool | str | bytes):
        return
    if type(value) is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise TypeError(f"{what}: integer {value} does not fit in 64 bits")
        return
    if type(value) is float:
        if math.isnan(value):
            raise TypeError(f"{what}: NaN is not equal to itself and cannot be an element")
        return
    if type(value) is tuple:
        if depth >= MAX_ATOM_DEPTH:
            raise TypeError(f"{what}: tuples nested deeper than {MAX_ATOM_DEPTH}")
        for item in value:
            check_atom(item, what, depth + 1)
        return
    raise TypeError(
        f"{what}: {type(value).__name__} is not a supported atom (None, bool, int, float, str, bytes, tuple)"
    )


def atom(value: object, what: str) -> Any:
    """Validate a decoded atom (DecodeError on anything else)."""
    try:
        check_atom(value, what)
    except TypeError as exc:
        raise DecodeError(str(exc)) from exc
    return value


def seq(value: object, what: str, max_len: int | None = None) -> tuple[Any, ...]:
    if not isinstance(value, tuple):
        raise DecodeError(f"{what}: expected an array, got {type(value).__name__}")
    if max_len is not None and len(value) > max_len:
        raise DecodeError(f"{what}: {len(value)} items exceeds the limit of {max_len}")
    return value


def fixed(value: object, n: int, what: str) -> tuple[Any, ...]:
    items = seq(value, what)
    if len(items) != n:
        raise DecodeError(f"{what}: expected {n} items, got {len(items)}")
    return items


def int_in(value: object, what: str, lo: int = 0, hi: int = _INT_MAX) -> int:
    if type(value) is not int:
        raise DecodeError(f"{what}: expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise DecodeError(f"{what}: {value} outside [{lo}, {hi}]")
    return value


def text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise DecodeError(f"{what}: expected a non-empty string")
    return value


def boolean(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise DecodeError(f"{what}: expected a boolean")
    return value


def unique(items: list[T], what: str, key: Callable[[T], object] = lambda x: x) -> list[T]:
    """Refuse duplicates: a duplicated entry in a state is a malformed encoding."""
    seen: set[object] = set()
    for item in items:
        k = key(item)
        if k in seen:
            raise DecodeError(f"{what}: duplicate entry {k!r}")
        seen.add(k)
    return items


def check_replica(replica: object) -> str:
    """Validate a replica id given by a caller (:class:`InvalidReplicaError` otherwise)."""
    if not isinstance(replica, str) or not replica:
        raise InvalidReplicaError(f"replica id must be a non-empty str, got {replica!r}")
    return replica

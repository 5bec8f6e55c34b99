"""Hypothesis round trips for EVERY registered message, whoever registered it.

The strategies are built from the declared field types, so a message another package adds later
is round-trip tested here without anyone writing a strategy for it. Every module of the stalwart
package is imported first so that all of its messages are registered, and so is the sample
module that covers every field type the codec supports.
"""

from __future__ import annotations

import enum
import importlib
import math
import os
import pkgutil
import types
import typing
from dataclasses import is_dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stalwart
import tests.unit.test_wire_samples as samples
from stalwart.wire import (
    Bounds,
    MaxLen,
    decode,
    decode_as,
    decode_many,
    encode,
    field_types,
    join_encoded,
    registered_types,
)

INT_MIN, UINT_MAX = -(2**63), 2**64 - 1
# Per message class; the registry grows with every package, so CI keeps this small.
# STALWART_LONG=1 runs many more.
EXAMPLES = 500 if os.environ.get("STALWART_LONG") == "1" else 25
COLLECTION_MAX = 6  # keep generated collections small: nesting multiplies sizes
DEPTH_SOFT_LIMIT = 4
DEPTH_HARD_LIMIT = 16


def _import_everything() -> list[str]:
    """Import every stalwart module so its @message classes register; return what was skipped."""
    skipped = []
    for info in pkgutil.walk_packages(stalwart.__path__, "stalwart."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError as exc:  # an optional dependency is missing: nothing to test there
            skipped.append(f"{info.name}: {exc}")
    return skipped


SKIPPED_MODULES = _import_everything()
assert samples.SAMPLES  # the samples module is imported for its registrations


def strategy_for_type(tp: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of a wire field type, honouring MaxLen and Bounds annotations.

    ``depth`` counts enclosing collections and messages: past DEPTH_SOFT_LIMIT collections are
    empty and optionals are None, so recursive message types stay small.
    """
    while isinstance(tp, typing.NewType):
        tp = tp.__supertype__
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _annotated(args[0], tp.__metadata__, depth)
    scalar = _scalar(tp)
    if scalar is not None:
        return scalar
    if origin is typing.Union or origin is types.UnionType:
        if depth >= DEPTH_SOFT_LIMIT and type(None) in args:
            return st.none()
        return st.one_of([strategy_for_type(a, depth) for a in args])
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        return st.tuples(*(strategy_for_type(a, depth + 1) for a in args))
    if origin in (tuple, frozenset, dict):
        return _collection(origin, args, COLLECTION_MAX, depth)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if isinstance(tp, type) and is_dataclass(tp):
        return strategy_for_message(tp, depth)
    raise AssertionError(f"no strategy for {tp!r}: teach this test the new field type")


def _scalar(tp: Any) -> st.SearchStrategy[Any] | None:
    if tp is int:
        return st.integers(INT_MIN, UINT_MAX)
    if tp is float:
        return st.floats(allow_nan=False)
    if tp is bool:
        return st.booleans()
    if tp is str:
        return st.text(max_size=20)
    if tp is bytes:
        return st.binary(max_size=20)
    if tp is None or tp is type(None):
        return st.none()
    return None


def _collection(origin: Any, args: tuple[Any, ...], size: int, depth: int) -> st.SearchStrategy[Any]:
    if depth >= DEPTH_SOFT_LIMIT:
        size = 0
    empty = {tuple: (), frozenset: frozenset(), dict: {}}[origin]
    if size == 0:
        return st.just(empty)
    if origin is tuple:
        return st.lists(strategy_for_type(args[0], depth + 1), max_size=size).map(tuple)
    if origin is frozenset:
        return st.frozensets(strategy_for_type(args[0], depth + 1), max_size=size)
    keys, values = strategy_for_type(args[0], depth + 1), strategy_for_type(args[1], depth + 1)
    return st.dictionaries(keys, values, max_size=size)


def _annotated(inner: Any, metadata: tuple[Any, ...], depth: int) -> st.SearchStrategy[Any]:
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    max_len = min((m.n for m in metadata if isinstance(m, MaxLen)), default=None)
    bounds = [m for m in metadata if isinstance(m, Bounds)]
    if (origin is typing.Union or origin is types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        assert len(rest) == 1
        return st.none() | _annotated(rest[0], metadata, depth)
    while isinstance(inner, typing.NewType):
        inner = inner.__supertype__
    if bounds:
        lo = max((b.lo for b in bounds if b.lo is not None), default=None)
        hi = min((b.hi for b in bounds if b.hi is not None), default=None)
        if inner is int:
            return st.integers(INT_MIN if lo is None else int(lo), UINT_MAX if hi is None else int(hi))
        return st.floats(min_value=lo, max_value=hi, allow_nan=False)
    if max_len is None:
        return strategy_for_type(inner, depth)
    if inner is str:
        return st.text(max_size=max_len)
    if inner is bytes:
        return st.binary(max_size=max_len)
    assert origin in (tuple, frozenset, dict), f"MaxLen on {inner!r}"
    return _collection(origin, args, min(max_len, COLLECTION_MAX), depth)


def strategy_for_message(cls: type[Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Instances of a registered message class."""
    assert depth < DEPTH_HARD_LIMIT, f"{cls.__qualname__} cannot be built without endless recursion"

    def build(*fields: Any) -> Any:
        try:
            return cls(*fields)
        except (ValueError, AssertionError):  # the class's own __post_init__ refused the values
            return None

    parts = [strategy_for_type(tp, depth + 1) for tp in field_types(cls).values()]
    return st.builds(build, *parts).filter(lambda m: m is not None)


REGISTRY = registered_types()


def test_the_registry_holds_the_samples_and_the_wire_internals() -> None:
    assert {900, 901, 902, 908, 909, 910, 913} <= set(REGISTRY)
    assert 1 in REGISTRY  # the handshake's Hello
    assert all(math.isfinite(tag) for tag in REGISTRY)


@pytest.mark.parametrize("tag", sorted(REGISTRY), ids=lambda t: f"{t}-{REGISTRY[t].__qualname__}")
# filter_too_much: a class's own __post_init__ may refuse many generated values; one that
# refuses all of them still fails (Unsatisfiable).
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(data=st.data())
def test_every_registered_message_round_trips(tag: int, data: st.DataObject) -> None:
    cls = REGISTRY[tag]
    msg = data.draw(strategy_for_message(cls), label=cls.__qualname__)
    encoded = encode(msg)
    back = decode(encoded)
    assert type(back) is cls
    assert back == msg  # NaN is never generated, so equality is exact
    assert decode_as(encoded, cls) == back
    assert encode(back) == encoded  # canonical: decoding loses nothing the encoder wrote
    assert decode_many(join_encoded([encoded, encoded])) == [back, back]  # the batch path agrees

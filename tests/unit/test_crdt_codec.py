"""Bad bytes raise DecodeError and nothing else, for every type (fuzzed with Hypothesis)."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.crdt import (
    ALL_TYPES,
    BoundedCounter,
    DecodeError,
    GCounter,
    InvalidElementError,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
)
from stalwart.errors import DecodeError as RootDecodeError

# msgpack-shaped junk: nested arrays/maps of scalars, the usual suspects for validators.
JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=20,
)


def _samples() -> dict[type, bytes]:
    s = ORSet("a")
    s.add("x")
    s.add(("t", 1))
    s.remove("x")
    m = ORMap("a", ORMap.of(MVRegister))
    m.update("k", lambda inner: inner.update("j", lambda r: r.write(b"v")))
    g = GCounter("a")
    g.increment(3)
    b = BoundedCounter("a")
    b.increment(5)
    b.transfer(2, "b")
    out: dict[type, bytes] = {t: t("a").to_bytes() for t in ALL_TYPES if t is not ORMap}
    out.update(
        {ORSet: s.to_bytes(), ORMap: m.to_bytes(), GCounter: g.to_bytes(), BoundedCounter: b.to_bytes()}
    )
    return out


SAMPLES = _samples()
TYPES = pytest.mark.parametrize("cls", sorted(ALL_TYPES, key=lambda t: t.__name__), ids=lambda t: t.__name__)


def test_decode_error_is_the_shared_class() -> None:
    assert DecodeError is RootDecodeError


@TYPES
@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=64))
def test_random_bytes_raise_only_decode_error(cls: type, data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        cls.from_bytes(data)


@TYPES
@settings(max_examples=60, deadline=None)
@given(junk=JUNK, version=st.sampled_from([1, 1, 2]))
def test_well_formed_msgpack_with_a_bad_body_raises_only_decode_error(
    cls: type, junk: object, version: int
) -> None:
    data = msgpack.packb([cls._TAG, version, ["a", junk]], use_bin_type=True)
    with contextlib.suppress(DecodeError):
        cls.from_bytes(data)


@TYPES
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_mutated_valid_encodings_raise_only_decode_error(cls: type, data: st.DataObject) -> None:
    raw = bytearray(SAMPLES[cls])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        out = cls.from_bytes(bytes(raw[:cut]))
    except DecodeError:
        return
    assert type(out) is cls
    assert cls.from_bytes(out.to_bytes()) == out  # whatever decodes is a valid state


def test_specific_malformations_are_refused() -> None:
    with pytest.raises(DecodeError, match="wrong type tag"):
        ORSet.from_bytes(GCounter("a").to_bytes())
    with pytest.raises(DecodeError, match="version"):
        ORSet.from_bytes(msgpack.packb([ORSet._TAG, 99, ["a", [[], [[], []]]]]))
    with pytest.raises(DecodeError, match="outside the causal context"):
        ORSet.from_bytes(msgpack.packb([ORSet._TAG, 1, ["a", [[["a", 5, "x"]], [[], [], []]]]]))
    with pytest.raises(DecodeError, match="duplicate"):
        GCounter.from_bytes(msgpack.packb([GCounter._TAG, 1, ["a", [[["a", 1], ["a", 2]], []]]]))
    with pytest.raises(DecodeError, match=r"not valid msgpack"):
        GCounter.from_bytes(GCounter("a").to_bytes() + b"\x00")
    with pytest.raises(DecodeError, match="expected bytes"):
        GCounter.from_bytes("text")  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match=r"outside"):
        PNCounter.from_bytes(msgpack.packb([PNCounter._TAG, 1, ["a", [[["a", -1]], [], []]]]))


def test_unsupported_elements_are_refused_with_a_typed_error() -> None:
    s = ORSet("a")
    for bad in ([1], {"a": 1}, float("nan"), object(), 2**70):
        with pytest.raises(InvalidElementError):
            s.add(bad)
    assert s.is_bottom()  # nothing changed
    with pytest.raises(InvalidElementError):
        ORMap("a", ORSet).update(["unhashable"], lambda x: x.add(1))
    with pytest.raises(InvalidElementError):
        ORMap("a", GCounter)  # type: ignore[arg-type]  # counters are not causal values


def test_lww_register_with_no_write_round_trips() -> None:
    r = LWWRegister("a")
    assert LWWRegister.from_bytes(r.to_bytes()) == r


def test_live_dots_of_a_pruned_replica_are_refused() -> None:
    body = ["a", [[["gone", 1, "x"]], [[], [], ["gone"]]]]
    with pytest.raises(DecodeError, match="pruned"):
        ORSet.from_bytes(msgpack.packb([ORSet._TAG, 1, body]))


def test_bad_replica_ids_get_a_typed_error() -> None:
    from stalwart.crdt import InvalidReplicaError

    for bad in ("", None, 3):
        with pytest.raises(InvalidReplicaError):
            ORSet(bad)  # type: ignore[arg-type]
    assert ["unhashable"] not in ORSet("a") and ["unhashable"] not in ORMap("a", ORSet)

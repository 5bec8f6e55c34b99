"""Batches (encode_many / join_encoded / decode_many) and the fast envelope build behind decode.

decode_many must agree with decode message by message, refuse whatever decode refuses (and any
batch that is not an array of envelopes) with DecodeError only, and the objects it builds
without calling __init__ must be indistinguishable from ones built by calling the class.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.wire import (
    DecodeError,
    EncodeError,
    Limits,
    decode,
    decode_many,
    encode,
    encode_many,
    join_encoded,
    message,
    registered_types,
)
from stalwart.wire._fastbuild import bypass_setters
from stalwart.wire._many import array_header
from tests.unit.test_wire_fuzz import SEED, corpus, mutate
from tests.unit.test_wire_samples import SAMPLES


@message(960)
@dataclass(frozen=True, slots=True)
class Pair:
    a: int
    b: str


@message(961)
@dataclass(frozen=True, slots=True)
class Wide:
    f0: int
    f1: int
    f2: str
    f3: bytes
    f4: float
    f5: bool
    f6: int
    f7: int
    f8: int
    f9: str


@message(962)
@dataclass(frozen=True, slots=True)
class Checked:
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("n must be >= 0")


@message(963)
@dataclass(frozen=True, slots=True)
class Empty:
    pass


@message(964)
@dataclass(frozen=True, slots=True)
class Three:
    x: int
    y: int
    z: str


@message(965)
@dataclass(frozen=True, slots=True)
class Four:
    w: int
    x: int
    y: int
    z: bytes


OURS: list[Any] = [
    Pair(1, "x"),
    Wide(1, 2, "s", b"b", 1.5, True, 7, 8, 9, "t"),
    Checked(3),
    Empty(),
    Three(1, 2, "z"),
    Four(1, 2, 3, b"z"),
]


def test_a_batch_round_trips_and_agrees_with_decode_one_by_one() -> None:
    msgs = [*SAMPLES, *OURS]
    data = encode_many(msgs)
    assert data == join_encoded([encode(m) for m in msgs])
    got = decode_many(data)
    assert got == msgs
    assert got == [decode(encode(m)) for m in msgs]
    assert [type(m) for m in got] == [type(m) for m in msgs]


def test_the_fast_build_makes_ordinary_frozen_objects() -> None:
    for msg in OURS:
        (back,) = decode_many(encode_many([msg]))
        assert back == msg and hash(back) == hash(msg) and repr(back) == repr(msg)
        assert decode(encode(msg)) == msg
        if dataclasses.fields(back):
            with pytest.raises(dataclasses.FrozenInstanceError):
                back.__setattr__(dataclasses.fields(back)[0].name, 0)


def test_bypass_is_refused_for_classes_that_are_not_plain_generated_dataclasses() -> None:
    assert bypass_setters(Pair, ("a", "b")) is not None
    assert bypass_setters(Checked, ("n",)) is None  # __post_init__ must run

    @dataclass(frozen=True, slots=True)
    class OwnInit:
        a: int

        def __init__(self, a: int) -> None:
            object.__setattr__(self, "a", a * 2)

    assert bypass_setters(OwnInit, ("a",)) is None
    with pytest.raises(DecodeError, match="rejected"):
        decode_many(join_encoded([encode(Checked(1)), msgpack.packb([1, 962, -1])]))


@pytest.mark.parametrize("n", [0, 1, 15, 16, 65_535, 65_536])
def test_every_array_header_width(n: int) -> None:
    items = [encode(Pair(i, "")) for i in range(n)]
    assert array_header(n) == msgpack.packb([None] * n)[: len(array_header(n))]
    assert decode_many(join_encoded(items)) == [Pair(i, "") for i in range(n)]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "malformed"),
        (msgpack.packb(5), "not a batch"),
        (msgpack.packb({"a": 1}), "not a batch"),
        (join_encoded([encode(Pair(1, "x"))]) + b"\x00", "trailing"),
        (join_encoded([encode(Pair(1, "x"))])[:-1], "malformed"),
        (msgpack.packb([b"raw bytes, not an envelope"]), "not a message"),
        (msgpack.packb([[2, 960, 1, "x"]]), "version"),
        (msgpack.packb([[1, 969, 1, "x"]]), "unknown message tag"),
        (msgpack.packb([[1, 960, 1]]), "expected 2 fields"),
        (msgpack.packb([[1, 960, "1", "x"]]), "Pair.a"),
        (msgpack.packb([[True, 960, 1, "x"]]), "version"),
        (msgpack.packb([[1, 960.0, 1, "x"]]), "unknown message tag"),
        (msgpack.packb([[1, 960, 1, "x"], [1]]), "not a message"),
    ],
)
def test_malformed_batches_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_many(data)


def test_limits_apply_to_the_batch() -> None:
    data = encode_many([Pair(i, "x" * 10) for i in range(5)])
    assert len(decode_many(data, max_messages=5)) == 5
    with pytest.raises(DecodeError, match="exceeds 4"):
        decode_many(data, max_messages=4)
    with pytest.raises(DecodeError, match="exceeds"):
        decode_many(data, limits=Limits(max_message_bytes=len(data) - 1))
    with pytest.raises(DecodeError, match="malformed"):
        decode_many(data, limits=Limits(max_str_bytes=9))
    with pytest.raises(DecodeError, match="malformed"):
        decode_many(data, limits=Limits(max_collection_len=4))  # the batch array is one too


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(Pair, st.integers(-(2**63), 2**64 - 1), st.text(max_size=8)),
            st.builds(Three, st.integers(-5, 5), st.integers(-(2**63), 2**64 - 1), st.text(max_size=3)),
            st.builds(Checked, st.integers(0, 2**63 - 1)),
            st.just(Empty()),
        ),
        max_size=40,
    )
)
def test_hypothesis_batches_round_trip(msgs: list[Any]) -> None:
    assert decode_many(encode_many(msgs)) == msgs


BATCH_FUZZ_INPUTS = 20_000


def test_mutated_batches_only_ever_raise_decode_error() -> None:
    rng = random.Random(SEED + 10)
    seeds = corpus() + [encode(m) for m in OURS]
    registered = set(registered_types().values())
    accepted = 0
    for _ in range(BATCH_FUZZ_INPUTS):
        batch = join_encoded([rng.choice(seeds) for _ in range(rng.randrange(0, 6))])
        data = mutate(rng, batch, seeds)
        try:
            got = decode_many(data)
        except DecodeError:
            continue
        except Exception as exc:  # the property under test: nothing else may ever escape
            raise AssertionError(f"seed {SEED + 10}: {type(exc).__name__}: {exc} on {data.hex()}") from exc
        accepted += 1
        assert all(type(m) in registered for m in got)
        again = encode_many(got)  # what decodes re-encodes, and decodes to the same (NaN-safe: bytes)
        assert encode_many(decode_many(again)) == again
    assert accepted > 500  # the fuzzer must reach the per-message checks, not only msgpack's


class Small(int):
    """An int subclass: not the exact type, so every fast form must hand it to the general path."""


@message(966)
@dataclass(frozen=True, slots=True)
class One:
    a: float


@pytest.mark.parametrize(
    ("odd", "canonical"),
    [
        (One(1), One(1.0)),  # an int widened to float by coercion
        (Pair(Small(5), "x"), Pair(5, "x")),
        (Three(1, Small(2), "z"), Three(1, 2, "z")),
        (Four(1, 2, Small(3), bytearray(b"z")), Four(1, 2, 3, b"z")),  # type: ignore[arg-type]
    ],
)
def test_the_encoder_fast_forms_coerce_like_the_general_path(odd: Any, canonical: Any) -> None:
    assert encode(odd) == encode(canonical)
    assert decode(encode(odd)) == canonical


@pytest.mark.parametrize(
    "bad",
    [One("1.0"), Pair(True, "x"), Pair(1, b"x"), Three(1, 2, 3), Four(1, 2, 3, "z"), Four(1, 2, 3, None)],  # type: ignore[arg-type]
)
def test_the_encoder_fast_forms_refuse_like_the_general_path(bad: Any) -> None:
    with pytest.raises(EncodeError, match=type(bad).__qualname__):
        encode(bad)
    with pytest.raises(EncodeError):
        encode_many([Pair(1, "x"), bad])

"""Every kind of bad input decodes to DecodeError and nothing else (and never allocates big)."""

from __future__ import annotations

import tracemalloc
from typing import Any

import msgpack
import pytest

from stalwart.wire import PROTOCOL_VERSION, DecodeError, Limits, decode, decode_as, encode
from tests.unit.test_wire_samples import (
    SAMPLES,
    Collections,
    One,
    Scalars,
    Tree,
)

V = PROTOCOL_VERSION
SCALARS_OK = [0, 0.0, False, "", b"", None]
COLLECTIONS_OK: list[Any] = [[], ["", 0.0], [], [], {}, {}, {}]


def forge(*items: Any) -> bytes:
    """A msgpack array built by hand: what a buggy or hostile peer could send."""
    data: bytes = msgpack.packb(list(items), use_bin_type=True)
    return data


def with_field(tag: int, fields: list[Any], index: int, value: Any) -> bytes:
    fields = list(fields)
    fields[index] = value
    return forge(V, tag, *fields)


def rejects(data: Any, match: str | None = None, **kwargs: Any) -> None:
    with pytest.raises(DecodeError, match=match):
        decode(data, **kwargs)


def test_the_hand_built_baselines_are_valid() -> None:
    # If these did not decode, every rejection below would prove nothing.
    assert decode(forge(V, 900, *SCALARS_OK)) == Scalars(0, 0.0, False, "", b"", None)
    assert isinstance(decode(forge(V, 902, *COLLECTIONS_OK)), Collections)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (forge(2, 907, 1), "unsupported protocol version 2"),
        (forge(0, 907, 1), "unsupported protocol version"),
        (forge(True, 907, 1), "unsupported protocol version"),
        (forge("1", 907, 1), "unsupported protocol version"),
        (forge(V, 123456, 1), "unknown message tag"),
        (forge(V, True), "unknown message tag"),  # True == 1 must not find tag 1
        (forge(V, 907.0, 1), "unknown message tag"),
        (forge(V, "907", 1), "unknown message tag"),
        (forge(V, -1, 1), "unknown message tag"),
        (msgpack.packb(7), "not a message"),
        (msgpack.packb({"v": 1}), "not a message"),
        (forge(), "not a message"),
        (forge(V), "not a message"),
        (forge(V, 907), "expected 1 fields, got 0"),
        (forge(V, 907, 1, 2), "expected 1 fields, got 2"),
    ],
)
def test_bad_envelopes(data: bytes, match: str) -> None:
    rejects(data, match)


@pytest.mark.parametrize(
    ("index", "value", "match"),
    [
        (0, True, "Scalars.i: expected int, got bool"),
        (0, 1.0, "Scalars.i: expected int, got float"),
        (0, "1", "Scalars.i: expected int, got str"),
        (0, None, "Scalars.i: expected int, got nil"),
        (1, 1, "Scalars.f: expected float, got int"),
        (1, True, "Scalars.f: expected float, got bool"),
        (2, 1, "Scalars.b: expected bool, got int"),
        (2, 0, "Scalars.b: expected bool, got int"),
        (3, b"s", "Scalars.s: expected str, got bytes"),
        (3, ["s"], "Scalars.s: expected str, got array"),
        (4, "b", "Scalars.raw: expected bytes, got str"),
        (5, 0, "Scalars.nothing: expected None, got int"),
        (5, {}, "Scalars.nothing: expected None, got map"),
    ],
)
def test_wrong_scalar_types_including_bool_int_confusion(index: int, value: Any, match: str) -> None:
    rejects(with_field(900, SCALARS_OK, index, value), match)


@pytest.mark.parametrize(
    ("index", "value", "match"),
    [
        (0, [1, "2"], "Collections.ints: item: expected int, got str"),
        (0, [True], "Collections.ints: item: expected int, got bool"),
        (0, {"a": 1}, "Collections.ints: expected tuple"),
        (1, ["a"], "of 2 items, got 1"),
        (1, ["a", 1.0, 2], "of 2 items, got 3"),
        (1, [1, 1.0], "expected str, got int"),
        (2, [1], "of 0 items, got 1"),
        (3, ["a", "a"], "repeated item"),
        (3, [1], "expected str, got int"),
        (4, {"a": "1"}, "expected int, got str"),
        (4, {1: 1}, "expected str, got int"),
        (4, [["a", 1]], "expected dict"),
        (5, {"1": b""}, "expected int, got str"),
        (5, {True: b""}, "expected int, got bool"),
        (6, {b"k": [1.5]}, "expected int, got float"),
        (6, {(1, 2): [1]}, "expected bytes, got array"),
    ],
)
def test_wrong_collection_shapes(index: int, value: Any, match: str) -> None:
    rejects(with_field(902, COLLECTIONS_OK, index, value), match)


@pytest.mark.parametrize(
    ("tag", "fields", "match"),
    [
        (903, [99, "fast", [], {}, None], "99 is not a value of Role"),
        (903, [True, "fast", [], {}, None], "expected Role, got bool"),
        (903, [1, "slow", [], {}, None], "'slow' is not a value of Mode"),
        (903, [1, "fast", [1, 1], {}, None], "repeated item"),
        (903, [1, "fast", [], {9: "fast"}, None], "9 is not a value of Role"),
        (905, ["123456789", b"", 0, 0.0, [], [], {}, None, 1, []], r"exceeds MaxLen\(8\)"),
        (905, ["", b"12345", 0, 0.0, [], [], {}, None, 1, []], r"exceeds MaxLen\(4\)"),
        (905, ["", b"", -1, 0.0, [], [], {}, None, 1, []], "outside Bounds"),
        (905, ["", b"", 0, float("nan"), [], [], {}, None, 1, []], "outside Bounds"),
        (905, ["", b"", 0, 0.0, [1, 2, 3, 4], [], {}, None, 1, []], "exceeds MaxLen"),
        (905, ["", b"", 0, 0.0, [], [1, 2, 3, 4], {}, None, 1, []], "exceeds MaxLen"),
        (905, ["", b"", 0, 0.0, [], [], {"a": 1, "b": 2, "c": 3}, None, 1, []], "exceeds MaxLen"),
        (905, ["", b"", 0, 0.0, [], [], {}, "abc", 1, []], "exceeds MaxLen"),
        (905, ["", b"", 0, 0.0, [], [], {}, None, 0, []], "outside Bounds"),
        (905, ["", b"", 0, 0.0, [], [], {}, None, 1, ["abcd"]], "exceeds MaxLen"),
        (909, [[906], None, [], ["x"]], "tag 906 is not one of One | Scalars | Later"),
        (909, [[], None, [], ["x"]], "tag None is not one of"),
        (909, [[True, 1], None, [], ["x"]], "tag True is not one of"),
        (909, [[907, "1"], None, [], ["x"]], "One.x: expected int, got str"),
        (909, [[907, 1, 2], None, [], ["x"]], "One: expected 1 fields, got 2"),
        (909, [[907, 1], None, [], [1]], "Later.note: expected str, got int"),
        (909, [[907, 1], None, [], "x"], "expected Later, got str"),
        (912, [5, 1], "rejected its fields"),
        (913, [1], "expected 3 fields, got 1"),
    ],
)
def test_bad_enums_bounds_unions_and_nested_messages(tag: int, fields: list[Any], match: str) -> None:
    rejects(forge(V, tag, *fields), match)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_truncation_and_any_trailing_byte_is_refused(msg: object) -> None:
    data = encode(msg)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:cut])
    rejects(data + b"\x00", "trailing bytes")
    rejects(data + data, "trailing bytes")


@pytest.mark.parametrize(
    "header",
    [
        b"\xdd\xff\xff\xff\xff",  # array32 of 4 Gi items
        b"\xdf\xff\xff\xff\xff",  # map32
        b"\xdb\xff\xff\xff\xff",  # str32 of 4 GiB
        b"\xc6\xff\xff\xff\xff",  # bin32
        b"\xc9\xff\xff\xff\xff\x01",  # ext32
        b"\x93\x01\xcd\x03\x84\xdb\x7f\xff\xff\xff",  # a valid envelope whose str claims 2 GiB
        b"\x93\x01\xcd\x03\x86\xdd\x7f\xff\xff\xff",  # ... whose tuple claims 2 Gi items
    ],
)
def test_absurd_sizes_are_refused_without_allocating(header: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError):
            decode(header + b"\x00" * 64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak


def test_limits_are_enforced() -> None:
    big_str = with_field(900, SCALARS_OK, 3, "x" * 100)
    rejects(big_str, "exceeds max_str_len", limits=Limits(max_str_bytes=99))
    assert decode(big_str, limits=Limits(max_str_bytes=100))
    big_bin = with_field(900, SCALARS_OK, 4, b"x" * 100)
    rejects(big_bin, "exceeds max_bin_len", limits=Limits(max_bin_bytes=99))
    long_tuple = with_field(902, COLLECTIONS_OK, 0, list(range(10)))
    rejects(long_tuple, "exceeds max_array_len", limits=Limits(max_collection_len=9))
    big_map = with_field(902, COLLECTIONS_OK, 4, {str(i): i for i in range(10)})
    rejects(big_map, "exceeds max_map_len", limits=Limits(max_collection_len=9))
    rejects(big_str, "exceeds 50", limits=Limits(max_message_bytes=50))


def _tree(depth: int) -> Tree:
    tree = Tree("leaf", ())
    for _ in range(depth):
        tree = Tree("n", (tree,))
    return tree


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    # Each Tree level is a message plus a tuple: two levels of nesting.
    shallow, deep = encode(_tree(14)), encode(_tree(16))
    assert decode(shallow) == _tree(14)
    rejects(deep, "deeper than Limits.max_depth")
    assert decode(deep, limits=Limits(max_depth=40)) == _tree(16)
    rejects(shallow, "deeper than", limits=Limits(max_depth=2))


@pytest.mark.parametrize("opener", [b"\x91", b"\x81\xa1k"])
def test_absurdly_deep_raw_nesting_is_refused(opener: bytes) -> None:
    rejects(opener * 100_000 + b"\xc0")
    # The same inside a message field, where the schema allows recursion.
    rejects(b"\x94\x01\xcd\x03\x8c\xa1n" + opener * 50_000 + b"\xc0\xc0")


@pytest.mark.parametrize(
    "raw_str",
    [b"\xa2\xff\xfe", b"\xa3\xed\xa0\x80", b"\xa1\x80", b"\xa2\xc3\x28", b"\xa4\xf4\x90\x80\x80"],
)
def test_invalid_utf8_is_refused(raw_str: bytes) -> None:
    rejects(b"\x96\x01\xcd\x03\x84\x00\xcb" + b"\x00" * 8 + b"\xc2" + raw_str + b"\xc4\x00\xc0", "malformed")


@pytest.mark.parametrize(
    "ext",
    [b"\xd4\x01\x00", b"\xd6\xff\x00\x00\x00\x00", b"\xc7\x00\x05", b"\xd5\x7f\x00\x00"],
)
def test_extension_types_are_refused(ext: bytes) -> None:
    rejects(b"\x93\x01\xcd\x03\x8b" + ext)


@pytest.mark.parametrize("data", [None, "text", 17, [1, 2], bytearray(b"\xc1"), memoryview(b"")])
def test_non_bytes_or_empty_input_is_a_decode_error(data: Any) -> None:
    rejects(data)


def test_bytearray_and_memoryview_inputs_decode() -> None:
    data = encode(One(5))
    assert decode(bytearray(data)) == One(5)
    assert decode(memoryview(data)) == One(5)


def test_size_limit_counts_bytes_of_a_wide_memoryview() -> None:
    wide = memoryview(encode(One(5)) + b"\x00" * 2).cast("I")  # 2 items of 4 bytes
    rejects(wide, "8 bytes exceeds 7", limits=Limits(max_message_bytes=7))


def test_unhashable_map_keys_are_refused() -> None:
    # Collections with by_name = {{}: 1}: a map used as a map key.
    head = b"\x99\x01\xcd\x03\x86\x90\x92\xa0\xcb" + b"\x00" * 8 + b"\x90\x90"
    assert decode(head + b"\x80\x80\x80") == Collections((), ("", 0.0), (), frozenset(), {}, {}, {})
    rejects(head + b"\x81\x80\x01\x80\x80", "malformed")


def test_reserved_byte_is_refused() -> None:
    rejects(b"\x93\x01\xcd\x03\x8b\xc1", "malformed")


def test_decode_as_refuses_another_message_class() -> None:
    data = encode(One(1))
    with pytest.raises(DecodeError, match=r"expected Scalars \(tag 900\), got tag 907"):
        decode_as(data, Scalars)
    with pytest.raises(DecodeError):
        decode_as(b"\xc1", One)

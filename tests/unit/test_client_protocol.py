"""The client protocol's direct encoders give exactly the bytes wire.encode gives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart import wire
from stalwart.client._protocol import (
    MAX_CLIENT_ID_CHARS,
    Consistency,
    ReadRequest,
    Response,
    ResponseStatus,
    WriteRequest,
    decode_response,
    decode_write,
    encode_request,
    encode_response,
)
from stalwart.errors import DecodeError
from stalwart.wire import EncodeError

IDS = st.integers(0, 2**63 - 1)


@given(IDS, st.sampled_from(list(ResponseStatus)), st.none() | st.binary(max_size=64),
       st.none() | st.text(max_size=20), st.text(max_size=500))  # fmt: skip
def test_encode_response_is_wire_encode(rid: int, status: ResponseStatus, result: bytes | None,
                                        hint: str | None, error: str) -> None:  # fmt: skip
    data = encode_response(rid, status, result, hint, error)
    assert data == wire.encode(Response(rid, status, result, hint, error))
    assert wire.decode(data) == Response(rid, status, result, hint, error)


@given(IDS, st.text(min_size=1, max_size=MAX_CLIENT_ID_CHARS), IDS, IDS, st.binary(max_size=200))
def test_encode_request_is_wire_encode(rid: int, client: str, seq: int, ack: int, command: bytes) -> None:
    msg = WriteRequest(rid, client, seq, ack, command)
    assert encode_request(msg) == wire.encode(msg)
    read = ReadRequest(rid, command, Consistency.LEASE)
    assert encode_request(read) == wire.encode(read)


def test_messages_outside_the_fast_path_go_through_wire_encode() -> None:
    negative = WriteRequest(-1, "c", 1, 1, b"x")
    assert encode_request(negative) == wire.encode(negative)
    for refused in (
        WriteRequest(1, "c" * (MAX_CLIENT_ID_CHARS + 1), 1, 1, b"x"),  # over its MaxLen
        WriteRequest(2**64, "c", 1, 1, b"x"),  # not a msgpack integer
    ):
        with pytest.raises(EncodeError):
            encode_request(refused)


_ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=8),
    max_leaves=12,
)
_WRITE_LIKE = st.tuples(
    st.sampled_from([1, 2, True]), st.sampled_from([540, 541, 543]), _ANY | IDS, _ANY | st.text(max_size=130),
    _ANY | IDS, _ANY | IDS, _ANY | st.binary(max_size=20),
).map(list)  # fmt: skip
_MIB = wire.Limits().max_str_bytes
# Strings around wire.decode's string limit (UTF-8 bytes: "é" is two), up to a 4 MiB frame.
_LONG_STR = st.tuples(
    st.sampled_from(["h", "é"]), st.sampled_from([_MIB // 2, _MIB - 1, _MIB, _MIB + 1, 2 * _MIB])
).map(lambda cn: cn[0] * (cn[1] // len(cn[0].encode())) + "h" * (cn[1] % len(cn[0].encode())))
_RESPONSE_LIKE = st.tuples(
    st.sampled_from([1, 2]), st.sampled_from([543, 540]), _ANY | IDS,
    _ANY | st.sampled_from([s.value for s in ResponseStatus]), _ANY, _ANY | _LONG_STR,
    _ANY | st.text(max_size=520) | _LONG_STR,
).map(list)  # fmt: skip
_RESPONSE_HINTED = st.tuples(
    st.just(wire.PROTOCOL_VERSION), st.just(543), IDS, st.sampled_from([s.value for s in ResponseStatus]),
    st.none() | st.binary(max_size=8), st.none() | st.text(max_size=8) | _LONG_STR,
    st.text(max_size=8) | _LONG_STR,
).map(list)  # fmt: skip


def _wire(item: bytes) -> object:
    try:
        return wire.decode(item)
    except DecodeError:
        return DecodeError


@settings(max_examples=500)
@given(_WRITE_LIKE | _ANY | st.binary(max_size=40))
def test_decode_write_accepts_exactly_what_wire_decode_reads_as_a_write_request(value: object) -> None:
    import msgpack

    item = value if isinstance(value, bytes) else msgpack.packb(value, use_bin_type=True)
    fields = decode_write(item)
    expected = _wire(item)
    if fields is not None:
        assert expected == WriteRequest(*fields)
    else:
        assert not isinstance(expected, WriteRequest), "a well-formed write must take the fast path"


@settings(max_examples=500)
@given(_RESPONSE_LIKE | _RESPONSE_HINTED | _ANY)
def test_decode_response_is_wire_decode_for_responses(value: object) -> None:
    import msgpack

    item = msgpack.packb(value, use_bin_type=True)
    expected = _wire(item)
    if isinstance(expected, Response):
        assert decode_response(item) == expected
    else:
        with pytest.raises(DecodeError):
            decode_response(item)


def test_decode_response_refuses_a_leader_hint_wire_decode_refuses() -> None:
    import msgpack

    for size, accepted in ((_MIB, True), (_MIB + 1, False), (2 * _MIB, False)):
        value = [wire.PROTOCOL_VERSION, 543, 1, "redirect", None, "h" * size, ""]
        item = msgpack.packb(value, use_bin_type=True)
        assert isinstance(_wire(item), Response) is accepted
        if accepted:
            assert decode_response(item).leader_hint == "h" * size
        else:
            with pytest.raises(DecodeError):
                decode_response(item)


_FIELD = (
    _ANY | IDS | st.just(2**64) | st.text(max_size=130) | st.binary(max_size=20) | st.just(bytearray(b"x"))
)


def _encoded(encode: object, msg: object) -> object:
    try:
        return encode(msg)  # type: ignore[operator]
    except EncodeError:
        return EncodeError


@settings(max_examples=500)
@given(_FIELD, _FIELD, _FIELD, _FIELD, _FIELD)
def test_encode_request_refuses_what_wire_encode_refuses(
    rid: object, client: object, seq: object, ack: object, command: object
) -> None:
    """A field of the wrong type (bool, float, str seq, ...) must not be packed by the fast path."""
    msg = WriteRequest(rid, client, seq, ack, command)  # type: ignore[arg-type]
    assert _encoded(encode_request, msg) == _encoded(wire.encode, msg)


@pytest.mark.parametrize(
    "msg",
    [
        WriteRequest(True, "c", 1, 1, b"x"),  # type: ignore[arg-type]
        WriteRequest(1, "c", 1.0, 1, b"x"),  # type: ignore[arg-type]
        WriteRequest(1, "c", "1", 1, b"x"),  # type: ignore[arg-type]
        WriteRequest(1, "c", 1, False, b"x"),  # type: ignore[arg-type]
        WriteRequest(1, b"c", 1, 1, b"x"),  # type: ignore[arg-type]
        WriteRequest(1, "c", 1, 1, "x"),  # type: ignore[arg-type]
    ],
)
def test_encode_request_of_a_wrongly_typed_field(msg: WriteRequest) -> None:
    assert _encoded(encode_request, msg) == _encoded(wire.encode, msg)

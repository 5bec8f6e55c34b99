"""The client protocol's direct encoders give exactly the bytes wire.encode gives."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalwart import wire
from stalwart.client._protocol import (
    MAX_CLIENT_ID_CHARS,
    Consistency,
    ReadRequest,
    Response,
    ResponseStatus,
    WriteRequest,
    encode_request,
    encode_response,
)
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

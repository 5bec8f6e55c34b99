"""The minimal RESP2 codec used by Redlock's fan-out: encoding, parsing, partial and bad input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalwart.lock import BackendProtocolError
from stalwart.lock._resp import RespError, _Incomplete, pack, parse


def encode(reply: Any) -> bytes:
    """Reference encoder for the reply types the lock scripts produce."""
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    if reply is None:
        return b"$-1\r\n"
    return b"*%d\r\n" % len(reply) + b"".join(encode(r) for r in reply)


replies = st.recursive(
    st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.binary(max_size=64), st.none()),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=20,
)


@given(replies)
def test_parse_round_trips(reply: Any) -> None:
    data = encode(reply)
    assert parse(data, 0) == (reply, len(data))


@given(replies, st.data())
def test_every_strict_prefix_is_incomplete(reply: Any, data: st.DataObject) -> None:
    raw = encode(reply)
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    with pytest.raises(_Incomplete):
        parse(raw[:cut], 0)


def test_errors_and_status_replies() -> None:
    err, end = parse(b"-NOSCRIPT No matching script\r\n+OK\r\n", 0)
    assert isinstance(err, RespError) and err.message.startswith("NOSCRIPT")
    assert parse(b"-NOSCRIPT No matching script\r\n+OK\r\n", end)[0] == b"OK"


@pytest.mark.parametrize(
    "garbage",
    [b"?this is not RESP\r\n", b":12x\r\n", b"$3\r\nabcXY", b"*99999999\r\n", b"$99999999999\r\n"],
)
def test_garbage_is_a_protocol_error(garbage: bytes) -> None:
    with pytest.raises(BackendProtocolError):
        parse(garbage, 0)


@given(
    st.lists(st.one_of(st.text(max_size=20), st.integers(), st.binary(max_size=20)), min_size=1, max_size=8)
)
def test_pack_is_a_resp_array_of_bulk_strings(args: list[Any]) -> None:
    encoded = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    assert parse(pack(args), 0)[0] == encoded

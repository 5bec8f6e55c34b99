"""The minimal RESP2 codec used by Redlock's fan-out: encoding, parsing, partial and bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalwart.lock import BackendProtocolError, BackendUnavailable
from stalwart.lock._resp import (
    MAX_DEPTH,
    MAX_PENDING,
    MAX_REPLY_BYTES,
    Gather,
    RespConnection,
    RespError,
    _Incomplete,
    pack,
    parse,
    request_all,
)


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


def test_gather_resolves_once_when_every_slot_is_answered() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        gather = Gather(3, loop.create_future())
        gather.deliver(1, 7)
        gather.deliver(1, 8)  # a second answer for the same slot is dropped
        gather.deliver(0, b"x")
        assert not gather.future.done() and gather.remaining == 1
        gather.deliver(2, RespError("ERR"))
        assert gather.future.done() and gather.results[:2] == [b"x", 7]
        gather.deliver(2, 9)  # late: dropped
        assert isinstance(gather.results[2], RespError)

    asyncio.run(main())


def test_gather_expire_fills_only_the_open_slots() -> None:
    async def main() -> None:
        gather = Gather(3, asyncio.get_running_loop().create_future())
        gather.deliver(1, 1)
        gather.expire(lambda i: f"timeout {i}")
        assert gather.future.done() and gather.results == ["timeout 0", 1, "timeout 2"]
        gather.deliver(0, 5)
        assert gather.results[0] == "timeout 0"

    asyncio.run(main())


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def _connected() -> RespConnection:
    conn = RespConnection("test")
    conn.connection_made(_Transport())
    return conn


@given(st.lists(st.integers(min_value=1, max_value=30), max_size=6))
def test_replies_split_anywhere_reach_their_gathers_in_order(cuts: list[int]) -> None:
    async def main() -> None:
        conn = _connected()
        loop = asyncio.get_running_loop()
        gathers = [Gather(1, loop.create_future()) for _ in range(3)]
        for g in gathers:
            conn.request_into(b"PING", g, 0)
        stream = b"*2\r\n:1\r\n:42\r\n:1\r\n$3\r\nabc\r\n"
        pos = 0
        for cut in cuts:
            conn.data_received(stream[pos : pos + cut])
            pos += cut
        conn.data_received(stream[pos:])
        assert [g.results[0] for g in gathers] == [[1, 42], 1, b"abc"]
        conn.close()

    asyncio.run(main())


def test_a_broken_connection_answers_pending_gathers_with_its_error() -> None:
    async def main() -> None:
        conn = _connected()
        gather = Gather(2, asyncio.get_running_loop().create_future())
        conn.request_into(b"PING", gather, 0)
        conn.data_received(b"?garbage\r\n")
        conn.request_into(b"PING", gather, 1)  # not usable any more: answered at once
        assert gather.future.done()
        assert all(isinstance(r, BackendProtocolError) for r in gather.results)

    asyncio.run(main())


# -- review regressions: bounded nesting and a bounded reply buffer ------------------------------


def _conn_with_pending() -> tuple[RespConnection, asyncio.Future[Any]]:
    conn = _connected()
    return conn, conn.request(b"PING")


def test_deeply_nested_array_is_a_protocol_error_not_a_recursion_error() -> None:
    async def main() -> None:
        conn, fut = _conn_with_pending()
        conn.data_received(b"*1\r\n" * 5000 + b":1\r\n")  # RecursionError escaped here before
        assert isinstance(fut.exception(), BackendProtocolError)
        assert not conn.usable
        # Within the limit it parses; one level more is refused.
        assert parse(b"*1\r\n" * MAX_DEPTH + b":1\r\n", 0)[0] is not None
        with pytest.raises(BackendProtocolError):
            parse(b"*1\r\n" * (MAX_DEPTH + 1) + b":1\r\n", 0)

    asyncio.run(main())


def test_a_reply_buffered_over_the_limit_breaks_the_connection() -> None:
    async def main() -> None:
        conn, fut = _conn_with_pending()
        item = b"$65536\r\n" + b"x" * 65536 + b"\r\n"
        data = b"*64\r\n" + item * 64  # 4 MB, each item within the bulk limit
        fed = 0
        for i in range(0, len(data), 65536):
            if fut.done():
                break
            conn.data_received(data[i : i + 65536])
            fed += 65536
        assert isinstance(fut.exception(), BackendProtocolError)
        assert fed <= MAX_REPLY_BYTES + 2 * 65536  # broken as soon as the cap was passed
        assert not conn._buf and not conn.usable

    asyncio.run(main())


def test_a_reply_just_under_the_limit_split_in_segments_still_parses() -> None:
    async def main() -> None:
        conn, fut = _conn_with_pending()
        data = b"$%d\r\n" % MAX_REPLY_BYTES + b"y" * MAX_REPLY_BYTES + b"\r\n"
        for i in range(0, len(data), 65536):
            conn.data_received(data[i : i + 65536])
        assert fut.result() == b"y" * MAX_REPLY_BYTES

    asyncio.run(main())


# -- the fan-out's fast receive path (nothing buffered, whole replies in one segment) ------------


def test_several_whole_replies_in_one_segment_answer_their_slots_in_order() -> None:
    async def main() -> None:
        conn = _connected()
        loop = asyncio.get_running_loop()
        gather = Gather(3, loop.create_future())
        fut = conn.request(b"PING")  # a plain request between two fan-out slots
        for i in range(3):
            conn.request_into(b"PING", gather, i)
        conn.data_received(b":7\r\n*2\r\n:1\r\n:42\r\n*3\r\n:1\r\n$2\r\nab\r\n:-3\r\n:0\r\n")
        assert fut.result() == 7
        assert gather.future.done() and gather.results == [[1, 42], [1, b"ab", -3], 0]
        assert conn.usable
        conn.close()

    asyncio.run(main())


def test_a_reply_nobody_asked_for_breaks_the_connection_on_the_fast_path() -> None:
    async def main() -> None:
        conn = _connected()
        gather = Gather(1, asyncio.get_running_loop().create_future())
        conn.request_into(b"PING", gather, 0)
        conn.data_received(b":1\r\n:2\r\n")  # two replies to one request: the stream is out of step
        assert gather.results == [1]
        assert isinstance(conn.broken, BackendProtocolError)
        assert not conn.usable

    asyncio.run(main())


def test_a_bad_integer_inside_an_array_is_a_protocol_error() -> None:
    # Integer items are parsed inline (no recursive call): they must be as strict as the rest.
    with pytest.raises(BackendProtocolError, match="bad integer"):
        parse(b"*2\r\n:1\r\n:x\r\n", 0)
    with pytest.raises(BackendProtocolError):
        parse(b"*2\r\n:1\r\n\r\n", 0)  # an empty item line is garbage, not an integer
    with pytest.raises(_Incomplete):
        parse(b"*2\r\n:1\r\n:4", 0)


def test_request_all_on_an_unusable_connection_sends_and_answers_nothing() -> None:
    async def main() -> None:
        transport = _Transport()
        conn = RespConnection("test")
        conn.connection_made(transport)
        conn.close()
        gather = Gather(1, asyncio.get_running_loop().create_future())
        assert request_all([conn], b"PING", gather) == [0]
        assert gather.remaining == 1 and transport.sent == []  # left to the caller (a reconnect)
        conn.request_into(b"PING", gather, 0)  # the plain form answers the slot with the error
        assert isinstance(gather.results[0], BackendUnavailable)

    asyncio.run(main())


def test_request_all_writes_the_same_bytes_to_every_usable_connection() -> None:
    async def main() -> None:
        transports = [_Transport() for _ in range(3)]
        conns: list[RespConnection | None] = []
        for t in transports:
            conn = RespConnection("test")
            conn.connection_made(t)
            conns.append(conn)
        assert conns[1] is not None
        conns[1].close()
        conns.append(None)  # never connected
        gather = Gather(4, asyncio.get_running_loop().create_future())
        assert request_all(conns, b"REQ", gather) == [1, 3]  # left to the caller, unanswered
        assert [t.sent for t in transports] == [[b"REQ"], [], [b"REQ"]]
        assert gather.remaining == 4
        for conn in (conns[0], conns[2]):
            assert conn is not None
            conn.data_received(b":1\r\n")
        assert gather.results[0] == gather.results[2] == 1 and gather.remaining == 2

    asyncio.run(main())


def test_request_all_past_max_pending_breaks_that_connection_and_fails_its_slot() -> None:
    async def main() -> None:
        conn = _connected()
        loop = asyncio.get_running_loop()
        for _ in range(MAX_PENDING):
            conn.request(b"PING")
        gather = Gather(1, loop.create_future())
        assert request_all([conn], b"PING", gather) is None  # answered, not cold
        assert isinstance(gather.results[0], BackendUnavailable) and gather.future.done()
        assert not conn.usable

    asyncio.run(main())


def test_a_bad_integer_reply_breaks_the_connection_with_a_protocol_error() -> None:
    async def main() -> None:
        conn = _connected()
        gather = Gather(2, asyncio.get_running_loop().create_future())
        conn.request_into(b"PING", gather, 0)
        conn.request_into(b"PING", gather, 1)
        conn.data_received(b":1\r\n:12ab\r\n")
        assert gather.results[0] == 1
        assert isinstance(gather.results[1], BackendProtocolError) and "bad integer" in str(gather.results[1])
        assert not conn.usable

    asyncio.run(main())


# -- transactions: acknowledgements before EXEC's reply -------------------------------------------


@given(st.lists(st.integers(min_value=1, max_value=12), max_size=8))
def test_a_transactions_acks_are_dropped_and_exec_answers_the_slot(cuts: list[int]) -> None:
    """Redlock's acquire is MULTI / SET / INCR / EXEC: three acknowledgements, then EXEC's array.
    Two transactions and a plain reply, split anywhere: each slot gets EXEC's reply, in order."""

    async def main() -> None:
        conn = _connected()
        loop = asyncio.get_running_loop()
        gathers = [Gather(1, loop.create_future()) for _ in range(3)]
        request_all([conn], b"MULTI...", gathers[0], 0, 3)
        request_all([conn], b"MULTI...", gathers[1], 0, 3)
        plain = conn.request(b"PING")
        won = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:7\r\n"
        lost = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n$-1\r\n:8\r\n"
        stream = won + lost + b"+PONG\r\n"
        pos = 0
        for cut in cuts:
            conn.data_received(stream[pos : pos + cut])
            pos += cut
        conn.data_received(stream[pos:])
        assert [g.results[0] for g in gathers[:2]] == [[b"OK", 7], [None, 8]]
        assert plain.result() == b"PONG"
        assert conn.broken is None and not conn._pending
        conn.close()

    asyncio.run(main())


@pytest.mark.parametrize("ack", [b":5\r\n", b"*1\r\n:1\r\n", b"$-1\r\n", b"+PONG\r\n"])
def test_anything_but_ok_queued_or_an_error_as_an_ack_breaks_the_connection(ack: bytes) -> None:
    async def main() -> None:
        conn = _connected()
        gather = Gather(1, asyncio.get_running_loop().create_future())
        request_all([conn], b"MULTI...", gather, 0, 3)
        conn.data_received(ack)
        assert isinstance(conn.broken, BackendProtocolError)
        assert isinstance(gather.results[0], BackendProtocolError)

    asyncio.run(main())


def test_an_error_inside_the_transaction_reaches_the_slot_through_exec() -> None:
    async def main() -> None:
        conn = _connected()
        gather = Gather(1, asyncio.get_running_loop().create_future())
        request_all([conn], b"MULTI...", gather, 0, 3)
        conn.data_received(b"+OK\r\n-ERR bad\r\n+QUEUED\r\n-EXECABORT discarded\r\n")
        assert conn.broken is None
        assert isinstance(gather.results[0], RespError) and "EXECABORT" in gather.results[0].message

    asyncio.run(main())


def test_replies_to_a_fire_and_forget_request_are_dropped_whatever_they_are() -> None:
    """Redlock preloads its scripts on each new connection without waiting: the SCRIPT LOAD
    replies (bulk strings, or errors) are dropped and the next request gets its own reply."""

    async def main() -> None:
        conn = _connected()
        conn.send_ignoring_replies(b"SCRIPT LOAD x; SCRIPT LOAD y", 2)
        plain = conn.request(b"PING")
        conn.data_received(b"$40\r\n" + b"a" * 40 + b"\r\n-ERR no\r\n:1\r\n")
        assert plain.result() == 1 and conn.broken is None and not conn._pending

    asyncio.run(main())


# -- the connection's inline fast path decodes exactly like parse() --------------------------------


class _Simple(bytes):
    """A simple-string reply (``+...``): no CR or LF inside."""


def _encode_any(reply: Any) -> bytes:
    if isinstance(reply, _Simple):
        return b"+" + bytes(reply) + b"\r\n"
    if isinstance(reply, list):
        return b"*%d\r\n" % len(reply) + b"".join(_encode_any(r) for r in reply)
    return encode(reply)


_any_reply = st.recursive(
    st.one_of(
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.binary(max_size=32),
        st.none(),
        st.binary(max_size=16).filter(lambda b: b"\r" not in b and b"\n" not in b).map(_Simple),
    ),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


@given(
    st.lists(_any_reply, min_size=1, max_size=8),
    st.lists(st.integers(min_value=1, max_value=40), max_size=10),
    st.sampled_from(["each reply alone", "all in one", "cut anywhere"]),
)
def test_a_connection_decodes_any_reply_stream_exactly_like_parse(
    stream: list[Any], cuts: list[int], segments: str
) -> None:
    """Whatever the segments, every request gets what the reference parser reads for its reply.
    Whole replies in a segment take the fast path in data_received (integers and statuses
    inline); a cut reply is buffered and takes the general path."""
    encoded = [_encode_any(r) for r in stream]
    expected = [parse(e, 0)[0] for e in encoded]

    async def main() -> None:
        conn = _connected()
        futures = [conn.request(b"X") for _ in stream]
        data, pos = b"".join(encoded), 0
        if segments == "each reply alone":
            for e in encoded:
                conn.data_received(e)
            pos = len(data)
        elif segments == "cut anywhere":
            for cut in cuts:
                conn.data_received(data[pos : pos + cut])
                pos += cut
        if pos < len(data):
            conn.data_received(data[pos:])
        assert conn.broken is None
        assert [f.result() for f in futures] == expected
        conn.close()

    asyncio.run(main())


@given(_any_reply)
def test_parse_round_trips_statuses_too(reply: Any) -> None:
    """parse() against the encoder, with status replies (+OK, +QUEUED) anywhere, in arrays too
    (EXEC's [+OK, :n] takes the inline path for status items)."""
    data = _encode_any(reply)
    assert parse(data, 0) == (reply, len(data))  # a _Simple equals the bytes parse() returns

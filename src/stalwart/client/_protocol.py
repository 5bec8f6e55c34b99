"""The binary client protocol: typed request/response messages and the authenticated stream.

A client connection is a TCP stream of frames (``wire.encode_frame``) exactly like the peer
transport's: the wire handshake with the cluster key (a hello each way, then an empty sealed
confirmation each way), then sealed frames whose bodies are batches of encoded messages
(``runtime.pack_batch``). Requests carry a ``request_id`` chosen by the client, unique on its
connection; responses carry it back, in any order, so many requests are in flight at once.
"""

from __future__ import annotations

import asyncio
import enum
import os
import struct
from dataclasses import dataclass
from typing import Annotated

import msgpack

from stalwart import wire
from stalwart.errors import AuthenticationError, DecodeError, StalwartError
from stalwart.kv import MAX_KEY_BYTES, MAX_VALUE_BYTES
from stalwart.wire import MaxLen, message

__all__ = [
    "MAX_BATCH_MESSAGES",
    "MAX_CLIENT_ID_CHARS",
    "MAX_FRAME_BYTES",
    "Consistency",
    "ReadRequest",
    "Request",
    "Response",
    "ResponseStatus",
    "StatusRequest",
    "WriteRequest",
    "decode_response",
    "decode_write",
    "encode_request",
    "encode_response",
    "handshake",
    "pack_batch",
    "unpack_batch",
]

MAX_COMMAND_BYTES = MAX_VALUE_BYTES * 2 + MAX_KEY_BYTES + 256  # a CAS carries two values
MAX_FRAME_BYTES = 4 * MAX_VALUE_BYTES  # refused from the header alone beyond this
MAX_BATCH_MESSAGES = 1024
MAX_ERROR_CHARS = 512
NONCE_BYTES = 32
MAX_CLIENT_ID_CHARS = 128
HANDSHAKE_TIMEOUT_S = 2.0


class Consistency(enum.StrEnum):
    LINEARIZABLE = "linearizable"  # ReadIndex: confirmed by a quorum, no clock assumption
    LEASE = "lease"  # the leader's lease: no round trip, assumes bounded clock drift
    STALE = "stale"  # any node's applied state: may be behind, never ahead of the log


class ResponseStatus(enum.StrEnum):
    OK = "ok"
    REDIRECT = "redirect"  # not run here; the leader is leader_hint (None: unknown)
    UNKNOWN = "unknown"  # the write may or may not have run (leadership changed before it applied)
    EXPIRED = "expired"  # not run: the client's session expired; use a new client id
    ERROR = "error"  # refused as malformed or out of bounds; `error` says why; nothing changed
    BUSY = "busy"  # not run: the node has too many requests pending; retry later


@message(540)
@dataclass(frozen=True, slots=True)
class WriteRequest:
    """A kv command (``kv.encode_command(cmd, 0)``; the node stamps its own clock)."""

    request_id: int
    client: Annotated[str, MaxLen(MAX_CLIENT_ID_CHARS)]  # the session id (exactly-once scope)
    seq: int  # the session sequence number: kept across retries, so the write applies once
    ack: int  # every response below this seq was received
    command: Annotated[bytes, MaxLen(MAX_COMMAND_BYTES)]


@message(541)
@dataclass(frozen=True, slots=True)
class ReadRequest:
    request_id: int
    query: Annotated[bytes, MaxLen(4 * MAX_KEY_BYTES)]  # kv.encode_query(...)
    consistency: Consistency


@message(542)
@dataclass(frozen=True, slots=True)
class StatusRequest:
    request_id: int


@message(543)
@dataclass(frozen=True, slots=True)
class Response:
    request_id: int
    status: ResponseStatus
    result: bytes | None = None
    leader_hint: str | None = None
    error: Annotated[str, MaxLen(MAX_ERROR_CHARS)] = ""


Request = WriteRequest | ReadRequest | StatusRequest

# The hot messages packed directly: the wire envelope ``[PROTOCOL_VERSION, tag, *fields]`` with
# the same packer settings as ``wire.encode``, so the bytes are those ``wire.encode`` gives
# (tests pin it). Only for values already of their declared types and within their bounds;
# the receiver decodes with ``wire.decode``, which checks everything.
_packer = msgpack.Packer(use_bin_type=True, autoreset=True, datetime=False)
_unpackb = msgpack.unpackb


def _pack(obj: tuple[object, ...]) -> bytes:
    data = _packer.pack(obj)
    assert isinstance(data, bytes)
    return data


_RESPONSE_TAG = wire.tag_of(Response)
_WRITE_TAG = wire.tag_of(WriteRequest)


def encode_response(request_id: int, status: ResponseStatus, result: bytes | None,
                    leader_hint: str | None, error: str) -> bytes:  # fmt: skip
    """``wire.encode(Response(...))`` without the object (``error`` at most MAX_ERROR_CHARS)."""
    return _pack((wire.PROTOCOL_VERSION, _RESPONSE_TAG, request_id, status.value, result, leader_hint, error))


# wire.decode refuses any string over this many UTF-8 bytes (msgpack's max_str_len counts bytes too).
_MAX_STR_BYTES = wire.DEFAULT_LIMITS.max_str_bytes


def _unpack_small(item: bytes, max_bytes: int) -> object:
    """The msgpack value of a small message (bounded as wire.decode bounds it), or None."""
    try:
        return _unpackb(item, use_list=False, raw=False, strict_map_key=False,
                        max_str_len=min(max_bytes, _MAX_STR_BYTES), max_bin_len=max_bytes,
                        max_array_len=16, max_map_len=16, max_ext_len=0)  # fmt: skip
    except Exception:
        return None


def decode_write(item: bytes) -> tuple[int, str, int, int, bytes] | None:
    """``(request_id, client, seq, ack, command)`` of an encoded WriteRequest, checked as
    ``wire.decode`` checks it, without building the message; None for anything else (the caller
    then decodes it with ``wire.decode``, which returns the message or refuses it)."""
    raw = _unpack_small(item, MAX_COMMAND_BYTES)
    if (
        type(raw) is tuple
        and len(raw) == 7
        and type(raw[0]) is int
        and raw[0] == wire.PROTOCOL_VERSION
        and type(raw[1]) is int
        and raw[1] == _WRITE_TAG
        and type(raw[2]) is int
        and type(raw[3]) is str
        and len(raw[3]) <= MAX_CLIENT_ID_CHARS
        and type(raw[4]) is int
        and type(raw[5]) is int
        and type(raw[6]) is bytes
        and len(raw[6]) <= MAX_COMMAND_BYTES
    ):
        return raw[2], raw[3], raw[4], raw[5], raw[6]
    return None


_STATUSES = {status.value: status for status in ResponseStatus}


def decode_response(item: bytes) -> Response:
    """``wire.decode(item)`` for a Response, checked the same way by a shorter path; anything
    else (another message, or what wire.decode refuses) goes through ``wire.decode``."""
    raw = _unpack_small(item, MAX_FRAME_BYTES)
    if (
        type(raw) is tuple
        and len(raw) == 7
        and type(raw[0]) is int
        and raw[0] == wire.PROTOCOL_VERSION
        and type(raw[1]) is int
        and raw[1] == _RESPONSE_TAG
        and type(raw[2]) is int
        and type(raw[3]) is str
        and (status := _STATUSES.get(raw[3])) is not None
        and (raw[4] is None or type(raw[4]) is bytes)
        and (raw[5] is None or type(raw[5]) is str)
        and type(raw[6]) is str
        and len(raw[6]) <= MAX_ERROR_CHARS
    ):
        return Response(raw[2], status, raw[4], raw[5], raw[6])
    msg = wire.decode(item)
    if not isinstance(msg, Response):
        raise DecodeError(f"a node sent a {type(msg).__name__}, expected a Response")
    return msg


def encode_request(msg: Request) -> bytes:
    """``wire.encode(msg)``, a write request packed directly."""
    if (
        type(msg) is WriteRequest
        and type(msg.request_id) is int
        and type(msg.client) is str
        and type(msg.seq) is int
        and type(msg.ack) is int
        and type(msg.command) is bytes
        and len(msg.client) <= MAX_CLIENT_ID_CHARS
        and len(msg.command) <= MAX_COMMAND_BYTES
        and min(msg.request_id, msg.seq, msg.ack) >= 0
        and max(msg.request_id, msg.seq, msg.ack) < 2**63
    ):
        return _pack(
            (wire.PROTOCOL_VERSION, _WRITE_TAG, msg.request_id, msg.client, msg.seq, msg.ack, msg.command)
        )
    return wire.encode(msg)  # anything else, and what wire.encode must refuse (EncodeError)


_LEN = struct.Struct(">I")


def pack_batch(items: list[bytes]) -> bytes:
    """Many encoded messages in one frame body: ``(u32 length | message)*``."""
    return b"".join([_LEN.pack(len(item)) + item for item in items])


def unpack_batch(body: bytes) -> list[bytes]:
    """The items of a batch body; :class:`DecodeError` unless it is exactly one."""
    items: list[bytes] = []
    offset, end = 0, len(body)
    while offset < end:
        if offset + 4 > end:
            raise DecodeError(f"batch truncated in a length header at offset {offset}")
        (size,) = _LEN.unpack_from(body, offset)
        offset += 4
        if offset + size > end:
            raise DecodeError(f"batch item at offset {offset} overruns the frame")
        items.append(body[offset : offset + size])
        offset += size
        if len(items) > MAX_BATCH_MESSAGES:
            raise DecodeError(f"a batch holds more than {MAX_BATCH_MESSAGES} messages")
    if not items:
        raise DecodeError("empty batch")
    return items


class HandshakeError(StalwartError):
    """The other side closed or spoke garbage during the handshake."""


async def _next_frame(
    reader: asyncio.StreamReader, decoder: wire.FrameDecoder, frames: list[bytes]
) -> list[bytes]:
    while not frames:
        data = await reader.read(1 << 16)
        if not data:
            raise HandshakeError("connection closed during the handshake")
        frames = decoder.feed(data)
    return frames


async def handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    decoder: wire.FrameDecoder,
    *,
    key: bytes,
    my_id: str,
    initiator: bool,
) -> tuple[wire.AuthSession, list[bytes]]:
    """The runtime transport's handshake: hellos, then an empty sealed confirmation each way.

    Returns the session and any frames that arrived after it. Raises AuthenticationError for a
    wrong key, HandshakeError for a closed or silent peer, DecodeError for garbage.
    """
    async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
        hs = wire.Handshake(key, my_id, os.urandom(NONCE_BYTES), initiator)
        writer.write(wire.encode_frame(hs.hello()))
        frames = await _next_frame(reader, decoder, [])
        session = hs.receive_hello(frames.pop(0))
        writer.write(wire.encode_frame(session.seal(b"")))
        frames = await _next_frame(reader, decoder, frames)
        if session.open(frames.pop(0)) != b"":
            raise AuthenticationError("the handshake confirmation frame must be empty")
    return session, frames

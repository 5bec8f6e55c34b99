"""stalwart.wire: typed, versioned messages over msgpack; framing; frame authentication. Pure.

Messages are frozen slotted dataclasses registered with a type tag::

    @message(901)
    @dataclass(frozen=True, slots=True)
    class Ping:
        seq: int

    data = encode(Ping(1))          # msgpack [PROTOCOL_VERSION, 901, 1]
    decode(data) == Ping(1)         # validates every field; DecodeError on anything else
    decode_many(encode_many([Ping(1), Ping(2)])) == [Ping(1), Ping(2)]   # a batch, one unpack

Framing (:func:`encode_frame`, :class:`FrameDecoder`) and authentication (:class:`Handshake`,
:class:`AuthSession`) are sans-IO: the host moves the bytes. See docs/wire.md.
"""

from stalwart.wire._auth import MAC_BYTES, AuthSession, Handshake, Hello
from stalwart.wire._codec import PROTOCOL_VERSION, decode, decode_as, encode
from stalwart.wire._errors import (
    AuthenticationError,
    DecodeError,
    EncodeError,
    FrameTooLargeError,
    SchemaError,
)
from stalwart.wire._framing import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, encode_frame
from stalwart.wire._limits import DEFAULT_LIMITS, Bounds, Limits, MaxLen
from stalwart.wire._many import decode_many, encode_many, join_encoded
from stalwart.wire._registry import field_types, message, registered_types, tag_of

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_FRAME_BYTES",
    "MAC_BYTES",
    "PROTOCOL_VERSION",
    "AuthSession",
    "AuthenticationError",
    "Bounds",
    "DecodeError",
    "EncodeError",
    "FrameDecoder",
    "FrameTooLargeError",
    "Handshake",
    "Hello",
    "Limits",
    "MaxLen",
    "SchemaError",
    "decode",
    "decode_as",
    "decode_many",
    "encode",
    "encode_frame",
    "encode_many",
    "field_types",
    "join_encoded",
    "message",
    "registered_types",
    "tag_of",
]

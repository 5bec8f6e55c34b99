"""Batches: many messages as ONE msgpack array of envelopes, ``[[v, tag, f...], [v, tag, f...], ...]``.

An encoded message is a complete msgpack value, so a batch is an array header followed by the
messages' own bytes, concatenated: :func:`join_encoded` builds one from bytes that
:func:`stalwart.wire.encode` already produced without packing anything again, and
:func:`encode_many` is ``join_encoded([encode(m) for m in msgs])``. :func:`decode_many` unpacks
the whole batch with one C call, then checks each envelope and builds each message as
:func:`stalwart.wire.decode` would; it refuses anything else with :class:`DecodeError`, whatever
the input. What it returns equals ``[decode(encode(m)) for m in msgs]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from stalwart.errors import DecodeError
from stalwart.wire._codec import _unpack, check_envelope, encode
from stalwart.wire._compiled import PROTOCOL_VERSION
from stalwart.wire._errors import EncodeError
from stalwart.wire._limits import DEFAULT_LIMITS, Limits
from stalwart.wire._registry import BY_TAG

MAX_BATCH_LEN = 2**32 - 1
"""The most items a msgpack array can hold (its header's widest count is 32 bits)."""


def array_header(n: int) -> bytes:
    """The msgpack header of an array of ``n`` items."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 65_536:
        return b"\xdc" + n.to_bytes(2, "big")
    if n <= MAX_BATCH_LEN:
        return b"\xdd" + n.to_bytes(4, "big")
    raise EncodeError(f"a batch holds at most {MAX_BATCH_LEN} messages, got {n}")


def join_encoded(items: Sequence[bytes]) -> bytes:
    """The batch of these already-encoded messages (each exactly what ``encode`` returned)."""
    return array_header(len(items)) + b"".join(items)


def encode_many(msgs: Iterable[Any]) -> bytes:
    """One batch holding every message, in order; :class:`EncodeError` as :func:`encode`."""
    return join_encoded([encode(msg) for msg in msgs])


def decode_many(
    data: bytes | bytearray | memoryview, *, limits: Limits = DEFAULT_LIMITS, max_messages: int | None = None
) -> list[Any]:
    """The messages of a batch, in order; :class:`DecodeError` for anything else, whatever the input.

    ``limits`` apply as in :func:`decode`, with ``max_message_bytes`` bounding the whole batch
    (hence each message in it). A batch of more than ``max_messages`` messages (default and at
    most: ``limits.max_collection_len``) is refused. All messages or none: one bad message
    refuses the batch.
    """
    raws = _unpack(data, limits)
    if type(raws) is not tuple:
        raise DecodeError(f"not a batch: expected an array of messages, got {type(raws).__name__}")
    if max_messages is not None and len(raws) > max_messages:
        raise DecodeError(f"a batch of {len(raws)} messages exceeds {max_messages}")
    # Each envelope is depth 1, as in decode(): the batch array around it is not counted, so a
    # message decodes in a batch exactly when it decodes alone.
    depth_left = limits.max_depth - 1
    get = BY_TAG.get
    out: list[Any] = []
    append = out.append
    try:
        for raw in raws:
            # The common case, checked inline: a well-formed envelope of a compiled class.
            if (
                type(raw) is tuple
                and len(raw) >= 2
                and type(tag := raw[1]) is int
                and type(raw[0]) is int
                and raw[0] == PROTOCOL_VERSION
                and (spec := get(tag)) is not None
                and (compiled := spec._compiled) is not None
            ):
                append(compiled.decode_envelope(raw, depth_left))
            else:
                append(check_envelope(raw).decode_envelope(raw, depth_left))
    except RecursionError:
        raise DecodeError("nested too deeply") from None
    return out


__all__ = ["array_header", "decode_many", "encode_many", "join_encoded"]

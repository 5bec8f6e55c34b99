"""Many encoded messages in one authenticated frame: ``(u32 length | message)*``.

Sealing (HMAC) and framing cost a fixed amount per frame, so the transport packs everything it
has queued for a peer into one frame, up to the batch limits. The batch body is authenticated
as a whole before it is split, so only a peer holding the cluster key can send a malformed one;
it is still checked strictly and refused with :class:`PeerProtocolError`.
"""

from __future__ import annotations

import struct

from stalwart.runtime._errors import PeerProtocolError

_LEN = LENGTH_HEADER = struct.Struct(">I")


def frame_item(item: bytes) -> bytes:
    """One item with its length header: a batch is the concatenation of framed items."""
    return _LEN.pack(len(item)) + item


def pack_batch(items: list[bytes]) -> bytes:
    """One body holding ``items`` in order."""
    return b"".join([frame_item(item) for item in items])


def unpack_batch(body: bytes, max_messages: int) -> list[bytes]:
    """The items of ``body``; :class:`PeerProtocolError` if it is not exactly a batch."""
    items: list[bytes] = []
    append = items.append
    unpack = _LEN.unpack_from
    offset, end = 0, len(body)
    try:
        while offset < end:
            (size,) = unpack(body, offset)
            offset += 4
            stop = offset + size
            append(body[offset:stop])  # an overrun shows as offset > end below
            offset = stop
    except struct.error:
        raise PeerProtocolError(f"batch truncated in a length header at offset {offset}") from None
    if offset != end:
        raise PeerProtocolError(f"the last batch item overruns the frame by {offset - end} bytes")
    if not items:
        raise PeerProtocolError("empty batch")
    if len(items) > max_messages:
        raise PeerProtocolError(f"batch holds {len(items)} messages, more than {max_messages}")
    return items


__all__ = ["LENGTH_HEADER", "frame_item", "pack_batch", "unpack_batch"]

"""Many encoded messages in one authenticated frame: ``(u32 length | message)*``.

Sealing (HMAC) and framing cost a fixed amount per frame, so the transport packs everything it
has queued for a peer into one frame, up to the batch limits. The batch body is authenticated
as a whole before it is split, so only a peer holding the cluster key can send a malformed one;
it is still checked strictly and refused with :class:`PeerProtocolError`.
"""

from __future__ import annotations

import struct

from stalwart.runtime._errors import PeerProtocolError

_LEN = struct.Struct(">I")


def pack_batch(items: list[bytes]) -> bytes:
    """One body holding ``items`` in order."""
    pack = _LEN.pack
    parts: list[bytes] = []
    for item in items:
        parts.append(pack(len(item)))
        parts.append(item)
    return b"".join(parts)


def unpack_batch(body: bytes, max_messages: int) -> list[bytes]:
    """The items of ``body``; :class:`PeerProtocolError` if it is not exactly a batch."""
    items: list[bytes] = []
    append = items.append
    offset, end = 0, len(body)
    unpack = _LEN.unpack_from
    while offset < end:
        if offset + 4 > end:
            raise PeerProtocolError(f"batch truncated in a length header at offset {offset}")
        (size,) = unpack(body, offset)
        offset += 4
        stop = offset + size
        if stop > end:
            raise PeerProtocolError(f"batch item of {size} bytes overruns the frame at offset {offset}")
        append(body[offset:stop])
        offset = stop
    if len(items) > max_messages:
        raise PeerProtocolError(f"batch holds {len(items)} messages, more than {max_messages}")
    if not items:
        raise PeerProtocolError("empty batch")
    return items


__all__ = ["pack_batch", "unpack_batch"]

"""A msgpack array of byte strings: a helper kept for callers that frame opaque items this way.

The transport no longer uses it: its batches are ``wire.join_encoded`` (one msgpack array of
message envelopes, unpacked with one call by ``wire.decode_many``). What follows describes why
a batch exists and how this format is checked.

Sealing (HMAC) and framing cost a fixed amount per frame, so the transport packs everything it
has queued for a peer into one frame, up to the batch limits. A msgpack array of ``bin`` items
is packed and split in C (tens of nanoseconds per item, several times faster than splitting
length-prefixed items in Python). The batch body is authenticated as a whole before it is
split, so only a peer holding the cluster key can send a malformed one; it is still checked
strictly (sizes bounded before allocation) and refused with :class:`PeerProtocolError`. Each
item is then decoded by ``wire.decode``, which refuses anything that is not a message's bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
from msgpack.exceptions import ExtraData, UnpackException

from stalwart.runtime._errors import PeerProtocolError

# One packer, reused on the event loop thread (never re-entered: no default hook).
_pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True, autoreset=True, datetime=False).pack


def pack_batch(items: list[bytes]) -> bytes:
    """One body holding ``items`` in order."""
    return _pack(items)


def unpack_batch(body: bytes, max_messages: int, max_item_bytes: int) -> list[bytes]:
    """The items of ``body``; :class:`PeerProtocolError` if it is not exactly a batch."""
    try:
        items = msgpack.unpackb(
            body,
            use_list=True,
            raw=False,
            max_bin_len=max_item_bytes,
            max_array_len=max_messages,
            max_str_len=0,
            max_map_len=0,
            max_ext_len=0,
        )
    except ExtraData:
        raise PeerProtocolError("trailing bytes after the batch") from None
    except (UnpackException, ValueError, TypeError, RecursionError) as exc:
        raise PeerProtocolError(f"malformed batch: {type(exc).__name__}: {exc}") from None
    if type(items) is not list or not items:
        raise PeerProtocolError("a batch must be a non-empty array of messages")
    return items


__all__ = ["pack_batch", "unpack_batch"]

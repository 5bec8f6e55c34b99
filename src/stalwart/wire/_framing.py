"""Sans-IO framing: a 4-byte big-endian length, then that many bytes of payload."""

from __future__ import annotations

import struct

from stalwart.errors import ConfigError, DecodeError, FrameTooLargeError
from stalwart.wire._errors import EncodeError

HEADER_BYTES = 4
MAX_FRAME_BYTES_LIMIT = 2**32 - 1  # what a 4-byte length can say
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from


def encode_frame(payload: bytes) -> bytes:
    """``len(payload)`` as 4 big-endian bytes, then the payload."""
    n = len(payload)
    if n > MAX_FRAME_BYTES_LIMIT:
        raise EncodeError(f"a frame holds at most {MAX_FRAME_BYTES_LIMIT} bytes, got {n}")
    return _pack_header(n) + payload


class FrameDecoder:
    """Feed it bytes as they arrive; it returns the whole frames they complete.

    A header announcing more than ``max_frame_bytes`` raises :class:`FrameTooLargeError` before
    a single byte of that frame's body is buffered. After any error the decoder is poisoned:
    every later :meth:`feed` raises, because the stream has lost its framing and the host must
    drop the connection. Memory held is at most one header plus one frame being assembled.
    """

    __slots__ = ("_buf", "_error", "_need", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if type(max_frame_bytes) is not int or not 0 <= max_frame_bytes <= MAX_FRAME_BYTES_LIMIT:
            raise ConfigError(f"max_frame_bytes must be an int in 0..{MAX_FRAME_BYTES_LIMIT}")
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()  # a partial header, or the partial body of the current frame
        self._need = -1  # body length of the frame being assembled; -1 while reading a header
        self._error: DecodeError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for an incomplete header or frame."""
        return len(self._buf)

    @property
    def poisoned(self) -> bool:
        return self._error is not None

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Consume ``data``; return every frame it completes, in order."""
        if self._error is not None:
            raise DecodeError(f"frame decoder unusable after an earlier error: {self._error}")
        try:
            return self._feed(memoryview(data).cast("B"))
        except DecodeError as exc:
            self._error = exc
            raise

    def _feed(self, view: memoryview) -> list[bytes]:
        frames: list[bytes] = []
        buf, end, pos = self._buf, len(view), 0
        while pos < end:
            need = self._need
            if need < 0:  # reading a header
                if not buf and end - pos >= HEADER_BYTES:
                    (need,) = _unpack_header(view, pos)
                    pos += HEADER_BYTES
                else:
                    take = min(HEADER_BYTES - len(buf), end - pos)
                    buf += view[pos : pos + take]
                    pos += take
                    if len(buf) < HEADER_BYTES:
                        break
                    (need,) = _unpack_header(buf)
                    buf.clear()
                if need > self.max_frame_bytes:
                    raise FrameTooLargeError(need, self.max_frame_bytes)
                self._need = need
            if not buf and end - pos >= need:  # the whole body is here: slice it, never buffer it
                frames.append(view[pos : pos + need].tobytes())
                pos += need
                self._need = -1
                continue
            take = min(need - len(buf), end - pos)
            buf += view[pos : pos + take]
            pos += take
            if len(buf) == need:
                frames.append(bytes(buf))
                buf.clear()
                self._need = -1
        # A header never stays half-consumed with a body pending (why: the two states share buf).
        assert self._need < 0 or len(buf) < self._need
        return frames

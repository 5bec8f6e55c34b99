"""The on-disk record, segment header and segment index formats (see docs/storage.md).

Record (little-endian)::

    u32 length | u32 crc32c(length bytes || payload) | payload (length bytes)

The CRC covers the length field, so a damaged length is caught like a damaged payload. An
all-zero header never verifies (crc32c of four zero bytes is not zero), so zero-filled space
never reads as a record.
"""

from __future__ import annotations

import re
import struct
import sys
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat

from crc32c import crc32c

RECORD_HEADER = struct.Struct("<II")
RECORD_HEADER_BYTES = RECORD_HEADER.size  # 8
SEGMENT_MAGIC = b"STLWAL01"
SEGMENT_HEADER = struct.Struct("<8sQ")  # magic, first index
SEGMENT_HEADER_BYTES = SEGMENT_HEADER.size  # 16
INDEX_MAGIC = b"STLWIX01"
INDEX_HEADER = struct.Struct("<8sQQQ")  # magic, first index, segment size, record count
_U32 = struct.Struct("<I")
_NONZERO = re.compile(rb"[^\x00]")


_LENGTH_CRC: dict[int, int] = {}
_LENGTH_CRC_LIMIT = 1 << 16  # cache the CRC of the length field for lengths below this


def length_crc(length: int) -> int:
    """crc32c of the 4-byte length field: the seed of the record's CRC (cached; lengths repeat)."""
    crc = _LENGTH_CRC.get(length)
    if crc is None:
        crc = int(crc32c(_U32.pack(length)))
        if length < _LENGTH_CRC_LIMIT:
            _LENGTH_CRC[length] = crc
    return crc


def record_crc(payload: bytes | memoryview) -> int:
    """crc32c(length field || payload), computed as the payload's CRC seeded with the length's."""
    return int(crc32c(payload, length_crc(len(payload))))


def encode_header(payload: bytes) -> bytes:
    return RECORD_HEADER.pack(len(payload), record_crc(payload))


def encode_headers(payloads: list[bytes], lengths: list[int]) -> list[bytes]:
    """The headers of many records at once (the batch path of ``append_many``: C-level maps)."""
    distinct = set(lengths)
    if len(distinct) == 1:  # records of one size (common): one seed for all
        seeds: Iterable[int] = repeat(length_crc(lengths[0]), len(lengths))
    else:
        seed_of = {length: length_crc(length) for length in distinct}
        seeds = map(seed_of.__getitem__, lengths)
    return list(map(RECORD_HEADER.pack, lengths, map(crc32c, payloads, seeds)))


def encode_record(payload: bytes) -> bytes:
    return encode_header(payload) + payload


def encode_segment_header(first_index: int) -> bytes:
    return SEGMENT_HEADER.pack(SEGMENT_MAGIC, first_index)


def segment_header_ok(data: bytes | memoryview, first_index: int) -> bool:
    """Every header byte is checked against the expected value, so any bit flip is caught."""
    return bytes(data[:SEGMENT_HEADER_BYTES]) == encode_segment_header(first_index)


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Records found from ``start``: their offsets, where they end, and why the scan stopped."""

    offsets: array[int]
    end: int
    bad_reason: str | None  # None: the scan reached the end of the data cleanly


def check_record(buf: memoryview, pos: int, end: int, max_record_bytes: int | None) -> tuple[int, str | None]:
    """Validate the record at ``pos``; return (its total size, None) or (0, why it is bad).

    ``max_record_bytes`` bounds only the search for records after damage (its cost); a scan
    accepts any record that fits and verifies, so a valid record written under a larger limit
    is never mistaken for a torn one.
    """
    if end - pos < RECORD_HEADER_BYTES:
        return 0, f"{end - pos} bytes left, less than a record header"
    length, crc = RECORD_HEADER.unpack_from(buf, pos)
    if max_record_bytes is not None and length > max_record_bytes:
        return 0, f"record length {length} exceeds the limit {max_record_bytes}"
    stop = pos + RECORD_HEADER_BYTES + length
    if stop > end:
        return 0, f"record of {length} bytes runs {stop - end} bytes past the end"
    if record_crc(buf[pos + RECORD_HEADER_BYTES : stop]) != crc:
        return 0, "record checksum mismatch"
    return RECORD_HEADER_BYTES + length, None


def scan_records(buf: memoryview, start: int) -> ScanResult:
    """Verify records from ``start`` to the end of ``buf``, stopping at the first bad one."""
    offsets = array("Q")
    pos, end = start, len(buf)
    unpack_from, header_bytes = RECORD_HEADER.unpack_from, RECORD_HEADER_BYTES
    while pos < end:
        # The common case inline (this loop is the tail scan at open): header, bounds, CRC.
        if end - pos >= header_bytes:
            length, crc = unpack_from(buf, pos)
            stop = pos + header_bytes + length
            if (
                stop <= end
                and crc32c(buf[pos + header_bytes : stop], _LENGTH_CRC.get(length) or length_crc(length))
                == crc
            ):
                offsets.append(pos)
                pos = stop
                continue
        _, reason = check_record(buf, pos, end, None)
        return ScanResult(offsets, pos, reason)
    return ScanResult(offsets, pos, None)


def find_valid_record_after(buf: memoryview, bad: int, max_record_bytes: int) -> int | None:
    """The offset of the first valid record starting anywhere after ``bad``, or None.

    A valid record's 8-byte header is never all zero, so only offsets within 7 bytes before a
    non-zero byte are tried; zero-filled (preallocated or never written) space costs a regex skip.
    """
    end = len(buf)
    raw = buf.obj if isinstance(buf.obj, bytes) and len(buf.obj) == end else bytes(buf)
    pos = bad + 1
    while pos <= end - RECORD_HEADER_BYTES:
        match = _NONZERO.search(raw, pos)
        if match is None:
            return None
        candidate = max(pos, match.start() - (RECORD_HEADER_BYTES - 1))
        limit = match.start() + 1  # try every offset whose header covers this non-zero byte
        while candidate < limit and candidate <= end - RECORD_HEADER_BYTES:
            size, _ = check_record(buf, candidate, end, max_record_bytes)
            if size:
                return candidate
            candidate += 1
        pos = limit
    return None


def encode_index(first_index: int, segment_bytes: int, offsets: array[int]) -> bytes:
    if sys.byteorder == "big":
        offsets = array("Q", offsets)
        offsets.byteswap()  # stored little-endian on every host
    body = INDEX_HEADER.pack(INDEX_MAGIC, first_index, segment_bytes, len(offsets)) + offsets.tobytes()
    return body + _U32.pack(crc32c(body))


def decode_index(data: bytes, first_index: int, segment_bytes: int) -> array[int] | None:
    """The offsets stored in a segment index file, or None if it is stale or damaged (rebuild it)."""
    if len(data) < INDEX_HEADER.size + 4:
        return None
    magic, first, size, count = INDEX_HEADER.unpack_from(data, 0)
    body_end = INDEX_HEADER.size + 8 * count
    if magic != INDEX_MAGIC or first != first_index or size != segment_bytes or len(data) != body_end + 4:
        return None
    if _U32.unpack_from(data, body_end)[0] != crc32c(memoryview(data)[:body_end]):
        return None
    offsets = array("Q")
    offsets.frombytes(data[INDEX_HEADER.size : body_end])
    if sys.byteorder == "big":
        offsets.byteswap()
    return offsets

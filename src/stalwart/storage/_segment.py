"""One segment file of the write-ahead log, and the rules for opening it (docs/storage.md)."""

from __future__ import annotations

import os
from array import array

from stalwart.storage._errors import CorruptionError
from stalwart.storage._fs import Syncer, pread_exact, read_file, unlink_quiet
from stalwart.storage._record import (
    RECORD_HEADER,
    RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
    decode_index,
    encode_index,
    find_valid_record_after,
    scan_records,
    segment_header_ok,
)


def segment_name(first_index: int) -> str:
    return f"{first_index:020d}.wal"


def index_name(first_index: int) -> str:
    return f"{first_index:020d}.idx"


class Segment:
    """A segment's open descriptor and in-memory index: the start offset of every record.

    Invariant: records are ``first_index .. first_index + count - 1``; record ``i`` spans
    ``offsets[i] .. offsets[i+1]`` (or ``.. size`` for the last one), and ``size`` is where the
    next record will be written.
    """

    __slots__ = ("directory", "fd", "first_index", "offsets", "size")

    def __init__(self, directory: str, first_index: int, fd: int, offsets: array[int], size: int) -> None:
        self.directory = directory
        self.first_index = first_index
        self.fd = fd
        self.offsets = offsets
        self.size = size

    @property
    def path(self) -> str:
        return os.path.join(self.directory, segment_name(self.first_index))

    @property
    def index_path(self) -> str:
        return os.path.join(self.directory, index_name(self.first_index))

    @property
    def count(self) -> int:
        return len(self.offsets)

    @property
    def next_index(self) -> int:
        return self.first_index + len(self.offsets)

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.offsets) - 1

    def end_of(self, position: int) -> int:
        """End offset of the record at ``position`` (0-based within this segment)."""
        return self.offsets[position + 1] if position + 1 < len(self.offsets) else self.size

    def write_index(self) -> None:
        """Save the offsets next to a sealed segment so the next open need not scan it.

        Not fsynced on purpose: the index is a cache; a torn or stale one fails its CRC or its
        size check on open and the segment is scanned instead.
        """
        data = encode_index(self.first_index, self.size, self.offsets)
        fd = os.open(self.index_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _load_index(seg: Segment) -> array[int] | None:
    try:
        data = read_file(seg.index_path)
    except FileNotFoundError:
        return None
    offsets = decode_index(data, seg.first_index, seg.size)
    if not offsets or offsets[0] != SEGMENT_HEADER_BYTES:
        return None
    # Cheap structural check: the last record must end exactly at the end of the file.
    last = offsets[-1]
    if last + RECORD_HEADER_BYTES > seg.size:
        return None
    length, _ = RECORD_HEADER.unpack(pread_exact(seg.fd, RECORD_HEADER_BYTES, last, seg.path))
    if last + RECORD_HEADER_BYTES + length != seg.size:
        return None
    return offsets


def open_sealed(directory: str, first_index: int, verify: bool) -> Segment:
    """Open a segment that is not the last one: it was fsynced whole before its successor existed,
    so anything wrong in it is corruption. Its records' CRCs are checked on read (or here when
    ``verify``); a valid index file spares the scan."""
    path = os.path.join(directory, segment_name(first_index))
    fd = os.open(path, os.O_RDWR)
    seg = Segment(directory, first_index, fd, array("Q"), os.fstat(fd).st_size)
    try:
        header = os.pread(fd, SEGMENT_HEADER_BYTES, 0)
        if not segment_header_ok(header, first_index):
            raise CorruptionError(path, 0, "bad segment header")
        offsets = None if verify else _load_index(seg)
        if offsets is None:
            buf = memoryview(read_file(path))
            scan = scan_records(buf, SEGMENT_HEADER_BYTES)
            if scan.bad_reason is not None:
                raise CorruptionError(path, scan.end, f"{scan.bad_reason} (in a sealed segment)")
            offsets = scan.offsets
            seg.offsets = offsets
            seg.write_index()
        seg.offsets = offsets
    except BaseException:
        seg.close()
        raise
    return seg


def open_tail(directory: str, first_index: int, max_record_bytes: int, syncer: Syncer) -> Segment | None:
    """Open the last segment: verify every record; truncate a torn tail; refuse corruption.

    Returns None when the segment is a torn creation (shorter than its header, or a bad header
    followed by nothing but zeros): it held no synced record, and it is deleted.
    """
    path = os.path.join(directory, segment_name(first_index))
    raw = read_file(path)
    buf = memoryview(raw)
    if not segment_header_ok(buf, first_index):
        if len(raw) <= SEGMENT_HEADER_BYTES or not raw[SEGMENT_HEADER_BYTES:].strip(b"\x00"):
            os.unlink(path)
            syncer.directory(directory)
            return None
        raise CorruptionError(path, 0, "bad segment header")
    scan = scan_records(buf, SEGMENT_HEADER_BYTES)
    fd = os.open(path, os.O_RDWR)
    try:
        if scan.bad_reason is not None:
            later = find_valid_record_after(buf, scan.end, max_record_bytes)
            if later is not None:
                raise CorruptionError(
                    path, scan.end, f"{scan.bad_reason}, but a valid record follows at offset {later}"
                )
            # A torn tail: the last write did not complete before a crash. Cut it off durably
            # so a later append never lands after garbage.
            os.ftruncate(fd, scan.end)
            syncer.data(fd)
    except BaseException:
        os.close(fd)
        raise
    unlink_quiet(os.path.join(directory, index_name(first_index)))  # the tail never has an index
    return Segment(directory, first_index, fd, scan.offsets, scan.end)

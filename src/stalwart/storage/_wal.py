"""The segmented write-ahead log (docs/storage.md has the format and the recovery rules)."""

from __future__ import annotations

import bisect
import os
import re
import struct
from array import array
from collections.abc import Iterable
from itertools import accumulate, repeat
from operator import itemgetter, le, sub
from types import TracebackType

from crc32c import crc32c

from stalwart.errors import ConfigError
from stalwart.storage._errors import (
    CorruptionError,
    LogIndexError,
    RecordTooLargeError,
    StorageClosedError,
    StorageError,
)
from stalwart.storage._fs import (
    DirLock,
    Syncer,
    SyncStats,
    atomic_replace,
    ensure_dir,
    io_errors,
    pwrite_all,
    read_file,
    unlink_quiet,
)
from stalwart.storage._record import (
    RECORD_HEADER,
    RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
    encode_header,
    encode_headers,
    encode_segment_header,
    length_crc,
    record_crc,
    scan_records,
)
from stalwart.storage._segment import Segment, index_name, open_sealed, open_tail, segment_name

DEFAULT_MAX_RECORD_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_SEGMENT_BYTES = 16 * 1024 * 1024  # bounds the tail segment that open CRC-scans whole
DEFAULT_WRITE_BUFFER_BYTES = 4 * 1024 * 1024
BASE_NAME = "wal.base"
_BASE = struct.Struct("<8sQI")  # magic, first index, crc32c of the first 16 bytes
_BASE_MAGIC = b"STLWBS01"
_RECORD_OVERHEAD = RECORD_HEADER_BYTES
_SEGMENT_RE = re.compile(r"^(\d{20})\.wal$")
_INDEX_RE = re.compile(r"^(\d{20})\.idx$")


class WriteAheadLog:
    """A Raft-style log of byte payloads at contiguous indexes, on segment files.

    ``append`` and ``append_many`` buffer in memory; ``sync`` writes everything buffered and makes
    it durable with one fdatasync (group commit). ``truncate_suffix`` and ``compact_prefix`` take
    effect at once for readers and durably at the next ``sync``. Reads verify every record's CRC.
    Only one ``WriteAheadLog`` may have a directory open at a time (an flock guards it).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES,
        write_buffer_bytes: int = DEFAULT_WRITE_BUFFER_BYTES,
        fsync: bool = True,
        verify_on_open: bool = False,
        stats: SyncStats | None = None,
    ) -> None:
        if max_record_bytes < 0 or max_record_bytes >= 2**32:
            raise ConfigError(f"max_record_bytes must be in [0, 2**32), got {max_record_bytes}")
        if max_segment_bytes < SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + max_record_bytes:
            raise ConfigError(
                "max_segment_bytes must hold a segment header and one record of max_record_bytes"
            )
        if write_buffer_bytes < 1:
            raise ConfigError(f"write_buffer_bytes must be positive, got {write_buffer_bytes}")
        self.directory = os.fspath(directory)
        self.max_record_bytes = max_record_bytes
        self.max_segment_bytes = max_segment_bytes
        self.write_buffer_bytes = write_buffer_bytes
        self.stats = stats if stats is not None else SyncStats()
        self._syncer = Syncer(fsync, self.stats)
        with io_errors(f"write-ahead log {self.directory}"):
            ensure_dir(self.directory, self._syncer)
            self._lock: DirLock | None = DirLock(self.directory)
        self._segments: list[Segment] = []
        # Records not yet written, as [header0, payload0, header1, payload1, ...]: joined once
        # per write, so a payload is copied only into the write buffer.
        self._parts: list[bytes] = []
        self._lengths: list[int] = []  # payload length of each buffered record (for offsets)
        self._pending_bytes = 0
        self._doomed: list[Segment] = []  # cut off by truncate_suffix: unlink before writing again
        self._cut: list[Segment] = []  # shortened by truncate_suffix: ftruncate before writing again
        self._covered: list[Segment] = []  # compacted away: unlink after the base is durable
        self._tail_dirty = False  # the tail has written, unsynced bytes
        self._dir_dirty = False  # a segment was created since the last directory fsync
        self._failed: OSError | None = None
        try:
            with io_errors(f"write-ahead log {self.directory}"):
                self._first = self._durable_first = self._recover(verify_on_open)
        except BaseException:
            self.close()
            raise
        self._last = self._segments[-1].last_index if self._segments else self._first - 1

    # ----------------------------------------------------------------------------- opening

    def _recover(self, verify: bool) -> int:
        names = os.listdir(self.directory)
        firsts = sorted(int(m.group(1)) for n in names if (m := _SEGMENT_RE.match(n)))
        for name in names:
            index_match = _INDEX_RE.match(name)
            if name.endswith(".tmp") or (index_match and int(index_match.group(1)) not in firsts):
                os.unlink(os.path.join(self.directory, name))  # leftovers of an interrupted write
        base = self._read_base()
        first = base if base is not None else (firsts[0] if firsts else 1)
        # Segments that start at or below the compaction point: all but the last are covered.
        keep_from = max((i for i, f in enumerate(firsts) if f <= first), default=0)
        for f in firsts[:keep_from]:
            self._unlink(segment_name(f), index_name(f))
        firsts = firsts[keep_from:]
        if firsts and firsts[0] > first:
            path = os.path.join(self.directory, segment_name(firsts[0]))
            raise CorruptionError(path, 0, f"log resumes at {firsts[0]} but entries from {first} are missing")
        for f in firsts[:-1]:
            self._segments.append(open_sealed(self.directory, f, verify))
        if firsts:
            tail = open_tail(self.directory, firsts[-1], self.max_record_bytes, self._syncer)
            if tail is not None:
                self._segments.append(tail)
        for prev, seg in zip(self._segments, self._segments[1:], strict=False):
            if prev.next_index != seg.first_index:
                raise CorruptionError(
                    seg.path, 0, f"segment starts at {seg.first_index}, expected {prev.next_index}"
                )
        if self._segments and self._segments[-1].next_index < first:
            # Everything on disk is below the compaction point (a crash interrupted the cleanup).
            for seg in self._segments:
                seg.close()
                self._unlink(segment_name(seg.first_index), index_name(seg.first_index))
            self._segments.clear()
        return first

    def _read_base(self) -> int | None:
        path = os.path.join(self.directory, BASE_NAME)
        try:
            data = read_file(path)
        except FileNotFoundError:
            return None
        if len(data) != _BASE.size:
            raise CorruptionError(path, min(len(data), _BASE.size), f"base file of {len(data)} bytes")
        magic, first, crc = _BASE.unpack(data)
        if magic != _BASE_MAGIC or crc != crc32c(data[:16]) or first < 1:
            raise CorruptionError(path, 0, "bad base file (magic or checksum)")
        return int(first)

    def _unlink(self, *names: str) -> None:
        for name in names:
            unlink_quiet(os.path.join(self.directory, name))

    # ----------------------------------------------------------------------------- properties

    @property
    def first_index(self) -> int:
        """The lowest readable index; ``last_index + 1`` when the log is empty."""
        return self._first

    @property
    def last_index(self) -> int:
        """The highest index appended (synced or not); ``first_index - 1`` when empty."""
        return self._last

    @property
    def closed(self) -> bool:
        return self._lock is None

    def _check_open(self) -> None:
        if self._lock is None:
            raise StorageClosedError(f"write-ahead log {self.directory} is closed")
        if self._failed is not None:
            # After a failed write or fsync the kernel's view of the file is unknown (a later
            # fsync may report success for pages it dropped): only a reopen, which re-verifies
            # the tail from disk, may continue.
            raise StorageError(
                f"write-ahead log {self.directory} failed earlier; reopen it"
            ) from self._failed

    # ----------------------------------------------------------------------------- writing

    def append(self, index: int, payload: bytes) -> None:
        """Buffer the entry at ``index`` (which must be ``last_index + 1``); durable at ``sync``."""
        self._check_open()
        if index != self._last + 1:
            raise LogIndexError(f"append at {index}, expected {self._last + 1}")
        if len(payload) > self.max_record_bytes:
            raise RecordTooLargeError("log record", len(payload), self.max_record_bytes)
        if type(payload) is not bytes:
            payload = bytes(payload)  # never keep a reference to a buffer the caller may change
        self._parts.append(encode_header(payload))
        self._parts.append(payload)
        self._lengths.append(len(payload))
        self._pending_bytes += RECORD_HEADER_BYTES + len(payload)
        self._last = index
        if self._pending_bytes >= self.write_buffer_bytes:
            self._flush_buffer()

    def _flush_buffer(self) -> None:
        try:
            self._write_pending()
        except OSError as exc:
            self._failed = exc
            raise StorageError(f"write-ahead log {self.directory}: write failed: {exc}") from exc

    @property
    def _pending_count(self) -> int:
        return len(self._parts) // 2

    def append_many(self, first_index: int, payloads: Iterable[bytes]) -> None:
        """Buffer consecutive entries from ``first_index``; all are checked before any is taken."""
        self._check_open()
        items = payloads if type(payloads) is list else list(payloads)
        if first_index != self._last + 1:
            raise LogIndexError(f"append at {first_index}, expected {self._last + 1}")
        if not items:
            return
        if set(map(type, items)) != {bytes}:
            items = [bytes(p) for p in items]  # never keep a buffer the caller may change
        lengths = list(map(len, items))
        longest = max(lengths)
        if longest > self.max_record_bytes:
            raise RecordTooLargeError("log record", longest, self.max_record_bytes)
        # Bound the buffer: a huge batch is taken in slices, each written when the buffer fills.
        step = max(1, self.write_buffer_bytes // (RECORD_HEADER_BYTES + max(1, longest)))
        for lo in range(0, len(items), step):
            chunk, chunk_lengths = (
                (items, lengths) if step >= len(items) else (items[lo : lo + step], lengths[lo : lo + step])
            )
            parts: list[bytes] = [b""] * (2 * len(chunk))
            parts[0::2] = encode_headers(chunk, chunk_lengths)
            parts[1::2] = chunk
            self._parts.extend(parts)
            self._lengths.extend(chunk_lengths)
            self._pending_bytes += RECORD_HEADER_BYTES * len(chunk) + sum(chunk_lengths)
            self._last += len(chunk)
            if self._pending_bytes >= self.write_buffer_bytes:
                self._flush_buffer()

    def truncate_suffix(self, from_index: int) -> None:
        """Drop every entry ``>= from_index`` (a no-op past the end); durable at the next ``sync``.

        The next ``sync`` makes the truncation durable (ftruncate, unlink, fsync) *before* it
        writes anything new, so a dropped entry can never reappear after a crash, alone or
        mixed with new ones.
        """
        self._check_open()
        if from_index < self._first:
            raise LogIndexError(f"truncate from {from_index} below first index {self._first}")
        if from_index > self._last:
            return
        pending_first = self._last - self._pending_count + 1
        if from_index >= pending_first:
            self._drop_pending(2 * (from_index - pending_first), len(self._parts))
        else:
            self._drop_pending(0, len(self._parts))
            while self._segments and self._segments[-1].first_index >= from_index:
                seg = self._segments.pop()
                self._doomed.append(seg)
                self._cut = [s for s in self._cut if s is not seg]
            if self._segments:
                seg = self._segments[-1]
                # This segment becomes the tail again: its index file (if any) goes at the cut.
                keep = from_index - seg.first_index
                if keep < seg.count:
                    seg.size = seg.offsets[keep]
                    del seg.offsets[keep:]
                if all(s is not seg for s in self._cut):
                    self._cut.append(seg)
        self._last = from_index - 1
        # The buffer's bookkeeping is exact (O(buffer), but truncation is rare).
        assert self._pending_bytes == sum(map(len, self._parts))
        assert self._lengths == list(map(len, self._parts[1::2]))

    def _drop_pending(self, lo: int, hi: int) -> None:
        self._pending_bytes -= sum(map(len, self._parts[lo:hi]))
        del self._parts[lo:hi]
        del self._lengths[lo // 2 : hi // 2]

    def compact_prefix(self, through_index: int) -> None:
        """Drop every entry ``<= through_index``; past the end, the log restarts empty after it.

        Whole segments below the new first index are deleted at the next ``sync`` (after the new
        first index is durable); a segment that still holds a kept entry stays on disk whole,
        but reads below ``first_index`` raise :class:`LogIndexError`.
        """
        self._check_open()
        if through_index < self._first:
            return
        self._first = through_index + 1
        if through_index >= self._last:
            covered, self._segments = self._segments, []
            self._drop_pending(0, len(self._parts))
            self._last = through_index
        else:
            pending_first = self._last - self._pending_count + 1
            if through_index >= pending_first:
                self._drop_pending(0, 2 * (through_index - pending_first + 1))
            split = 0
            while split < len(self._segments) and self._segments[split].last_index <= through_index:
                split += 1
            covered, self._segments = self._segments[:split], self._segments[split:]
        self._covered.extend(covered)
        if not self._segments:
            self._tail_dirty = False  # the written-but-unsynced tail (if any) was compacted away
        self._cut = [s for s in self._cut if all(s is not c for c in covered)]
        assert self._first <= self._last + 1  # an empty log has last == first - 1

    def sync(self) -> None:
        """Write everything buffered and make all changes so far durable.

        One fdatasync of the tail segment in the common case (appends only). A sync that
        truncates adds an fdatasync and a directory fsync before writing; one that compacts adds
        an atomic base-file replace; one that starts a new segment adds a directory fsync (and an
        fdatasync sealing the previous segment).
        """
        self._check_open()
        try:
            self._sync()
        except OSError as exc:
            self._failed = exc
            raise StorageError(f"write-ahead log {self.directory}: sync failed: {exc}") from exc

    def _sync(self) -> None:
        self._write_pending()
        if self._tail_dirty:
            self._syncer.data(self._segments[-1].fd)
            self._tail_dirty = False
        if self._dir_dirty:
            self._syncer.directory(self.directory)
            self._dir_dirty = False
        for seg in self._covered:
            seg.close()
            self._unlink(segment_name(seg.first_index), index_name(seg.first_index))
        self._covered.clear()

    def _apply_truncation(self) -> None:
        if not (self._doomed or self._cut):
            return
        for seg in sorted(self._doomed, key=lambda s: -s.first_index):  # newest first: no gaps
            seg.close()
            self._unlink(segment_name(seg.first_index), index_name(seg.first_index))
        self._doomed.clear()
        for seg in self._cut:
            self._unlink(index_name(seg.first_index))
            os.ftruncate(seg.fd, seg.size)
            self._syncer.data(seg.fd)
        self._cut.clear()
        self._tail_dirty = False
        self._syncer.directory(self.directory)
        self._dir_dirty = False

    def _write_pending(self) -> None:
        """Apply pending truncations and compaction durably, then write buffered records."""
        self._apply_truncation()
        if self._first != self._durable_first:
            base = _BASE_MAGIC + self._first.to_bytes(8, "little")
            atomic_replace(
                os.path.join(self.directory, BASE_NAME),
                base + crc32c(base).to_bytes(4, "little"),
                self._syncer,
            )
            self._durable_first = self._first
        if not self._parts:
            return
        index = self._last - self._pending_count + 1
        tail = self._segments[-1] if self._segments else None
        if tail is None:
            tail = self._new_segment(index)
        assert tail.next_index == index  # pending records continue the tail with no gap
        parts, start = self._parts, 0
        while start < len(parts):
            # Record boundaries if the rest went into this segment: [start of each..., end].
            sizes = map(_RECORD_OVERHEAD.__add__, self._lengths[start // 2 :] if start else self._lengths)
            bounds = array("Q", accumulate(sizes, initial=tail.size))
            fit = bisect.bisect_right(bounds, self.max_segment_bytes) - 1
            if fit == 0 and tail.count == 0:
                fit = 1  # cannot happen with a valid configuration; never loop forever
            if fit == 0:  # the tail is full: seal it, then continue in a new segment
                self._seal(tail)
                tail = self._new_segment(index + start // 2)
                continue
            stop = start + 2 * fit
            self._tail_dirty = True
            pwrite_all(tail.fd, b"".join(parts[start:stop]), tail.size)
            tail.offsets.extend(bounds[:fit])
            tail.size = bounds[fit]
            start = stop
        self._parts, self._lengths = [], []
        self._pending_bytes = 0

    def _seal(self, seg: Segment) -> None:
        # The segment must be durable whole before its successor can exist: a non-last segment
        # is never torn, so any damage found in one later is corruption.
        if self._tail_dirty:
            self._syncer.data(seg.fd)
            self._tail_dirty = False
        seg.write_index()

    def _new_segment(self, first_index: int) -> Segment:
        path = os.path.join(self.directory, segment_name(first_index))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        pwrite_all(fd, encode_segment_header(first_index), 0)
        seg = Segment(self.directory, first_index, fd, seg_offsets(), SEGMENT_HEADER_BYTES)
        self._segments.append(seg)
        self._tail_dirty = True
        self._dir_dirty = True
        return seg

    # ----------------------------------------------------------------------------- reading

    def read(self, lo: int, hi: int) -> list[bytes]:
        """Entries ``lo <= index < hi``, each CRC-verified; raises CorruptionError on damage."""
        self._check_open()
        if not self._first <= lo <= hi <= self._last + 1:
            raise LogIndexError(f"read [{lo}, {hi}) outside the log [{self._first}, {self._last + 1})")
        out: list[bytes] = []
        wanted = hi - lo
        pending_first = self._last - self._pending_count + 1
        written_hi = min(hi, pending_first)
        if lo < written_hi:
            at = bisect.bisect_right(self._segments, lo, key=lambda s: s.first_index) - 1
            while lo < written_hi:
                seg = self._segments[at]
                stop = min(written_hi, seg.next_index)
                with io_errors(f"write-ahead log segment {seg.path}"):
                    out.extend(_read_segment(seg, lo - seg.first_index, stop - seg.first_index))
                lo, at = stop, at + 1
        if hi > pending_first:
            out.extend(self._parts[2 * max(0, lo - pending_first) + 1 : 2 * (hi - pending_first) : 2])
        assert len(out) == wanted  # exactly the entries asked for
        return out

    def get(self, index: int) -> bytes:
        """The entry at ``index``."""
        return self.read(index, index + 1)[0]

    def verify(self) -> None:
        """Scan every written record's CRC now (open does so only for the last segment)."""
        self._check_open()
        for seg in self._segments:
            with io_errors(f"write-ahead log segment {seg.path}"):
                buf = memoryview(read_file(seg.path))[: seg.size]
            scan = scan_records(buf, SEGMENT_HEADER_BYTES)
            if scan.bad_reason is not None:
                raise CorruptionError(seg.path, scan.end, scan.bad_reason)
            if scan.offsets != seg.offsets:
                raise CorruptionError(seg.path, SEGMENT_HEADER_BYTES, "records do not match the index")

    # ----------------------------------------------------------------------------- closing

    def close(self) -> None:
        """Release files and the lock. Anything not yet ``sync``ed is dropped (not made durable)."""
        for seg in (*self._segments, *self._doomed, *self._covered):
            seg.close()
        self._segments, self._doomed, self._covered, self._cut, self._parts = [], [], [], [], []
        self._lengths = []
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def seg_offsets() -> array[int]:
    return array("Q")


def _read_segment(seg: Segment, i0: int, i1: int) -> list[bytes]:
    """Records ``i0 .. i1-1`` of ``seg``, each checked against the index and its CRC.

    The checks run as C-level maps over the whole range; only when one fails does the slow
    path walk the records one by one to name the first bad one.
    """
    start, end = seg.offsets[i0], seg.end_of(i1 - 1)
    data = os.pread(seg.fd, end - start, start)
    starts = list(map((-start).__add__, seg.offsets[i0:i1]))
    ends = [*starts[1:], end - start]
    bodies = list(map(_RECORD_OVERHEAD.__add__, starts))
    if len(data) == end - start and all(map(le, bodies, ends)):  # every header fits its span
        headers = list(map(RECORD_HEADER.unpack_from, repeat(data, len(starts)), starts))
        lengths = list(map(itemgetter(0), headers))
        if lengths == list(map(sub, ends, bodies)):
            payloads = list(map(data.__getitem__, map(slice, bodies, ends)))
            seeds = {length: length_crc(length) for length in set(lengths)}
            crcs = list(map(crc32c, payloads, map(seeds.__getitem__, lengths)))
            if crcs == list(map(itemgetter(1), headers)):
                return payloads
    return _read_segment_slowly(seg, i0, i1, start, data)


def _read_segment_slowly(seg: Segment, i0: int, i1: int, start: int, data: bytes) -> list[bytes]:
    view = memoryview(data)
    out: list[bytes] = []
    for i in range(i0, i1):
        at = seg.offsets[i]
        pos, stop = at - start, seg.end_of(i) - start
        if stop > len(data) or stop - pos < RECORD_HEADER_BYTES:
            raise CorruptionError(seg.path, at, "segment is shorter than its index says")
        length, crc = RECORD_HEADER.unpack_from(view, pos)
        if pos + RECORD_HEADER_BYTES + length != stop:
            raise CorruptionError(seg.path, at, f"record length {length} does not match the index")
        payload = view[pos + RECORD_HEADER_BYTES : stop]
        if record_crc(payload) != crc:
            raise CorruptionError(seg.path, at, "record checksum mismatch")
        out.append(bytes(payload))
    raise AssertionError("the fast path rejected records the slow path accepts")  # they must agree

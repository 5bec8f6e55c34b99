"""A snapshot store: stream a snapshot in, install it atomically, keep the last N."""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

from crc32c import crc32c

from stalwart.errors import ConfigError
from stalwart.storage._errors import CorruptionError, RecordTooLargeError, StorageError
from stalwart.storage._fs import (
    Syncer,
    SyncStats,
    ensure_dir,
    io_errors,
    pread_exact,
    unlink_quiet,
    write_all,
)

SNAP_MAGIC = b"STLSNAP1"
SNAP_END = b"SEND"
_HEAD = struct.Struct("<8sQQI")  # magic, sequence, index, meta length; then meta, then u32 crc
_FOOT = struct.Struct("<QI4s")  # data length, crc32c(data), end magic
_U32 = struct.Struct("<I")
_NAME_RE = re.compile(r"^snap-(\d{20})\.snap$")
DEFAULT_MAX_META_BYTES = 1024 * 1024
DEFAULT_MAX_SNAPSHOT_BYTES = 64 * 1024**3
READ_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What a snapshot file's header says. ``seq`` orders snapshots: the highest is the latest."""

    path: str
    seq: int
    index: int
    meta: bytes
    data_offset: int
    data_bytes: int

    def read_bytes(self) -> bytes:
        """The whole snapshot, CRC-verified (CorruptionError on mismatch)."""
        return b"".join(self.chunks())

    def chunks(self, chunk_bytes: int = READ_CHUNK_BYTES) -> Iterator[bytes]:
        """Stream the data; the last step raises CorruptionError if the CRC does not match.

        A consumer must not act on the data before the iterator is exhausted without error.
        """
        with io_errors(f"snapshot {self.path}"):
            yield from self._chunks(chunk_bytes)

    def _chunks(self, chunk_bytes: int) -> Iterator[bytes]:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            foot = _FOOT.unpack(pread_exact(fd, _FOOT.size, self.data_offset + self.data_bytes, self.path))
            crc, pos, end = 0, self.data_offset, self.data_offset + self.data_bytes
            while pos < end:
                chunk = pread_exact(fd, min(chunk_bytes, end - pos), pos, self.path)
                crc = crc32c(chunk, crc)
                pos += len(chunk)
                if pos == end and crc != foot[1]:
                    raise CorruptionError(self.path, self.data_offset, "snapshot data checksum mismatch")
                yield chunk
            if self.data_bytes == 0 and foot[1] != 0:
                raise CorruptionError(self.path, self.data_offset, "snapshot data checksum mismatch")
        finally:
            os.close(fd)

    def verify(self) -> None:
        """Read everything once, raising CorruptionError on a mismatch."""
        for _ in self.chunks():
            pass


def _read_info(path: str, seq: int) -> SnapshotInfo:
    """Parse and check a snapshot's header and footer (not its data CRC)."""
    with io_errors(f"snapshot {path}"):
        return _read_info_io(path, seq)


def _read_info_io(path: str, seq: int) -> SnapshotInfo:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size < _HEAD.size + _U32.size + _FOOT.size:
            raise CorruptionError(path, size, f"snapshot file of {size} bytes is too short")
        magic, file_seq, index, meta_len = _HEAD.unpack(pread_exact(fd, _HEAD.size, 0, path))
        if magic != SNAP_MAGIC:
            raise CorruptionError(path, 0, "bad snapshot magic")
        data_offset = _HEAD.size + meta_len + _U32.size
        if data_offset + _FOOT.size > size:
            raise CorruptionError(path, 24, f"meta length {meta_len} runs past the end of the file")
        head = pread_exact(fd, data_offset, 0, path)
        if _U32.unpack_from(head, data_offset - 4)[0] != crc32c(memoryview(head)[:-4]):
            raise CorruptionError(path, 0, "snapshot header checksum mismatch")
        if file_seq != seq:
            raise CorruptionError(path, 8, f"header says sequence {file_seq}, the name says {seq}")
        data_bytes, _, end = _FOOT.unpack(pread_exact(fd, _FOOT.size, size - _FOOT.size, path))
        if end != SNAP_END or data_offset + data_bytes + _FOOT.size != size:
            raise CorruptionError(path, size - _FOOT.size, "bad snapshot footer (length or end magic)")
        meta = head[_HEAD.size : _HEAD.size + meta_len]
        return SnapshotInfo(path, seq, index, meta, data_offset, data_bytes)
    finally:
        os.close(fd)


class SnapshotWriter:
    """Streams one snapshot into a temp file; ``commit`` installs it, ``abort`` throws it away."""

    def __init__(self, store: SnapshotStore, seq: int, index: int, meta: bytes) -> None:
        self._store = store
        self.seq, self.index, self.meta = seq, index, meta
        self.final_path = os.path.join(store.directory, f"snap-{seq:020d}.snap")
        self.tmp_path = self.final_path + ".tmp"
        with io_errors(f"snapshot {self.tmp_path}"):
            self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        head = _HEAD.pack(SNAP_MAGIC, seq, index, len(meta)) + meta
        self._crc = 0
        self.data_bytes = 0
        try:
            with io_errors(f"snapshot {self.tmp_path}"):
                write_all(self._fd, head + _U32.pack(crc32c(head)))
        except BaseException:
            self.abort()
            raise

    @property
    def active(self) -> bool:
        return self._fd >= 0

    def write(self, chunk: bytes) -> None:
        """Append data; over the store's ``max_snapshot_bytes`` the snapshot is aborted."""
        if self._fd < 0:
            raise StorageError("snapshot writer is no longer active")
        if self.data_bytes + len(chunk) > self._store.max_snapshot_bytes:
            self.abort()
            raise RecordTooLargeError(
                "snapshot", self.data_bytes + len(chunk), self._store.max_snapshot_bytes
            )
        try:
            with io_errors(f"snapshot {self.tmp_path}"):
                write_all(self._fd, chunk)
        except BaseException:
            self.abort()
            raise
        self._crc = crc32c(chunk, self._crc)
        self.data_bytes += len(chunk)

    def commit(self) -> SnapshotInfo:
        """Footer, fsync, rename into place, fsync the directory; then drop the oldest beyond ``keep``."""
        if self._fd < 0:
            raise StorageError("snapshot writer is no longer active")
        syncer = self._store._syncer
        try:
            with io_errors(f"snapshot {self.tmp_path}"):
                write_all(self._fd, _FOOT.pack(self.data_bytes, self._crc, SNAP_END))
                syncer.file(self._fd)
        except BaseException:
            self.abort()
            raise
        os.close(self._fd)
        self._fd = -1
        with io_errors(f"snapshot {self.final_path}"):
            try:
                os.replace(self.tmp_path, self.final_path)
            except BaseException:
                unlink_quiet(self.tmp_path)
                self._store._finished(None)
                raise
            syncer.directory(self._store.directory)
        self._store._finished(self)
        data_offset = _HEAD.size + len(self.meta) + _U32.size
        return SnapshotInfo(self.final_path, self.seq, self.index, self.meta, data_offset, self.data_bytes)

    def abort(self) -> None:
        """Discard the snapshot (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            unlink_quiet(self.tmp_path)
            self._store._finished(None)

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()  # a committed writer is inactive already; anything else is thrown away


class SnapshotStore:
    """Snapshot files ``snap-<seq>.snap`` in one directory; keeps the ``keep`` most recent.

    ``latest()`` is the most recently *committed* snapshot (the highest sequence number), which
    is what a protocol last asked for even if its index is lower than an older one's. If that
    snapshot is damaged, ``latest()`` raises :class:`CorruptionError` rather than fall back to an
    older one: the log has usually been compacted through the newer snapshot's index, so the
    older one plus the log cannot rebuild the state, and serving it would be serving wrong data.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep: int = 2,
        fsync: bool = True,
        max_meta_bytes: int = DEFAULT_MAX_META_BYTES,
        max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
        stats: SyncStats | None = None,
    ) -> None:
        if keep < 1:
            raise ConfigError(f"keep must be at least 1, got {keep}")
        self.directory = os.fspath(directory)
        self.keep = keep
        self.max_meta_bytes = max_meta_bytes
        self.max_snapshot_bytes = max_snapshot_bytes
        self.stats = stats if stats is not None else SyncStats()
        self._syncer = Syncer(fsync, self.stats)
        self._writer: SnapshotWriter | None = None
        with io_errors(f"snapshot directory {self.directory}"):
            ensure_dir(self.directory, self._syncer)
            for name in os.listdir(self.directory):
                if name.startswith("snap-") and name.endswith(".tmp"):
                    os.unlink(os.path.join(self.directory, name))  # an interrupted, never-installed one

    def _seqs(self) -> list[int]:
        with io_errors(f"snapshot directory {self.directory}"):
            names = os.listdir(self.directory)
        return sorted(int(m.group(1)) for n in names if (m := _NAME_RE.match(n)))

    def begin(self, index: int, meta: bytes = b"") -> SnapshotWriter:
        """Start streaming a snapshot covering the log through ``index``; one writer at a time."""
        if self._writer is not None:
            raise StorageError("another snapshot is being written")
        if index < 0:
            raise StorageError(f"snapshot index must be >= 0, got {index}")
        if len(meta) > self.max_meta_bytes:
            raise RecordTooLargeError("snapshot metadata", len(meta), self.max_meta_bytes)
        seqs = self._seqs()
        self._writer = SnapshotWriter(self, (seqs[-1] + 1) if seqs else 1, index, bytes(meta))
        return self._writer

    def put(self, index: int, data: bytes, meta: bytes = b"") -> SnapshotInfo:
        """Write a whole snapshot at once (``begin``, ``write``, ``commit``)."""
        with self.begin(index, meta) as writer:
            writer.write(data)
            return writer.commit()

    def _finished(self, writer: SnapshotWriter | None) -> None:
        self._writer = None
        if writer is not None:
            for seq in self._seqs()[: -self.keep]:
                # Not fsynced: an old snapshot that reappears after a crash is pruned again.
                unlink_quiet(os.path.join(self.directory, f"snap-{seq:020d}.snap"))

    def list(self) -> list[SnapshotInfo]:
        """Every installed snapshot, oldest first (headers checked, data not verified)."""
        return [_read_info(os.path.join(self.directory, f"snap-{s:020d}.snap"), s) for s in self._seqs()]

    def latest(self, *, verify: bool = True) -> SnapshotInfo | None:
        """The newest snapshot; None if there is none; CorruptionError if it is damaged.

        With ``verify`` (the default) the whole data CRC is checked now; without it only the
        header and footer are, and the data is checked as it is read (``read_bytes``/``chunks``).
        """
        seqs = self._seqs()
        if not seqs:
            return None
        info = _read_info(os.path.join(self.directory, f"snap-{seqs[-1]:020d}.snap"), seqs[-1])
        if verify:
            info.verify()
        return info

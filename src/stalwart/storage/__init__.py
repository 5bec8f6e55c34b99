"""Durable storage on real files: a write-ahead log, atomic metadata, snapshots (docs/storage.md).

- :class:`WriteAheadLog`: segmented log of ``length | crc32c | payload`` records at contiguous
  indexes; group commit (``sync`` once for many appends); suffix truncation; prefix compaction;
  CRC-verified reads; fast open; torn tails truncated, corruption refused with file and offset.
- :class:`MetaStore`: a small key -> bytes map replaced atomically (temp, fsync, rename, fsync dir).
- :class:`SnapshotStore`: snapshots streamed in, installed atomically, the last N kept.
- :class:`NodeStorage`: the sans-IO storage operations (``stalwart.sansio.StorageOp``) on all three.

This package does I/O; protocols never import it (they emit storage operations instead).
"""

from stalwart.storage._errors import (
    CorruptionError,
    InvalidStorageOpError,
    LogIndexError,
    RecordTooLargeError,
    StorageClosedError,
    StorageError,
    StorageLockedError,
)
from stalwart.storage._fs import SyncStats
from stalwart.storage._meta import InvalidMetaKeyError, MetaStore
from stalwart.storage._node import NodeStorage
from stalwart.storage._snapshot import SnapshotInfo, SnapshotStore, SnapshotWriter
from stalwart.storage._wal import (
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_MAX_SEGMENT_BYTES,
    DEFAULT_WRITE_BUFFER_BYTES,
    WriteAheadLog,
)

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "DEFAULT_MAX_SEGMENT_BYTES",
    "DEFAULT_WRITE_BUFFER_BYTES",
    "CorruptionError",
    "InvalidMetaKeyError",
    "InvalidStorageOpError",
    "LogIndexError",
    "MetaStore",
    "NodeStorage",
    "RecordTooLargeError",
    "SnapshotInfo",
    "SnapshotStore",
    "SnapshotWriter",
    "StorageClosedError",
    "StorageError",
    "StorageLockedError",
    "SyncStats",
    "WriteAheadLog",
]

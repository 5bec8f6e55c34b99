"""NodeStorage: the host-side meaning of the sans-IO storage operations on real files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import TracebackType
from typing import assert_never

from stalwart.sansio import AppendLog, CompactLog, DurableState, PutMeta, PutSnapshot, StorageOp, TruncateLog
from stalwart.storage._errors import InvalidStorageOpError, RecordTooLargeError, StorageError
from stalwart.storage._fs import SyncStats
from stalwart.storage._meta import MetaStore
from stalwart.storage._snapshot import SnapshotStore
from stalwart.storage._wal import DEFAULT_MAX_RECORD_BYTES, DEFAULT_MAX_SEGMENT_BYTES, WriteAheadLog


class NodeStorage:
    """One node's disk: ``<dir>/wal/`` (log), ``<dir>/meta`` (stable values), ``<dir>/snapshots/``.

    ``apply(ops)`` buffers; ``sync()`` makes everything applied so far durable; after a crash,
    reopening and calling ``load()`` gives exactly ``apply_storage_ops(DurableState(), synced)``.
    A crash *during* ``sync()`` leaves each part (log, metadata, snapshots) at its old or new
    state, the log possibly at a prefix of its appends; nothing depending on that sync has been
    acknowledged, so any of these is safe for the protocol.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: bool = True,
        keep_snapshots: int = 2,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES,
    ) -> None:
        self.directory = os.fspath(directory)
        self.stats = SyncStats()
        # The log is opened first: its directory lock keeps a second NodeStorage out of all three.
        self._wal = WriteAheadLog(
            os.path.join(self.directory, "wal"),
            fsync=fsync,
            max_record_bytes=max_record_bytes,
            max_segment_bytes=max_segment_bytes,
            stats=self.stats,
        )
        try:
            self._meta = MetaStore(os.path.join(self.directory, "meta"), fsync=fsync, stats=self.stats)
            self._snapshots = SnapshotStore(
                os.path.join(self.directory, "snapshots"), keep=keep_snapshots, fsync=fsync, stats=self.stats
            )
        except BaseException:
            self._wal.close()
            raise
        self._pending_meta: dict[str, bytes] = {}
        self._pending_snapshot: tuple[int, bytes] | None = None
        self._unsynced = False
        self._failed: BaseException | None = None

    @property
    def wal(self) -> WriteAheadLog:
        """The log, for reads (``read``, ``get``); write through ``apply`` only."""
        return self._wal

    def apply(self, ops: Sequence[StorageOp]) -> None:
        """Buffer ``ops`` in order. All are checked first: on a bad one nothing is applied."""
        self._check_usable()
        self._validate(ops)
        try:
            self._apply_checked(ops)
        except StorageError as exc:
            self._failed = exc  # a buffer flush failed part-way: only a reopen may continue
            raise

    def _apply_checked(self, ops: Sequence[StorageOp]) -> None:
        for op in ops:
            match op:
                case PutMeta(key=key, value=value):
                    self._pending_meta[key] = bytes(value)
                case AppendLog(index=index, payload=payload):
                    self._wal.append(index, payload)
                case TruncateLog(from_index=from_index):
                    self._wal.truncate_suffix(from_index)
                case CompactLog(through_index=through):
                    self._wal.compact_prefix(through)
                case PutSnapshot(index=index, data=data):
                    # Only the last snapshot of a batch is written: an earlier one is superseded.
                    self._pending_snapshot = (index, bytes(data))
                    if index > self._wal.last_index:
                        self._wal.compact_prefix(index)  # the snapshot is ahead of the whole log
                case _:
                    assert_never(op)
            self._unsynced = True

    def _validate(self, ops: Sequence[StorageOp]) -> None:
        first, last = self._wal.first_index, self._wal.last_index
        keys = set(self._meta.as_dict()) | set(self._pending_meta)
        for op in ops:
            match op:
                case PutMeta(key=key, value=value):
                    self._meta.check_item(key, value)
                    keys.add(key)
                    if len(keys) > self._meta.max_keys:
                        raise RecordTooLargeError("metadata key count", len(keys), self._meta.max_keys)
                case AppendLog(index=index, payload=payload):
                    if index != last + 1:
                        raise InvalidStorageOpError(f"append at {index}, expected {last + 1}")
                    if len(payload) > self._wal.max_record_bytes:
                        raise RecordTooLargeError("log record", len(payload), self._wal.max_record_bytes)
                    last = index
                case TruncateLog(from_index=from_index):
                    if from_index < first:
                        raise InvalidStorageOpError(f"truncate from {from_index} below first index {first}")
                    last = min(last, from_index - 1)
                case CompactLog(through_index=through):
                    if through >= first:
                        first, last = through + 1, max(last, through)
                case PutSnapshot(index=index, data=data):
                    if index < 0:
                        raise InvalidStorageOpError(f"snapshot index {index} is negative")
                    if len(data) > self._snapshots.max_snapshot_bytes:
                        raise RecordTooLargeError("snapshot", len(data), self._snapshots.max_snapshot_bytes)
                    if index > last:
                        first, last = index + 1, index
                case _:
                    assert_never(op)

    def sync(self) -> None:
        """Make every applied op durable: snapshot, then log, then metadata.

        The snapshot goes first because the log's compaction may delete what it covers. With
        appends only, this is one fdatasync.
        """
        self._check_usable()
        try:
            if self._pending_snapshot is not None:
                index, data = self._pending_snapshot
                self._snapshots.put(index, data)
                self._pending_snapshot = None
            self._wal.sync()
            if self._pending_meta:
                self._meta.put_many(self._pending_meta)
                self._pending_meta = {}
        except (OSError, StorageError) as exc:
            self._failed = exc  # what reached the disk is unknown: only a reopen may continue
            raise StorageError(f"node storage {self.directory}: sync failed: {exc}") from exc
        self._unsynced = False

    def load(self) -> DurableState:
        """What the disk holds, as the protocol's restart input. Refused while ops are unsynced."""
        self._check_usable()
        if self._unsynced:
            raise StorageError("load() with unsynced operations; sync() first")
        wal = self._wal
        latest = self._snapshots.latest(verify=False)  # read_bytes() verifies as it reads
        snapshot = None if latest is None else (latest.index, latest.read_bytes())
        log = tuple(wal.read(wal.first_index, wal.last_index + 1))
        return DurableState(
            meta=self._meta.as_dict(), first_index=wal.first_index, log=log, snapshot=snapshot
        )

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise StorageError(f"node storage {self.directory} failed earlier; reopen it") from self._failed
        if self._wal.closed:
            raise StorageError(f"node storage {self.directory} is closed")

    def close(self) -> None:
        """Release files and locks; ops not yet synced are dropped, as a crash would drop them."""
        self._wal.close()
        self._pending_meta = {}
        self._pending_snapshot = None

    def __enter__(self) -> NodeStorage:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

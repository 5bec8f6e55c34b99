"""WriteAheadLog: the API, group commit, truncation, compaction, segments, and a model-based test."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from stalwart.errors import ConfigError, CorruptionError, StorageError
from stalwart.storage import (
    LogIndexError,
    RecordTooLargeError,
    StorageClosedError,
    StorageLockedError,
    WriteAheadLog,
)


def payload(i: int, size: int = 20) -> bytes:
    return (f"{i}:".encode() * size)[:size]


def segment_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.wal"))


def small_wal(d: Path, **kw: object) -> WriteAheadLog:
    # Room for four 20-byte records per segment: rollovers happen constantly.
    return WriteAheadLog(d, max_record_bytes=64, max_segment_bytes=16 + 4 * 28, **kw)  # type: ignore[arg-type]


def test_append_sync_reopen_and_read(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path) as wal:
        assert (wal.first_index, wal.last_index) == (1, 0)
        wal.append(1, b"a")
        wal.append_many(2, [b"", b"ccc"])
        assert wal.read(1, 4) == [b"a", b"", b"ccc"]  # buffered entries are readable before sync
        wal.sync()
        assert wal.get(3) == b"ccc"
    with WriteAheadLog(tmp_path) as wal:
        assert (wal.first_index, wal.last_index) == (1, 3)
        assert wal.read(1, 4) == [b"a", b"", b"ccc"]
        assert wal.read(2, 2) == []


def test_unsynced_appends_are_dropped_on_close(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path) as wal:
        wal.append(1, b"kept")
        wal.sync()
        wal.append(2, b"lost")
    with WriteAheadLog(tmp_path) as wal:
        assert wal.last_index == 1


def test_group_commit_is_one_fdatasync(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path) as wal:
        wal.append(1, b"x")
        wal.sync()  # creates the first segment: one fdatasync and one directory fsync
        before = (wal.stats.data_syncs, wal.stats.dir_syncs, wal.stats.file_syncs)
        wal.append_many(2, [payload(i) for i in range(2, 1002)])
        wal.sync()
        after = (wal.stats.data_syncs, wal.stats.dir_syncs, wal.stats.file_syncs)
        assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (1, 0, 0)
        wal.sync()  # nothing new: no flush at all
        assert wal.stats.data_syncs == after[0]


def test_bad_requests_raise_typed_errors_and_change_nothing(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, max_record_bytes=10, max_segment_bytes=100) as wal:
        wal.append(1, b"one")
        with pytest.raises(LogIndexError):
            wal.append(3, b"gap")
        with pytest.raises(LogIndexError):
            wal.append(1, b"again")
        with pytest.raises(RecordTooLargeError):
            wal.append(2, b"x" * 11)
        with pytest.raises(RecordTooLargeError):
            wal.append_many(2, [b"ok", b"x" * 11])  # checked before any is taken
        assert wal.last_index == 1
        with pytest.raises(LogIndexError):
            wal.read(0, 1)
        with pytest.raises(LogIndexError):
            wal.read(1, 3)
        wal.compact_prefix(1)
        with pytest.raises(LogIndexError):
            wal.truncate_suffix(1)
        with pytest.raises(LogIndexError):
            wal.get(1)
    with pytest.raises(StorageClosedError):
        wal.append(2, b"closed")
    with pytest.raises(ConfigError):
        WriteAheadLog(tmp_path / "x", max_record_bytes=100, max_segment_bytes=100)


def test_one_owner_per_directory(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path), pytest.raises(StorageLockedError):
        WriteAheadLog(tmp_path)
    with WriteAheadLog(tmp_path):  # released on close
        pass


def test_segments_roll_over_and_reopen_from_index_files(tmp_path: Path) -> None:
    with small_wal(tmp_path) as wal:
        wal.append_many(1, [payload(i) for i in range(1, 31)])
        wal.sync()
    segs = segment_files(tmp_path)
    assert len(segs) == 8  # 30 records, four per segment
    assert len(list(tmp_path.glob("*.idx"))) == 7  # every sealed segment, never the tail
    assert all(s.stat().st_size <= 16 + 4 * 28 for s in segs)
    with small_wal(tmp_path) as wal:
        assert wal.read(1, 31) == [payload(i) for i in range(1, 31)]
        wal.verify()
    # A missing or damaged index file is rebuilt by scanning.
    (tmp_path / f"{5:020d}.idx").unlink()
    (tmp_path / f"{9:020d}.idx").write_bytes(b"garbage")
    with small_wal(tmp_path) as wal:
        assert wal.read(1, 31) == [payload(i) for i in range(1, 31)]
    assert (tmp_path / f"{5:020d}.idx").exists()


def test_truncate_suffix_is_durable_and_never_mixes(tmp_path: Path) -> None:
    with small_wal(tmp_path) as wal:
        wal.append_many(1, [payload(i) for i in range(1, 21)])
        wal.sync()
        wal.truncate_suffix(10)  # cuts into segment 9..12 and drops three whole segments
        assert wal.last_index == 9
        with pytest.raises(LogIndexError):
            wal.read(10, 11)
        wal.append_many(10, [b"new-%d" % i for i in range(10, 13)])
        syncs = wal.stats.data_syncs
        wal.sync()
        # The cut is made durable before the new records are written: two fdatasyncs.
        assert wal.stats.data_syncs - syncs == 2
    with small_wal(tmp_path) as wal:
        assert wal.last_index == 12
        assert wal.read(1, 10) == [payload(i) for i in range(1, 10)]
        assert wal.read(10, 13) == [b"new-%d" % i for i in range(10, 13)]
    assert not (tmp_path / f"{9:020d}.idx").exists()  # the cut segment is the tail again


def test_truncate_only_pending_needs_no_flush(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path) as wal:
        wal.append_many(1, [b"a", b"b"])
        wal.sync()
        wal.append_many(3, [b"c", b"d"])
        wal.truncate_suffix(4)
        wal.truncate_suffix(10)  # past the end: a no-op
        assert wal.read(1, 4) == [b"a", b"b", b"c"]
        wal.sync()
    with WriteAheadLog(tmp_path) as wal:
        assert wal.read(1, 4) == [b"a", b"b", b"c"]


def test_compact_prefix_keeps_partial_segments_and_hides_them(tmp_path: Path) -> None:
    with small_wal(tmp_path) as wal:
        wal.append_many(1, [payload(i) for i in range(1, 21)])
        wal.sync()
        wal.compact_prefix(6)  # segments 1..4 fully covered; 5..8 partly
        assert wal.first_index == 7
        with pytest.raises(LogIndexError):
            wal.read(6, 7)
        wal.sync()
    assert segment_files(tmp_path)[0].name == f"{5:020d}.wal"
    with small_wal(tmp_path) as wal:
        assert (wal.first_index, wal.last_index) == (7, 20)
        assert wal.read(7, 21) == [payload(i) for i in range(7, 21)]
        wal.compact_prefix(3)  # below first: a no-op
        assert wal.first_index == 7


def test_compact_past_the_end_restarts_the_log(tmp_path: Path) -> None:
    with small_wal(tmp_path) as wal:
        wal.append_many(1, [payload(i) for i in range(1, 10)])
        wal.sync()
        wal.append(10, payload(10))  # pending, then compacted away with the rest
        wal.compact_prefix(100)
        assert (wal.first_index, wal.last_index) == (101, 100)
        wal.append(101, b"after")
        wal.sync()
    assert [p.name for p in segment_files(tmp_path)] == [f"{101:020d}.wal"]
    with small_wal(tmp_path) as wal:
        assert (wal.first_index, wal.last_index) == (101, 101)
        assert wal.get(101) == b"after"


def test_compaction_point_survives_without_new_appends(tmp_path: Path) -> None:
    with small_wal(tmp_path) as wal:
        wal.append_many(1, [payload(i) for i in range(1, 10)])
        wal.sync()
        wal.compact_prefix(50)
        wal.sync()
    with small_wal(tmp_path) as wal:
        assert (wal.first_index, wal.last_index) == (51, 50)


def test_interrupted_compaction_cleanup_is_finished_on_open(tmp_path: Path) -> None:
    with small_wal(tmp_path) as wal:
        wal.append_many(1, [payload(i) for i in range(1, 21)])
        wal.sync()
    saved = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "LOCK"}
    with small_wal(tmp_path) as wal:
        wal.compact_prefix(12)
        wal.sync()
    for name, data in saved.items():  # a crash before the unlinks reached the disk
        if name.endswith((".wal", ".idx")):
            (tmp_path / name).write_bytes(data)
    with small_wal(tmp_path) as wal:
        assert (wal.first_index, wal.last_index) == (13, 20)
        assert wal.read(13, 21) == [payload(i) for i in range(13, 21)]
    assert segment_files(tmp_path)[0].name == f"{13:020d}.wal"


def test_auto_flush_bounds_the_buffer(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, write_buffer_bytes=1000) as wal:
        wal.append_many(1, [payload(i, 100) for i in range(1, 50)])
        assert wal.stats.data_syncs == 0  # written, but not durable until sync
        assert segment_files(tmp_path)[0].stat().st_size > 1000
        wal.truncate_suffix(5)  # truncating written-but-unsynced records
        wal.sync()
    with WriteAheadLog(tmp_path) as wal:
        assert wal.read(1, 5) == [payload(i, 100) for i in range(1, 5)]
        assert wal.last_index == 4


def test_failed_sync_poisons_the_log(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.append(1, b"x")
    wal.sync()
    os.close(wal._segments[-1].fd)  # simulate an I/O error on the next write
    wal.append(2, b"y")
    with pytest.raises(StorageError):
        wal.sync()
    with pytest.raises(StorageError, match="reopen"):
        wal.append(3, b"z")
    wal._segments[-1].fd = -1
    wal.close()


# ------------------------------------------------------------------ model-based (Hypothesis)


class WalModel(RuleBasedStateMachine):
    """The log against a list: every operation, sync, crash (close without sync) and reopen."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="stalwart-wal-"))
        self.wal = self._open()
        self.first, self.log = 1, list[bytes]()  # the live view
        self.synced = (1, list[bytes]())  # what a crash falls back to
        self.appended_bytes = 0  # since the last sync; at 200 the log writes (not syncs) its buffer

    def _open(self) -> WriteAheadLog:
        return WriteAheadLog(self.dir, max_record_bytes=64, max_segment_bytes=16 + 3 * 40, fsync=False,
                             write_buffer_bytes=200)  # fmt: skip

    @property
    def last(self) -> int:
        return self.first + len(self.log) - 1

    @rule(data=st.lists(st.binary(max_size=30), min_size=1, max_size=8))
    def append(self, data: list[bytes]) -> None:
        self.wal.append_many(self.last + 1, data)
        self.log.extend(data)
        self.appended_bytes += sum(len(p) + 8 for p in data)

    @rule(back=st.integers(0, 12))
    def truncate(self, back: int) -> None:
        at = max(self.first, self.last + 1 - back)
        self.wal.truncate_suffix(at)
        del self.log[at - self.first :]

    @rule(ahead=st.integers(-2, 15))
    def compact(self, ahead: int) -> None:
        through = self.first - 1 + ahead
        self.wal.compact_prefix(through)
        if through >= self.first:
            del self.log[: through - self.first + 1]
            self.first = through + 1

    @rule()
    def sync(self) -> None:
        self.wal.sync()
        self.synced = (self.first, list(self.log))
        self.appended_bytes = 0

    @precondition(lambda self: self.appended_bytes < 200)
    @rule()
    def crash_and_reopen(self) -> None:
        self.wal.close()  # unsynced work is dropped; nothing had been written since the sync
        self.wal = self._open()
        self.wal.verify()  # every segment, index files included, agrees with a full scan
        self.first, self.log = self.synced[0], list(self.synced[1])

    @rule(lo=st.integers(0, 40), span=st.integers(0, 10))
    def read(self, lo: int, span: int) -> None:
        lo = self.first + lo % (len(self.log) + 1)
        hi = min(lo + span, self.last + 1)
        assert self.wal.read(lo, hi) == self.log[lo - self.first : hi - self.first]

    @invariant()
    def bounds_match(self) -> None:
        assert (self.wal.first_index, self.wal.last_index) == (self.first, self.last)

    def teardown(self) -> None:
        self.wal.close()
        shutil.rmtree(self.dir, ignore_errors=True)


WalModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("STALWART_WAL_EXAMPLES", "60")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_wal_matches_model = WalModel.TestCase


def test_read_raises_corruption_instead_of_serving_wrong_data(tmp_path: Path) -> None:
    with small_wal(tmp_path) as wal:
        wal.append_many(1, [payload(i) for i in range(1, 9)])
        wal.sync()
        seg = segment_files(tmp_path)[0]
        data = bytearray(seg.read_bytes())
        data[16 + 28 + 8 + 3] ^= 0x01  # a payload byte of record 2, under the open log
        seg.write_bytes(bytes(data))
        assert wal.read(1, 2) == [payload(1)]
        with pytest.raises(CorruptionError) as err:
            wal.read(1, 3)
        assert (err.value.path, err.value.offset) == (str(seg), 16 + 28)


def test_new_segment_seals_the_old_one_and_syncs_the_directory(tmp_path: Path) -> None:
    with small_wal(tmp_path) as wal:
        wal.append_many(1, [payload(i) for i in range(1, 4)])
        wal.sync()  # first segment: its data, then the directory entry
        assert (wal.stats.data_syncs, wal.stats.dir_syncs) == (1, 1)
        wal.append_many(4, [payload(i) for i in range(4, 7)])  # 4 fills segment 1; 5, 6 start segment 5
        wal.sync()
        # segment 1 sealed (fdatasync) before segment 5 exists; segment 5 synced; directory synced
        assert (wal.stats.data_syncs, wal.stats.dir_syncs) == (3, 2)
        assert (tmp_path / f"{1:020d}.idx").exists()

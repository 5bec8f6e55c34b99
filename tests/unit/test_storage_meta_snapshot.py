"""MetaStore and SnapshotStore: round trips, limits, atomic install, and damage on every byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.errors import ConfigError, CorruptionError, StorageError
from stalwart.sansio._storage_ops import MAX_META_KEYS
from stalwart.storage import InvalidMetaKeyError, MetaStore, RecordTooLargeError, SnapshotStore, WriteAheadLog
from stalwart.storage._meta import DEFAULT_MAX_KEYS, decode_meta, encode_meta

# ------------------------------------------------------------------ MetaStore


def test_meta_round_trip_and_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "meta"
    store = MetaStore(path)
    assert store.as_dict() == {} and store.get("term") is None
    store.put_many({"term": b"\x00\x07", "vote": b"n2"})
    assert store.stats.file_syncs == 1 and store.stats.dir_syncs >= 1  # temp fsync, then the dir
    store.put("term", b"\x00\x08")
    store.delete("vote")
    store.delete("absent")
    assert MetaStore(path).as_dict() == {"term": b"\x00\x08"}
    assert not Path(str(path) + ".tmp").exists()


def test_meta_leftover_temp_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "meta"
    MetaStore(path).put("term", b"1")
    Path(str(path) + ".tmp").write_bytes(b"half a write")  # a crash before the rename
    assert MetaStore(path).as_dict() == {"term": b"1"}
    assert not Path(str(path) + ".tmp").exists()


def test_meta_limits_raise_and_change_nothing(tmp_path: Path) -> None:
    store = MetaStore(tmp_path / "meta", max_value_bytes=8)
    store.put("a", b"1")
    with pytest.raises(InvalidMetaKeyError):
        store.put("", b"x")
    with pytest.raises(InvalidMetaKeyError):
        store.put("k" * 256, b"x")
    with pytest.raises(RecordTooLargeError):
        store.put_many({"b": b"2", "c": b"x" * 9})
    with pytest.raises(RecordTooLargeError):
        store.put_many({f"k{i}": b"" for i in range(DEFAULT_MAX_KEYS)})
    assert store.as_dict() == {"a": b"1"}
    assert MetaStore(tmp_path / "meta").as_dict() == {"a": b"1"}


def test_meta_key_limit_matches_the_reference_semantics() -> None:
    assert DEFAULT_MAX_KEYS == MAX_META_KEYS


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=20), st.binary(max_size=40), max_size=10))
def test_meta_codec_round_trips(items: dict[str, bytes]) -> None:
    assert decode_meta(encode_meta(items), "m") == items


def test_meta_every_truncation_and_bit_flip_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "meta"
    MetaStore(path).put_many({"term": b"\x00\x00\x00\x05", "vote": b"node-2", "conf": b""})
    good = path.read_bytes()
    for size in range(len(good)):
        path.write_bytes(good[:size])
        with pytest.raises(CorruptionError) as err:
            MetaStore(path)
        assert err.value.path == str(path)
    for offset in range(len(good)):
        for bit in (0, 7):
            data = bytearray(good)
            data[offset] ^= 1 << bit
            path.write_bytes(bytes(data))
            with pytest.raises(CorruptionError):
                MetaStore(path)
    path.write_bytes(good + b"\x00")
    with pytest.raises(CorruptionError):
        MetaStore(path)


# ------------------------------------------------------------------ SnapshotStore


def test_snapshot_stream_commit_and_read(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    assert store.latest() is None
    with store.begin(42, meta=b"term=3") as writer:
        for i in range(10):
            writer.write(bytes([i]) * 1000)
        info = writer.commit()
    assert (info.index, info.meta, info.data_bytes) == (42, b"term=3", 10_000)
    latest = SnapshotStore(tmp_path).latest()
    assert latest is not None and (latest.index, latest.meta) == (42, b"term=3")
    assert latest.read_bytes() == b"".join(bytes([i]) * 1000 for i in range(10))
    assert b"".join(latest.chunks(chunk_bytes=333)) == latest.read_bytes()
    assert not list(tmp_path.glob("*.tmp"))


def test_snapshot_keeps_the_last_n_and_latest_is_the_last_committed(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, keep=2)
    for index in (10, 30, 20):  # a protocol may install a lower index last; that one is latest
        store.put(index, b"state-%d" % index)
    assert [s.index for s in store.list()] == [30, 20]
    latest = store.latest()
    assert latest is not None and (latest.index, latest.read_bytes()) == (20, b"state-20")
    store.put(5, b"")
    latest = store.latest()
    assert latest is not None and latest.read_bytes() == b""


def test_snapshot_abort_and_failed_streams_leave_nothing(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_snapshot_bytes=100)
    store.put(1, b"one")
    writer = store.begin(2)
    writer.write(b"partial")
    with pytest.raises(StorageError):
        store.begin(3)  # one writer at a time
    writer.abort()
    writer.abort()  # idempotent
    with pytest.raises(StorageError):
        writer.write(b"more")
    with pytest.raises(ValueError), store.begin(4) as w:
        w.write(b"x")
        raise ValueError("the producer failed")
    with pytest.raises(RecordTooLargeError), store.begin(5) as w:
        w.write(b"x" * 101)
    with pytest.raises(RecordTooLargeError):
        store.begin(6, meta=b"m" * (store.max_meta_bytes + 1))
    latest = store.latest()
    assert latest is not None and (latest.index, latest.read_bytes()) == (1, b"one")
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ConfigError):
        SnapshotStore(tmp_path, keep=0)


def test_snapshot_leftover_temp_file_is_removed(tmp_path: Path) -> None:
    SnapshotStore(tmp_path).put(1, b"one")
    (tmp_path / f"snap-{2:020d}.snap.tmp").write_bytes(b"a crash mid-stream")
    store = SnapshotStore(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))
    latest = store.latest()
    assert latest is not None and latest.index == 1


def test_damaged_newest_snapshot_is_refused_not_replaced_by_an_older_one(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, keep=2)
    store.put(10, b"old state")
    store.put(20, b"new state")
    newest = tmp_path / f"snap-{2:020d}.snap"
    data = bytearray(newest.read_bytes())
    data[-20] ^= 0x10  # inside the data
    newest.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as err:
        store.latest()
    assert err.value.path == str(newest)
    oldest = tmp_path / f"snap-{1:020d}.snap"
    oldest.write_bytes(oldest.read_bytes()[:-3])  # damage to an older one does not matter
    newest.unlink()
    with pytest.raises(CorruptionError):
        store.latest()  # now the damaged one is the newest


def test_snapshot_every_truncation_and_bit_flip_is_corruption(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.put(7, b"some snapshot data " * 3, meta=b"meta")
    path = tmp_path / f"snap-{1:020d}.snap"
    good = path.read_bytes()
    for size in range(len(good)):
        path.write_bytes(good[:size])
        with pytest.raises(CorruptionError) as err:
            store.latest()
        assert err.value.path == str(path)
    for offset in range(len(good)):
        data = bytearray(good)
        data[offset] ^= 1 << (offset % 8)
        path.write_bytes(bytes(data))
        with pytest.raises(CorruptionError):
            store.latest()
    path.write_bytes(good)
    latest = store.latest()
    assert latest is not None and latest.read_bytes() == b"some snapshot data " * 3


def test_os_errors_surface_as_storage_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    with pytest.raises(StorageError):
        MetaStore(blocker / "meta")
    with pytest.raises(StorageError):
        SnapshotStore(blocker / "snaps")
    with pytest.raises(StorageError):
        WriteAheadLog(blocker / "wal")
    meta_dir = tmp_path / "m"
    store = MetaStore(meta_dir / "meta")
    (meta_dir / "meta.tmp").mkdir()  # the temp file cannot be created: the replace fails
    with pytest.raises(StorageError):
        store.put("term", b"1")
    assert store.get("term") is None

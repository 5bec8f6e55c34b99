"""Damage on disk, file by file: torn tails are cut, anything else is refused with file and offset.

Every file kind is truncated and bit-flipped: WAL segments (tail and sealed), segment index
files, the WAL base file, the metadata file and snapshot files. docs/storage.md states the rules
these tests hold the code to.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stalwart.errors import CorruptionError
from stalwart.storage import WriteAheadLog

RECORD = 8 + 20  # header + payload of the records below
PER_SEGMENT = 4


def payload(i: int) -> bytes:
    return (f"{i}:".encode() * 20)[:20]


def open_wal(d: Path, *, verify_on_open: bool = False) -> WriteAheadLog:
    return WriteAheadLog(
        d, max_record_bytes=64, max_segment_bytes=16 + PER_SEGMENT * RECORD, verify_on_open=verify_on_open
    )


def make_log(d: Path, count: int) -> None:
    with open_wal(d) as wal:
        wal.append_many(1, [payload(i) for i in range(1, count + 1)])
        wal.sync()


def seg(d: Path, first: int) -> Path:
    return d / f"{first:020d}.wal"


def contents(d: Path) -> list[bytes]:
    with open_wal(d) as wal:
        return wal.read(wal.first_index, wal.last_index + 1)


def flip(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------ WAL: torn tails are cut


def test_torn_last_record_at_every_length_is_truncated(tmp_path: Path) -> None:
    make_log(tmp_path / "orig", 6)  # the tail segment holds records 5 and 6
    tail_size = 16 + 2 * RECORD
    for cut in range(16 + RECORD, tail_size):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(tmp_path / "orig", d)
        with seg(d, 5).open("r+b") as f:
            f.truncate(cut)
        assert contents(d) == [payload(i) for i in range(1, 6)]
        assert seg(d, 5).stat().st_size == 16 + RECORD  # the torn bytes are gone from disk
        with open_wal(d) as wal:  # and the log continues cleanly after them
            wal.append(6, b"again")
            wal.sync()
        assert contents(d)[-1] == b"again"


def test_zero_filled_tail_is_truncated(tmp_path: Path) -> None:
    make_log(tmp_path, 6)
    with seg(tmp_path, 5).open("ab") as f:
        f.write(bytes(4096))  # preallocated or never-written space
    assert contents(tmp_path) == [payload(i) for i in range(1, 7)]
    assert seg(tmp_path, 5).stat().st_size == 16 + 2 * RECORD


def test_bad_crc_on_the_very_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    make_log(tmp_path, 6)
    flip(seg(tmp_path, 5), 16 + RECORD + 8 + 19)  # last byte of record 6
    assert contents(tmp_path) == [payload(i) for i in range(1, 6)]


def test_torn_partial_header_is_a_torn_tail(tmp_path: Path) -> None:
    make_log(tmp_path, 6)
    with seg(tmp_path, 5).open("ab") as f:
        f.write(b"\x05\x00\x00")  # three bytes of a next header
    assert contents(tmp_path) == [payload(i) for i in range(1, 7)]


@pytest.mark.parametrize(
    "garbage", [b"", b"STLW", bytes(16), bytes(100)], ids=["empty", "short", "zero-header", "zeros"]
)
def test_torn_segment_creation_is_removed(tmp_path: Path, garbage: bytes) -> None:
    make_log(tmp_path, 8)  # segments 1 and 5, both full
    seg(tmp_path, 9).write_bytes(garbage)  # crash right after creating segment 9
    assert contents(tmp_path) == [payload(i) for i in range(1, 9)]
    assert not seg(tmp_path, 9).exists()


# ------------------------------------------------------------------ WAL: anything else is refused


def test_bad_record_before_the_tail_of_the_last_segment_is_corruption(tmp_path: Path) -> None:
    make_log(tmp_path, 7)  # tail segment 5 holds 5, 6, 7
    flip(seg(tmp_path, 5), 16 + RECORD + 8 + 3)  # record 6's payload; record 7 is valid after it
    with pytest.raises(CorruptionError) as err:
        open_wal(tmp_path)
    assert (err.value.path, err.value.offset) == (str(seg(tmp_path, 5)), 16 + RECORD)
    assert "valid record follows" in str(err.value)


def test_corrupt_length_before_the_tail_is_corruption_not_a_tear(tmp_path: Path) -> None:
    make_log(tmp_path, 7)
    flip(seg(tmp_path, 5), 16 + 2, bit=7)  # record 5's length now runs past the end of the file
    with pytest.raises(CorruptionError) as err:
        open_wal(tmp_path)
    assert err.value.offset == 16


def test_damage_in_a_sealed_segment_is_found_on_read_or_verify(tmp_path: Path) -> None:
    make_log(tmp_path, 12)
    flip(seg(tmp_path, 5), 16 + RECORD + 8 + 3)  # record 6 in a sealed segment
    with open_wal(tmp_path) as wal:  # fast open trusts the segment's index file
        assert wal.read(1, 6) == [payload(i) for i in range(1, 6)]
        with pytest.raises(CorruptionError) as err:
            wal.read(1, 13)
        assert (err.value.path, err.value.offset) == (str(seg(tmp_path, 5)), 16 + RECORD)
        with pytest.raises(CorruptionError):
            wal.verify()
    with pytest.raises(CorruptionError) as err:
        open_wal(tmp_path, verify_on_open=True)
    assert err.value.offset == 16 + RECORD
    (tmp_path / f"{5:020d}.idx").unlink()  # without its index the segment is scanned on open
    with pytest.raises(CorruptionError) as err:
        open_wal(tmp_path)
    assert (err.value.path, err.value.offset) == (str(seg(tmp_path, 5)), 16 + RECORD)


def test_trailing_bytes_in_a_sealed_segment_are_corruption(tmp_path: Path) -> None:
    make_log(tmp_path, 12)
    with seg(tmp_path, 5).open("ab") as f:
        f.write(b"\x00" * 10)
    with pytest.raises(CorruptionError) as err:  # the index no longer matches; the scan refuses
        open_wal(tmp_path)
    assert (err.value.path, err.value.offset) == (str(seg(tmp_path, 5)), 16 + 4 * RECORD)


@pytest.mark.parametrize("first", [1, 9])
def test_bad_segment_header_is_corruption(tmp_path: Path, first: int) -> None:
    make_log(tmp_path, 10)  # sealed 1 and 5, tail 9
    flip(seg(tmp_path, first), 3)
    with pytest.raises(CorruptionError) as err:
        open_wal(tmp_path)
    assert (err.value.path, err.value.offset) == (str(seg(tmp_path, first)), 0)


def test_missing_middle_segment_is_corruption(tmp_path: Path) -> None:
    make_log(tmp_path, 12)
    seg(tmp_path, 5).unlink()
    with pytest.raises(CorruptionError) as err:
        open_wal(tmp_path)
    assert err.value.path == str(seg(tmp_path, 9))


def test_missing_first_segments_after_compaction_point_is_corruption(tmp_path: Path) -> None:
    make_log(tmp_path, 12)
    with open_wal(tmp_path) as wal:
        wal.compact_prefix(2)
        wal.sync()
    seg(tmp_path, 1).unlink()
    with pytest.raises(CorruptionError) as err:
        open_wal(tmp_path)
    assert "missing" in str(err.value)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_base_file_is_corruption(tmp_path: Path, damage: str) -> None:
    make_log(tmp_path, 6)
    with open_wal(tmp_path) as wal:
        wal.compact_prefix(3)
        wal.sync()
    base = tmp_path / "wal.base"
    if damage == "flip":
        flip(base, 9)
    else:
        base.write_bytes(base.read_bytes()[:-1])
    with pytest.raises(CorruptionError) as err:
        open_wal(tmp_path)
    assert err.value.path == str(base)


def test_every_single_bit_flip_is_refused_or_harmless(tmp_path: Path) -> None:
    """Flip one bit of every byte of every file: the log never serves a wrong entry.

    Allowed outcomes: CorruptionError (on open or on read); the same entries (the flip hit a
    rebuildable index file); or the entries minus the last one (the flip hit the very last
    record, which is indistinguishable from a torn write and is cut).
    """
    orig = tmp_path / "orig"
    make_log(orig, 10)
    with open_wal(orig) as wal:
        wal.compact_prefix(2)
        wal.sync()
    expected = [payload(i) for i in range(3, 11)]
    files = sorted(p.name for p in orig.iterdir() if p.name != "LOCK")
    outcomes = {"refused": 0, "same": 0, "tail cut": 0}
    for name in files:
        size = (orig / name).stat().st_size
        for offset in range(size):
            d = tmp_path / "work"
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(orig, d)
            flip(d / name, offset, bit=offset % 8)
            try:
                got = contents(d)
            except CorruptionError as err:
                assert err.path == str(d / name) or name.endswith(".idx"), (name, offset, err)
                outcomes["refused"] += 1
                continue
            if got == expected:
                outcomes["same"] += 1
            else:
                assert got == expected[:-1] and name == f"{9:020d}.wal", (name, offset)
                assert offset >= 16 + RECORD, "only the last record may be cut"
                outcomes["tail cut"] += 1
    assert all(outcomes.values()), outcomes


def test_a_smaller_record_limit_on_reopen_never_cuts_valid_records(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, max_record_bytes=1000) as wal:
        wal.append_many(1, [b"a" * 900, b"b" * 900])
        wal.sync()
    with WriteAheadLog(tmp_path, max_record_bytes=10) as wal:
        assert wal.read(1, 3) == [b"a" * 900, b"b" * 900]


def test_random_garbage_after_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    make_log(tmp_path, 6)
    with seg(tmp_path, 5).open("ab") as f:
        f.write(bytes(range(7, 250)) * 20)  # e.g. a torn write of unrelated bytes
    assert contents(tmp_path) == [payload(i) for i in range(1, 7)]
    assert seg(tmp_path, 5).stat().st_size == 16 + 2 * RECORD


def test_a_complete_record_inside_the_torn_bytes_is_refused_not_guessed(tmp_path: Path) -> None:
    """The documented conservative case: a valid record after the damage means "not a tear"."""
    make_log(tmp_path, 6)
    data = seg(tmp_path, 5).read_bytes()
    with seg(tmp_path, 5).open("ab") as f:
        f.write(b"\x01\x02\x03" + data[16 : 16 + RECORD])  # torn bytes that contain a whole record
    with pytest.raises(CorruptionError) as err:
        open_wal(tmp_path)
    assert err.value.offset == 16 + 2 * RECORD


@pytest.mark.parametrize(("where", "reason"), [(0, "does not match the index"), (5, "checksum")])
def test_reads_name_the_first_bad_record_in_a_sealed_segment(tmp_path: Path, where: int, reason: str) -> None:
    make_log(tmp_path, 12)
    flip(seg(tmp_path, 5), 16 + 2 * RECORD + where)  # record 7: its length field, or its CRC
    with open_wal(tmp_path) as wal:
        assert wal.read(5, 7) == [payload(5), payload(6)]
        with pytest.raises(CorruptionError, match=reason) as err:
            wal.read(1, 13)
        assert (err.value.path, err.value.offset) == (str(seg(tmp_path, 5)), 16 + 2 * RECORD)

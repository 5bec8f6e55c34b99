"""The storage-operation semantics that both hosts must reproduce."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalwart.sansio import (
    AppendLog,
    CompactLog,
    DurableState,
    Envelope,
    NodeId,
    PutMeta,
    PutSnapshot,
    Ready,
    TruncateLog,
    apply_storage_ops,
)


def test_append_truncate_compact_snapshot() -> None:
    s = apply_storage_ops(DurableState(), [AppendLog(i, bytes([i])) for i in range(1, 6)])
    assert (s.first_index, s.last_index, s.log[0]) == (1, 5, b"\x01")
    s = apply_storage_ops(s, [TruncateLog(4), AppendLog(4, b"x")])
    assert s.log == (b"\x01", b"\x02", b"\x03", b"x")
    s = apply_storage_ops(s, [PutSnapshot(2, b"snap"), CompactLog(2)])
    assert (s.first_index, s.log, s.snapshot) == (3, (b"\x03", b"x"), (2, b"snap"))
    s = apply_storage_ops(s, [PutSnapshot(10, b"far")])
    assert (s.first_index, s.log, s.last_index) == (11, (), 10)
    s = apply_storage_ops(s, [PutMeta("term", b"\x07"), PutMeta("term", b"\x08")])
    assert s.meta == {"term": b"\x08"}


@pytest.mark.parametrize(
    "op",
    [AppendLog(3, b""), TruncateLog(0)],
)
def test_operations_a_correct_protocol_never_asks_for(op: AppendLog | TruncateLog) -> None:
    with pytest.raises(ValueError):
        apply_storage_ops(DurableState(log=(b"a",)), [op])


@given(st.lists(st.binary(max_size=4), max_size=20), st.integers(0, 25))
def test_compaction_keeps_the_suffix(entries: list[bytes], through: int) -> None:
    s = apply_storage_ops(DurableState(), [AppendLog(i + 1, e) for i, e in enumerate(entries)])
    c = apply_storage_ops(s, [CompactLog(through)])
    assert c.log == tuple(entries[through:])
    assert c.last_index == max(len(entries), through)


def test_ready_rejects_sync_without_records() -> None:
    empty: Ready[str, str] = Ready()
    assert empty.is_empty
    assert not Ready(messages=(Envelope(NodeId("b"), "hi"),)).is_empty
    with pytest.raises(AssertionError):
        Ready(must_sync=True)

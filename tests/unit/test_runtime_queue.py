"""The per-peer outbound queue: bounds in messages and bytes, drop-oldest overflow, batches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalwart.runtime import OutboundQueue, QueueLimits, RuntimeConfigError


def test_overflow_drops_the_oldest_by_count() -> None:
    q = OutboundQueue(QueueLimits(max_messages=3, max_bytes=1000))
    drops = [q.push(bytes([i])) for i in range(5)]
    assert drops == [0, 0, 0, 1, 1]
    assert q.pop_batch() == [b"\x02", b"\x03", b"\x04"]
    assert len(q) == 0 and q.nbytes == 0


def test_overflow_drops_the_oldest_by_bytes() -> None:
    q = OutboundQueue(QueueLimits(max_messages=100, max_bytes=10))
    assert q.push(b"aaaa") == 0
    assert q.push(b"bbbb") == 0
    assert q.push(b"cccccc") == 1  # "aaaa" goes: 4 + 6 = 10 fits
    assert q.nbytes == 10
    assert q.push(b"x" * 10) == 2
    assert q.pop_batch() == [b"x" * 10]


def test_an_item_larger_than_the_queue_is_dropped_itself() -> None:
    q = OutboundQueue(QueueLimits(max_messages=10, max_bytes=8))
    q.push(b"keep")
    assert q.push(b"y" * 9) == 1
    assert q.pop_batch() == [b"keep"]


def test_batches_respect_their_limits_but_always_carry_one() -> None:
    limits = QueueLimits(max_messages=100, max_bytes=10_000, batch_max_messages=4, batch_max_bytes=10)
    q = OutboundQueue(limits)
    for _ in range(6):
        q.push(b"abc")
    assert q.pop_batch() == [b"abc"] * 3  # 12 bytes would exceed 10
    q.clear()
    q.push(b"z" * 50)  # larger than a batch on its own: it still goes, alone
    q.push(b"a")
    assert q.pop_batch() == [b"z" * 50]
    assert q.pop_batch() == [b"a"]
    assert q.pop_batch() == []


@given(
    sizes=st.lists(st.integers(0, 40), max_size=200),
    max_messages=st.integers(1, 20),
    max_bytes=st.integers(1, 200),
)
def test_bounds_hold_and_order_is_kept(sizes: list[int], max_messages: int, max_bytes: int) -> None:
    q = OutboundQueue(QueueLimits(max_messages=max_messages, max_bytes=max_bytes))
    pushed: list[bytes] = []
    dropped = 0
    for i, size in enumerate(sizes):
        item = i.to_bytes(4, "big") + b"." * size
        pushed.append(item)
        dropped += q.push(item)
        assert len(q) <= max_messages and q.nbytes <= max_bytes
    out: list[bytes] = []
    while batch := q.pop_batch():
        out.extend(batch)
    # What is left is a suffix of what was pushed, minus items too big on their own; the
    # rest was dropped and counted.
    assert len(out) + dropped == len(pushed)
    indexes = [int.from_bytes(item[:4], "big") for item in out]
    assert indexes == sorted(indexes)
    if out:
        kept_tail = [p for p in pushed[indexes[0] :] if len(p) <= max_bytes]
        assert out == kept_tail


def test_bad_limits_are_refused() -> None:
    with pytest.raises(RuntimeConfigError):
        QueueLimits(max_messages=0)

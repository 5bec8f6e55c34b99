"""Hybrid logical clocks: monotonic, causal, bounded by physical time, offset guard."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalwart.clocks import ClockError, ClockOffsetError, DecodeError, HLCTimestamp, HybridLogicalClock

# A run of events at 3 nodes: (node, physical time advance, receive-from or None)
EVENTS = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 50), st.one_of(st.none(), st.integers(0, 2))), max_size=60
)


@given(EVENTS)
def test_hlc_is_monotonic_causal_and_close_to_physical_time(
    events: list[tuple[int, int, int | None]],
) -> None:
    clocks = [HybridLogicalClock(f"n{i}", max_offset_ms=10_000) for i in range(3)]
    pt = [0, 0, 0]
    last_sent: list[HLCTimestamp | None] = [None, None, None]
    issued: list[list[HLCTimestamp]] = [[], [], []]
    for node, advance, src in events:
        pt[node] += advance
        if src is not None and last_sent[src] is not None:
            remote = last_sent[src]
            assert remote is not None
            ts = clocks[node].update(remote, pt[node])
            assert ts > remote  # receive happens after send
        else:
            ts = clocks[node].now(pt[node])
        last_sent[node] = ts
        if issued[node]:
            assert ts > issued[node][-1]  # strictly monotonic per node
        issued[node].append(ts)
        # wall time never exceeds the largest physical time any node has reached
        assert ts.wall_ms <= max(pt)


def test_hlc_logical_counter_bridges_a_stalled_physical_clock() -> None:
    c = HybridLogicalClock("n")
    a, b, d = c.now(100), c.now(100), c.now(99)  # clock stalls then steps back
    assert (a.wall_ms, a.logical) == (100, 0)
    assert (b.wall_ms, b.logical) == (100, 1)
    assert (d.wall_ms, d.logical) == (100, 2)
    assert c.now(101).logical == 0


def test_hlc_refuses_a_remote_timestamp_too_far_ahead_and_changes_nothing() -> None:
    c = HybridLogicalClock("n", max_offset_ms=250)
    c.now(1_000)
    before = c.last
    with pytest.raises(ClockOffsetError) as err:
        c.update(HLCTimestamp(1_251, 0, "evil"), 1_000)
    assert err.value.ahead_ms == 251 and err.value.max_offset_ms == 250
    assert c.last == before
    ok = c.update(HLCTimestamp(1_250, 7, "fine"), 1_000)  # exactly at the bound is accepted
    assert (ok.wall_ms, ok.logical) == (1_250, 8)


def test_hlc_validates_inputs() -> None:
    c = HybridLogicalClock("n")
    with pytest.raises(ClockError):
        c.now(-1)
    with pytest.raises(ClockError):
        HLCTimestamp(0, -1, "n")
    with pytest.raises(ClockError):
        HybridLogicalClock("n", max_offset_ms=-5)


def test_hlc_timestamp_total_order_and_round_trip() -> None:
    a, b = HLCTimestamp(5, 0, "a"), HLCTimestamp(5, 0, "b")
    assert a < b < HLCTimestamp(5, 1, "a") < HLCTimestamp(6, 0, "a")
    assert HLCTimestamp.from_bytes(b.to_bytes()) == b
    with pytest.raises(DecodeError):
        HLCTimestamp.from_bytes(b"\x93\x01\x02")

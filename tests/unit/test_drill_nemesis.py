"""The drill's seeded fault schedule and partition shapes."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.drill import (
    SUPPORTED,
    DrillConfigError,
    Nemesis,
    PartitionShape,
    Target,
    build_schedule,
    parse_nemeses,
    partition_groups,
)


def test_parse_nemeses() -> None:
    assert parse_nemeses("kill, pause") == {Nemesis.KILL, Nemesis.PAUSE}
    assert parse_nemeses("all") == set(Nemesis)
    assert parse_nemeses("none") == frozenset()
    with pytest.raises(DrillConfigError, match="unknown nemesis bogus"):
        parse_nemeses("kill,bogus")


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    duration=st.floats(5, 120),
    nodes=st.sampled_from([3, 5]),
    kinds=st.sets(st.sampled_from(list(Nemesis))),
)
def test_schedule_is_seeded_disjoint_and_leaves_a_quiet_tail(
    seed: int, duration: float, nodes: int, kinds: set[Nemesis]
) -> None:
    a = build_schedule(frozenset(kinds), duration, seed=seed, nodes=nodes)
    assert a == build_schedule(frozenset(kinds), duration, seed=seed, nodes=nodes)
    for f in a:
        assert f.kind in kinds & SUPPORTED
        if f.kind is Nemesis.CLOCK:
            assert f.clock_rate in (0.5, 2.0) and "tick" in f.describe()
        assert 2.0 <= f.start_s < f.end_s <= duration - 3.0
        if f.shape in (PartitionShape.ISOLATE_LEADER, PartitionShape.ONE_WAY):
            assert f.target is Target.LEADER
        if f.shape is PartitionShape.BRIDGE:
            assert nodes >= 5
    for x, y in itertools.pairwise(a):
        assert x.end_s < y.start_s


def test_a_thirty_second_run_sees_every_kind() -> None:
    for seed in range(20):
        kinds = {f.kind for f in build_schedule(SUPPORTED, 30, seed=seed, nodes=3)}
        assert kinds == SUPPORTED, seed


def test_different_seeds_differ_and_bad_input_is_refused() -> None:
    schedules = {tuple(build_schedule(SUPPORTED, 60, seed=s, nodes=3)) for s in range(5)}
    assert len(schedules) == 5
    with pytest.raises(DrillConfigError):
        build_schedule(SUPPORTED, 0, seed=1, nodes=3)
    with pytest.raises(DrillConfigError):
        build_schedule(SUPPORTED, 30, seed=1, nodes=2)


@given(pick=st.integers(0, 2**30), nodes=st.sampled_from([3, 5]), focus_index=st.integers(0, 4))
def test_partition_shapes(pick: int, nodes: int, focus_index: int) -> None:
    ids = list(range(1, nodes + 1))
    focus = ids[focus_index % nodes]
    halves = partition_groups(PartitionShape.HALVES, ids, focus, pick)
    (minority, majority), (back_from, back_to) = halves
    assert focus in minority and len(minority) == (nodes - 1) // 2
    assert sorted(minority + majority) == ids and back_from == majority and back_to == minority
    assert partition_groups(PartitionShape.ONE_WAY, ids, focus, pick) == [
        ([focus], [n for n in ids if n != focus])
    ]
    iso = partition_groups(PartitionShape.ISOLATE_LEADER, ids, focus, pick)
    assert iso[0][0] == [focus] and iso[1][1] == [focus]
    if nodes == 5:
        (left, right), _ = partition_groups(PartitionShape.BRIDGE, ids, focus, pick)
        assert focus not in left + right and len(left) == len(right) == 2

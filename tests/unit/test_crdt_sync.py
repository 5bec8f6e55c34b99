"""Delta anti-entropy: convergence over a lossy, duplicating, reordering, partitioned network,
the full-state fallbacks, acknowledgement epochs and the bounded buffer."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.crdt import (
    DecodeError,
    DeltaAck,
    DeltaGroup,
    DeltaSync,
    GCounter,
    InvalidOperationError,
    ORMap,
    ORSet,
    PNCounter,
    SyncKind,
)

NAMES = ("a", "b", "c")


def _mutate(sync: DeltaSync, rng: random.Random) -> None:
    crdt = sync.crdt
    if isinstance(crdt, ORSet):
        x = rng.randrange(8)
        sync.record(crdt.add(x) if rng.random() < 0.6 else crdt.remove(x))
    elif isinstance(crdt, PNCounter):
        sync.record(crdt.increment(rng.randrange(1, 4)) if rng.random() < 0.7 else crdt.decrement(1))
    else:
        assert isinstance(crdt, ORMap)
        k = rng.randrange(3)
        if rng.random() < 0.8:
            sync.record(crdt.update(k, lambda s: s.add(rng.randrange(4))))
        else:
            sync.record(crdt.remove(k))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    kind=st.sampled_from(["orset", "pncounter", "ormap"]),
    buffered=st.sampled_from([2, 8, 1024]),
    group_bytes=st.sampled_from([64, 65_536]),
)
def test_replicas_converge_after_faults_heal(seed: int, kind: str, buffered: int, group_bytes: int) -> None:
    rng = random.Random(seed)
    make = {"orset": ORSet, "pncounter": PNCounter, "ormap": lambda r: ORMap(r, ORSet)}[kind]
    nodes = {
        n: DeltaSync(make(n), NAMES, max_buffered_deltas=buffered, max_group_bytes=group_bytes) for n in NAMES
    }
    reference = make("reference")  # the join of every delta ever made
    faulty_rounds = 30
    for rnd in range(faulty_rounds + 60):
        healed = rnd >= faulty_rounds
        if not healed:
            for _ in range(rng.randrange(3)):
                node = nodes[rng.choice(NAMES)]
                _mutate(node, rng)
                reference.merge(node.crdt)
        isolated = None if healed else ("c" if rnd % 10 < 5 else None)  # a partition comes and goes
        in_flight: list[tuple[str, object]] = []
        for node in nodes.values():
            in_flight.extend((to, group) for to, group in node.outgoing())
            assert node.buffered <= buffered  # the bound holds
        if not healed:
            in_flight += rng.sample(in_flight, k=len(in_flight) // 3)  # duplicates
            rng.shuffle(in_flight)  # reordering
        acks: list[DeltaAck] = []
        for to, group in in_flight:
            assert isinstance(group, DeltaGroup)
            if isolated in (to, group.sender) or (not healed and rng.random() < 0.3):
                continue  # partitioned or lost
            acks.append(nodes[to].receive(group))
        for ack in acks:
            if healed or rng.random() > 0.3:
                nodes[ack.to].on_ack(ack)
        if healed and not any(n.outgoing() for n in nodes.values()):
            break
    else:
        pytest.fail("anti-entropy did not quiesce within 60 healed rounds")
    states = [n.crdt for n in nodes.values()]
    assert all(s == states[0] for s in states)
    assert states[0] == reference
    assert all(n.buffered == 0 for n in nodes.values())  # everything acknowledged: buffers empty


def test_first_contact_and_lagging_peers_get_the_full_state() -> None:
    a = DeltaSync(GCounter("a"), ["a", "b"], max_buffered_deltas=2)
    a.record(a.crdt.increment())
    first = a.group_for("b")
    assert first is not None and first.kind is SyncKind.FULL  # nothing known about b yet
    a.on_ack(DeltaAck("b", "a", 0, first.seq))
    assert a.group_for("b") is None  # b has everything
    a.record(a.crdt.increment())
    group = a.group_for("b")
    assert group is not None and group.kind is SyncKind.DELTA and group.seq == 2
    for _ in range(3):
        a.record(a.crdt.increment())
    assert a.buffered == 2
    lagging = a.group_for("b")
    assert lagging is not None and lagging.kind is SyncKind.FULL  # b is behind the buffer


def test_a_delta_group_too_large_falls_back_to_the_full_state() -> None:
    a = DeltaSync(ORSet("a"), ["a", "b"], max_group_bytes=60)
    first = a.group_for("b")
    assert first is not None
    a.on_ack(DeltaAck("b", "a", 0, first.seq))
    a.record(a.crdt.add("x"))
    small = a.group_for("b")
    assert small is not None and small.kind is SyncKind.DELTA
    for i in range(20):
        a.record(a.crdt.add(f"element-{i}"))
    big = a.group_for("b")
    assert big is not None and big.kind is SyncKind.FULL


def test_delta_groups_join_only_unacknowledged_deltas() -> None:
    a = DeltaSync(ORSet("a"), ["a", "b"])
    a.on_ack(DeltaAck("b", "a", 0, 0))
    a.record(a.crdt.add("x"))
    a.on_ack(DeltaAck("b", "a", 0, 1))
    a.record(a.crdt.add("y"))
    group = a.group_for("b")
    assert group is not None and group.kind is SyncKind.DELTA
    assert ORSet.from_bytes(group.payload).value == frozenset({"y"})


def test_acks_from_another_epoch_or_stranger_are_ignored() -> None:
    a = DeltaSync(GCounter("a"), ["a", "b"], epoch=3)
    a.record(a.crdt.increment())
    a.on_ack(DeltaAck("b", "a", 2, 1))  # from before a restart
    assert a.acked("b") == -1
    a.on_ack(DeltaAck("zed", "a", 3, 1))  # not a peer
    a.on_ack(DeltaAck("b", "a", 3, 99))  # acks something never sent
    assert a.acked("b") == -1
    a.on_ack(DeltaAck("b", "a", 3, 1))
    assert a.acked("b") == 1 and a.buffered == 0


def test_bad_bytes_are_refused_and_change_nothing() -> None:
    a = DeltaSync(ORSet("a"), ["a", "b"])
    a.record(a.crdt.add("x"))
    before = a.crdt.copy()
    with pytest.raises(DecodeError):
        a.receive(DeltaGroup("b", 0, 1, SyncKind.DELTA, b"\xc1garbage"))
    with pytest.raises(DecodeError):
        a.receive(DeltaGroup("b", 0, 1, SyncKind.DELTA, GCounter("b").to_bytes()))  # wrong type
    assert a.crdt == before


def test_bounds_must_be_positive() -> None:
    with pytest.raises(InvalidOperationError):
        DeltaSync(ORSet("a"), ["b"], max_buffered_deltas=0)

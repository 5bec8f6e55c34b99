"""The gossip counter, pure: persistence before acknowledgement, convergence, typed refusals."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart import wire
from stalwart.gossip import (
    COUNT_KEY,
    MAX_AMOUNT,
    MAX_COUNT,
    GossipCounter,
    GossipError,
    GossipMessage,
    GossipStateError,
    GossipVector,
    Increment,
    IncrementAck,
    ReadTotal,
    TotalChanged,
    TotalReply,
    decode_count,
    encode_count,
)
from stalwart.sansio import DurableState, Envelope, NodeId, PutMeta, apply_storage_ops

N1, N2, N3, C = NodeId("n1"), NodeId("n2"), NodeId("n3"), NodeId("client")
NODES = (N1, N2, N3)


def make(node: NodeId, durable: DurableState | None = None, every: int = 1) -> GossipCounter:
    return GossipCounter(
        node, [n for n in NODES if n != node], durable or DurableState(), gossip_every_ticks=every
    )


def test_increment_is_persisted_with_sync_before_its_ack() -> None:
    node = make(N1)
    first = node.ready()
    assert first.outputs == (TotalChanged(N1, 0, ((N1, 0),)),)  # the start is announced
    node.advance(first)
    node.step(C, Increment(7, 3))
    ready = node.ready()
    assert ready.persist == (PutMeta(COUNT_KEY, encode_count(3)),)
    assert ready.must_sync  # the ack in the same Ready depends on it
    assert ready.messages == (Envelope(C, IncrementAck(7, 3)),)
    assert ready.outputs == (TotalChanged(N1, 3, ((N1, 3),)),)
    node.advance(ready)
    assert node.ready().is_empty


def test_restart_from_durable_state_keeps_the_count() -> None:
    node = make(N1)
    disk = DurableState()
    for i in range(5):
        node.step(C, Increment(i, 2))
        ready = node.ready()
        disk = apply_storage_ops(disk, ready.persist)
        node.advance(ready)
    again = make(N1, disk)
    assert again.count == 10 and again.total == 10


def test_gossip_on_ticks_and_merge() -> None:
    a, b = make(N1, every=2), make(N2, every=2)
    a.step(C, Increment(1, 4))
    a.advance(a.ready())
    a.tick()
    assert a.ready().messages == ()
    a.tick()
    msgs = a.ready().messages
    assert {env.to for env in msgs} == {N2, N3}
    vector = msgs[0].payload
    assert vector == GossipVector(("n1",), (4,))
    a.advance(a.ready())
    b.advance(b.ready())
    assert isinstance(vector, GossipVector)
    b.step(N1, vector)
    ready = b.ready()
    assert ready.outputs == (TotalChanged(N2, 4, ((N1, 4), (N2, 0))),)
    assert not ready.persist  # a peer's count is relearned by gossip, never needs a sync
    b.advance(ready)
    b.step(N1, vector)  # idempotent: a duplicate changes nothing
    assert b.ready().is_empty


def test_read_total() -> None:
    node = make(N1)
    node.step(N2, GossipVector(("n2", "n3"), (5, 6)))
    node.step(C, ReadTotal(9))
    assert Envelope(C, TotalReply(9, 11)) in node.ready().messages


@pytest.mark.parametrize(
    "message",
    [
        Increment(1, 0),
        Increment(1, MAX_AMOUNT + 1),
        IncrementAck(1, 1),
        TotalReply(1, 1),
        GossipVector(("n2",), (1, 2)),
        GossipVector(("n2", "n2"), (1, 2)),
        GossipVector(("n2",), (-1,)),
        GossipVector(tuple(f"x{i}" for i in range(300)), tuple(range(300))),
    ],
)
def test_bad_input_is_refused_typed_and_changes_nothing(message: object) -> None:
    node = make(N1)
    node.step(N2, GossipVector(("n2",), (5,)))
    node.advance(node.ready())
    before = node.counts()
    with pytest.raises(GossipError):
        node.step(C, message)  # type: ignore[arg-type]
    assert node.counts() == before and node.ready().is_empty


def test_count_overflow_is_refused() -> None:
    node = make(N1, DurableState(meta={COUNT_KEY: encode_count(MAX_COUNT)}))
    with pytest.raises(GossipError):
        node.step(C, Increment(1, 1))


@pytest.mark.parametrize("stored", [b"", b"\x00" * 7, b"\xff" * 8])
def test_bad_durable_state_is_a_typed_error(stored: bytes) -> None:
    with pytest.raises(GossipStateError):
        make(N1, DurableState(meta={COUNT_KEY: stored}))
    with pytest.raises(GossipStateError):
        decode_count(stored)


def test_a_peer_knowing_more_of_our_count_is_adopted_and_persisted() -> None:
    node = make(N1)
    node.step(N2, GossipVector(("n1",), (9,)))
    ready = node.ready()
    assert ready.persist == (PutMeta(COUNT_KEY, encode_count(9)),) and ready.must_sync


@given(
    increments=st.lists(st.tuples(st.sampled_from(NODES), st.integers(1, 100)), max_size=30),
    seed=st.integers(0, 2**32),
    loss=st.floats(0, 0.5),
)
@settings(max_examples=60, deadline=None)
def test_converges_under_any_order_loss_and_duplication(
    increments: list[tuple[NodeId, int]], seed: int, loss: float
) -> None:
    rng = random.Random(seed)
    nodes = {n: make(n, every=rng.randint(1, 3)) for n in NODES}
    in_flight: list[tuple[NodeId, Envelope[GossipMessage]]] = []
    expected = dict.fromkeys(NODES, 0)
    for i, (target, amount) in enumerate(increments):
        nodes[target].step(C, Increment(i, amount))
        expected[target] += amount

    def pump() -> None:
        for name, node in nodes.items():
            ready = node.ready()
            in_flight.extend((name, env) for env in ready.messages if env.to != C)
            node.advance(ready)

    for _ in range(40):  # lossy, reordered, duplicated delivery
        for node in nodes.values():
            node.tick()
        pump()
        rng.shuffle(in_flight)
        batch, in_flight[:] = in_flight[:], []
        for source, env in batch:
            if rng.random() < loss:
                continue
            for _ in range(rng.choice((1, 1, 2))):
                nodes[env.to].step(source, env.payload)
        pump()
    for _ in range(5):  # then a few rounds without loss
        for node in nodes.values():
            node.tick()
        pump()
        batch, in_flight[:] = in_flight[:], []
        for source, env in batch:
            nodes[env.to].step(source, env.payload)
    for node in nodes.values():
        assert node.counts() == expected
        assert node.total == sum(expected.values())


@given(
    st.one_of(
        st.builds(Increment, st.integers(0, 2**63 - 1), st.integers(1, MAX_AMOUNT)),
        st.builds(IncrementAck, st.integers(0, 2**63 - 1), st.integers(0, MAX_COUNT)),
        st.builds(ReadTotal, st.integers(0, 2**63 - 1)),
        st.builds(TotalReply, st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1)),
        st.lists(st.tuples(st.text(min_size=1, max_size=20), st.integers(0, MAX_COUNT)), max_size=20).map(
            lambda pairs: GossipVector(tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))
        ),
    )
)
def test_messages_round_trip_through_the_wire(msg: object) -> None:
    assert wire.decode(wire.encode(msg)) == msg


def test_gossip_messages_use_tags_100_to_199() -> None:
    tags = {wire.tag_of(cls) for cls in (Increment, IncrementAck, GossipVector, ReadTotal, TotalReply)}
    assert len(tags) == 5 and all(100 <= tag <= 199 for tag in tags)


def test_an_oversized_vector_does_not_even_decode() -> None:
    big = GossipVector(tuple(f"n{i}" for i in range(300)), (0,) * 300)
    with pytest.raises(wire.EncodeError):
        wire.encode(big)


def test_it_is_a_sans_io_protocol() -> None:
    from stalwart.gossip import GossipInput
    from stalwart.sansio import SansIOProtocol

    # mypy --strict checks this assignment structurally: the runtime and the simulator rely on it.
    proto: SansIOProtocol[GossipInput, GossipMessage, TotalChanged] = make(N1)
    assert proto.node_id == N1

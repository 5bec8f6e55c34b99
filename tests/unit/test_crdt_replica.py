"""The sans-IO replica node behind ``stalwart sim crdt``: persistence, restarts, bad input."""

from __future__ import annotations

import pytest

from stalwart.crdt import (
    ClientOp,
    ClientResult,
    CRDTReplicaNode,
    DeltaAck,
    DeltaGroup,
    Gossip,
    GossipAck,
    SyncKind,
)
from stalwart.errors import ProtocolError
from stalwart.sansio import DurableState, NodeId, apply_storage_ops

CLUSTER = (NodeId("n1"), NodeId("n2"))


def _drain(node: CRDTReplicaNode, disk: DurableState) -> tuple[DurableState, list, list]:
    msgs, outs = [], []
    while not (ready := node.ready()).is_empty:
        assert not ready.messages or not node._dirty or ready.must_sync  # persist before send
        disk = apply_storage_ops(disk, ready.persist)
        msgs += ready.messages
        outs += ready.outputs
        node.advance(ready)
    return disk, msgs, outs


def test_state_survives_a_restart_and_the_epoch_moves_on() -> None:
    n1 = CRDTReplicaNode(CLUSTER[0], CLUSTER, DurableState(), gossip_every_ticks=1)
    n1.step(NodeId("c0"), ClientOp(1, "add", "x"))
    n1.step(NodeId("c0"), ClientOp(2, "incr", 5))
    disk, _, outs = _drain(n1, DurableState())
    assert [o.request_id for o in outs] == [1, 2]
    again = CRDTReplicaNode(CLUSTER[0], CLUSTER, disk, gossip_every_ticks=1)
    assert again.crdt("set").value == frozenset({"x"}) and again.crdt("counter").value == 5
    assert again.increments == 5
    again.tick()
    _, msgs, _ = _drain(again, disk)
    groups = [m.payload.group for m in msgs if isinstance(m.payload, Gossip)]
    assert groups and all(g.epoch == 2 and g.kind is SyncKind.FULL for g in groups)


def test_two_nodes_converge_through_gossip_and_acks() -> None:
    nodes = {n: CRDTReplicaNode(n, CLUSTER, DurableState(), gossip_every_ticks=1) for n in CLUSTER}
    disks = {n: DurableState() for n in CLUSTER}
    nodes[CLUSTER[0]].step(NodeId("c0"), ClientOp(1, "add", "x"))
    nodes[CLUSTER[1]].step(NodeId("c1"), ClientOp(2, "decr", 2))
    nodes[CLUSTER[1]].step(NodeId("c1"), ClientOp(4, "madd", ("cart", "pear")))
    for _ in range(4):
        for name, node in nodes.items():
            node.tick()
            disks[name], msgs, _ = _drain(node, disks[name])
            for env in msgs:
                nodes[env.to].step(name, env.payload)
    a, b = nodes[CLUSTER[0]], nodes[CLUSTER[1]]
    assert a.crdts == b.crdts
    a.step(NodeId("c0"), ClientOp(3, "read", None))
    _, _, outs = _drain(a, disks[CLUSTER[0]])
    assert outs == [ClientResult(3, "read", (["x"], -2, {"cart": ["pear"]}))]


def test_bad_gossip_is_dropped_and_unknown_ops_refused() -> None:
    n1 = CRDTReplicaNode(CLUSTER[0], CLUSTER, DurableState())
    n1.step(CLUSTER[1], Gossip("set", DeltaGroup("n2", 0, 1, SyncKind.DELTA, b"junk")))
    n1.step(CLUSTER[1], Gossip("nope", DeltaGroup("n2", 0, 1, SyncKind.DELTA, b"")))
    n1.step(CLUSTER[1], GossipAck("nope", None))  # type: ignore[arg-type]
    assert n1.dropped_bad_gossip == 2
    assert n1.crdt("set").value == frozenset()
    with pytest.raises(ProtocolError):
        n1.step(NodeId("c0"), ClientOp(1, "explode", None))


def test_gossip_messages_are_wire_messages() -> None:
    from stalwart import wire

    msgs = [
        Gossip("set", DeltaGroup("n1", 2, 5, SyncKind.DELTA, b"\x00payload")),
        GossipAck("counter", DeltaAck("n2", "n1", 2, 5)),
    ]
    for m in msgs:
        assert wire.decode(wire.encode(m)) == m
    with pytest.raises(wire.DecodeError):
        wire.decode_as(wire.encode(msgs[1]), Gossip)


def test_restart_keeps_the_context_of_a_set_whose_elements_were_all_removed() -> None:
    # Regression (found by `stalwart sim crdt`): an empty ORSet is falsy, and restoring it with
    # `state or fresh` dropped its causal context, so the node reissued old dots.
    n1 = CRDTReplicaNode(CLUSTER[0], CLUSTER, DurableState())
    n1.step(NodeId("c0"), ClientOp(1, "add", "x"))
    n1.step(NodeId("c0"), ClientOp(2, "remove", "x"))
    disk, _, _ = _drain(n1, DurableState())
    again = CRDTReplicaNode(CLUSTER[0], CLUSTER, disk)
    assert again.crdt("set") == n1.crdt("set")
    assert again.crdt("set").context.state()[0] == {"n1": 1}

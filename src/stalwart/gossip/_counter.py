"""The gossip counter: a grow-only counter (a G-Counter CRDT) spread by periodic gossip.

Each node owns one entry of a vector of counts. A client's :class:`Increment` adds to the own
entry; the new value is persisted (``PutMeta`` with ``must_sync``) before the acknowledgement
and any gossip carrying it leave the node, so an acknowledged increment survives a crash. Every
``gossip_every_ticks`` ticks the node sends its vector to all peers; a received vector is merged
entry-wise by maximum (commutative, associative, idempotent: any delivery order, duplicates and
losses converge). The merged total is output whenever it changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import assert_never

from stalwart.errors import DecodeError, ProtocolError
from stalwart.gossip._messages import (
    MAX_AMOUNT,
    MAX_COUNT,
    MAX_NODES,
    GossipInput,
    GossipMessage,
    GossipVector,
    Increment,
    IncrementAck,
    ReadTotal,
    TotalChanged,
    TotalReply,
)
from stalwart.sansio import DurableState, Envelope, NodeId, PutMeta, Ready

COUNT_KEY = "gossip.count"
"""The metadata key holding this node's own count (8 bytes, big-endian)."""


class GossipError(ProtocolError):
    """The gossip counter refused a request or message; nothing changed."""


class GossipStateError(DecodeError):
    """The durable state does not hold a valid gossip count."""


def encode_count(count: int) -> bytes:
    return count.to_bytes(8, "big")


def decode_count(data: bytes) -> int:
    if len(data) != 8:
        raise GossipStateError(f"{COUNT_KEY} holds {len(data)} bytes, expected 8")
    count = int.from_bytes(data, "big")
    if count > MAX_COUNT:
        raise GossipStateError(f"{COUNT_KEY} holds {count}, above {MAX_COUNT}")
    return count


class GossipCounter:
    """One node of the gossip counter.

    Satisfies ``SansIOProtocol[GossipInput, GossipMessage, TotalChanged]``.
    """

    def __init__(
        self,
        node_id: NodeId,
        peers: Sequence[NodeId],
        durable: DurableState,
        gossip_every_ticks: int = 5,
    ) -> None:
        if gossip_every_ticks < 1:
            raise GossipError("gossip_every_ticks must be >= 1")
        if node_id in peers or len(set(peers)) + 1 > MAX_NODES:
            raise GossipError("peers must be distinct, exclude this node and number fewer than MAX_NODES")
        self._node_id = node_id
        self._peers = tuple(peers)
        self._every = gossip_every_ticks
        stored = durable.meta.get(COUNT_KEY)
        self._counts: dict[NodeId, int] = {node_id: decode_count(stored) if stored is not None else 0}
        self._since_gossip = 0
        self._dirty = False  # own count changed and is not yet persisted
        self._changed = True  # the merged view changed since the last output (True: announce the start)
        self._outbox: list[Envelope[GossipMessage]] = []
        self._check()

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    @property
    def count(self) -> int:
        """This node's own count."""
        return self._counts[self._node_id]

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def counts(self) -> dict[NodeId, int]:
        return dict(self._counts)

    def step(self, source: NodeId, message: GossipInput) -> None:
        match message:
            case Increment(request_id=rid, amount=amount):
                if not 1 <= amount <= MAX_AMOUNT or self.count + amount > MAX_COUNT:
                    raise GossipError(
                        f"increment by {amount} refused (1..{MAX_AMOUNT}, total <= {MAX_COUNT})"
                    )
                self._counts[self._node_id] += amount
                self._dirty = self._changed = True
                self._outbox.append(Envelope(source, IncrementAck(rid, self.count)))
            case ReadTotal(request_id=rid):
                self._outbox.append(Envelope(source, TotalReply(rid, self.total)))
            case GossipVector():
                self._merge(message)
            case IncrementAck() | TotalReply():
                raise GossipError(f"{type(message).__name__} is a reply; a node never accepts one")
            case _:
                assert_never(message)
        self._check()

    def tick(self) -> None:
        self._since_gossip += 1
        if self._since_gossip >= self._every:
            self._since_gossip = 0
            nodes = tuple(sorted(self._counts))
            vector = GossipVector(nodes, tuple(self._counts[n] for n in nodes))
            self._outbox.extend(Envelope(peer, vector) for peer in self._peers)

    def ready(self) -> Ready[GossipMessage, TotalChanged]:
        persist = (PutMeta(COUNT_KEY, encode_count(self.count)),) if self._dirty else ()
        outputs: tuple[TotalChanged, ...] = ()
        if self._changed:
            view = tuple(sorted(self._counts.items()))
            outputs = (TotalChanged(self._node_id, self.total, view),)
        # must_sync whenever the own count changed: the acks and gossip in this Ready carry it.
        return Ready(persist=persist, must_sync=bool(persist), messages=tuple(self._outbox), outputs=outputs)

    def advance(self, ready: Ready[GossipMessage, TotalChanged]) -> None:
        # The host never steps between ready() and advance(): this Ready is everything pending.
        assert len(ready.messages) == len(self._outbox), "advance() with a Ready from another moment"
        self._outbox.clear()
        self._dirty = False
        if ready.outputs:
            self._changed = False

    def _merge(self, vector: GossipVector) -> None:
        nodes, counts = vector.nodes, vector.counts
        if len(nodes) != len(counts) or len(set(nodes)) != len(nodes):
            raise GossipError("gossip vector: nodes and counts must pair up, each node once")
        if any(not 0 <= c <= MAX_COUNT for c in counts):
            raise GossipError("gossip vector: a count out of range")
        if len(set(self._counts) | set(nodes)) > MAX_NODES:
            raise GossipError(f"gossip vector would name more than {MAX_NODES} nodes")
        for node, count in zip(nodes, counts, strict=True):
            nid = NodeId(node)
            if count > self._counts.get(nid, -1):
                self._counts[nid] = count
                self._changed = True
                # A peer knowing more of our own count than we do means our disk lost it;
                # adopting it (and persisting it) keeps the counter grow-only.
                self._dirty = self._dirty or nid == self._node_id

    def _check(self) -> None:
        # Invariants after every step: counts are in range and the vector stays bounded.
        assert all(0 <= c <= MAX_COUNT for c in self._counts.values())
        assert self._node_id in self._counts and len(self._counts) <= MAX_NODES


__all__ = ["COUNT_KEY", "GossipCounter", "GossipError", "GossipStateError", "decode_count", "encode_count"]

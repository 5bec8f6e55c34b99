"""A sans-IO replica node hosting named CRDTs and gossiping deltas (the ``sim crdt`` protocol).

Clients step :class:`ClientOp` (``add``/``remove`` on the set, ``incr``/``decr`` on the counter,
``read``); peers exchange :class:`Gossip` and :class:`GossipAck` (delta groups and their acks,
see :mod:`stalwart.crdt._sync`). Every change of state is persisted (one atomic ``PutMeta``,
synced) before the reply or ack that depends on it leaves the node, and a restart bumps the
epoch so that acks from before the crash are ignored and every peer gets a full state once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stalwart.clocks import _codec as c
from stalwart.crdt._base import CRDT
from stalwart.crdt._counters import PNCounter
from stalwart.crdt._dotfun import ORSet
from stalwart.crdt._ormap import ORMap
from stalwart.crdt._sync import DeltaAck, DeltaGroup, DeltaSync
from stalwart.errors import DecodeError, ProtocolError
from stalwart.sansio import DurableState, Envelope, NodeId, PutMeta, Ready
from stalwart.wire import message

META_KEY = "crdt"
_TAG = 660
MAX_PENDING_MESSAGES = 4_096  # a limit on everything: beyond this, gossip waits for the next round


@dataclass(frozen=True, slots=True)
class ClientOp:
    request_id: int
    f: str  # "add" | "remove" (set), "incr" | "decr" (counter), "madd" | "mdel" (map), "read"
    value: Any


@dataclass(frozen=True, slots=True)
class ClientResult:
    request_id: int
    f: str
    value: Any  # for a read: (sorted set elements, counter value, {key: sorted elements})


@message(682)
@dataclass(frozen=True, slots=True)
class Gossip:
    name: str
    group: DeltaGroup


@message(683)
@dataclass(frozen=True, slots=True)
class GossipAck:
    name: str
    ack: DeltaAck


Message = ClientOp | Gossip | GossipAck


def _cart_map(replica: str) -> ORMap:
    return ORMap(replica, ORSet)


DEFAULT_TYPES: Mapping[str, Callable[[str], CRDT]] = {"set": ORSet, "counter": PNCounter, "map": _cart_map}


class CRDTReplicaNode:
    """One replica: a set (``ORSet``), a counter (``PNCounter``) and a map of sets
    (``ORMap`` of ``ORSet``) by default; ``types`` must keep those three names."""

    def __init__(
        self,
        node_id: NodeId,
        cluster: tuple[NodeId, ...],
        durable: DurableState,
        *,
        types: Mapping[str, Callable[[str], CRDT]] = DEFAULT_TYPES,
        gossip_every_ticks: int = 5,
        max_buffered_deltas: int = 64,
        max_group_bytes: int = 4_096,
    ) -> None:
        self._id = node_id
        self._gossip_every = gossip_every_ticks
        self._ticks = 0
        epoch, states, totals = self._restore(durable, types)
        self.increments, self.decrements = totals  # what this node applied: the counter oracle
        self._epoch = epoch + 1
        peers = [p for p in cluster if p != node_id]
        self._syncs: dict[str, DeltaSync[CRDT]] = {
            name: DeltaSync(
                states[name] if name in states else make(node_id),  # (an empty ORSet is falsy)
                peers,
                epoch=self._epoch,
                max_buffered_deltas=max_buffered_deltas,
                max_group_bytes=max_group_bytes,
            )
            for name, make in types.items()
        }
        self._dirty = True  # the new epoch must be durable before anything is sent
        self._messages: list[Envelope[Message]] = []
        self._outputs: list[ClientResult] = []
        self.dropped_bad_gossip = 0

    @property
    def node_id(self) -> NodeId:
        return self._id

    def crdt(self, name: str) -> CRDT:
        return self._syncs[name].crdt

    @property
    def crdts(self) -> dict[str, CRDT]:
        return {name: s.crdt for name, s in self._syncs.items()}

    @staticmethod
    def _restore(
        durable: DurableState, types: Mapping[str, Callable[[str], CRDT]]
    ) -> tuple[int, dict[str, CRDT], tuple[int, int]]:
        raw = durable.meta.get(META_KEY)
        if raw is None:
            return 0, {}, (0, 0)
        _, body = c.unpack(raw, _TAG, frozenset({1}), "replica state")
        epoch, states, inc, dec = c.fixed(body, 4, "replica state")
        out: dict[str, CRDT] = {}
        for name, data in c.seq(states, "replica CRDTs"):
            if name not in types:
                raise DecodeError(f"replica state: unknown CRDT {name!r}")
            # The factory may be a lambda (ORMap with a value type): ask an instance for its class.
            out[name] = type(types[name]("probe")).from_bytes(data)
        return c.int_in(epoch, "epoch"), out, (c.int_in(inc, "increments"), c.int_in(dec, "decrements"))

    def _snapshot(self) -> bytes:
        states = [[name, s.crdt.to_bytes()] for name, s in sorted(self._syncs.items())]
        return c.pack(_TAG, 1, [self._epoch, states, self.increments, self.decrements])

    def step(self, source: NodeId, message: Message) -> None:
        match message:
            case ClientOp():
                self._client(message)
            case Gossip(name=name, group=group):
                sync = self._syncs.get(name)
                if sync is None:
                    self.dropped_bad_gossip += 1
                    return
                try:
                    ack = sync.receive(group)
                except DecodeError:
                    self.dropped_bad_gossip += 1  # bad bytes: refuse, change nothing
                    return
                self._dirty = True
                self._send(source, GossipAck(name, ack))
            case GossipAck(name=name, ack=ack):
                if name in self._syncs:
                    self._syncs[name].on_ack(ack)

    def _client(self, op: ClientOp) -> None:
        s, n, m = self._syncs["set"], self._syncs["counter"], self._syncs["map"]
        match op.f:
            case "add" | "remove":
                s.record(getattr(s.crdt, op.f)(op.value))
            case "incr":
                n.record(n.crdt.increment(op.value))  # type: ignore[attr-defined]
                self.increments += op.value
            case "decr":
                n.record(n.crdt.decrement(op.value))  # type: ignore[attr-defined]
                self.decrements += op.value
            case "madd":  # value: (key, element)
                key, item = op.value
                m.record(m.crdt.update(key, lambda inner: inner.add(item)))  # type: ignore[attr-defined]
            case "mdel":  # value: key
                m.record(m.crdt.remove(op.value))  # type: ignore[attr-defined]
            case "read":
                mapped = {k: sorted(v) for k, v in m.crdt.value.items()}
                self._outputs.append(
                    ClientResult(op.request_id, op.f, (sorted(s.crdt.value), n.crdt.value, mapped))
                )
                return
            case _:
                raise ProtocolError(f"unknown operation {op.f!r}")
        self._dirty = True
        self._outputs.append(ClientResult(op.request_id, op.f, None))

    def _send(self, to: NodeId, message: Message) -> None:
        if len(self._messages) < MAX_PENDING_MESSAGES:
            self._messages.append(Envelope(to, message))

    def tick(self) -> None:
        self._ticks += 1
        if self._ticks % self._gossip_every:
            return
        for name, sync in sorted(self._syncs.items()):
            for peer, group in sync.outgoing():
                self._send(NodeId(peer), Gossip(name, group))

    def ready(self) -> Ready[Message, ClientResult]:
        persist = (PutMeta(META_KEY, self._snapshot()),) if self._dirty else ()
        return Ready(persist, bool(persist), tuple(self._messages), tuple(self._outputs))

    def advance(self, ready: Ready[Message, ClientResult]) -> None:
        if ready.persist:
            self._dirty = False
        del self._messages[: len(ready.messages)]
        del self._outputs[: len(ready.outputs)]

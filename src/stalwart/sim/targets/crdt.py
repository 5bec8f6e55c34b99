"""The simulation target for CRDT replicas gossiping deltas (``stalwart sim crdt``).

Each node hosts an OR-Set, a PN-Counter and an OR-Map of OR-Sets
(:class:`stalwart.crdt.CRDTReplicaNode`) and
gossips delta groups to every peer over the simulated network (loss, duplication, reordering,
partitions, crashes, pauses). There is no linearizability model: CRDTs promise convergence.
After the faults are healed and the cluster has settled, :class:`Converged` requires that every
replica's state is already equal (no help from the checker), that the lattice laws hold on the
final states (``stalwart.check.convergence``), and that the counter equals the sum of the
increments and decrements the nodes applied (the sequential oracle).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stalwart.check.convergence import check_convergence
from stalwart.crdt import ClientOp, ClientResult, CRDTReplicaNode, ORMap, ORSet, PNCounter
from stalwart.sansio import DurableState, NodeId, Rng
from stalwart.sim._target import ALL_FAULTS, Call, Invariants, Outcome, Reply, SimTarget

ELEMENTS = 6  # a small domain: adds and removes of the same element collide often
KEYS = 3  # map keys: updates and reset-removes of the same key collide often


class SumMergePNCounter(PNCounter):
    """Mutation: merge adds the other side's counts instead of taking the maximum."""

    __slots__ = ()

    def _merge(self, other: PNCounter) -> None:
        for mine, theirs in zip(self._vecs, other._vecs, strict=True):
            for r, n in theirs.items():
                mine[r] = mine.get(r, 0) + n


class NoRemoveORSet(ORSet):
    """Mutation: merge never applies the other side's removals (ignores its causal context)."""

    __slots__ = ()

    def _merge(self, other: ORSet) -> None:
        self._store.add_missing_from(other._store, self._ctx)
        self._ctx.join(other._ctx)


class SilentRemoveORMap(ORMap):
    """Mutation: ``remove(key)`` removes locally but returns an empty delta (peers never hear)."""

    __slots__ = ()

    def remove(self, key: object) -> ORMap:
        super().remove(key)
        return SilentRemoveORMap(self.replica, self.value_type)


MUTATIONS = {
    "sum-merge": "the counter's merge sums counts instead of taking the max (not idempotent)",
    "no-remove-merge": "the set's merge ignores the other side's removals",
    "silent-map-remove": "the map's remove returns an empty delta: peers never learn of it",
}


class Converged(Invariants):
    def at_end(self, nodes: Mapping[NodeId, Any]) -> list[str]:
        live = {str(k): v for k, v in nodes.items() if isinstance(v, CRDTReplicaNode)}
        if not live:
            return []
        problems: list[str] = []
        oracle = sum(n.increments - n.decrements for n in live.values())
        for name in ("set", "counter", "map"):
            states = {k: n.crdt(name) for k, n in live.items()}
            expected = oracle if name == "counter" else None
            kwargs: dict[str, Any] = {"require_already_equal": True}
            if expected is not None:
                kwargs["expected"] = expected
            result = check_convergence(states, **kwargs)
            if not result.ok:
                problems.append(f"{name}: {result.verdict.value}\n{result.report()}")
        return problems


class CRDTTarget(SimTarget):
    name = "crdt"
    summary = "OR-Set, PN-Counter and OR-Map replicas gossiping delta groups; must converge once healed"
    node_counts = (3, 5)
    clients = 3
    tick_ms = 10
    op_timeout_ms = 1_000
    liveness_ops = 5
    liveness_bound_ms = 10_000
    settle_ms = 3_000  # gossip every 50 ms: ample rounds to converge after the heal
    model = None  # CRDTs promise convergence, checked in Converged.at_end
    faults = ALL_FAULTS
    mutations = MUTATIONS

    def build(
        self,
        node_id: NodeId,
        cluster: tuple[NodeId, ...],
        durable: DurableState,
        rng: Rng,
        mutation: str | None,
    ) -> CRDTReplicaNode:
        del rng  # replicas draw no random numbers
        types: dict[str, Any] = {"set": ORSet, "counter": PNCounter, "map": lambda r: ORMap(r, ORSet)}
        if mutation == "sum-merge":
            types["counter"] = SumMergePNCounter
        elif mutation == "no-remove-merge":
            types["set"] = NoRemoveORSet
        elif mutation == "silent-map-remove":
            types["map"] = lambda r: SilentRemoveORMap(r, ORSet)
        return CRDTReplicaNode(node_id, cluster, durable, types=types)

    def new_call(self, rng: Rng, process: int) -> Call:
        del process
        match rng.randrange(9):
            case 0 | 1:
                return Call("add", None, rng.randrange(ELEMENTS))
            case 2:
                return Call("remove", None, rng.randrange(ELEMENTS))
            case 3:
                return Call("incr", None, 1 + rng.randrange(5))
            case 4:
                return Call("decr", None, 1 + rng.randrange(3))
            case 5 | 6:
                return Call("madd", None, (rng.randrange(KEYS), rng.randrange(ELEMENTS)))
            case 7:
                return Call("mdel", None, rng.randrange(KEYS))
            case _:
                return Call("read", None, None)

    def request(self, request_id: int, call: Call) -> object:
        return ClientOp(request_id, call.f, call.value)

    def reply(self, output: object) -> Reply | None:
        if not isinstance(output, ClientResult):
            return None
        return Reply(output.request_id, Outcome.OK, output.value)

    def invariants(self, cluster: tuple[NodeId, ...], mutation: str | None) -> Invariants:
        del cluster, mutation
        return Converged()


TARGET = CRDTTarget()

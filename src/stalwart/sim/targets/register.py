"""The simulation target for the demo replicated register (``stalwart.register``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stalwart.register import ClientReply, ClientRequest, Committed, Mutation, RegisterNode
from stalwart.sansio import DurableState, NodeId, Rng
from stalwart.sim._target import ALL_FAULTS, Call, Invariants, Outcome, Reply, SimTarget

VALUES = 5
"""Writes draw from a few values so that cas both succeeds and fails often."""


class CommittedAgree(Invariants):
    """Every node that applies entry ``i`` applies the same bytes (logs never diverge)."""

    def __init__(self) -> None:
        self._seen: dict[int, bytes] = {}

    def on_output(self, node: NodeId, output: object, now_us: int) -> str | None:
        if isinstance(output, Committed):
            first = self._seen.setdefault(output.index, output.entry)
            if first != output.entry:
                return f"entry {output.index} applied as {output.entry!r} at {node}, {first!r} elsewhere"
        return None

    def at_end(self, nodes: Mapping[NodeId, Any]) -> list[str]:
        # After the healed liveness phase every live replica holds the primary's log as a prefix.
        live = [node for node in nodes.values() if isinstance(node, RegisterNode)]
        primaries = [node for node in live if node.is_primary]
        if not primaries:
            return []
        leader = primaries[0].log
        problems = []
        for node in live:
            upto = min(node.applied, len(leader))
            if node.log[:upto] != leader[:upto]:
                problems.append(f"{node.node_id} applied a log that is not a prefix of the primary's")
        return problems


class RegisterTarget(SimTarget):
    name = "register"
    summary = "single-primary replicated register (fsync, majority replication, primary reads)"
    node_counts = (3, 5)
    clients = 3
    tick_ms = 25  # the register only retries on ticks (every RETRY_TICKS): no need for more
    op_timeout_ms = 1_000
    liveness_ops = 5
    liveness_bound_ms = 10_000
    model = "cas-register"
    faults = ALL_FAULTS
    wire_codec = True  # every Replicate/Ack goes through stalwart.wire, as over TCP
    mutations = {
        Mutation.READ_FROM_BACKUP.value: "backups answer reads from their possibly stale copy",
        Mutation.ACK_BEFORE_FSYNC.value: "the primary acks writes from its page cache, unreplicated",
    }

    def build(
        self,
        node_id: NodeId,
        cluster: tuple[NodeId, ...],
        durable: DurableState,
        rng: Rng,
        mutation: str | None,
    ) -> RegisterNode:
        del rng  # the register draws no random numbers
        return RegisterNode(node_id, cluster, durable, Mutation(mutation or "none"))

    def new_call(self, rng: Rng, process: int) -> Call:
        del process
        match rng.randrange(3):
            case 0:
                return Call("read", None, None)
            case 1:
                return Call("write", None, rng.randrange(VALUES))
            case _:
                return Call("cas", None, (rng.randrange(VALUES), rng.randrange(VALUES)))

    def request(self, request_id: int, call: Call) -> object:
        match call.f:
            case "read":
                args: tuple[int | None, ...] = ()
            case "write":
                args = (call.value,)
            case _:
                args = tuple(call.value)
        return ClientRequest(request_id, call.f, args)

    def reply(self, output: object) -> Reply | None:
        if not isinstance(output, ClientReply):
            return None
        hint = None if output.leader_hint is None else NodeId(output.leader_hint)
        return Reply(output.request_id, Outcome(output.outcome), output.value, hint)

    def invariants(self, cluster: tuple[NodeId, ...], mutation: str | None) -> Invariants:
        del cluster, mutation
        return CommittedAgree()


TARGET = RegisterTarget()

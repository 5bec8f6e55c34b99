"""The SimTarget interface: what the simulator needs to know about one protocol.

A target is a small adapter between a sans-IO protocol (``stalwart.sansio``) and the simulator.
It says how to build a node from what its disk kept, how a client turns an operation into a
request and recognises the reply among a node's outputs, which model checks the history, which
extra invariants hold, which faults the protocol is meant to survive and which deliberately
broken variants (mutations) exist. See docs/simulator.md, "Writing a target".

Targets are discovered automatically: every module ``stalwart.sim.targets.<name>`` that defines a
module-level ``TARGET`` (an instance of a :class:`SimTarget` subclass) is the target ``<name>``,
run with ``stalwart sim <name>``. ``TARGET.name`` must equal ``<name>``.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stalwart.sansio import DurableState, NodeId, Rng, SansIOProtocol


class Fault(enum.Enum):
    """The fault kinds the simulator can inject; a target lists the ones it must survive."""

    LATENCY = "latency"  # long-tail latency spikes (a base latency is always present)
    LOSS = "loss"  # a message is dropped
    DUPLICATE = "duplicate"  # a message is delivered twice
    REORDER = "reorder"  # links stop being FIFO: a message may overtake an earlier one
    PARTITION = "partition"  # links blocked: halves, majority ring, bridge, one-way, isolate
    CRASH = "crash"  # a node stops; its page cache is lost; it restarts from its disk
    TORN = "torn"  # a crash may tear the last unsynced log append (recovery discards it)
    PAUSE = "pause"  # a node is not stepped or ticked for a while; its messages queue
    DRIFT = "drift"  # each node's tick rate is off by its own clock drift


ALL_FAULTS: frozenset[Fault] = frozenset(Fault)


class Outcome(enum.Enum):
    """What a reply says about the operation it answers."""

    OK = "ok"  # it happened; ``Reply.output`` is its result
    FAIL = "fail"  # it did not take effect (for a cas: the compare did not match)
    INFO = "info"  # the node cannot tell whether it happened (recorded as indeterminate)
    REDIRECT = "redirect"  # refused before any effect: the client retries at ``leader_hint``


@dataclass(frozen=True, slots=True)
class Call:
    """One client operation, recorded as-is in the history (``stalwart.check.Operation``)."""

    f: str  # "read", "write", "cas", "get", "put", "append", ...
    key: str | None
    value: Any  # the argument, in the form the checker model expects (cas: [old, new])


@dataclass(frozen=True, slots=True)
class Reply:
    """A node's answer to request ``request_id``, recognised by :meth:`SimTarget.reply`."""

    request_id: int
    outcome: Outcome
    output: Any = None  # the operation's result (a read's value); None for a write
    leader_hint: NodeId | None = None  # with REDIRECT: where to retry (None: any other node)


class Invariants:
    """Target-specific checks beyond linearizability; override what applies.

    One instance is made per simulated run. A non-empty string (or list) returned by a hook is a
    violation: the run fails, prints its seed, and the message says what broke.
    """

    def on_output(self, node: NodeId, output: object, now_us: int) -> str | None:
        """See every output of every node as it is delivered (e.g. committed entries agree)."""
        del node, output, now_us
        return None

    def at_end(self, nodes: Mapping[NodeId, Any]) -> list[str]:
        """Inspect the live protocol objects after the liveness phase (e.g. replicas converged)."""
        del nodes
        return []


class SimTarget(abc.ABC):
    """How the simulator drives one protocol. Subclass it and set ``TARGET = MyTarget()``.

    Class attributes have working defaults; override what differs. All durations are virtual.
    """

    name: str = ""  # equals the module name under stalwart.sim.targets
    summary: str = ""  # one line for ``stalwart sim --help`` and the docs
    node_counts: tuple[int, ...] = (3,)  # cluster sizes; the first is the default, swarm picks any
    clients: int = 3  # concurrent client processes in the workload
    tick_ms: int = 10  # virtual length of one tick() before clock drift
    op_timeout_ms: int = 1_000  # a client gives up after this and records the op as INFO
    max_redirects: int = 8  # REDIRECT retries within one operation before it is dropped
    liveness_ops: int = 5  # operations that must complete OK after every fault is healed ...
    liveness_bound_ms: int = 10_000  # ... within this long after the heal, or it is a violation
    settle_ms: int = 0  # quiet time after the liveness phase, before Invariants.at_end
    model: Any = "cas-register"  # stalwart.check model name or Model; None skips linearizability
    faults: frozenset[Fault] = ALL_FAULTS  # the fault kinds this protocol is meant to survive
    mutations: Mapping[str, str] = {}  # name -> what is broken, for ``--mutate NAME``
    wire_codec: bool = False  # peer messages are stalwart.wire messages: round-trip each one sent

    @abc.abstractmethod
    def build(
        self,
        node_id: NodeId,
        cluster: tuple[NodeId, ...],
        durable: DurableState,
        rng: Rng,
        mutation: str | None,
    ) -> SansIOProtocol[Any, Any, Any]:
        """Make node ``node_id`` of ``cluster`` from what its disk kept, exactly as runtime/ does.

        Called at start (with an empty ``DurableState()``) and after every restart. ``rng`` is
        the node's own seed-derived stream. ``mutation`` is None or a key of ``mutations``.
        """

    @abc.abstractmethod
    def new_call(self, rng: Rng, process: int) -> Call:
        """Draw the next operation for client ``process`` (only from ``rng``)."""

    @abc.abstractmethod
    def request(self, request_id: int, call: Call) -> object:
        """The message a client steps into a node for ``call``; it must carry ``request_id``."""

    @abc.abstractmethod
    def reply(self, output: object) -> Reply | None:
        """Recognise a client reply among a node's outputs; None for any other output."""

    def route(self, call: Call, cluster: tuple[NodeId, ...], rng: Rng) -> NodeId:
        """The node a client sends a fresh ``call`` to (default: any node, drawn from ``rng``)."""
        del call
        return cluster[rng.randrange(len(cluster))]

    def invariants(self, cluster: tuple[NodeId, ...], mutation: str | None) -> Invariants:
        """A fresh :class:`Invariants` for one run (default: none beyond the model)."""
        del cluster, mutation
        return Invariants()

"""The simulation target for Raft (``stalwart sim raft``): a key-value workload through the
client-session path of :class:`stalwart.raft.replica.RaftReplica`, under every fault.

Writes are proposed inside a session envelope (client id = the simulated client, sequence =
the request id, kept across redirects), so a retried write runs at most once; reads go through
ReadIndex. Each replica snapshots every few entries so that snapshots, chunked InstallSnapshot
and compaction happen in every run. Beyond linearizability (model ``kv``), two invariants:
committed entries never differ between nodes (checked on every applied entry), and at the end
the live nodes' logs agree on everything committed. On top of the swarm nemesis, every replica
carries a Raft-specific one (the Figure 8 nemesis, below) that cuts fresh leaders off within
about one round trip, so that Figure 8 histories (section 5.4.2) arise in the swarm.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from stalwart.errors import DecodeError, ProtocolError
from stalwart.raft import MUTATIONS, ConfChange, RaftConfig, RaftMessage, Role, VoteGranted
from stalwart.raft.replica import (
    ClientRead,
    ClientReply,
    ClientWrite,
    ClientWrites,
    Committed,
    Elected,
    RaftReplica,
    ReplicaOutput,
    ReplyStatus,
    Restored,
)
from stalwart.raft.sessions import SessionConfig
from stalwart.sansio import DurableState, Envelope, NodeId, Ready, Rng
from stalwart.sim._target import ALL_FAULTS, Call, Invariants, Outcome, Reply, SimTarget

KEYS = ("a", "b", "c")
VALUES = 5  # few values, so that cas both succeeds and fails often
TICK_MS = 10
SNAPSHOT_EVERY = 16  # entries between snapshots: small, to exercise InstallSnapshot in every run

_DESCRIPTIONS = {
    "vote-not-persisted": "the vote is not written to stable storage (two votes in one term)",
    "stale-log-vote": "votes are granted without the up-to-date-log check",
    "commit-previous-term": "a leader commits an older term's entry by counting replicas",
    "no-truncate-on-conflict": "a follower keeps a conflicting suffix instead of truncating it",
    "apply-before-commit": "entries reach the state machine before they commit",
    "stale-leader-read": "a leader serves reads locally without ReadIndex or a lease",
    "ack-before-fsync": "AppendEntries is acknowledged before the entries are synced",
    "snapshot-over-newer-log": "an old snapshot is installed over a newer log and state",
}
assert set(_DESCRIPTIONS) == MUTATIONS


class KVMachine:
    """The replicated application: a map of string registers (get, put, cas)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, payload: bytes) -> bytes:
        f, key, value = json.loads(payload)
        match f:
            case "put":
                self.data[key] = value
                return b"ok"
            case "cas":
                if self.data.get(key, "") == value[0]:
                    self.data[key] = value[1]
                    return b"ok"
                return b"fail"
            case _:
                raise DecodeError(f"kv: unknown command {f!r}")

    def query(self, query: bytes) -> bytes:
        return self.data.get(query.decode(), "").encode()

    def snapshot(self) -> bytes:
        return json.dumps(self.data, sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        self.data = dict(json.loads(data)) if data else {}


class RaftInvariants(Invariants):
    """Raft's safety properties, checked on every output of every node across restarts.

    * State Machine Safety: an index is applied with the same entry everywhere.
    * Election Safety (5.2): at most one leader per term, cluster-wide.
    * Leader Completeness (5.4.3): a new leader holds every entry committed in earlier terms.
    * One vote per term (5.2): a node never votes for two candidates in a term, even after a
      crash (what persisting the vote guarantees).
    * Applied in order: each node applies index i + 1 after i, and a snapshot from a leader
      only moves its state forward; only a restart (``boot``) starts it over.
    """

    def __init__(self) -> None:
        self._seen: dict[int, tuple[int, bytes]] = {}
        self._leaders: dict[int, NodeId] = {}
        self._votes: dict[tuple[NodeId, int], NodeId] = {}
        self._frontier: dict[NodeId, int] = {}
        self._known: dict[int, int] = {}  # index -> a term by which it was surely committed

    def on_output(self, node: NodeId, output: object, now_us: int) -> str | None:
        del now_us
        match output:
            case Committed(index=index, term=term, data=data, known_by_term=known):
                self._known[index] = min(known, self._known.get(index, known))
                first = self._seen.setdefault(index, (term, data))
                if first != (term, data):
                    return f"committed entry {index} is {(term, data)!r} at {node} but {first!r} elsewhere"
                expected = self._frontier.get(node, 0) + 1
                if index != expected:
                    return f"{node} applied entry {index}, expected {expected}"
                self._frontier[node] = index
            case Restored(index=index, boot=boot):
                if not boot and index < self._frontier.get(node, 0):
                    return f"{node} rewound its state from {self._frontier[node]} to snapshot {index}"
                self._frontier[node] = index
            case Elected(term=term, leader=leader):
                other = self._leaders.setdefault(term, leader)
                if other != leader:
                    return f"two leaders in term {term}: {other} and {leader}"
                return self._complete(output)
            case VoteGranted(term=term, candidate=candidate):
                other = self._votes.setdefault((node, term), candidate)
                if other != candidate:
                    return f"{node} voted for {other} and {candidate} in term {term}"
        return None

    def _complete(self, elected: Elected) -> str | None:
        """Leader Completeness (5.4.3): an entry committed in term k is in every leader's log
        of a term above k. Applied entries carry a term by which they were surely committed
        (an upper bound on k), so checking only leaders above that bound is sound."""
        for index, (term, _) in self._seen.items():
            if self._known[index] >= elected.term or index <= elected.snapshot_index:
                continue
            theirs = elected.term_at(index)
            if theirs != term:
                return (
                    f"{elected.leader} won term {elected.term} holding term {theirs} at index {index},"
                    f" where term {term} was committed by term {self._known[index]}"
                )
        return None

    def at_end(self, nodes: Mapping[NodeId, Any]) -> list[str]:
        live = [n for n in nodes.values() if isinstance(n, RaftReplica)]
        if len(live) < 2:
            return []
        lo = max(n.raft.log.snap_index for n in live) + 1
        hi = min(n.raft.commit for n in live)
        problems = []
        for index in range(lo, hi + 1):
            terms = {n.node_id: n.raft.log.term_at(index) for n in live}
            if len(set(terms.values())) > 1:
                problems.append(f"logs differ at committed index {index}: {terms}")
                break
        return problems


P_TRANSFER = 0.01  # per leader tick: hand leadership to a random voter
P_RECONFIGURE = 0.01  # per leader tick: one membership step (remove, add learner, promote)


# The Figure 8 nemesis (Raft paper, section 5.4.2; docs/raft.md, "Figure 8 in the swarm").
# Figure 8 needs leaders cut off within about one round trip of an event: one whose first
# entries reach at most a minority (so logs diverge across terms), and one that inherited older
# terms' uncommitted entries cut right after its first commit (before its own entries spread).
# The swarm's random partitions line these up almost never (0 of 3,000 seeds), so each replica
# carries this nemesis, on every run of the target:
# * a fresh leader, with probability P_CUT_FRESH, lets 0..CUT_MAX_SENT more peer messages out;
# * a fresh leader whose log holds uncommitted entries of older terms, with probability
#   P_CUT_COMMIT, lets none out once its commit index first moves;
# then it drops every peer message in and out for CUT_MIN_TICKS..CUT_MAX_TICKS ticks (longer
# than an election timeout, so the others elect). For Raft these are lost messages, a fault it
# must survive anyway; clients still reach the node. The nemesis acts only in the first
# CUT_WINDOW_MS of each incarnation, so after the heal new writes commit within the bound.
P_CUT_FRESH = 0.5
P_CUT_COMMIT = 1.0
CUT_MAX_SENT = 1
CUT_MIN_TICKS = 10
CUT_MAX_TICKS = 40
CUT_WINDOW_MS = 4_000


class ChaosReplica(RaftReplica):
    """A replica whose leader now and then transfers leadership or changes the membership
    (remove a voter, possibly itself; add it back as a learner; promote it once caught up),
    so that transfer and single-server changes run under every fault too; and which carries the
    Figure 8 nemesis above (a fresh leader cut off from its peers after a few messages)."""

    def __init__(self, cluster: tuple[NodeId, ...], chaos: Rng, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cluster = cluster
        self._chaos = chaos
        self._led_term = 0  # the last term in which this node was seen leading
        self._sends_left: int | None = None  # peer messages let out before the cut, if armed
        self._cut_ticks = 0  # ticks left with every peer link cut
        self._cut_length_ticks = 0
        self._led_commit = -1  # the commit index at election of a watched leader, else -1

    def step(self, source: NodeId, message: RaftMessage | ClientWrite | ClientWrites | ClientRead) -> None:
        if self._cut_ticks > 0 and not isinstance(message, (ClientWrite, ClientWrites, ClientRead)):
            return  # cut off: a peer message is lost
        super().step(source, message)

    def ready(self) -> Ready[RaftMessage, ReplicaOutput]:
        if self.raft.role is Role.LEADER and self.now_ms < CUT_WINDOW_MS and self._cut_ticks == 0:
            self._watch_leader()
        ready = super().ready()
        if self._cut_ticks == 0 and self._sends_left is None:
            return ready
        kept: list[Envelope[RaftMessage]] = []
        for envelope in ready.messages:
            if self._sends_left is not None:
                if self._sends_left == 0:
                    self._sends_left, self._cut_ticks = None, self._cut_length_ticks
                else:
                    self._sends_left -= 1
            if self._cut_ticks == 0:
                kept.append(envelope)
        filtered = Ready(ready.persist, ready.must_sync, tuple(kept), ready.outputs)
        if filtered.is_empty and not ready.is_empty:
            self.advance(filtered)  # the host skips an empty ready: finish this one here
        return filtered

    def _watch_leader(self) -> None:
        """The Figure 8 nemesis's triggers (see above): a fresh leader, its first commit."""
        raft = self.raft
        if raft.term != self._led_term:
            # Watch the first commit only of a leader that inherited older terms' uncommitted
            # entries: otherwise there is nothing old that a cut could lose.
            inherited = raft.log.term_at(raft.commit + 1) not in (None, raft.term)
            self._led_term, self._led_commit = raft.term, raft.commit if inherited else -1
            if self._chaos.random() < P_CUT_FRESH:
                self._arm(self._chaos.randrange(CUT_MAX_SENT + 1))
        elif self._led_commit >= 0 and raft.commit > self._led_commit:
            self._led_commit = -1
            if self._chaos.random() < P_CUT_COMMIT:
                self._arm(0)

    def _arm(self, sends: int) -> None:
        """Cut every peer link after ``sends`` more peer messages, for a random while."""
        self._sends_left = sends
        self._cut_length_ticks = CUT_MIN_TICKS + self._chaos.randrange(CUT_MAX_TICKS - CUT_MIN_TICKS + 1)

    def tick(self) -> None:
        if self._cut_ticks > 0:
            self._cut_ticks -= 1
        super().tick()
        raft = self.raft
        if raft.role is not Role.LEADER:
            return
        roll = self._chaos.random()
        try:
            if roll < P_TRANSFER:
                others = sorted(raft.membership.voters - {raft.id})
                if others:
                    raft.transfer_leadership(others[self._chaos.randrange(len(others))])
            elif roll < P_TRANSFER + P_RECONFIGURE:
                self._reconfigure()
        except ProtocolError:
            pass  # refused (a change pending, a learner behind): nothing changed; try later

    def _reconfigure(self) -> None:
        m = self.raft.membership
        missing = sorted(set(self._cluster) - m.members)
        if missing:
            self.raft.change_membership(ConfChange.ADD_LEARNER, missing[0])
        elif m.learners:
            self.raft.change_membership(ConfChange.PROMOTE, sorted(m.learners)[0])
        else:
            voters = sorted(m.voters)
            self.raft.change_membership(ConfChange.REMOVE, voters[self._chaos.randrange(len(voters))])


class RaftTarget(SimTarget):
    name = "raft"
    summary = "Raft replicated kv through client sessions (ReadIndex reads, snapshots)"
    node_counts = (3, 5)
    clients = 3
    tick_ms = TICK_MS
    op_timeout_ms = 1_000
    liveness_ops = 5
    liveness_bound_ms = 10_000
    model = "kv"
    faults = ALL_FAULTS
    mutations = _DESCRIPTIONS

    def build(
        self,
        node_id: NodeId,
        cluster: tuple[NodeId, ...],
        durable: DurableState,
        rng: Rng,
        mutation: str | None,
    ) -> ChaosReplica:
        config = RaftConfig(
            node_id=node_id,
            voters=frozenset(cluster),
            election_ticks=10,
            heartbeat_ticks=2,
            max_inflight_msgs=(1, 8)[rng.randrange(2)],  # stop-and-wait or a pipeline
            # Small batches, so pipelining, partial acks and backtracking all happen.
            max_entries_per_msg=(1, 8)[rng.randrange(2)],
            # Some leaders send snapshots in many small chunks, others in one message.
            snapshot_chunk_bytes=(128, 1 << 16)[rng.randrange(2)],
            snapshot_resend_ticks=5,
            mutations=frozenset() if mutation is None else frozenset({mutation}),
        )
        return ChaosReplica(
            cluster,
            rng,
            config,
            rng,
            durable,
            KVMachine(),
            tick_ms=TICK_MS,
            sessions=SessionConfig(session_timeout_ms=600_000),
            snapshot_every=SNAPSHOT_EVERY,
        )

    def new_call(self, rng: Rng, process: int) -> Call:
        del process
        key = KEYS[rng.randrange(len(KEYS))]
        match rng.randrange(3):
            case 0:
                return Call("get", key, None)
            case 1:
                return Call("put", key, str(rng.randrange(VALUES)))
            case _:
                return Call("cas", key, (str(rng.randrange(VALUES)), str(rng.randrange(VALUES))))

    def request(self, request_id: int, call: Call) -> object:
        if call.f == "get":
            return ClientRead(request_id, str(call.key).encode())
        return ClientWrite(request_id, json.dumps([call.f, call.key, call.value]).encode())

    def reply(self, output: object) -> Reply | None:
        if not isinstance(output, ClientReply):
            return None
        match output.status:
            case ReplyStatus.OK:
                result = output.result
                if result == b"fail":
                    return Reply(output.request_id, Outcome.FAIL)
                value = None if result in (None, b"ok") else result.decode()
                return Reply(output.request_id, Outcome.OK, value)
            case ReplyStatus.REDIRECT:
                return Reply(output.request_id, Outcome.REDIRECT, None, output.leader_hint)
            case ReplyStatus.BUSY:
                # Refused before any effect (the leader is overloaded): retried, like a redirect.
                return Reply(output.request_id, Outcome.REDIRECT, None, output.leader_hint)
            case ReplyStatus.INFO:
                return Reply(output.request_id, Outcome.INFO)
            case ReplyStatus.FAIL:
                return Reply(output.request_id, Outcome.FAIL)

    def invariants(self, cluster: tuple[NodeId, ...], mutation: str | None) -> Invariants:
        del cluster, mutation
        return RaftInvariants()


TARGET = RaftTarget()

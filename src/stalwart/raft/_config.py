"""Raft's configuration, and the named mutations used to prove the tests can fail."""

from __future__ import annotations

from dataclasses import dataclass, field

from stalwart.errors import ConfigError
from stalwart.sansio import NodeId

MUTATIONS = frozenset(
    {
        "vote-not-persisted",  # the vote is not written to stable storage
        "stale-log-vote",  # grant votes without the up-to-date-log check (5.4.1)
        "commit-previous-term",  # commit an older term's entry by counting replicas (5.4.2)
        "no-truncate-on-conflict",  # keep a conflicting suffix instead of truncating it
        "apply-before-commit",  # hand entries to the application before they commit
        "stale-leader-read",  # serve reads locally without ReadIndex or a valid lease
        "ack-before-fsync",  # answer AppendEntries before the entries are synced
        "snapshot-over-newer-log",  # install an old snapshot over a newer log and state
    }
)


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """How one Raft node behaves. Times are in ticks; the host decides a tick's length.

    ``voters``/``learners`` are the bootstrap membership; a node that joins later starts with
    both empty and learns the membership from the leader's log or snapshot.
    """

    node_id: NodeId
    voters: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()
    election_ticks: int = 10  # randomized election timeout in [election, 2 * election)
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight_msgs: int = 64  # in-flight AppendEntries per follower (REPLICATE)
    max_entries_per_msg: int = 256
    max_msg_bytes: int = 1 << 20
    max_uncommitted_entries: int = 10_000  # proposals beyond this are refused
    max_apply_batch: int = 4096  # committed entries handed out per Ready
    snapshot_chunk_bytes: int = 64 << 10
    max_snapshot_bytes: int = 1 << 30  # a follower refuses larger snapshot transfers
    snapshot_resend_ticks: int = 5  # resend an unanswered snapshot chunk after this long
    max_pending_reads: int = 4096
    promote_lag_entries: int = 64  # a learner is promotable when this close to the leader
    lease_reads: bool = False  # opt-in; see docs/raft.md for the clock assumption
    lease_drift_ratio: float = 0.1  # bound on relative tick-rate difference between nodes
    mutations: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        unknown = self.mutations - MUTATIONS
        if unknown:
            raise ConfigError(f"unknown raft mutations {sorted(unknown)}; known: {sorted(MUTATIONS)}")
        if self.voters & self.learners:
            raise ConfigError("a node cannot be both voter and learner")
        if self.election_ticks < 2 or self.heartbeat_ticks < 1 or self.heartbeat_ticks >= self.election_ticks:
            raise ConfigError("need 1 <= heartbeat_ticks < election_ticks and election_ticks >= 2")
        for name in ("max_inflight_msgs", "max_entries_per_msg", "max_msg_bytes", "max_apply_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.snapshot_chunk_bytes < 1 or self.max_pending_reads < 1 or self.max_uncommitted_entries < 1:
            raise ConfigError("limits must be at least 1")
        if not 0.0 <= self.lease_drift_ratio < 0.5:
            raise ConfigError("lease_drift_ratio must be in [0, 0.5)")
        if self.lease_reads and not self.check_quorum:
            raise ConfigError("lease_reads needs check_quorum (followers must honour the lease)")

    def mutated(self, name: str) -> bool:
        return name in self.mutations

    @property
    def lease_ticks(self) -> int:
        """How long a quorum's acknowledgement keeps a leader's lease, in its own ticks.

        Followers refuse votes for ``election_ticks`` of *their* ticks after hearing from the
        leader; with tick rates differing by at most ``lease_drift_ratio``, the leader's
        clock may run that much fast, so it trusts a shorter span, minus one tick of slack.
        """
        return max(0, int(self.election_ticks * (1.0 - self.lease_drift_ratio)) - 1)

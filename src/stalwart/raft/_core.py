"""The state every part of the Raft node shares, restart from disk, Ready/advance, invariants.

The node is split into mixins by concern (election, replication, snapshots, reads and
membership); they all extend :class:`Core`, which owns the fields and the small helpers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable

from stalwart.errors import CorruptionError
from stalwart.raft._config import RaftConfig
from stalwart.raft._log import RaftLog
from stalwart.raft._messages import (
    ApplyEntry,
    LeaderChanged,
    RaftMessage,
    RaftOutput,
    ReadFailed,
    RestoreSnapshot,
)
from stalwart.raft._progress import Progress
from stalwart.raft._types import (
    Entry,
    EntryKind,
    Membership,
    Role,
    decode_entry,
    decode_hard_state,
    decode_membership,
    decode_snapshot,
    encode_hard_state,
)
from stalwart.sansio import DurableState, Envelope, NodeId, PutMeta, Ready, Rng, StorageOp

HARD_STATE_KEY = "raft.hs"
MAX_ROUND_HISTORY = 256  # heartbeat rounds remembered for lease reads


class Core(ABC):
    """Fields and helpers shared by the Raft mixins; see :class:`stalwart.raft.RaftNode`."""

    def __init__(self, config: RaftConfig, rng: Rng, durable: DurableState | None = None) -> None:
        self.cfg = config
        self.id = config.node_id
        self._rng = rng
        self.term = 0
        self.vote: NodeId | None = None
        self.role = Role.FOLLOWER
        self.leader: NodeId | None = None
        self.log = RaftLog()
        self.commit = 0
        self.applied = 0
        self._boot_membership = Membership(config.voters, config.learners)
        self._snap_membership = self._boot_membership
        self._config_log: list[tuple[int, Membership]] = []  # CONFIG entries still in the log
        self.membership = self._boot_membership
        self._snapshot: tuple[int, int, Membership, bytes] | None = None  # index, term, m, data
        self._snap_recv: tuple[int, int, bytearray] | None = None  # follower: chunks so far
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.timeout = 0
        self.now = 0  # ticks since this incarnation started (lease arithmetic)
        self.votes: dict[NodeId, bool] = {}
        self.progress: dict[NodeId, Progress] = {}
        self.pending_conf_index = 0
        self.transferee: NodeId | None = None
        self.stable_index = 0  # highest index known durable here
        self._ops: list[StorageOp] = []
        self._msgs: list[Envelope[RaftMessage]] = []
        self._outputs: list[RaftOutput] = []
        self._handed: tuple[int, int] | None = None  # (apply_to, stable) of an unadvanced Ready
        self._bcast_pending = False
        # ReadIndex state (leader only): rounds of heartbeats and who acknowledged which.
        self.round = 0
        self.round_pending = False
        self.acked_round: dict[NodeId, int] = {}
        self.round_ticks: deque[tuple[int, int]] = deque(maxlen=MAX_ROUND_HISTORY)
        self.reads: deque[tuple[int, int, int]] = deque()  # (ctx, index, round)
        self.reads_waiting: deque[int] = deque()  # ctxs waiting for a commit in this term
        self.lease_until = -1
        self._floor = (0, 0)  # (term, commit) seen: neither may go back
        if durable is not None:
            self._restore(durable)
        self._reset_timeout()

    # ---- restart ---------------------------------------------------------------------------

    def _restore(self, durable: DurableState) -> None:
        hs = durable.meta.get(HARD_STATE_KEY)
        if hs is not None:
            self.term, self.vote = decode_hard_state(hs)
        snap_index, snap_term = 0, 0
        if durable.snapshot is not None:
            snap_index, blob = durable.snapshot
            snap_term, membership, data = decode_snapshot(blob)
            self._snap_membership = membership
            self._snapshot = (snap_index, snap_term, membership, data)
            self._outputs.append(RestoreSnapshot(snap_index, snap_term, membership, data))
        if durable.log and durable.first_index > snap_index + 1:
            raise CorruptionError("raft log", durable.first_index, f"gap after snapshot {snap_index}")
        entries = [
            decode_entry(durable.first_index + i, payload)
            for i, payload in enumerate(durable.log)
            if durable.first_index + i > snap_index
        ]
        self.log = RaftLog(snap_index, snap_term, entries)
        for entry in entries:
            if entry.kind is EntryKind.CONFIG:
                self._config_log.append((entry.index, decode_membership(entry.data)))
        self.membership = self._config_log[-1][1] if self._config_log else self._snap_membership
        self.commit = self.applied = snap_index
        self.stable_index = self.log.last_index
        self._floor = (self.term, self.commit)

    # ---- small helpers ---------------------------------------------------------------------

    def mutated(self, name: str) -> bool:
        return name in self.cfg.mutations

    def send(self, to: NodeId, msg: RaftMessage) -> None:
        self._msgs.append(Envelope(to, msg))

    def persist(self, ops: Iterable[StorageOp]) -> None:
        self._ops.extend(ops)

    def persist_hard_state(self) -> None:
        vote = None if self.mutated("vote-not-persisted") else self.vote
        self._ops.append(PutMeta(HARD_STATE_KEY, encode_hard_state(self.term, vote)))

    def output(self, out: RaftOutput) -> None:
        self._outputs.append(out)

    @property
    def promotable(self) -> bool:
        return self.id in self.membership.voters

    def peers(self) -> list[NodeId]:
        return sorted(self.membership.members - {self.id})

    def _reset_timeout(self) -> None:
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.timeout = self.cfg.election_ticks + self._rng.randrange(self.cfg.election_ticks)

    def set_leader(self, leader: NodeId | None) -> None:
        if leader != self.leader:
            self.leader = leader
            self.output(LeaderChanged(self.term, leader))

    def fail_reads(self) -> None:
        for ctx, _, _ in self.reads:
            self.output(ReadFailed(ctx))
        for ctx in self.reads_waiting:
            self.output(ReadFailed(ctx))
        self.reads.clear()
        self.reads_waiting.clear()
        self.round_pending = False
        self.lease_until = -1

    # ---- membership tracking ---------------------------------------------------------------

    def membership_at(self, index: int) -> Membership:
        found = self._snap_membership
        for at, m in self._config_log:
            if at <= index:
                found = m
        return found

    def track_appended(self, entries: Iterable[Entry]) -> None:
        changed = False
        for entry in entries:
            if entry.kind is EntryKind.CONFIG:
                self._config_log.append((entry.index, decode_membership(entry.data)))
                changed = True
        if changed:
            self.set_membership(self._config_log[-1][1])

    def track_truncated(self, from_index: int) -> None:
        self.stable_index = min(self.stable_index, from_index - 1)
        before = len(self._config_log)
        self._config_log = [(i, m) for i, m in self._config_log if i < from_index]
        if len(self._config_log) != before:
            self.set_membership(self._config_log[-1][1] if self._config_log else self._snap_membership)

    def track_snapshot(self, index: int, membership: Membership) -> None:
        self._snap_membership = membership
        self._config_log = [(i, m) for i, m in self._config_log if i > index]
        self.set_membership(self._config_log[-1][1] if self._config_log else membership)

    def set_membership(self, membership: Membership) -> None:
        """A configuration takes effect as soon as it is in the log (single-server changes)."""
        self.membership = membership
        self.on_membership_changed()

    @abstractmethod
    def on_membership_changed(self) -> None:
        """The leader adjusts its progress map (see the membership mixin)."""

    # ---- Ready / advance -------------------------------------------------------------------

    @abstractmethod
    def flush(self) -> None:
        """Turn deferred work (batched appends, read rounds) into messages."""

    def ready(self) -> Ready[RaftMessage, RaftOutput]:
        assert self._handed is None, "ready() called twice without advance()"
        self.flush()
        limit = self.log.last_index if self.mutated("apply-before-commit") else self.commit
        apply_to = min(limit, self.applied + self.cfg.max_apply_batch)
        applies = (
            [ApplyEntry(e) for e in self.log.between(self.applied + 1, apply_to)]
            if apply_to > self.applied
            else []
        )
        persist = tuple(self._ops)
        ready: Ready[RaftMessage, RaftOutput] = Ready(
            persist=persist,
            must_sync=bool(persist) and not self.mutated("ack-before-fsync"),
            messages=tuple(self._msgs),
            outputs=(*self._outputs, *applies),
        )
        self._ops.clear()
        self._msgs.clear()
        self._outputs.clear()
        if not ready.is_empty:  # hosts may skip advance() for an empty Ready
            self._handed = (max(apply_to, self.applied), self.log.last_index)
        return ready

    def has_ready(self) -> bool:
        return bool(
            self._ops
            or self._msgs
            or self._outputs
            or self._bcast_pending
            or self.round_pending
            or self.applied < self.commit
        )

    def advance(self, ready: Ready[RaftMessage, RaftOutput]) -> None:
        if self._handed is None:
            assert ready.is_empty, "advance() without ready()"
            return
        apply_to, stable = self._handed
        self._handed = None
        self.applied = apply_to
        self.stable_index = max(self.stable_index, stable)
        self.on_stable()
        self.check_invariants()

    @abstractmethod
    def on_stable(self) -> None:
        """The leader counts its own durable log toward commit."""

    @abstractmethod
    def on_commit(self) -> None:
        """Reads waiting for this term's first commit; membership commits."""

    @abstractmethod
    def advance_reads(self) -> None:
        """ReadIndex confirmations (see the reads mixin)."""

    # ---- implemented by the mixins (declared here so each mixin can call the others) -------

    @abstractmethod
    def maybe_commit(self) -> bool: ...

    @abstractmethod
    def become_follower(self, term: int, leader: NodeId | None) -> None: ...

    @abstractmethod
    def send_append(self, to: NodeId, send_empty: bool = False) -> bool: ...

    @abstractmethod
    def send_snapshot_chunk(self, to: NodeId) -> None: ...

    # ---- invariants ------------------------------------------------------------------------

    def check_invariants(self) -> None:
        log = self.log
        # Committed entries are in the log or the snapshot: commit never points past the end.
        assert log.snap_index <= self.commit <= log.last_index, (log.snap_index, self.commit, log.last_index)
        if not self.mutated("apply-before-commit"):
            # Only committed entries may reach the state machine (State Machine Safety).
            assert self.applied <= self.commit, (self.applied, self.commit)
        # The application snapshots only what it applied; the log keeps everything after.
        assert log.snap_index <= self.applied or self.mutated("apply-before-commit")
        term, commit = self._floor
        # Terms only grow (5.1); commit only grows, except when the mutation rewinds it.
        assert self.term >= term, "term went backwards"
        if not self.mutated("snapshot-over-newer-log"):
            assert self.commit >= commit, "commit went back"
        self._floor = (self.term, self.commit)
        if self.role is Role.LEADER:
            # A leader voted for itself in its term and knows it leads.
            assert self.leader == self.id and self.vote == self.id
            assert self.transferee is None or self.transferee in self.progress
            for pr in self.progress.values():
                pr.check()
        else:
            assert not self.progress and not self.reads, "only a leader tracks followers and reads"

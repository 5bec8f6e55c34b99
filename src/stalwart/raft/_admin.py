"""Client-facing operations: proposals, ReadIndex and lease reads, single-server membership
changes, leadership transfer, and the operator's status."""

from __future__ import annotations

import enum
from collections.abc import Sequence

from stalwart.errors import NotLeaderError
from stalwart.raft._messages import ReadReady, TimeoutNow
from stalwart.raft._progress import Progress
from stalwart.raft._snapshots import Snapshots
from stalwart.raft._status import FollowerStatus, RaftStatus
from stalwart.raft._types import (
    ConfChangeRejectedError,
    Entry,
    EntryKind,
    Membership,
    ProposalDroppedError,
    RaftError,
    Role,
    encode_membership,
)
from stalwart.sansio import NodeId


class ConfChange(enum.Enum):
    ADD_LEARNER = "add-learner"
    PROMOTE = "promote"  # learner -> voter, once caught up
    REMOVE = "remove"  # a voter (the leader included) or a learner


class Admin(Snapshots):
    # ---- proposals -------------------------------------------------------------------------

    def _require_leader(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader)
        if self.transferee is not None:
            raise ProposalDroppedError(f"leadership transfer to {self.transferee} in progress")

    def propose(self, data: bytes) -> int:
        """Append ``data`` as a new entry; returns its index. Raises before changing anything."""
        return self.propose_batch([data])[0]

    def propose_batch(self, items: Sequence[bytes]) -> list[int]:
        self._require_leader()
        if self.log.last_index - self.commit + len(items) > self.cfg.max_uncommitted_entries:
            raise ProposalDroppedError("too many uncommitted entries; retry later")
        first = self.log.last_index + 1
        entries = [Entry(self.term, first + i, EntryKind.NORMAL, data) for i, data in enumerate(items)]
        self.persist(self.log.append(entries))
        self._bcast_pending = True  # one AppendEntries per follower for everything proposed
        return [e.index for e in entries]

    # ---- reads -----------------------------------------------------------------------------

    def _committed_in_term(self) -> bool:
        return self.log.term_at(self.commit) == self.term

    def read_index(self, ctx: int, *, lease: bool | None = None) -> None:
        """Ask for a linearizable read ``ctx``: ReadReady(ctx, index) or ReadFailed(ctx) follows.

        ReadIndex (dissertation 6.4): record commit, confirm leadership with a heartbeat round
        acknowledged by a quorum, then the read may be served once applied >= that index. No
        log write. ``lease`` asks for a lease read for this call (None: ``cfg.lease_reads``): a
        leader inside its lease answers at once, without a round. The lease is used only where
        the config allows it (``lease_reads``, which needs ``check_quorum`` and turns on the
        restart vote guard the lease relies on); otherwise the read falls back to ReadIndex.
        """
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader)
        if self.mutated("stale-leader-read"):
            self.output(ReadReady(ctx, self.commit))  # the bug: no confirmation at all
            return
        if len(self.reads) + len(self.reads_waiting) >= self.cfg.max_pending_reads:
            raise ProposalDroppedError("too many pending reads; retry later")
        if not self._committed_in_term():
            self.reads_waiting.append(ctx)  # commit is not known current until our no-op commits
            return
        if self.lease_valid(lease):
            self.output(ReadReady(ctx, self.commit))
            return
        self._register_read(ctx)

    def lease_valid(self, lease: bool | None = None) -> bool:
        """Whether a read asking for ``lease`` may be served from this leader's lease now."""
        use = self.cfg.lease_reads if lease is None else lease and self.cfg.lease_reads
        return (
            use
            and self.cfg.check_quorum
            and self.role is Role.LEADER
            and self.transferee is None
            and self.now < self.lease_until
        )

    def _register_read(self, ctx: int) -> None:
        if not self.round_pending:
            self.round += 1
            self.round_pending = True  # one heartbeat round per Ready confirms all reads in it
        self.reads.append((ctx, self.commit, self.round))
        self.advance_reads()

    def on_commit(self) -> None:
        if self._committed_in_term() and self.reads_waiting:
            waiting = list(self.reads_waiting)
            self.reads_waiting.clear()
            for ctx in waiting:
                self._register_read(ctx)
        self._maybe_leave()

    def _quorum_round(self) -> int:
        """The highest heartbeat round a quorum of voters has acknowledged."""
        voters = self.membership.voters
        rounds = sorted(
            (self.round if v == self.id else self.acked_round.get(v, 0) for v in voters), reverse=True
        )
        return rounds[self.membership.quorum() - 1] if rounds else 0

    def advance_reads(self) -> None:
        acked = self._quorum_round()
        while self.reads and self.reads[0][2] <= acked:
            ctx, index, _ = self.reads.popleft()
            self.output(ReadReady(ctx, index))
        for rnd, tick in self.round_ticks:
            if rnd == acked:
                self.lease_until = max(self.lease_until, tick + self.cfg.lease_ticks)

    def flush(self) -> None:
        if self.round_pending and self.role is Role.LEADER:
            self.round_pending = False
            self.round_ticks.append((self.round, self.now))
            self.broadcast_heartbeat()
            self.advance_reads()  # a single-voter cluster confirms at once
        if self._bcast_pending and self.role is Role.LEADER:
            self.broadcast_append()
        self._bcast_pending = False

    # ---- membership: one server at a time --------------------------------------------------

    def change_membership(self, change: ConfChange, node: NodeId) -> int:
        """Propose one single-server change; returns the index of its CONFIG entry."""
        self._require_leader()
        if self.pending_conf_index > self.commit:
            raise ConfChangeRejectedError("a membership change is still uncommitted")
        m = self.membership
        match change:
            case ConfChange.ADD_LEARNER:
                if node in m.members:
                    raise ConfChangeRejectedError(f"{node} is already a member")
                new = Membership(m.voters, m.learners | {node})
            case ConfChange.PROMOTE:
                if node not in m.learners:
                    raise ConfChangeRejectedError(f"{node} is not a learner")
                lag = self.log.last_index - self.progress[node].match
                if lag > self.cfg.promote_lag_entries:
                    raise ConfChangeRejectedError(f"learner {node} is {lag} entries behind")
                new = Membership(m.voters | {node}, m.learners - {node})
            case ConfChange.REMOVE:
                if node not in m.members:
                    raise ConfChangeRejectedError(f"{node} is not a member")
                if m.voters == {node}:
                    raise ConfChangeRejectedError("cannot remove the last voter")
                new = Membership(m.voters - {node}, m.learners - {node})
        index = self.log.last_index + 1
        entry = Entry(self.term, index, EntryKind.CONFIG, encode_membership(new))
        self.persist(self.log.append([entry]))
        self.pending_conf_index = index
        self.track_appended([entry])
        self._bcast_pending = True
        return index

    def on_membership_changed(self) -> None:
        if self.role is not Role.LEADER:
            return
        members = self.membership.members | {self.id}
        for node in list(self.progress):
            if node not in members:
                del self.progress[node]
                self.acked_round.pop(node, None)
        for node in members - set(self.progress):
            self.progress[node] = Progress(0, self.log.last_index + 1, self.cfg.max_inflight_msgs)
        if self.transferee is not None and self.transferee not in self.membership.voters:
            self.transferee = None
        self.maybe_commit()  # a smaller quorum may commit more at once

    def _maybe_leave(self) -> None:
        """A leader removed from the voters steps down once that change commits (4.2.2)."""
        if self.role is not Role.LEADER or self.id in self.membership.voters:
            return
        if self.pending_conf_index > self.commit:
            return
        best = max(
            (n for n in self.membership.voters if n in self.progress),
            key=lambda n: (self.progress[n].match, n),
            default=None,
        )
        if best is not None and self.progress[best].match == self.log.last_index:
            self.send(best, TimeoutNow(self.term))  # hand over rather than wait for a timeout
        self.become_follower(self.term, None)

    # ---- leadership transfer ---------------------------------------------------------------

    def transfer_leadership(self, target: NodeId) -> None:
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader)
        if target == self.id:
            return
        if target not in self.membership.voters:
            raise RaftError(f"cannot transfer leadership to non-voter {target}")
        self.transferee = target
        self.election_elapsed = 0  # the transfer is abandoned after one election timeout
        self.lease_until = -1  # the target will skip the lease check: ours is void now
        pr = self.progress[target]
        if pr.match == self.log.last_index:
            self.send(target, TimeoutNow(self.term))
        else:
            self.send_append(target, send_empty=True)

    # ---- status ----------------------------------------------------------------------------

    def status(self) -> RaftStatus:
        last = self.log.last_index
        followers = tuple(
            FollowerStatus(
                node=n,
                voter=n in self.membership.voters,
                match=pr.match,
                next=pr.next,
                state=pr.state,
                lag=last - pr.match,
                recent_active=pr.recent_active,
                inflight=len(pr.inflight),
            )
            for n, pr in sorted(self.progress.items())
            if n != self.id
        )
        return RaftStatus(
            node=self.id,
            role=self.role,
            term=self.term,
            leader=self.leader,
            vote=self.vote,
            commit=self.commit,
            applied=self.applied,
            first_index=self.log.first_index,
            last_index=last,
            snapshot_index=self.log.snap_index,
            voters=self.membership.voters,
            learners=self.membership.learners,
            transferee=self.transferee,
            followers=followers,
        )

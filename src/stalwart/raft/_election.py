"""Elections: randomized timeouts, PreVote, CheckQuorum, role changes and vote handling."""

from __future__ import annotations

from stalwart.raft._core import Core
from stalwart.raft._messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    InstallSnapshot,
    RaftMessage,
    RequestVote,
    RequestVoteResponse,
    VoteGranted,
)
from stalwart.raft._progress import Progress
from stalwart.raft._types import Entry, EntryKind, Role
from stalwart.sansio import NodeId


class Election(Core):
    # ---- role changes ----------------------------------------------------------------------

    def become_follower(self, term: int, leader: NodeId | None) -> None:
        if term > self.term:
            self.term, self.vote = term, None
            self.persist_hard_state()
        if self.role is Role.LEADER:
            self.fail_reads()
        self.role = Role.FOLLOWER
        self.progress.clear()
        self.transferee = None
        self.set_leader(leader)
        self._reset_timeout()

    def become_leader(self) -> None:
        assert self.role is Role.CANDIDATE
        self.role = Role.LEADER
        self.set_leader(self.id)
        self._reset_timeout()
        last = self.log.last_index
        self.progress = {}
        for node in self.membership.members | {self.id}:
            self.progress[node] = Progress(match=0, next=last + 1, max_inflight=self.cfg.max_inflight_msgs)
        self.progress[self.id].update(self.stable_index)
        self.acked_round = {}
        self.round_ticks.clear()
        self.lease_until = -1
        # No membership change until this leader commits in its term (dissertation 4.1 fix).
        self.pending_conf_index = last + 1
        # A no-op in our own term: committing it commits everything before it (5.4.2) and
        # lets ReadIndex know the commit index is current (dissertation 6.4).
        entry = Entry(self.term, last + 1, EntryKind.NOOP, b"")
        self.persist(self.log.append([entry]))
        self._bcast_pending = True
        self.maybe_commit()

    def campaign(self, pre_vote: bool, transfer: bool = False) -> None:
        assert self.role is not Role.LEADER, "a leader does not campaign"
        if pre_vote:
            self.role = Role.PRE_CANDIDATE
            term = self.term + 1  # the term we would run in; ours is unchanged
        else:
            self.role = Role.CANDIDATE
            self.term += 1
            self.vote = self.id
            self.persist_hard_state()
            term = self.term
            self.output(VoteGranted(term, self.id))
        self.set_leader(None)
        self._reset_timeout()
        self.votes = {self.id: True}
        if self.tally() is True:
            self._won(pre_vote)
            return
        for peer in sorted(self.membership.voters - {self.id}):
            self.send(peer, RequestVote(term, self.log.last_index, self.log.last_term, pre_vote, transfer))

    def tally(self) -> bool | None:
        voters = self.membership.voters
        granted = sum(1 for n, v in self.votes.items() if v and n in voters)
        rejected = sum(1 for n, v in self.votes.items() if not v and n in voters)
        if granted >= self.membership.quorum():
            return True
        if rejected > len(voters) - self.membership.quorum():
            return False
        return None

    def _won(self, pre_vote: bool) -> None:
        if pre_vote:
            self.campaign(pre_vote=False)
        else:
            self.become_leader()

    # ---- time ------------------------------------------------------------------------------

    def tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable and self.election_elapsed >= self.timeout:
            self.campaign(pre_vote=self.cfg.pre_vote)

    def quorum_active(self) -> bool:
        voters = self.membership.voters
        progress = self.progress
        active = sum(1 for n in voters if n == self.id or (n in progress and progress[n].recent_active))
        return active >= self.membership.quorum()

    # ---- terms -----------------------------------------------------------------------------

    def in_lease(self) -> bool:
        """A live leader was heard from recently: refuse to help anyone replace it."""
        heard = self.leader is not None and self.election_elapsed < self.cfg.election_ticks
        # After a restart we cannot know whether we promised a lease: wait one timeout out.
        fresh = self.cfg.lease_reads and self.now < self.cfg.election_ticks
        return self.cfg.check_quorum and (heard or fresh)

    def step_term(self, source: NodeId, msg: RaftMessage) -> bool:
        """Etcd's term rules; returns False when the message is to be dropped."""
        if msg.term > self.term:
            if isinstance(msg, RequestVote):
                if not msg.transfer and self.in_lease():
                    return False  # CheckQuorum lease: a disruptive candidate is ignored
                if msg.pre_vote:
                    return True  # a pre-vote never changes our term
            if isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.granted:
                return True  # carries the future term we asked for
            leader = source if isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot) else None
            self.become_follower(msg.term, leader)
            return True
        if msg.term < self.term:
            if isinstance(msg, AppendEntries | Heartbeat) and (self.cfg.check_quorum or self.cfg.pre_vote):
                # A leader cut off from us for a while: tell it our term so it steps down.
                self.send(source, AppendEntriesResponse(self.term, False, 0))
            elif isinstance(msg, RequestVote) and msg.pre_vote:
                self.send(source, RequestVoteResponse(self.term, False, True))
            return False
        return True

    # ---- votes -----------------------------------------------------------------------------

    def on_request_vote(self, source: NodeId, msg: RequestVote) -> None:
        can_vote = (
            self.vote == source
            or (self.vote is None and self.leader is None)
            or (msg.pre_vote and msg.term > self.term)
        )
        up_to_date = self.log.is_up_to_date(msg.last_index, msg.last_term)
        if self.mutated("stale-log-vote"):
            up_to_date = True
        if can_vote and up_to_date:
            self.send(source, RequestVoteResponse(msg.term, True, msg.pre_vote))
            if not msg.pre_vote:
                self.vote = source
                self.persist_hard_state()  # durable before the grant leaves (Ready order)
                self.election_elapsed = 0
                self.output(VoteGranted(self.term, source))
        else:
            self.send(source, RequestVoteResponse(self.term, False, msg.pre_vote))

    def on_vote_response(self, source: NodeId, msg: RequestVoteResponse) -> None:
        if self.role is Role.PRE_CANDIDATE and msg.pre_vote:
            expected = self.term + 1 if msg.granted else self.term
            if msg.term != expected:
                return
        elif not (self.role is Role.CANDIDATE and not msg.pre_vote and msg.term == self.term):
            return
        self.votes.setdefault(source, msg.granted)
        result = self.tally()
        if result is True:
            self._won(msg.pre_vote)
        elif result is False:
            self.become_follower(self.term, None)

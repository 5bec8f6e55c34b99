"""Log replication: pipelined AppendEntries with per-follower flow control, fast backtracking,
commit by counting (own term only), and the follower side of AppendEntries and heartbeats."""

from __future__ import annotations

from stalwart.raft._election import Election
from stalwart.raft._messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    TimeoutNow,
)
from stalwart.raft._progress import ProgressState
from stalwart.raft._types import Entry, Role, pack_entries
from stalwart.sansio import NodeId


class Replication(Election):
    # ---- leader: sending -------------------------------------------------------------------

    def send_append(self, to: NodeId, send_empty: bool = False) -> bool:
        """Send ``to`` the next batch it needs; False when flow control holds it back."""
        pr = self.progress[to]
        if pr.paused:
            return False
        prev = pr.next - 1
        prev_term = self.log.term_at(prev)
        if prev_term is None:
            # The entries it needs are compacted: stream the snapshot instead.
            assert self._snapshot is not None, "log compacted without a snapshot"
            pr.become_snapshot(self._snapshot[0])
            self.send_snapshot_chunk(to)
            return True
        entries: list[Entry] = []
        if pr.next <= self.log.last_index:
            hi = min(self.log.last_index + 1, pr.next + self.cfg.max_entries_per_msg)
            entries = self.log.slice(pr.next, hi, self.cfg.max_msg_bytes)
        if not entries and not send_empty:
            return False
        self.send(to, AppendEntries(self.term, prev, prev_term, (), self.commit, pack_entries(entries)))
        pr.sent_entries(entries[-1].index if entries else prev)
        return True

    def broadcast_append(self) -> None:
        for peer in self.peers():
            pr = self.progress.get(peer)
            if pr is not None and self.send_append(peer, send_empty=True):
                while pr.state is ProgressState.REPLICATE and self.send_append(peer):
                    pass  # pipeline: fill the in-flight window without waiting for acks

    def broadcast_heartbeat(self) -> None:
        for peer in self.peers():
            pr = self.progress.get(peer)
            if pr is not None:
                self.send(peer, Heartbeat(self.term, min(pr.match, self.commit), self.round))

    def maybe_commit(self) -> bool:
        """Advance commit to the highest index a quorum of voters holds, if it is ours (5.4.2)."""
        voters = self.membership.voters
        matches = sorted((self.progress[v].match for v in voters if v in self.progress), reverse=True)
        quorum = self.membership.quorum()
        if len(matches) < quorum:
            return False
        index = matches[quorum - 1]
        if index <= self.commit:
            return False
        if self.log.term_at(index) != self.term and not self.mutated("commit-previous-term"):
            return False  # Figure 8: an older term's entry is committed only indirectly
        self.commit = index
        self.on_commit()
        return True

    def on_stable(self) -> None:
        if self.role is Role.LEADER and self.id in self.progress:
            self.progress[self.id].update(self.stable_index)
            if self.maybe_commit():
                self._bcast_pending = True

    # ---- leader: answers -------------------------------------------------------------------

    def on_append_response(self, source: NodeId, msg: AppendEntriesResponse) -> None:
        pr = self.progress.get(source)
        if self.role is not Role.LEADER or pr is None:
            return
        pr.recent_active = True
        if not msg.success:
            hint_next = msg.hint_index
            if msg.hint_term > 0:
                # Skip the follower's whole conflicting term: if we hold that term, resume
                # just after our last entry of it, otherwise at the follower's first of it.
                ours = self.log.last_index_of_term(msg.hint_term)
                if ours is not None:
                    hint_next = ours + 1
            if pr.decrease_to(msg.index, max(1, hint_next)):
                self.send_append(source, send_empty=True)
            return
        was_paused = pr.paused
        if pr.update(msg.index):
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.snap_index:
                pr.become_probe()
            if self.maybe_commit():
                self._bcast_pending = True
                if self.role is not Role.LEADER or source not in self.progress:
                    return  # the commit removed us (or them) from the configuration
            while self.send_append(source):
                pass  # pipeline until the in-flight window is full or the log is sent
            if source == self.transferee and pr.match == self.log.last_index:
                self.send(source, TimeoutNow(self.term))
        elif was_paused:
            self.send_append(source)

    def on_heartbeat_response(self, source: NodeId, msg: HeartbeatResponse) -> None:
        pr = self.progress.get(source)
        if self.role is not Role.LEADER or pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state is ProgressState.REPLICATE and len(pr.inflight) >= pr.max_inflight:
            # A full window may hold messages (or acks) that were lost: free one slot per
            # heartbeat so replication resumes; a gap makes the follower reject, and we probe.
            pr.inflight.popleft()
        if pr.match < self.log.last_index:
            # Even with nothing new to send: an empty append at next - 1 exposes a follower
            # that lost what we believe is in flight (a crash, lost messages) by its reject.
            self.send_append(source, send_empty=True)
        if msg.round > self.acked_round.get(source, 0):
            self.acked_round[source] = msg.round
            self.advance_reads()

    # ---- follower --------------------------------------------------------------------------

    def accept_leader(self, source: NodeId) -> None:
        if self.role is not Role.FOLLOWER or self.leader != source:
            # At most one leader per term: a leader never hears from another of its own term,
            # and a follower's leader for a term never changes.
            if not self.mutated("vote-not-persisted"):
                assert self.role is not Role.LEADER, f"two leaders in term {self.term}"
                assert self.leader in (None, source), f"two leaders in term {self.term}"
            self.become_follower(self.term, source)
        self.election_elapsed = 0

    def on_heartbeat(self, source: NodeId, msg: Heartbeat) -> None:
        self.accept_leader(source)
        # The leader sends min(our match, its commit): never beyond what our log holds.
        if msg.commit > self.commit:
            self.commit = min(msg.commit, self.log.last_index)
        self.send(source, HeartbeatResponse(self.term, msg.round))

    def on_append(self, source: NodeId, msg: AppendEntries) -> None:
        self.accept_leader(source)
        if msg.prev_index < self.commit:
            # Everything through commit matches the leader already; say so.
            self.send(source, AppendEntriesResponse(self.term, True, self.commit))
            return
        if self.log.term_at(msg.prev_index) != msg.prev_term:
            self.send(source, self._reject(msg.prev_index))
            return
        self._append_after(msg.prev_index, msg.entries)
        last_new = msg.prev_index + len(msg.entries)
        if msg.commit > self.commit:
            self.commit = min(msg.commit, last_new)
        self.send(source, AppendEntriesResponse(self.term, True, last_new))

    def _reject(self, prev_index: int) -> AppendEntriesResponse:
        if prev_index > self.log.last_index:
            return AppendEntriesResponse(self.term, False, prev_index, self.log.last_index + 1, 0)
        term = self.log.term_at(prev_index)
        assert term is not None  # prev_index >= commit >= snapshot index
        first = max(self.log.first_index_of_term(prev_index), self.commit + 1)
        return AppendEntriesResponse(self.term, False, prev_index, first, term)

    def _append_after(self, prev_index: int, entries: tuple[Entry, ...]) -> None:
        for pos, entry in enumerate(entries):
            ours = self.log.term_at(entry.index)
            if ours is None:
                self._extend(entries[pos:])
                return
            if ours == entry.term:
                # Log Matching: same index and term means the same entry.
                if not self.mutated("no-truncate-on-conflict") and not self.mutated("vote-not-persisted"):
                    assert self.log.entry(entry.index) == entry, f"log matching broken at {entry.index}"
                continue
            if self.mutated("no-truncate-on-conflict"):
                continue  # keep our conflicting entry: the bug under test
            # A conflict: our suffix from here was never committed (Leader Completeness).
            assert entry.index > self.commit, f"conflict at committed index {entry.index}"
            self.persist(self.log.truncate(entry.index))
            self.track_truncated(entry.index)
            self._extend(entries[pos:])
            return

    def _extend(self, entries: tuple[Entry, ...]) -> None:
        self.persist(self.log.append(entries))
        self.track_appended(entries)
        if self.mutated("ack-before-fsync"):
            self.stable_index = self.log.last_index

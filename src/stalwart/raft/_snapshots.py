"""Snapshots: the application compacts at an applied index; a leader streams a snapshot in
chunks to a follower whose next entry is compacted; the follower installs it safely."""

from __future__ import annotations

from stalwart.raft._messages import InstallSnapshot, InstallSnapshotResponse, RestoreSnapshot
from stalwart.raft._progress import ProgressState
from stalwart.raft._replication import Replication
from stalwart.raft._types import Membership, Role, SnapshotRejectedError, encode_snapshot
from stalwart.sansio import NodeId, PutSnapshot


class Snapshots(Replication):
    def compact(self, index: int, data: bytes) -> None:
        """The application's state after applying ``index`` is ``data``: snapshot, drop the log.

        Raises SnapshotRejectedError (changing nothing) unless snapshot < index <= applied.
        """
        if not self.log.snap_index < index <= self.applied:
            raise SnapshotRejectedError(
                f"snapshot at {index} must be above {self.log.snap_index} and at most applied {self.applied}"
            )
        term = self.log.term_at(index)
        assert term is not None
        membership = self.membership_at(index)
        self.persist([PutSnapshot(index, encode_snapshot(term, membership, data))])
        self.persist(self.log.compact(index, term))
        self._snapshot = (index, term, membership, data)
        self.track_snapshot(index, membership)

    # ---- leader ----------------------------------------------------------------------------

    def send_snapshot_chunk(self, to: NodeId) -> None:
        pr = self.progress[to]
        assert self._snapshot is not None and pr.state is ProgressState.SNAPSHOT
        index, term, membership, data = self._snapshot
        if pr.snap_index != index:
            pr.become_snapshot(index)  # a newer snapshot replaced the one being sent
        lo = min(pr.snap_offset, len(data))
        hi = min(len(data), lo + self.cfg.snapshot_chunk_bytes)
        pr.snap_idle_ticks = 0
        self.send(to, InstallSnapshot(self.term, index, term, membership, lo, data[lo:hi], hi == len(data)))

    def tick_snapshots(self) -> None:
        for peer, pr in self.progress.items():
            if pr.state is ProgressState.SNAPSHOT and peer != self.id:
                pr.snap_idle_ticks += 1
                if pr.snap_idle_ticks >= self.cfg.snapshot_resend_ticks:
                    self.send_snapshot_chunk(peer)  # the chunk or its answer was lost

    def on_snapshot_response(self, source: NodeId, msg: InstallSnapshotResponse) -> None:
        pr = self.progress.get(source)
        if self.role is not Role.LEADER or pr is None:
            return
        pr.recent_active = True
        if msg.done:
            pr.update(msg.index)
            if pr.state is ProgressState.SNAPSHOT:
                pr.become_probe()
            self.send_append(source, send_empty=True)
        elif pr.state is ProgressState.SNAPSHOT and msg.index == pr.snap_index:
            pr.snap_offset = msg.next_offset
            self.send_snapshot_chunk(source)

    # ---- follower --------------------------------------------------------------------------

    def on_install_snapshot(self, source: NodeId, msg: InstallSnapshot) -> None:
        self.accept_leader(source)
        # The bug under test: install whatever arrives, never comparing it with commit.
        stale = msg.index <= self.commit and not self.mutated("snapshot-over-newer-log")
        if stale:
            # We hold everything through commit already; a delayed or duplicated snapshot.
            self.send(source, InstallSnapshotResponse(self.term, self.commit, 0, True))
            return
        recv = self._snap_recv
        if recv is None or (recv[0], recv[1]) != (msg.index, msg.snap_term):
            if msg.offset != 0:
                self.send(source, InstallSnapshotResponse(self.term, msg.index, 0, False))
                return
            recv = self._snap_recv = (msg.index, msg.snap_term, bytearray())
        buf = recv[2]
        if msg.offset != len(buf) or len(buf) + len(msg.chunk) > self.cfg.max_snapshot_bytes:
            if len(buf) + len(msg.chunk) > self.cfg.max_snapshot_bytes:
                self._snap_recv = None  # refuse oversized transfers; the leader starts over
                buf = bytearray()
            self.send(source, InstallSnapshotResponse(self.term, msg.index, len(buf), False))
            return
        buf += msg.chunk
        if not msg.done:
            self.send(source, InstallSnapshotResponse(self.term, msg.index, len(buf), False))
            return
        self._snap_recv = None
        self._install(msg.index, msg.snap_term, msg.membership, bytes(buf))
        self.send(source, InstallSnapshotResponse(self.term, msg.index, 0, True))

    def _install(self, index: int, term: int, membership: Membership, data: bytes) -> None:
        put = PutSnapshot(index, encode_snapshot(term, membership, data))
        if self.log.term_at(index) == term and not self.mutated("snapshot-over-newer-log"):
            # Our log continues the snapshot: keep the entries after it (Log Matching).
            self.persist([put, *self.log.compact(index, term)])
        else:
            # Our log conflicts with or ends before the snapshot: it is replaced entirely.
            self.persist([*self.log.reset(index, term), put])
            self.track_truncated(index + 1)
            self.stable_index = index
        self._snapshot = (index, term, membership, data)
        self.track_snapshot(index, membership)
        self.commit = max(self.commit, index)
        if self.mutated("snapshot-over-newer-log"):
            self.commit = min(self.commit, self.log.last_index)
        self.applied = index
        self.output(RestoreSnapshot(index, term, membership, data))

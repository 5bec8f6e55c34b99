"""RaftNode: the public state machine. Dispatch of messages and ticks lives here."""

from __future__ import annotations

from typing import assert_never

from stalwart.errors import DecodeError, RemoteProtocolError
from stalwart.raft._admin import Admin
from stalwart.raft._messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    RaftMessage,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from stalwart.raft._types import Role, unpack_entries
from stalwart.sansio import NodeId


class RaftNode(Admin):
    """Raft (etcd-io/raft's feature set) as a pure sans-IO state machine.

    Build it with ``RaftNode(config, rng)`` for a fresh node or ``RaftNode(config, rng,
    durable)`` to restart from what the disk kept. Drive it with :meth:`step`, :meth:`tick`,
    :meth:`ready` and :meth:`advance` (docs/design.md); ask it to :meth:`propose`,
    :meth:`read_index`, :meth:`compact`, :meth:`change_membership` and
    :meth:`transfer_leadership`. Every refusal raises a RaftError/NotLeaderError first.
    """

    @property
    def node_id(self) -> NodeId:
        return self.id

    def step(self, source: NodeId, message: RaftMessage) -> None:
        """Take one message from peer ``source``.

        A message no correct peer sends (entries out of place, negative positions) raises
        RemoteProtocolError before anything changes.
        """
        assert self._handed is None, "step() between ready() and advance()"
        if type(message) is AppendEntries and message.packed:
            message = _unpacked(message)
        _validate(message)
        if source == self.id or not self.step_term(source, message):
            self.check_invariants()
            return
        match message:
            case RequestVote():
                self.on_request_vote(source, message)
            case RequestVoteResponse():
                self.on_vote_response(source, message)
            case AppendEntries():
                self.on_append(source, message)
            case AppendEntriesResponse():
                self.on_append_response(source, message)
            case Heartbeat():
                self.on_heartbeat(source, message)
            case HeartbeatResponse():
                self.on_heartbeat_response(source, message)
            case InstallSnapshot():
                self.on_install_snapshot(source, message)
            case InstallSnapshotResponse():
                self.on_snapshot_response(source, message)
            case TimeoutNow():
                if self.promotable and self.role is not Role.LEADER:
                    self.campaign(pre_vote=False, transfer=True)
            case _:
                assert_never(message)
        self.check_invariants()

    def tick(self) -> None:
        assert self._handed is None, "tick() between ready() and advance()"
        self.now += 1
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self.tick_election()
        self.check_invariants()

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                if not self.quorum_active():
                    # CheckQuorum: we cannot reach a majority, so a newer leader may exist.
                    self.become_follower(self.term, None)
                    return
                for node, pr in self.progress.items():
                    pr.recent_active = node == self.id
            self.transferee = None  # a transfer that did not finish in a timeout is abandoned
        self.tick_snapshots()
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self.round += 1
            self.round_ticks.append((self.round, self.now))
            self.broadcast_heartbeat()


def _unpacked(msg: AppendEntries) -> AppendEntries:
    """``msg`` with its packed entries as ``entries`` (RemoteProtocolError if they do not decode)."""
    if msg.entries:
        raise RemoteProtocolError("raft: AppendEntries with both entries and packed entries")
    try:
        entries = unpack_entries(msg.prev_index + 1, msg.packed)
    except DecodeError as exc:
        raise RemoteProtocolError(f"raft: {exc}") from None
    return AppendEntries(msg.term, msg.prev_index, msg.prev_term, entries, msg.commit)


def _validate(message: RaftMessage) -> None:
    if message.term < 0:
        raise RemoteProtocolError(f"raft: negative term in {type(message).__name__}")
    match message:
        case AppendEntries(prev_index=prev, entries=entries, commit=commit):
            if prev < 0 or commit < 0 or message.prev_term < 0:
                raise RemoteProtocolError("raft: negative index in AppendEntries")
            last_term = message.prev_term
            for offset, entry in enumerate(entries):
                if entry.index != prev + 1 + offset or not last_term <= entry.term <= message.term:
                    raise RemoteProtocolError(f"raft: AppendEntries entry {entry.index} out of place")
                last_term = entry.term
        case InstallSnapshot(index=index, offset=offset, snap_term=snap_term):
            if index < 1 or offset < 0 or not 0 < snap_term <= message.term:
                raise RemoteProtocolError("raft: malformed InstallSnapshot")
        case Heartbeat(commit=commit) if commit < 0:
            raise RemoteProtocolError("raft: negative commit in Heartbeat")
        case _:
            return  # the other messages carry nothing positional to check

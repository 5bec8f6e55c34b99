"""Raft as a pure sans-IO state machine (etcd-io/raft's feature set); see docs/raft.md.

Elections with randomized timeouts, PreVote and CheckQuorum; pipelined replication with
per-follower flow control and fast backtracking; persistence before dependent messages;
snapshots streamed in chunks; single-server membership changes with learners; leadership
transfer; ReadIndex and opt-in lease reads; and (in :mod:`stalwart.raft.sessions`) client
sessions for exactly-once commands.
"""

from stalwart.raft._admin import ConfChange
from stalwart.raft._config import MUTATIONS, RaftConfig
from stalwart.raft._core import HARD_STATE_KEY
from stalwart.raft._messages import (
    AppendEntries,
    AppendEntriesResponse,
    ApplyEntry,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    LeaderChanged,
    RaftMessage,
    RaftOutput,
    ReadFailed,
    ReadReady,
    RequestVote,
    RequestVoteResponse,
    RestoreSnapshot,
    TimeoutNow,
    VoteGranted,
)
from stalwart.raft._node import RaftNode
from stalwart.raft._progress import ProgressState
from stalwart.raft._status import FollowerStatus, RaftStatus
from stalwart.raft._types import (
    ConfChangeRejectedError,
    Entry,
    EntryKind,
    Index,
    Membership,
    ProposalDroppedError,
    RaftError,
    Role,
    SnapshotRejectedError,
    Term,
    decode_entry,
    encode_entry,
)

__all__ = [
    "HARD_STATE_KEY",
    "MUTATIONS",
    "AppendEntries",
    "AppendEntriesResponse",
    "ApplyEntry",
    "ConfChange",
    "ConfChangeRejectedError",
    "Entry",
    "EntryKind",
    "FollowerStatus",
    "Heartbeat",
    "HeartbeatResponse",
    "Index",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "LeaderChanged",
    "Membership",
    "ProgressState",
    "ProposalDroppedError",
    "RaftConfig",
    "RaftError",
    "RaftMessage",
    "RaftNode",
    "RaftOutput",
    "RaftStatus",
    "ReadFailed",
    "ReadReady",
    "RequestVote",
    "RequestVoteResponse",
    "RestoreSnapshot",
    "Role",
    "SnapshotRejectedError",
    "Term",
    "TimeoutNow",
    "VoteGranted",
    "decode_entry",
    "encode_entry",
]

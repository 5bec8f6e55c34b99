"""Messages between Raft peers (wire tags 300-319), and what Raft hands its application.

Every message carries the sender's term; the sender itself is the ``source`` of ``step``.
"""

from __future__ import annotations

from dataclasses import dataclass

from stalwart.raft._types import Entry, Membership
from stalwart.sansio import NodeId
from stalwart.wire import message


@message(300)
@dataclass(frozen=True, slots=True)
class RequestVote:
    term: int
    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False  # sent after TimeoutNow: voters skip the leader-lease check


@message(301)
@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    term: int
    granted: bool
    pre_vote: bool = False


@message(302)
@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Entries after ``prev_index`` go either as ``entries`` or, as leaders send them, packed
    into one blob (``_types.pack_entries``: decoding a tuple of nested messages cost a follower
    more than applying them); the receiving node unpacks it before anything else."""

    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    packed: bytes = b""


@message(303)
@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """``index`` is the match index on success, the rejected ``prev_index`` otherwise.

    On a reject, ``hint_index``/``hint_term`` let the leader skip a whole conflicting term
    (fast backtracking): ``hint_term`` is the follower's term at ``prev_index`` (0 when its
    log is shorter) and ``hint_index`` the first index it holds of that term (or last + 1).
    """

    term: int
    success: bool
    index: int
    hint_index: int = 0
    hint_term: int = 0


@message(304)
@dataclass(frozen=True, slots=True)
class Heartbeat:
    term: int
    commit: int  # min(follower match, leader commit): never beyond what the follower holds
    round: int  # ReadIndex / lease round this heartbeat confirms


@message(305)
@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    term: int
    round: int


@message(306)
@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    term: int
    index: int
    snap_term: int
    membership: Membership
    offset: int
    chunk: bytes
    done: bool


@message(307)
@dataclass(frozen=True, slots=True)
class InstallSnapshotResponse:
    """``next_offset`` is what the follower wants next; ``done`` once it installed ``index``."""

    term: int
    index: int
    next_offset: int
    done: bool


@message(308)
@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: the target starts an election at once."""

    term: int


RaftMessage = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | TimeoutNow
)


# ---- outputs: what the application must do, in order -------------------------------------


@dataclass(frozen=True, slots=True)
class ApplyEntry:
    """A committed entry to apply, in index order (NOOP and CONFIG entries included)."""

    entry: Entry


@dataclass(frozen=True, slots=True)
class RestoreSnapshot:
    """Replace the application state with this snapshot; entries after ``index`` follow."""

    index: int
    term: int
    membership: Membership
    data: bytes


@dataclass(frozen=True, slots=True)
class ReadReady:
    """A linearizable read ``ctx`` may be served once the application applied ``index``."""

    ctx: int
    index: int


@dataclass(frozen=True, slots=True)
class ReadFailed:
    """Read ``ctx`` could not be confirmed (leadership lost); the client should retry."""

    ctx: int


@dataclass(frozen=True, slots=True)
class LeaderChanged:
    term: int
    leader: NodeId | None


@dataclass(frozen=True, slots=True)
class VoteGranted:
    """Notification: this node voted for ``candidate`` in ``term`` (for audits and checks)."""

    term: int
    candidate: NodeId


RaftOutput = ApplyEntry | RestoreSnapshot | ReadReady | ReadFailed | LeaderChanged | VoteGranted

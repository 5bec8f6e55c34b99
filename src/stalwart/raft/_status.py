"""What an operator sees: role, term, commit/applied and each follower's replication state."""

from __future__ import annotations

from dataclasses import dataclass

from stalwart.raft._progress import ProgressState
from stalwart.raft._types import Role
from stalwart.sansio import NodeId


@dataclass(frozen=True, slots=True)
class FollowerStatus:
    node: NodeId
    voter: bool
    match: int
    next: int
    state: ProgressState
    lag: int  # leader's last index minus match: entries still to replicate
    recent_active: bool
    inflight: int


@dataclass(frozen=True, slots=True)
class RaftStatus:
    node: NodeId
    role: Role
    term: int
    leader: NodeId | None
    vote: NodeId | None
    commit: int
    applied: int
    first_index: int
    last_index: int
    snapshot_index: int
    voters: frozenset[NodeId]
    learners: frozenset[NodeId]
    transferee: NodeId | None
    followers: tuple[FollowerStatus, ...]  # empty unless leader

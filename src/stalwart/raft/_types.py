"""Ids, roles, log entries, membership and their stable encodings."""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NewType

from stalwart.errors import DecodeError, ProtocolError
from stalwart.sansio import NodeId
from stalwart.wire import message

Term = NewType("Term", int)
Index = NewType("Index", int)


class RaftError(ProtocolError):
    """Raft refused a request; nothing changed."""


class ProposalDroppedError(RaftError):
    """The proposal was refused (limit reached, transfer in progress); retry later."""


class ConfChangeRejectedError(RaftError):
    """A membership change was refused (one already pending, learner behind, bad node)."""


class SnapshotRejectedError(RaftError):
    """The application handed Raft a snapshot it cannot take (beyond applied, behind the log)."""


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class EntryKind(enum.IntEnum):
    NORMAL = 0
    NOOP = 1  # a new leader's first entry: lets it commit (and read) in its own term
    CONFIG = 2  # data is an encoded Membership


@message(309)
@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    kind: EntryKind
    data: bytes


_ENTRY_HEADER = struct.Struct(">QB")


def encode_entry(entry: Entry) -> bytes:
    """The storage payload of an entry: term, kind, data (the index is its log position)."""
    return _ENTRY_HEADER.pack(entry.term, entry.kind) + entry.data


def decode_entry(index: int, payload: bytes) -> Entry:
    if len(payload) < _ENTRY_HEADER.size:
        raise DecodeError(f"raft entry {index}: {len(payload)} bytes is shorter than its header")
    term, kind = _ENTRY_HEADER.unpack_from(payload)
    try:
        return Entry(term, index, EntryKind(kind), payload[_ENTRY_HEADER.size :])
    except ValueError:
        raise DecodeError(f"raft entry {index}: unknown kind {kind}") from None


_PACKED_HEADER = struct.Struct(">QBI")  # term, kind, data length
_KINDS = {int(kind): kind for kind in EntryKind}


def pack_entries(entries: Sequence[Entry]) -> bytes:
    """Consecutive entries as one blob (``AppendEntries.packed``): per entry its term, kind,
    data length and data; the indexes are implied (the first follows ``prev_index``)."""
    header = _PACKED_HEADER.pack
    return b"".join([header(e.term, e.kind, len(e.data)) + e.data for e in entries])


def unpack_entries(first_index: int, blob: bytes) -> tuple[Entry, ...]:
    """The entries of :func:`pack_entries`, numbered from ``first_index``; DecodeError otherwise."""
    out: list[Entry] = []
    unpack = _PACKED_HEADER.unpack_from
    size, end, offset, index = _PACKED_HEADER.size, len(blob), 0, first_index
    try:
        while offset < end:
            term, kind, length = unpack(blob, offset)
            offset += size
            if offset + length > end:
                raise DecodeError(f"packed raft entry {index} runs past the end")
            out.append(Entry(term, index, _KINDS[kind], blob[offset : offset + length]))
            offset += length
            index += 1
    except struct.error:
        raise DecodeError(f"packed raft entry {index}: truncated header") from None
    except KeyError:
        raise DecodeError(f"packed raft entry {index}: unknown kind") from None
    return tuple(out)


@message(310)
@dataclass(frozen=True, slots=True)
class Membership:
    """Voters decide elections and commits; learners only receive the log."""

    voters: frozenset[NodeId]
    learners: frozenset[NodeId] = frozenset()

    def __post_init__(self) -> None:
        # A node is a voter or a learner, never both: otherwise quorums are ambiguous.
        assert not (self.voters & self.learners), "node both voter and learner"

    @property
    def members(self) -> frozenset[NodeId]:
        return self.voters | self.learners

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1


def _encode_names(names: frozenset[NodeId]) -> bytes:
    out = bytearray(struct.pack(">H", len(names)))
    for name in sorted(names):
        raw = name.encode()
        out += struct.pack(">H", len(raw)) + raw
    return bytes(out)


def _decode_names(data: bytes, pos: int) -> tuple[frozenset[NodeId], int]:
    try:
        (count,) = struct.unpack_from(">H", data, pos)
        pos += 2
        names = []
        for _ in range(count):
            (size,) = struct.unpack_from(">H", data, pos)
            pos += 2
            if pos + size > len(data):
                raise DecodeError("raft membership: name runs past the end")
            names.append(NodeId(data[pos : pos + size].decode()))
            pos += size
    except (struct.error, UnicodeDecodeError) as exc:
        raise DecodeError(f"raft membership: {exc}") from None
    return frozenset(names), pos


def encode_membership(m: Membership) -> bytes:
    return _encode_names(m.voters) + _encode_names(m.learners)


def decode_membership(data: bytes) -> Membership:
    voters, pos = _decode_names(data, 0)
    learners, pos = _decode_names(data, pos)
    if pos != len(data):
        raise DecodeError("raft membership: trailing bytes")
    if voters & learners:
        raise DecodeError("raft membership: a node is both voter and learner")
    return Membership(voters, learners)


_HARD = struct.Struct(">QH")


def encode_hard_state(term: int, vote: NodeId | None) -> bytes:
    raw = b"" if vote is None else vote.encode()
    return _HARD.pack(term, len(raw)) + raw


def decode_hard_state(data: bytes) -> tuple[int, NodeId | None]:
    try:
        term, size = _HARD.unpack_from(data)
        raw = data[_HARD.size :]
        if len(raw) != size:
            raise DecodeError("raft hard state: bad vote length")
        return term, (NodeId(raw.decode()) if size else None)
    except (struct.error, UnicodeDecodeError) as exc:
        raise DecodeError(f"raft hard state: {exc}") from None


_SNAP = struct.Struct(">QI")


def encode_snapshot(term: int, membership: Membership, data: bytes) -> bytes:
    """Stored snapshot: the term of its last entry, the membership at it, then the app's bytes."""
    m = encode_membership(membership)
    return _SNAP.pack(term, len(m)) + m + data


def decode_snapshot(blob: bytes) -> tuple[int, Membership, bytes]:
    try:
        term, size = _SNAP.unpack_from(blob)
    except struct.error as exc:
        raise DecodeError(f"raft snapshot: {exc}") from None
    start = _SNAP.size
    if start + size > len(blob):
        raise DecodeError("raft snapshot: membership runs past the end")
    return term, decode_membership(blob[start : start + size]), blob[start + size :]

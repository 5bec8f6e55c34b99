"""Delta anti-entropy (Almeida, Shoker, Baquero 2018, algorithm 2 with acknowledgements).

:class:`DeltaSync` wraps one replica. Record each mutator's delta with :meth:`DeltaSync.record`;
call :meth:`DeltaSync.outgoing` periodically (a gossip round) and send what it returns; hand
received :class:`DeltaGroup` s to :meth:`DeltaSync.receive` and send back the :class:`DeltaAck`
it returns; hand acks to :meth:`DeltaSync.on_ack`.

Each round a peer gets the join of every local delta it has not acknowledged (a *delta group*),
or the full state when (a) it is behind the oldest buffered delta (the buffer holds at most
``max_buffered_deltas``), (b) the group encodes to more than ``max_group_bytes``, or (c) nothing
is known about it (start, or after this replica restarted: a new ``epoch``). Lost, duplicated
and reordered messages are harmless: merge is idempotent and commutative, unacknowledged deltas
are resent, and an ack covers everything up to the sequence number it names.

Deltas are sent only to direct peers, not relayed: every pair of replicas must eventually be
able to exchange messages (true of a full mesh once partitions heal). Bounds: the buffer holds
at most ``max_buffered_deltas`` deltas (older ones are dropped; lagging peers get the full
state); a group is at most ``max_group_bytes`` bytes encoded or the full state goes instead.

:class:`DeltaGroup` and :class:`DeltaAck` are ``stalwart.wire`` messages (tags 680, 681), so a
host can ``wire.encode`` them onto a connection as they are.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from stalwart.crdt._base import CRDT
from stalwart.crdt._errors import InvalidOperationError
from stalwart.wire import message

T = TypeVar("T", bound=CRDT)

DEFAULT_MAX_BUFFERED_DELTAS = 1_024
DEFAULT_MAX_GROUP_BYTES = 64 * 1024


class SyncKind(enum.StrEnum):
    DELTA = "delta"  # the join of deltas (seq_from, seq]
    FULL = "full"  # the whole state as of seq


@message(680)
@dataclass(frozen=True, slots=True)
class DeltaGroup:
    """What one replica sends another in a gossip round; ``payload`` is ``T.to_bytes()``."""

    sender: str
    epoch: int
    seq: int
    kind: SyncKind
    payload: bytes


@message(681)
@dataclass(frozen=True, slots=True)
class DeltaAck:
    """``sender`` has merged everything ``to`` sent up to ``seq`` in ``epoch``."""

    sender: str
    to: str
    epoch: int
    seq: int


class DeltaSync(Generic[T]):
    """Tracks which deltas each peer acknowledged and builds what to send next (pure)."""

    __slots__ = ("_acked", "_crdt", "_deltas", "_epoch", "_max_buffered", "_max_group_bytes", "_seq")

    def __init__(
        self,
        crdt: T,
        peers: Iterable[str],
        *,
        epoch: int = 0,
        max_buffered_deltas: int = DEFAULT_MAX_BUFFERED_DELTAS,
        max_group_bytes: int = DEFAULT_MAX_GROUP_BYTES,
    ) -> None:
        if max_buffered_deltas < 1 or max_group_bytes < 1:
            raise InvalidOperationError("max_buffered_deltas and max_group_bytes must be positive")
        self._crdt = crdt
        # -1: nothing known about the peer, so its first message is the full state.
        self._acked = {p: -1 for p in peers if p != crdt.replica}
        self._epoch = epoch
        self._seq = 0
        self._deltas: deque[tuple[int, T]] = deque()
        self._max_buffered = max_buffered_deltas
        self._max_group_bytes = max_group_bytes

    @property
    def crdt(self) -> T:
        return self._crdt

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def buffered(self) -> int:
        return len(self._deltas)

    def acked(self, peer: str) -> int:
        return self._acked[peer]

    def record(self, delta: T) -> None:
        """Buffer a delta returned by a mutator of :attr:`crdt` (already applied locally)."""
        if delta.is_bottom():
            return
        self._seq += 1
        self._deltas.append((self._seq, delta))
        while len(self._deltas) > self._max_buffered:
            self._deltas.popleft()  # lagging peers will get the full state instead
        assert len(self._deltas) <= self._max_buffered  # why: the bound is the memory promise

    def outgoing(self) -> list[tuple[str, DeltaGroup]]:
        """One message per peer that has not acknowledged everything (resent until it does)."""
        out = []
        for peer in sorted(self._acked):
            group = self.group_for(peer)
            if group is not None:
                out.append((peer, group))
        return out

    def group_for(self, peer: str) -> DeltaGroup | None:
        acked = self._acked[peer]
        if acked >= self._seq and acked >= 0:
            return None
        oldest = self._deltas[0][0] if self._deltas else self._seq + 1
        if acked >= 0 and acked + 1 >= oldest:
            joined: T | None = None
            for seq, delta in self._deltas:
                if seq > acked:
                    if joined is None:
                        joined = delta.copy()
                    else:
                        joined.merge(delta)
            assert joined is not None  # why: acked < seq and the buffer reaches back to acked + 1
            payload = joined.to_bytes()
            if len(payload) <= self._max_group_bytes:
                return DeltaGroup(self._crdt.replica, self._epoch, self._seq, SyncKind.DELTA, payload)
        return DeltaGroup(self._crdt.replica, self._epoch, self._seq, SyncKind.FULL, self._crdt.to_bytes())

    def receive(self, group: DeltaGroup) -> DeltaAck:
        """Merge a peer's group (``DecodeError`` on bad bytes, and nothing changes)."""
        incoming = type(self._crdt).from_bytes(group.payload)
        self._crdt.merge(incoming)
        return DeltaAck(self._crdt.replica, group.sender, group.epoch, group.seq)

    def on_ack(self, ack: DeltaAck) -> None:
        """Note a peer's ack; acks from another epoch (before a restart) are ignored."""
        if ack.epoch != self._epoch or ack.sender not in self._acked or ack.seq > self._seq:
            return
        self._acked[ack.sender] = max(self._acked[ack.sender], ack.seq)
        floor = min(self._acked.values(), default=self._seq)
        while self._deltas and self._deltas[0][0] <= floor:
            self._deltas.popleft()  # every peer has it

"""RaftReplica: Raft + client sessions + an application, as one sans-IO protocol.

This is the replicated-state-machine host a store (kv/, the simulator) puts on top of
:class:`RaftNode`: clients step :class:`ClientWrite` and :class:`ClientRead` into any replica;
followers redirect; the leader proposes writes inside a session envelope and answers once the
entry is applied; reads go through ReadIndex (or the lease) and are answered once applied
reaches the confirmed index. The replica snapshots its state every ``snapshot_every`` entries,
or sooner once the entries applied since the last snapshot hold ``snapshot_bytes`` of data (so
the log kept in memory stays bounded in bytes too, whatever the entries' size).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from stalwart.errors import NotLeaderError, ProtocolError
from stalwart.raft._config import RaftConfig
from stalwart.raft._messages import (
    ApplyEntry,
    LeaderChanged,
    RaftMessage,
    RaftOutput,
    ReadFailed,
    ReadReady,
    RestoreSnapshot,
    VoteGranted,
)
from stalwart.raft._node import RaftNode
from stalwart.raft._types import EntryKind, Role
from stalwart.raft.sessions import (
    Command,
    SessionConfig,
    SessionError,
    Sessions,
    SessionStatus,
    StateMachine,
    encode_command,
    pack_command,
)
from stalwart.sansio import DurableState, NodeId, Ready, Rng
from stalwart.wire import message

__all__ = [
    "ClientRead",
    "ClientReply",
    "ClientWrite",
    "ClientWrites",
    "Committed",
    "Elected",
    "RaftReplica",
    "ReplyStatus",
    "Restored",
]

MAX_PENDING_WRITES = 10_000


@message(320)
@dataclass(frozen=True, slots=True)
class ClientWrite:
    request_id: int  # the session sequence number: increasing per client, kept across retries
    payload: bytes
    ack: int = 0  # the client needs no response below this request id any more


@dataclass(frozen=True, slots=True)
class ClientWrites:
    """Many clients' writes stepped at once, proposed as one batch (one log append).

    Each item is ``(client, seq, ack, payload)``, exactly a :class:`ClientWrite` from ``client``;
    each is answered by its own :class:`ClientReply`, as if stepped one by one. In-process only
    (a host batches what its clients sent); the step source is not used.
    """

    writes: Sequence[tuple[NodeId, int, int, bytes]]


@message(321)
@dataclass(frozen=True, slots=True)
class ClientRead:
    request_id: int
    query: bytes
    # True: the leader may answer from its lease (if its Raft config allows lease reads);
    # False: always ReadIndex; None: as the Raft config says (lease_reads).
    lease: bool | None = None


class ReplyStatus(enum.StrEnum):
    OK = "ok"
    REDIRECT = "redirect"  # not run: retry at leader_hint
    INFO = "info"  # may or may not have run (leadership lost before the answer)
    FAIL = "fail"  # not run: the session expired
    BUSY = "busy"  # not run: this leader is overloaded (too many pending requests); retry later


@message(322)
@dataclass(frozen=True, slots=True)
class ClientReply:
    client: NodeId
    request_id: int
    status: ReplyStatus
    result: bytes | None = None
    leader_hint: NodeId | None = None


@dataclass(frozen=True, slots=True)
class Committed:
    """Notification: this replica applied entry ``index`` (for cross-replica checks).

    ``known_by_term`` is this replica's term when it applied the entry: the entry was
    committed in that term or an earlier one (terms only grow), an upper bound checkers use.
    """

    index: int
    term: int
    data: bytes
    known_by_term: int = 0


@dataclass(frozen=True, slots=True)
class Restored:
    """Notification: the state machine now holds the state through ``index``.

    ``boot`` is true for the first output of every incarnation (from the disk's snapshot, or
    the empty state at 0); otherwise a snapshot from the leader replaced the state.
    """

    index: int
    boot: bool


@dataclass(frozen=True, slots=True)
class Elected:
    """Notification: this replica became leader of ``term``.

    ``log_terms`` is its log at that moment as runs ``(first_index, term)`` after its snapshot
    at ``snapshot_index``, through ``last_index``: enough for a checker to verify Leader
    Completeness (an entry committed in an earlier term is in the new leader's log).
    """

    term: int
    leader: NodeId
    snapshot_index: int = 0
    last_index: int = 0
    log_terms: tuple[tuple[int, int], ...] = ()

    def term_at(self, index: int) -> int | None:
        if not self.snapshot_index < index <= self.last_index:
            return None
        found = None
        for first, term in self.log_terms:
            if first > index:
                break
            found = term
        return found


ReplicaOutput = ClientReply | Committed | Restored | Elected | VoteGranted


class QueryMachine(StateMachine, Protocol):
    """A state machine that can also answer read-only queries."""

    def query(self, query: bytes) -> bytes: ...


class RaftReplica:
    def __init__(
        self,
        config: RaftConfig,
        rng: Rng,
        durable: DurableState | None,
        app: QueryMachine,
        *,
        tick_ms: int = 10,
        sessions: SessionConfig | None = None,
        snapshot_every: int = 1000,
        snapshot_bytes: int = 64 << 20,
        notify_committed: bool = True,
    ) -> None:
        self.raft = RaftNode(config, rng, durable)
        # Committed notifications (one per applied entry) are for checkers; a server that does
        # not need them counts applied entries in ``entries_applied`` only.
        self.notify_committed = notify_committed
        self.entries_applied = 0
        self.app = app
        self.sessions = Sessions(app, sessions)
        self.tick_ms = tick_ms
        self.snapshot_every = snapshot_every
        self.snapshot_bytes = snapshot_bytes
        self._bytes_since_snapshot = 0
        self.now_ms = 0
        self.applied = self.raft.applied
        self._writes: dict[tuple[NodeId, int], int] = {}  # (client, seq) -> proposed index
        self._reads: dict[int, tuple[NodeId, int, bytes]] = {}  # ctx -> client, id, query
        self._ready_reads: deque[tuple[int, NodeId, int, bytes]] = deque()  # index, ...
        self._next_ctx = 1
        self._out: list[ReplicaOutput] = []
        self._booted = False
        self._raft_ready: Ready[RaftMessage, RaftOutput] | None = None

    @property
    def node_id(self) -> NodeId:
        return self.raft.id

    # ---- input -----------------------------------------------------------------------------

    def step(self, source: NodeId, message: RaftMessage | ClientWrite | ClientWrites | ClientRead) -> None:
        match message:
            case ClientWrites(writes=writes):
                self._write_many(writes)
            case ClientWrite():
                self._write(source, message)
            case ClientRead():
                self._read(source, message)
            case _:
                self.raft.step(source, message)

    def _redirect(self, client: NodeId, request_id: int) -> None:
        hint = self.raft.transferee or self.raft.leader
        self._out.append(ClientReply(client, request_id, ReplyStatus.REDIRECT, None, hint))

    def _busy(self, client: NodeId, request_id: int) -> None:
        self._out.append(ClientReply(client, request_id, ReplyStatus.BUSY, None, self.raft.id))

    def _refuse(self, client: NodeId, request_id: int) -> None:
        """Not run: redirect unless this is a leader that refused for lack of room (busy)."""
        if self.raft.role is Role.LEADER and self.raft.transferee is None:
            self._busy(client, request_id)
        else:
            self._redirect(client, request_id)

    def _write(self, client: NodeId, msg: ClientWrite) -> None:
        if self.raft.role is not Role.LEADER:
            self._redirect(client, msg.request_id)
            return
        if (client, msg.request_id) in self._writes:
            return  # a copy is pending: its answer (under the same key) answers this one too
        if len(self._writes) >= MAX_PENDING_WRITES:
            self._busy(client, msg.request_id)
            return
        cmd = Command(str(client), msg.request_id, msg.ack, self.now_ms, msg.payload)
        try:
            index = self.raft.propose(encode_command(cmd))
        except ProtocolError:
            self._refuse(client, msg.request_id)
            return
        self._writes[(client, msg.request_id)] = index

    def _write_many(self, writes: Sequence[tuple[NodeId, int, int, bytes]]) -> None:
        raft = self.raft
        if raft.role is not Role.LEADER or raft.transferee is not None:
            for client, seq, _, _ in writes:
                self._redirect(client, seq)
            return
        # Room under both bounds (pending answers here, uncommitted entries in Raft): the rest
        # is refused as busy, before anything of it is proposed.
        uncommitted = raft.log.last_index - raft.commit
        room = min(MAX_PENDING_WRITES - len(self._writes), raft.cfg.max_uncommitted_entries - uncommitted)
        # A write whose (client, seq) is already pending, or earlier in this batch, is not
        # proposed again: it waits for that copy's answer (answers go by key, so a busy answer
        # to the copy would also reach the waiter of the write that runs).
        now = self.now_ms
        pending = self._writes
        datas: list[bytes] = []
        keys: list[tuple[NodeId, int]] = []
        for client, seq, ack, payload in writes:
            key = (client, seq)
            if key in pending:
                continue
            if len(keys) >= room:
                self._busy(client, seq)
                continue
            try:
                datas.append(pack_command(client, seq, ack, now, payload))
            except SessionError:  # a client id too long for a session: refused, not run
                self._out.append(ClientReply(client, seq, ReplyStatus.FAIL))
                continue
            keys.append(key)
            pending[key] = 0  # its index once proposed
        if not datas:
            return
        try:
            indexes = raft.propose_batch(datas)
        except ProtocolError:
            for key in keys:
                del pending[key]
            for client, seq in keys:
                self._refuse(client, seq)
            return
        pending.update(zip(keys, indexes, strict=True))

    def _read(self, client: NodeId, msg: ClientRead) -> None:
        ctx = self._next_ctx
        try:
            self.raft.read_index(ctx, lease=msg.lease)
        except NotLeaderError:
            self._redirect(client, msg.request_id)
            return
        except ProtocolError:
            self._refuse(client, msg.request_id)
            return
        self._next_ctx += 1
        self._reads[ctx] = (client, msg.request_id, msg.query)

    def tick(self) -> None:
        self.now_ms += self.tick_ms
        self.raft.tick()

    # ---- output ----------------------------------------------------------------------------

    def ready(self) -> Ready[RaftMessage, ReplicaOutput]:
        rd = self.raft.ready()
        self._raft_ready = None if rd.is_empty else rd
        boot, self._booted = not self._booted, True
        if boot and not any(isinstance(out, RestoreSnapshot) for out in rd.outputs):
            self._out.append(Restored(0, boot=True))  # a fresh start: the empty state
        for out in rd.outputs:
            self._handle(out, boot)
        while self._ready_reads and self._ready_reads[0][0] <= self.applied:
            _, client, request_id, query = self._ready_reads.popleft()
            self._out.append(ClientReply(client, request_id, ReplyStatus.OK, self.app.query(query)))
        outputs, self._out = tuple(self._out), []
        ready: Ready[RaftMessage, ReplicaOutput] = Ready(rd.persist, rd.must_sync, rd.messages, outputs)
        if ready.is_empty:
            self.advance(ready)  # only internal outputs: the host has nothing to do
        return ready

    def _handle(self, out: RaftOutput, boot: bool) -> None:
        match out:
            case ApplyEntry(entry=entry):
                self.applied = entry.index
                self.entries_applied += 1
                self._bytes_since_snapshot += len(entry.data)
                if self.notify_committed:
                    self._out.append(Committed(entry.index, entry.term, entry.data, self.raft.term))
                if entry.kind is EntryKind.NORMAL:
                    self._apply(entry.data)
            case RestoreSnapshot(index=index, data=data):
                self.sessions.restore(data)
                self._bytes_since_snapshot = 0
                self._out.append(Restored(index, boot))
                self.applied = index
            case ReadReady(ctx=ctx, index=index):
                found = self._reads.pop(ctx, None)
                if found is not None:
                    self._ready_reads.append((index, *found))
            case ReadFailed(ctx=ctx):
                found = self._reads.pop(ctx, None)
                if found is not None:
                    self._redirect(found[0], found[1])
            case VoteGranted():
                self._out.append(out)
            case LeaderChanged(term=term, leader=leader):
                if leader == self.raft.id:
                    self._out.append(self._elected(term, leader))
                else:
                    # Our proposals may still commit under the next leader, or not: unknown.
                    for client, request_id in self._writes:
                        self._out.append(ClientReply(client, request_id, ReplyStatus.INFO, None, leader))
                    self._writes.clear()
                    for ctx, (client, request_id, _) in self._reads.items():
                        self._redirect(client, request_id)
                        del ctx
                    self._reads.clear()
                    # Confirmed reads stay: serving them once applied >= their index is still
                    # linearizable, whoever leads now.

    def _elected(self, term: int, leader: NodeId) -> Elected:
        log = self.raft.log
        runs: list[tuple[int, int]] = []
        for entry in log.entries_from(log.first_index):
            if not runs or runs[-1][1] != entry.term:
                runs.append((entry.index, entry.term))
        return Elected(term, leader, log.snap_index, log.last_index, tuple(runs))

    def _apply(self, data: bytes) -> None:
        client_id, seq, status, response = self.sessions.apply_raw(data)
        if not self._writes:
            return  # nobody waits here (a follower): nothing to answer
        client = NodeId(client_id)
        if self._writes.pop((client, seq), None) is None:
            return
        match status:
            case SessionStatus.APPLIED | SessionStatus.DUPLICATE:
                reply = ClientReply(client, seq, ReplyStatus.OK, response)
            case SessionStatus.STALE:
                reply = ClientReply(client, seq, ReplyStatus.INFO)
            case SessionStatus.EXPIRED:
                reply = ClientReply(client, seq, ReplyStatus.FAIL)
        self._out.append(reply)

    def advance(self, ready: Ready[RaftMessage, ReplicaOutput]) -> None:
        del ready
        if self._raft_ready is not None:
            self.raft.advance(self._raft_ready)
            self._raft_ready = None
        raft = self.raft
        due = (
            raft.applied - raft.log.snap_index >= self.snapshot_every
            or self._bytes_since_snapshot >= self.snapshot_bytes
        )
        if due and raft.applied == self.applied and raft.applied > raft.log.snap_index:
            raft.compact(raft.applied, self.sessions.snapshot())
            self._bytes_since_snapshot = 0

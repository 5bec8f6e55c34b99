"""The replicated register as a sans-IO state machine (see the package docstring for the design)."""

from __future__ import annotations

import enum
from collections import deque

from stalwart.errors import NotLeaderError
from stalwart.register._messages import (
    MAX_ENTRIES_PER_MESSAGE,
    Ack,
    ClientReply,
    ClientRequest,
    Committed,
    Entry,
    RegisterInput,
    RegisterMessage,
    RegisterOutput,
    Replicate,
    RequestError,
    validate_request,
)
from stalwart.sansio import AppendLog, DurableState, Envelope, NodeId, Ready, StorageOp

MAX_PENDING = 1024
"""Writes not yet committed plus reads waiting: beyond this a request is refused (RequestError)."""
RETRY_TICKS = 5
"""The primary resends to a lagging backup (or heartbeats) every this many ticks."""


_NOTHING: Ready[RegisterMessage, RegisterOutput] = Ready()  # immutable, so one will do


class Mutation(enum.Enum):
    """Deliberately broken variants, for proving that the simulator catches them."""

    NONE = "none"
    READ_FROM_BACKUP = "read-from-backup"  # backups answer reads from their possibly stale copy
    ACK_BEFORE_FSYNC = "ack-before-fsync"  # the primary acks from its page cache, alone


class RegisterNode:
    """One replica. ``cluster[0]`` (after sorting) is the fixed primary."""

    def __init__(
        self,
        node_id: NodeId,
        cluster: tuple[NodeId, ...],
        durable: DurableState,
        mutation: Mutation = Mutation.NONE,
    ) -> None:
        if node_id not in cluster:
            raise ValueError(f"{node_id} is not in the cluster {cluster}")
        self._id = node_id
        self._cluster = tuple(sorted(cluster))
        self.primary: NodeId = self._cluster[0]
        self._mutation = mutation
        # The log as the disk kept it; entry i lives at self._log[i - 1] (no compaction).
        if durable.first_index != 1 or durable.snapshot is not None:
            raise ValueError("the register never compacts: its log must start at index 1")
        self._log: list[bytes] = list(durable.log)
        self._entries = [Entry.decode(raw) for raw in self._log]  # refuse a log we cannot read
        self._durable = len(self._log)  # entries known durable on this node's disk
        self.commit = 0  # nothing is known committed after a (re)start
        self.applied = 0
        self.value: int | None = None
        self._match = {peer: 0 for peer in self._cluster if peer != node_id}  # durable there
        self._sent = dict(self._match)  # sent there optimistically (pipelining)
        self._primary_commit = 0  # a backup's latest news of the primary's commit index
        self._waiting_reads: deque[tuple[NodeId, int, int]] = deque()  # (client, request, read_index)
        self._ticks = 0
        self._persist: list[StorageOp] = []
        self._messages: list[Envelope[RegisterMessage]] = []
        self._outputs: list[RegisterOutput] = []
        if self.is_primary:
            self._broadcast_heartbeat()  # learn what the backups hold

    @property
    def node_id(self) -> NodeId:
        return self._id

    @property
    def is_primary(self) -> bool:
        return self._id == self.primary

    @property
    def log(self) -> tuple[bytes, ...]:
        """The log entries (index 1 first), a copy."""
        return tuple(self._log)

    @property
    def last_index(self) -> int:
        return len(self._log)

    # --- the sans-IO contract -------------------------------------------------------------
    def step(self, source: NodeId, message: RegisterInput) -> None:
        match message:
            case ClientRequest():
                self._on_request(source, message)
            case Replicate():
                self._on_replicate(source, message)
            case Ack(last=last):
                if self.is_primary and source in self._match:
                    self._match[source] = max(self._match[source], min(last, self.last_index))
                    self._sent[source] = max(self._sent[source], self._match[source])
                    self._advance_commit()
            case _:
                raise RequestError(f"unexpected message {type(message).__name__}")
        self._check()

    def tick(self) -> None:
        self._ticks += 1
        if self.is_primary and self._ticks % RETRY_TICKS == 0:
            for peer in self._match:  # resend whatever is not known durable there
                self._send_from(peer, self._match[peer] + 1)

    def ready(self) -> Ready[RegisterMessage, RegisterOutput]:
        if not (self._persist or self._messages or self._outputs):
            return _NOTHING
        must_sync = bool(self._persist) and self._mutation is not Mutation.ACK_BEFORE_FSYNC
        return Ready(tuple(self._persist), must_sync, tuple(self._messages), tuple(self._outputs))

    def advance(self, ready: Ready[RegisterMessage, RegisterOutput]) -> None:
        n_persist, n_msg, n_out = len(ready.persist), len(ready.messages), len(ready.outputs)
        del self._persist[:n_persist], self._messages[:n_msg], self._outputs[:n_out]
        if ready.must_sync and ready.persist:
            last = max(op.index for op in ready.persist if isinstance(op, AppendLog))
            self._durable = max(self._durable, last)
            if self.is_primary:
                self._advance_commit()
            else:
                self._messages.append(Envelope(self.primary, Ack(self._durable)))
                self._apply_through(min(self._primary_commit, self._durable))
        self._check()

    # --- handlers ---------------------------------------------------------------------------
    def _on_request(self, client: NodeId, req: ClientRequest) -> None:
        entry = validate_request(client, req)  # raises before any change
        serve_read_here = entry is None and self._mutation is Mutation.READ_FROM_BACKUP
        if not self.is_primary and not serve_read_here:
            raise NotLeaderError(self.primary)
        if entry is None and serve_read_here and not self.is_primary:
            self._outputs.append(ClientReply(req.request_id, "ok", self.value))
            return
        pending = self.last_index - self.commit + len(self._waiting_reads)
        if pending >= MAX_PENDING:
            raise RequestError(f"{pending} requests pending; try again later")
        if entry is None:
            # A read waits until everything logged before it arrived is committed, so it can
            # never miss a write acknowledged before it (even one from before a restart).
            self._waiting_reads.append((client, req.request_id, self.last_index))
            self._answer_reads()
            return
        index = self.last_index + 1
        raw = entry.encode()
        self._log.append(raw)
        self._entries.append(entry)
        self._persist.append(AppendLog(index, raw))
        for peer in self._sent:
            if self._sent[peer] == index - 1:  # a backup that has been sent the rest gets it at once
                self._messages.append(Envelope(peer, Replicate(index, (raw,), self.commit)))
                self._sent[peer] = index
        if self._mutation is Mutation.ACK_BEFORE_FSYNC:
            self._durable = index  # the bug: the page cache is taken for the disk
            self._apply_through(index)

    def _on_replicate(self, source: NodeId, msg: Replicate) -> None:
        if self.is_primary or source != self.primary:
            return  # only the fixed primary replicates; anything else is stale or foreign
        if msg.start > self.last_index + 1:
            self._messages.append(Envelope(self.primary, Ack(self._durable)))  # a gap: say where
            return
        self._primary_commit = max(self._primary_commit, msg.commit)
        fresh = msg.entries[self.last_index + 1 - msg.start :]
        for raw in fresh:
            self._entries.append(Entry.decode(raw))
            self._log.append(raw)
            self._persist.append(AppendLog(self.last_index, raw))
        if not fresh:
            self._messages.append(Envelope(self.primary, Ack(self._durable)))
        # Only apply what is committed and durable here (the Ack follows the fsync).
        self._apply_through(min(msg.commit, self._durable))

    def _send_from(self, peer: NodeId, start: int) -> None:
        entries = tuple(self._log[start - 1 : start - 1 + MAX_ENTRIES_PER_MESSAGE])
        self._messages.append(Envelope(peer, Replicate(start, entries, self.commit)))
        self._sent[peer] = start - 1 + len(entries)

    def _broadcast_heartbeat(self) -> None:
        for peer in self._match:
            self._messages.append(Envelope(peer, Replicate(self.last_index + 1, (), self.commit)))

    def _advance_commit(self) -> None:
        if self._mutation is Mutation.ACK_BEFORE_FSYNC:
            return
        acked = sorted([self._durable, *self._match.values()], reverse=True)
        majority = len(self._cluster) // 2 + 1
        self._apply_through(acked[majority - 1])

    def _apply_through(self, index: int) -> None:
        index = min(index, self.last_index)
        while self.applied < index:
            self.applied += 1
            raw, entry = self._log[self.applied - 1], self._entries[self.applied - 1]
            ok = entry.f == "write" or self.value == entry.old
            if ok:
                self.value = entry.new
            self._outputs.append(Committed(self.applied, raw))
            if self.is_primary:
                self._outputs.append(ClientReply(entry.request_id, "ok" if ok else "fail"))
        self.commit = max(self.commit, index)
        self._answer_reads()

    def _answer_reads(self) -> None:
        while self._waiting_reads and self._waiting_reads[0][2] <= self.commit:
            _client, rid, _ = self._waiting_reads.popleft()
            self._outputs.append(ClientReply(rid, "ok", self.value))

    def _check(self) -> None:
        # Why: a reply or a read must never rest on an entry that is neither logged nor (in the
        # correct protocol) durable on this node; and replicas only ever apply a log prefix.
        assert self.applied == self.commit <= self.last_index, (self.applied, self.commit)
        assert self._mutation is not Mutation.NONE or self.commit <= self._durable
        assert self._durable <= self.last_index == len(self._entries)

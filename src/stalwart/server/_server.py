"""KVServer: one node of the store: RaftReplica(KVMachine) on the runtime, plus request routing.

Requests from the binary client listener and the HTTP API both come here. Writes are stamped
with this node's wall clock (the TTL and session clock), stepped into the replica as
``ClientWrite(seq, payload, ack)`` under the client's session id, and answered when the replica
answers. Reads go through ReadIndex (linearizable), the leader's lease, or the local state.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import typing
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

from stalwart.client._protocol import Consistency, Response, ResponseStatus
from stalwart.errors import DecodeError
from stalwart.kv import (
    MAX_VALUE_BYTES,
    KVConfig,
    KVMachine,
    Tick,
    command_from,
    decode_query,
    encode_command,
    put_fields,
    restamp,
    unpack_message,
)
from stalwart.kv import Cas as KvCas
from stalwart.raft import RaftConfig, RaftMessage, Role
from stalwart.raft.replica import (
    ClientRead,
    ClientReply,
    ClientWrite,
    ClientWrites,
    Committed,
    Elected,
    RaftReplica,
    ReplicaOutput,
    ReplyStatus,
    Restored,
)
from stalwart.raft.sessions import MAX_CLIENT_ID_BYTES, SessionConfig
from stalwart.runtime import HostConfig, Node, RuntimeConfig
from stalwart.sansio import DurableState, NodeId
from stalwart.server._config import ServerConfig
from stalwart.server._metrics import Metrics
from stalwart.storage import NodeStorage

log = logging.getLogger("stalwart.server")

READ_SOURCE = NodeId("~read")
BATCH_SOURCE = NodeId("~writes")
TICK_EVERY_S = 1.0
TTL_RESCAN_MS = 60_000  # a leader that found TTL keys by scanning looks again this often
PEER_MESSAGES: tuple[type, ...] = typing.get_args(RaftMessage)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class _WallClockReplica(RaftReplica):
    """The replica stamps proposals with ``now_ms``: make that this node's wall clock."""

    def tick(self) -> None:
        super().tick()
        self.now_ms = wall_ms()


@dataclass(frozen=True, slots=True)
class Answer:
    """What a request gets: a Response without its connection-specific request id."""

    status: ResponseStatus
    result: bytes | None = None
    leader_hint: str | None = None
    error: str = ""

    def response(self, request_id: int) -> Response:
        return Response(request_id, self.status, self.result, self.leader_hint, self.error[:500])


def _error(text: str) -> Answer:
    return Answer(ResponseStatus.ERROR, error=text)


def _bad_command(command: bytes, exc: DecodeError) -> Answer:
    if len(command) > MAX_VALUE_BYTES:
        return _error(f"bad command of {len(command)} bytes: values are at most {MAX_VALUE_BYTES} bytes")
    return _error(f"bad command: {exc}")


BUSY = Answer(ResponseStatus.BUSY, error="too many pending requests")
TIMED_OUT = Answer(ResponseStatus.UNKNOWN, error="no outcome within the node's request timeout")
MAX_CLIENT_BYTES = MAX_CLIENT_ID_BYTES


class AnswerSink(Protocol):
    """Who gets answers: a client connection, or futures (:meth:`KVServer.write`)."""

    def answer(self, waiter: Waiter, answer: Answer) -> None: ...


# Who waits for one request: (sink, its token, when it started, its op); the sink reads the rest.
Waiter = tuple[AnswerSink, Any, float, str]


class _FutureSink:
    """Answers a request whose token is an asyncio future."""

    def answer(self, waiter: Waiter, answer: Answer) -> None:
        future = waiter[1]
        if not future.done():
            future.set_result(answer)


_FUTURES = _FutureSink()


class KVServer:
    """``async with KVServer(config) as server: ...``; the listeners attach to it."""

    def __init__(self, config: ServerConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.machine = KVMachine(KVConfig(history_events=config.history_events))
        self.metrics = metrics or Metrics(config.node_id)
        self.storage = NodeStorage(config.data_dir, fsync=config.fsync)
        self._replica: _WallClockReplica | None = None
        # (session, seq) -> who waits, each as (its id, waiter); a write sent again while pending
        # adds a waiter, and every waiter counts as a pending request.
        self._writes: dict[tuple[str, int], list[tuple[int, Waiter]]] = {}
        self._write_waiters = 0
        self._reads: dict[int, Waiter] = {}
        self._next_read = 1
        self._next_write = 1
        self._ttl_until_ms = 0  # a TTL key may exist until then: the leader proposes ticks
        self._rescan_ttl = False
        self._rescan_at_ms = 0
        self._tick_client = NodeId(f"~tick-{config.node_id}")
        raft_config = RaftConfig(
            node_id=config.node_id,
            voters=frozenset(config.members),
            election_ticks=config.election_ticks,
            heartbeat_ticks=config.heartbeat_ticks,
            # Lease reads are allowed (and with them Raft's restart vote guard is on); each read
            # says whether it wants the lease: only ``lease`` consistency does (docs/kv.md).
            lease_reads=True,
        )
        sessions = SessionConfig(session_timeout_ms=config.session_timeout_ms)

        def build(durable: DurableState) -> _WallClockReplica:
            replica = _WallClockReplica(
                raft_config, random.Random(), durable, self.machine,
                tick_ms=config.tick_ms, sessions=sessions, snapshot_every=config.snapshot_every,
                notify_committed=False,
            )  # fmt: skip
            replica.now_ms = wall_ms()
            self._replica = replica
            return replica

        runtime = RuntimeConfig(host=HostConfig(tick_ms=float(config.tick_ms)))
        self.node: Node[Any, Any, ReplicaOutput] = Node(
            config.node_id, cluster_key=config.cluster_key, storage=self.storage,
            protocol_factory=build, accept=PEER_MESSAGES, on_output=self._on_output,
            listen=config.listen, peers=config.peers, config=runtime,
        )  # fmt: skip
        self._ticker: asyncio.Task[None] | None = None
        # (deadline, (session, seq) and the waiter's id of a write, or None and a read's id), in
        # deadline order. Only ids: an answered request leaves its waiter (and its answer) behind
        # at once; its entry is dropped from the front as answers come, and the whole queue is
        # compacted if it reaches twice the pending limit (a request stuck at the front).
        self._deadlines: deque[tuple[float, tuple[str, int] | None, int]] = deque()

    @property
    def replica(self) -> RaftReplica:
        assert self._replica is not None, "the replica exists once the node started"
        return self._replica

    @property
    def is_leader(self) -> bool:
        return self._replica is not None and self._replica.raft.role is Role.LEADER

    @property
    def leader(self) -> NodeId | None:
        return None if self._replica is None else self._replica.raft.leader

    async def __aenter__(self) -> Self:
        await self.node.__aenter__()
        self._ticker = asyncio.create_task(self._tick_loop())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        writes, self._writes = self._writes, {}
        self._write_waiters = 0
        self._deadlines.clear()
        for waiting in writes.values():
            for _, waiter in waiting:
                waiter[0].answer(waiter, Answer(ResponseStatus.UNKNOWN, error="node shutting down"))
        reads, self._reads = self._reads, {}
        for waiter in reads.values():
            waiter[0].answer(waiter, Answer(ResponseStatus.REDIRECT, error="node shutting down"))
        await self.node.__aexit__(exc_type, exc, tb)

    # ---- requests ----------------------------------------------------------------------------

    def _pending(self) -> int:
        return self._write_waiters + len(self._reads)

    def _redirect(self) -> Answer:
        return Answer(ResponseStatus.REDIRECT, leader_hint=self.leader)

    async def write(self, client: str, seq: int, ack: int, command: bytes) -> Answer:
        """Run one kv command under session ``client`` with sequence ``seq`` (exactly once)."""
        answer = self.submit_write(client, seq, ack, command)
        return answer if isinstance(answer, Answer) else await answer

    async def read(self, query: bytes, consistency: Consistency) -> Answer:
        answer = self.submit_read(query, consistency)
        return answer if isinstance(answer, Answer) else await answer

    def submit_write(
        self, client: str, seq: int, ack: int, command: bytes
    ) -> Answer | asyncio.Future[Answer]:
        """:meth:`write` without a coroutine: an answer now, or a future of it."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.write_batch([(client, seq, ack, command, (_FUTURES, future, 0.0, "write"))])
        return future.result() if future.done() else future

    def submit_read(self, query: bytes, consistency: Consistency) -> Answer | asyncio.Future[Answer]:
        """:meth:`read` without a coroutine: an answer now, or a future of it."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.read_into(query, consistency, (_FUTURES, future, 0.0, "read"))
        return future.result() if future.done() else future

    def write_batch(self, items: Sequence[tuple[str, int, int, bytes, Waiter]]) -> None:
        """Run many kv commands ``(client, seq, ack, command, waiter)``; each waiter is answered once.

        Refusals are answered at once; the accepted writes are stepped into the replica as one
        batch (one proposal, one log append) and answered when the replica answers them, or
        ``unknown`` after the request timeout.
        """
        accepted: list[tuple[NodeId, int, int, bytes]] = []
        members = self.config.members
        leader = self.is_leader
        room = self.config.max_pending_requests - self._pending()
        now = wall_ms()
        writes = self._writes
        deadlines = self._deadlines
        deadline = self._deadline()
        wid = self._next_write
        for client, seq, ack, command, waiter in items:
            if not client or client[0] == "~" or client in members or len(client.encode()) > MAX_CLIENT_BYTES:
                refusal = _error(
                    f"a client id is non-empty, at most {MAX_CLIENT_BYTES} bytes, does not start "
                    "with '~' and is not a node id"
                )
            elif seq < 1 or ack < 0:
                refusal = _error("seq must be >= 1 and ack >= 0")
            else:
                try:
                    obj = unpack_message(command)
                    put = put_fields(obj)  # a PUT is checked without building a Put
                    if put is None:
                        cmd, _ = command_from(obj)
                        ttl = cmd.ttl_ms if isinstance(cmd, KvCas) else None
                    else:
                        cmd, ttl = None, put[2]
                except DecodeError as exc:
                    refusal = _bad_command(command, exc)
                else:
                    if type(cmd) is Tick:
                        refusal = _error("tick commands are internal to the cluster")
                    elif not leader:
                        refusal = self._redirect()
                    elif len(accepted) >= room:
                        refusal = BUSY
                    else:
                        if ttl is not None:
                            self._ttl_until_ms = max(self._ttl_until_ms, now + ttl + 1000)
                        key = (client, seq)
                        waiting = writes.get(key)
                        if waiting is None:
                            writes[key] = [(wid, waiter)]
                        else:
                            waiting.append((wid, waiter))
                        deadlines.append((deadline, key, wid))
                        wid += 1
                        accepted.append((NodeId(client), seq, ack, restamp(command, obj, now)))
                        continue
            waiter[0].answer(waiter, refusal)
        if accepted:
            self._next_write = wid
            self._write_waiters += len(accepted)
            self._trim_deadlines()
            self.metrics.counters.proposals += len(accepted)
            self.node.deliver(BATCH_SOURCE, ClientWrites(accepted))

    def read_into(self, query: bytes, consistency: Consistency, waiter: Waiter) -> None:
        """Serve one read; ``waiter`` is answered once (now, or when the replica answers)."""
        try:
            decode_query(query)
        except DecodeError as exc:
            waiter[0].answer(waiter, _error(f"bad query: {exc}"))
            return
        if consistency is Consistency.STALE:
            waiter[0].answer(waiter, Answer(ResponseStatus.OK, self.machine.query(query)))
            return
        if not self.is_leader:
            waiter[0].answer(waiter, self._redirect())
            return
        if self._pending() >= self.config.max_pending_requests:
            waiter[0].answer(waiter, BUSY)
            return
        rid = self._next_read
        self._next_read += 1
        self._reads[rid] = waiter
        self._deadlines.append((self._deadline(), None, rid))
        self._trim_deadlines()
        lease = consistency is Consistency.LEASE
        self.node.deliver(READ_SOURCE, ClientRead(rid, query, lease))

    def _deadline(self) -> float:
        # The sweeper (in _tick_loop) answers requests pending past the request timeout.
        return time.monotonic() + self.config.request_timeout_ms / 1000

    def _is_pending(self, key: tuple[str, int] | None, rid: int) -> bool:
        if key is None:
            return rid in self._reads
        waiting = self._writes.get(key)
        return waiting is not None and any(w[0] == rid for w in waiting)

    def _trim_deadlines(self) -> None:
        """Drop the entries of answered requests from the front; compact the queue if it still
        holds twice the pending limit (amortized O(1): the compacted queue is within the limit)."""
        deadlines = self._deadlines
        while deadlines and not self._is_pending(deadlines[0][1], deadlines[0][2]):
            deadlines.popleft()
        if len(deadlines) >= 2 * self.config.max_pending_requests:
            self._deadlines = deque(e for e in deadlines if self._is_pending(e[1], e[2]))

    def _sweep(self) -> None:
        """Answer UNKNOWN to requests pending longer than the request timeout (oldest first)."""
        now = time.monotonic()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, key, rid = deadlines.popleft()
            if key is None:
                read = self._reads.pop(rid, None)
                if read is not None:
                    read[0].answer(read, TIMED_OUT)
                continue
            waiting = self._writes.get(key)
            if waiting is None:
                continue
            for i, (wid, waiter) in enumerate(waiting):
                if wid == rid:
                    del waiting[i]
                    if not waiting:
                        del self._writes[key]
                    self._write_waiters -= 1
                    waiter[0].answer(waiter, TIMED_OUT)
                    break
        self._trim_deadlines()

    # ---- outputs -----------------------------------------------------------------------------

    def _on_output(self, out: ReplicaOutput) -> None:
        match out:
            case ClientReply():
                self._reply(out)
            case Committed():
                pass  # not asked for (notify_committed=False): replica.entries_applied counts
            case Restored(index=index, boot=boot):
                log.info("state restored node=%s index=%d boot=%s", self.config.node_id, index, boot)
            case Elected(term=term):
                log.info("elected leader node=%s term=%d", self.config.node_id, term)
                self.metrics.counters.elections_won += 1
                # TTL keys written under earlier leaders: look once the log of those terms is
                # applied (our no-op commits them all), in the tick loop.
                self._rescan_ttl = True
            case _:
                pass  # VoteGranted: nothing to do here

    def _reply(self, out: ClientReply) -> None:
        match out.status:
            case ReplyStatus.OK:
                answer = Answer(ResponseStatus.OK, out.result)
            case ReplyStatus.BUSY:
                answer = BUSY
            case ReplyStatus.REDIRECT:
                answer = Answer(ResponseStatus.REDIRECT, leader_hint=out.leader_hint)
            case ReplyStatus.INFO:
                answer = Answer(
                    ResponseStatus.UNKNOWN, leader_hint=out.leader_hint, error="leadership changed"
                )
            case ReplyStatus.FAIL:
                answer = Answer(ResponseStatus.EXPIRED, error="session expired: not run; use a new client id")
            case _:
                typing.assert_never(out.status)
        if out.client == READ_SOURCE:
            waiter = self._reads.pop(out.request_id, None)
            if waiter is not None:
                waiter[0].answer(waiter, answer)
        else:
            waiting = self._writes.pop((str(out.client), out.request_id), ())
            self._write_waiters -= len(waiting)
            for _, waiter in waiting:
                waiter[0].answer(waiter, answer)

    async def _tick_loop(self) -> None:
        """The leader proposes a Tick about once a second while TTL keys may exist."""
        while True:
            await asyncio.sleep(TICK_EVERY_S)
            self._sweep()
            now = wall_ms()
            if self.is_leader and 0 < self._rescan_at_ms <= now:
                self._rescan_at_ms, self._rescan_ttl = 0, True
            if self._rescan_ttl and self.is_leader and self.replica.applied >= self.replica.raft.commit:
                self._rescan_ttl = False
                if self.machine.has_ttl_keys():  # tick for a minute, then look again
                    self._ttl_until_ms = max(self._ttl_until_ms, now + TTL_RESCAN_MS)
                    self._rescan_at_ms = now + TTL_RESCAN_MS - 1000
            if self.is_leader and now <= self._ttl_until_ms:
                self.node.deliver(self._tick_client, ClientWrite(now, encode_command(Tick(), now), 0))
            self.metrics.observe(self)

    # ---- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st = self.replica.raft.status()
        cfg = self.config
        return {
            "node": st.node,
            "role": st.role.name.lower(),
            "term": st.term,
            "leader": st.leader,
            "commit": st.commit,
            "applied": self.replica.applied,
            "last_index": st.last_index,
            "snapshot_index": st.snapshot_index,
            "revision": self.machine.revision,
            "keys": len(self.machine),
            "voters": sorted(st.voters),
            "followers": [{"node": f.node, "match": f.match, "lag": f.lag} for f in st.followers],
            "leader_http": _addr(cfg.peer_http.get(st.leader)) if st.leader is not None else None,
            "fsync": cfg.fsync,
            "pending_requests": self._pending(),
            "runtime": self.node.stats.snapshot(),
        }


def _addr(address: tuple[str, int] | None) -> str | None:
    return None if address is None else f"{address[0]}:{address[1]}"

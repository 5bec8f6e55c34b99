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
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from stalwart.client._protocol import Consistency, Response, ResponseStatus
from stalwart.errors import DecodeError
from stalwart.kv import (
    MAX_VALUE_BYTES,
    KVConfig,
    KVMachine,
    Tick,
    decode_command,
    decode_query,
    encode_command,
)
from stalwart.kv import Cas as KvCas
from stalwart.kv import Put as KvPut
from stalwart.raft import RaftConfig, RaftMessage, Role
from stalwart.raft.replica import (
    ClientRead,
    ClientReply,
    ClientWrite,
    Committed,
    Elected,
    RaftReplica,
    ReplicaOutput,
    ReplyStatus,
    Restored,
)
from stalwart.raft.sessions import SessionConfig
from stalwart.runtime import HostConfig, Node, RuntimeConfig
from stalwart.sansio import DurableState, NodeId
from stalwart.server._config import ServerConfig
from stalwart.server._metrics import Metrics
from stalwart.storage import NodeStorage

log = logging.getLogger("stalwart.server")

READ_SOURCE = NodeId("~read")
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


class KVServer:
    """``async with KVServer(config) as server: ...``; the listeners attach to it."""

    def __init__(self, config: ServerConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.machine = KVMachine(KVConfig(history_events=config.history_events))
        self.metrics = metrics or Metrics(config.node_id)
        self.storage = NodeStorage(config.data_dir, fsync=config.fsync)
        self._replica: _WallClockReplica | None = None
        self._writes: dict[tuple[str, int], list[asyncio.Future[Answer]]] = {}
        self._reads: dict[int, asyncio.Future[Answer]] = {}
        self._next_read = 1
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
        self._deadlines: deque[tuple[float, asyncio.Future[Answer]]] = deque()

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
        for futures in self._writes.values():
            for future in futures:
                if not future.done():
                    future.set_result(Answer(ResponseStatus.UNKNOWN, error="node shutting down"))
        for future in self._reads.values():
            if not future.done():
                future.set_result(Answer(ResponseStatus.REDIRECT, error="node shutting down"))
        await self.node.__aexit__(exc_type, exc, tb)

    # ---- requests ----------------------------------------------------------------------------

    def _pending(self) -> int:
        return len(self._writes) + len(self._reads)

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
        """:meth:`write` without a coroutine: an answer now, or a future of it (the listener's path)."""
        if not client or client.startswith("~") or client in self.config.members:
            return _error("a client id is non-empty, does not start with '~' and is not a node id")
        if seq < 1 or ack < 0:
            return _error("seq must be >= 1 and ack >= 0")
        try:
            cmd, _ = decode_command(command)
        except DecodeError as exc:
            if len(command) > MAX_VALUE_BYTES:
                return _error(
                    f"bad command of {len(command)} bytes: values are at most {MAX_VALUE_BYTES} bytes"
                )
            return _error(f"bad command: {exc}")
        if isinstance(cmd, Tick):
            return _error("tick commands are internal to the cluster")
        if not self.is_leader:
            return self._redirect()
        if self._pending() >= self.config.max_pending_requests:
            return Answer(ResponseStatus.BUSY, error="too many pending requests")
        if isinstance(cmd, KvPut | KvCas) and cmd.ttl_ms is not None:
            self._ttl_until_ms = max(self._ttl_until_ms, wall_ms() + cmd.ttl_ms + 1000)
        key = (client, seq)
        future = self._future()
        self._writes.setdefault(key, []).append(future)
        future.add_done_callback(lambda done: self._drop_write(key, done))
        self.metrics.counters.proposals += 1
        self.node.deliver(NodeId(client), ClientWrite(seq, encode_command(cmd, wall_ms()), ack))
        return future

    def _future(self) -> asyncio.Future[Answer]:
        # The sweeper (in _tick_loop) answers futures pending past the request timeout.
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._deadlines.append((time.monotonic() + self.config.request_timeout_ms / 1000, future))
        return future

    def _drop_write(self, key: tuple[str, int], future: asyncio.Future[Answer]) -> None:
        futures = self._writes.get(key, [])
        if future in futures:
            futures.remove(future)
        if not futures:
            self._writes.pop(key, None)

    def _sweep(self) -> None:
        """Answer UNKNOWN to requests pending longer than the request timeout (oldest first)."""
        now = time.monotonic()
        while self._deadlines and (self._deadlines[0][0] <= now or self._deadlines[0][1].done()):
            _, future = self._deadlines.popleft()
            if not future.done():
                future.set_result(
                    Answer(ResponseStatus.UNKNOWN, error="no outcome within the node's request timeout")
                )

    def submit_read(self, query: bytes, consistency: Consistency) -> Answer | asyncio.Future[Answer]:
        """:meth:`read` without a coroutine: an answer now, or a future of it."""
        try:
            decode_query(query)
        except DecodeError as exc:
            return _error(f"bad query: {exc}")
        if consistency is Consistency.STALE:
            return Answer(ResponseStatus.OK, self.machine.query(query))
        if not self.is_leader:
            return self._redirect()
        if self._pending() >= self.config.max_pending_requests:
            return Answer(ResponseStatus.BUSY, error="too many pending requests")
        rid = self._next_read
        self._next_read += 1
        future = self._future()
        self._reads[rid] = future
        future.add_done_callback(lambda _: self._reads.pop(rid, None))
        lease = consistency is Consistency.LEASE
        self.node.deliver(READ_SOURCE, ClientRead(rid, query, lease))
        return future

    # ---- outputs -----------------------------------------------------------------------------

    def _on_output(self, out: ReplicaOutput) -> None:
        match out:
            case ClientReply():
                self._reply(out)
            case Committed():
                self.metrics.counters.applied_entries += 1
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
            case ReplyStatus.REDIRECT:
                answer = Answer(ResponseStatus.REDIRECT, leader_hint=out.leader_hint)
            case ReplyStatus.BUSY:
                answer = Answer(ResponseStatus.BUSY, error="leader overloaded: too many pending requests")
            case ReplyStatus.INFO:
                answer = Answer(
                    ResponseStatus.UNKNOWN, leader_hint=out.leader_hint, error="leadership changed"
                )
            case ReplyStatus.FAIL:
                answer = Answer(ResponseStatus.EXPIRED, error="session expired: not run; use a new client id")
            case _:
                typing.assert_never(out.status)
        if out.client == READ_SOURCE:
            futures = [f] if (f := self._reads.pop(out.request_id, None)) is not None else []
        else:
            futures = self._writes.pop((str(out.client), out.request_id), [])
        for future in futures:
            if not future.done():
                future.set_result(answer)

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
        }


def _addr(address: tuple[str, int] | None) -> str | None:
    return None if address is None else f"{address[0]}:{address[1]}"

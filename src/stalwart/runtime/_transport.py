"""TCP transport: one authenticated connection per peer pair, batched writes, bounded queues.

Connection rule: of two configured peers, the one with the *lower* node id dials (string
order); the other only accepts. A process that does not listen (a client) dials every peer it
knows. An accepted connection is authenticated first (the wire handshake: both sides send a
hello with a fresh ``os.urandom`` nonce and prove the cluster key) and then belongs to the node
id the handshake proved. If a second connection for the same peer is authenticated, the
*newest wins* and the older one is closed: a peer that restarted dials again while the old
socket may still look open here, and the new one is the one that works.

Frames on the wire are ``wire.encode_frame(session.seal(batch))``, where a batch is
``wire.join_encoded(items)`` of the encoded messages queued for the peer: one msgpack array of
message envelopes, which the receiver unpacks with one call (``wire.decode_many``). Anything a
peer sends that does not authenticate, frame or decode is a protocol error from that peer:
logged and the connection dropped; a peer is never obeyed on unauthenticated bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from stalwart import wire
from stalwart.errors import AuthenticationError, DecodeError
from stalwart.runtime._backoff import Backoff, BackoffPolicy
from stalwart.runtime._errors import PeerProtocolError, RuntimeConfigError
from stalwart.runtime._queue import OutboundQueue, QueueLimits
from stalwart.runtime._stats import RuntimeStats
from stalwart.sansio import NodeId, Rng
from stalwart.wire import decode_many, encode, join_encoded

log = logging.getLogger("stalwart.runtime.transport")

I = TypeVar("I")  # noqa: E741  (the messages this transport delivers)
Address = tuple[str, int]
NONCE_BYTES = 32
_FRAME_FIXED_OVERHEAD_BYTES = 64
"""Room in a frame for its length header, the seal's MAC and the batch's array header."""
_ITEM_OVERHEAD_BYTES = 5
"""Room per batched message. A batch adds no per-message header (see ``wire.join_encoded``); the
5 bytes (a msgpack bin header, the batch format before) are kept so limits stay as they were."""


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Limits and timeouts of the transport."""

    max_frame_bytes: int = 1024 * 1024
    queue: QueueLimits = field(default_factory=QueueLimits)
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    connect_timeout_ms: float = 2_000.0
    handshake_timeout_ms: float = 2_000.0
    max_inbound_connections: int = 128
    max_client_peers: int = 1_024
    flush_timeout_ms: float = 500.0
    read_chunk_bytes: int = 256 * 1024
    keepalive_ms: float = 2_000.0
    idle_timeout_ms: float = 10_000.0
    max_frames_per_write: int = 8

    def __post_init__(self) -> None:
        if self.queue.batch_max_bytes + self.frame_overhead_bytes > self.max_frame_bytes:
            raise RuntimeConfigError(
                f"a full batch ({self.queue.batch_max_bytes} bytes + {self.frame_overhead_bytes} of headers) "
                f"must fit max_frame_bytes ({self.max_frame_bytes})"
            )
        if min(self.max_inbound_connections, self.max_client_peers, self.read_chunk_bytes) < 1:
            raise RuntimeConfigError("connection limits and read_chunk_bytes must be >= 1")
        if (
            min(self.connect_timeout_ms, self.handshake_timeout_ms, self.flush_timeout_ms, self.keepalive_ms)
            <= 0
        ):
            raise RuntimeConfigError("timeouts must be > 0")
        if self.idle_timeout_ms < 2 * self.keepalive_ms:
            raise RuntimeConfigError("idle_timeout_ms must be at least twice keepalive_ms")
        if self.max_frames_per_write < 1:
            raise RuntimeConfigError("max_frames_per_write must be >= 1")

    @property
    def frame_overhead_bytes(self) -> int:
        """The most a frame adds to the messages it carries (headers, MAC)."""
        return _FRAME_FIXED_OVERHEAD_BYTES + _ITEM_OVERHEAD_BYTES * self.queue.batch_max_messages

    @property
    def max_message_bytes(self) -> int:
        """The largest encoded message that fits one frame."""
        return self.max_frame_bytes - self.frame_overhead_bytes


class LinkState(enum.Enum):
    """Where the link to one peer stands."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"  # this side is dialling or in the handshake
    CONNECTED = "connected"  # authenticated; messages flow


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One peer (or connected client) as an operator sees it."""

    peer_id: NodeId
    state: LinkState
    dials: bool
    is_client: bool
    queued_messages: int
    queued_bytes: int
    remote: str | None


class _Closed(Exception):
    """Internal: the connection ended (EOF, replaced or shut down)."""


class _Peer:
    """One peer (or connected client): its queue and its current connection, if any."""

    def __init__(self, peer_id: NodeId, address: Address | None, limits: QueueLimits) -> None:
        self.id = peer_id
        self.address = address
        self.queue = OutboundQueue(limits)
        self.has_data = asyncio.Event()
        self.drained = asyncio.Event()
        self.drained.set()
        # idle => nothing queued, has_data clear, drained set (the writer found the queue empty):
        # send() touches the two events only on that transition, off its hot path.
        self.idle = True
        self.dialing = False
        self.conn: _Conn | None = None
        self.connected = asyncio.Event()


class _Conn:
    def __init__(
        self, peer: _Peer, writer: asyncio.StreamWriter, session: wire.AuthSession, remote: str
    ) -> None:
        self.peer = peer
        self.writer = writer
        self.session = session
        self.remote = remote


class Transport(Generic[I]):
    """Carries messages between this node and its peers; ``send`` never blocks."""

    def __init__(
        self,
        node_id: NodeId,
        cluster_key: bytes,
        deliver: Callable[[NodeId, I], None],
        accept: tuple[type, ...],
        *,
        listen: Address | None = None,
        peers: Mapping[NodeId, Address] | None = None,
        config: TransportConfig | None = None,
        stats: RuntimeStats | None = None,
        rng: Rng | None = None,
        inbound_space: Callable[[], Awaitable[None]] | None = None,
        on_link: Callable[[NodeId, LinkState], None] | None = None,
    ) -> None:
        # The handshake checks the key's length and the node id at once, before any socket.
        wire.Handshake(cluster_key, node_id, os.urandom(NONCE_BYTES), True)
        self.node_id = node_id
        self._key = cluster_key
        self._deliver = deliver
        self._accept = frozenset(accept)
        self._listen = listen
        self._config = config or TransportConfig()
        self._max_message_bytes = self._config.max_message_bytes
        self.stats = stats or RuntimeStats()
        self._rng: Rng = rng or random.Random(os.urandom(16))
        self._inbound_space = inbound_space
        self._on_link = on_link
        self._peers: dict[NodeId, _Peer] = {
            pid: _Peer(pid, addr, self._config.queue) for pid, addr in (peers or {}).items()
        }
        if node_id in self._peers:
            raise RuntimeConfigError(f"node {node_id} lists itself as a peer")
        self._server: asyncio.Server | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._inbound_connections = 0
        self._closing = False
        self.address: Address | None = None

    # -- public API -------------------------------------------------------------------------

    async def start(self, tg: asyncio.TaskGroup) -> None:
        """Listen (if configured) and start dialling the peers this node dials."""
        self._tg = tg
        if self._listen is not None:
            host, port = self._listen
            try:
                self._server = await asyncio.start_server(self._on_accept, host, port)
            except OSError as exc:
                raise RuntimeConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
            sockname = self._server.sockets[0].getsockname()
            self.address = (str(sockname[0]), int(sockname[1]))
        for peer in self._peers.values():
            if self._dials(peer):
                self._spawn(self._dial_loop(peer))

    def send(self, to: NodeId, payload: object) -> None:
        """Queue ``payload`` for ``to``; dropped and counted if ``to`` is unknown or it is too big.

        This is the hot path of every message: it encodes (so a local encoding bug raises here,
        at the sender) and queues; the peer's writer task batches and writes.
        """
        peer = self._peers.get(to)
        if peer is None or self._closing:
            self.stats.drops_unroutable += 1
            return
        data = encode(payload)
        if len(data) > self._max_message_bytes:
            self.stats.drops_oversize += 1
            log.error("message too large node=%s peer=%s size=%d", self.node_id, to, len(data))
            return
        dropped = peer.queue.push(data)
        if dropped:
            self.stats.drops_overflow += dropped
        if peer.idle:
            peer.idle = False
            peer.has_data.set()
            peer.drained.clear()

    def queued(self, to: NodeId) -> int:
        """How many messages wait in ``to``'s queue (0 for an unknown peer)."""
        peer = self._peers.get(to)
        return len(peer.queue) if peer is not None else 0

    async def wait_drained(self, to: NodeId) -> None:
        """Wait until everything queued for ``to`` has been written (sender backpressure)."""
        await self._peers[to].drained.wait()

    async def wait_connected(self, to: NodeId) -> None:
        await self._peers[to].connected.wait()

    def connected_peers(self) -> set[NodeId]:
        return {pid for pid, peer in self._peers.items() if peer.conn is not None}

    def peer_status(self) -> list[PeerStatus]:
        """Every configured peer and connected client, sorted by id."""
        out = []
        for pid in sorted(self._peers):
            peer = self._peers[pid]
            if peer.conn is not None:
                state = LinkState.CONNECTED
            else:
                state = LinkState.CONNECTING if peer.dialing else LinkState.DISCONNECTED
            out.append(
                PeerStatus(
                    pid,
                    state,
                    self._dials(peer),
                    peer.address is None,
                    len(peer.queue),
                    peer.queue.nbytes,
                    peer.conn.remote if peer.conn is not None else None,
                )
            )
        return out

    async def close(self) -> None:
        """Stop accepting; flush for up to ``flush_timeout_ms``; drop the rest; close everything.

        Flushing means: every queue written out *and* every socket's buffer handed to the
        kernel (``wait_closed``), so a process may exit right after. What is still queued at
        the deadline is dropped and counted; sockets still busy are aborted.
        """
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        conns = [peer.conn for peer in self._peers.values() if peer.conn is not None]
        flushed: set[_Conn] = set()
        try:
            async with asyncio.timeout(self._config.flush_timeout_ms / 1000):
                for conn in conns:
                    await conn.peer.drained.wait()
                for conn in conns:
                    conn.writer.close()
                for conn in conns:
                    with contextlib.suppress(ConnectionError, OSError):  # the peer left first
                        await conn.writer.wait_closed()
                    flushed.add(conn)
        except TimeoutError:
            log.warning(
                "shutdown flush timed out node=%s flushed=%d of %d", self.node_id, len(flushed), len(conns)
            )
        for conn in conns:
            if conn not in flushed:
                conn.writer.transport.abort()  # never wait on a peer that does not read
        for peer in self._peers.values():
            self.stats.drops_shutdown += peer.queue.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        if self._server is not None:
            await self._server.wait_closed()

    # -- connections ------------------------------------------------------------------------

    def _dials(self, peer: _Peer) -> bool:
        return peer.address is not None and (self._listen is None or self.node_id < peer.id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._tg is not None, "start() first"
        task = self._tg.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing or self._inbound_connections >= self._config.max_inbound_connections:
            self.stats.connections_refused += 1
            log.warning("connection refused node=%s remote=%s reason=limit", self.node_id, _remote(writer))
            writer.close()
            return
        self._inbound_connections += 1
        self._spawn(self._accepted(reader, writer))

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer, expected=None)
        finally:
            self._inbound_connections -= 1

    async def _dial_loop(self, peer: _Peer) -> None:
        assert peer.address is not None
        backoff = Backoff(self._config.backoff, self._rng)
        loop = asyncio.get_running_loop()
        ever_connected = False
        while not self._closing:
            authenticated = False
            peer.dialing = True
            try:
                async with asyncio.timeout(self._config.connect_timeout_ms / 1000):
                    reader, writer = await asyncio.open_connection(*peer.address)
            except (OSError, TimeoutError) as exc:
                self.stats.connect_failures += 1
                log.debug("connect failed node=%s peer=%s reason=%r", self.node_id, peer.id, exc)
            else:
                if ever_connected:
                    self.stats.reconnects += 1
                authenticated = await self._serve(reader, writer, expected=peer.id)
                ever_connected = ever_connected or authenticated
            finally:
                peer.dialing = False
            if authenticated:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay_ms(loop.time() * 1000) / 1000)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, expected: NodeId | None
    ) -> bool:
        """Handshake, then read and write until the connection ends; True if it authenticated."""
        remote = _remote(writer)
        decoder = wire.FrameDecoder(self._config.max_frame_bytes)
        try:
            async with asyncio.timeout(self._config.handshake_timeout_ms / 1000):
                session, early = await self._handshake(
                    reader, writer, decoder, initiator=expected is not None
                )
            peer = self._admit(session, expected, remote)
        except (AuthenticationError, DecodeError, PeerProtocolError) as exc:
            self.stats.auth_failures += isinstance(exc, AuthenticationError)
            self.stats.protocol_errors += not isinstance(exc, AuthenticationError)
            log.warning(
                "peer refused node=%s expected=%s remote=%s reason=%s: %s",
                self.node_id, expected, remote, type(exc).__name__, exc,
            )  # fmt: skip
            writer.close()
            return False
        except (OSError, TimeoutError, asyncio.IncompleteReadError, _Closed) as exc:
            log.info("handshake failed node=%s remote=%s reason=%r", self.node_id, remote, exc)
            writer.close()
            return False
        conn = _Conn(peer, writer, session, remote)
        if peer.conn is not None:
            log.info("connection replaced node=%s peer=%s remote=%s", self.node_id, peer.id, remote)
            peer.conn.writer.close()
        peer.conn = conn
        peer.connected.set()
        if self._on_link is not None:
            self._on_link(peer.id, LinkState.CONNECTED)
        if peer.queue:  # flush whatever queued while disconnected
            peer.idle = False
            peer.has_data.set()
            peer.drained.clear()
        self.stats.connects += 1
        log.info("connected node=%s peer=%s remote=%s", self.node_id, peer.id, remote)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read_loop(conn, reader, decoder, early))
                tg.create_task(self._write_loop(conn))
        except* (_Closed, ConnectionError, OSError) as group:
            log.info(
                "disconnected node=%s peer=%s remote=%s reason=%r",
                self.node_id,
                peer.id,
                remote,
                group.exceptions[0],
            )
        except* (AuthenticationError, DecodeError, PeerProtocolError) as group:
            self.stats.protocol_errors += 1
            first = group.exceptions[0]
            log.warning(
                "protocol error, dropping node=%s peer=%s remote=%s reason=%s: %s",
                self.node_id, peer.id, remote, type(first).__name__, first,
            )  # fmt: skip
        finally:
            writer.close()
            if peer.conn is conn:
                peer.conn = None
                peer.connected.clear()
                if self._on_link is not None:
                    self._on_link(peer.id, LinkState.DISCONNECTED)
                if peer.address is None:  # a client: forget it and what was queued for it
                    self.stats.drops_disconnect += peer.queue.clear()
                    peer.drained.set()
                    del self._peers[peer.id]
        return True

    async def _handshake(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: wire.FrameDecoder,
        *,
        initiator: bool,
    ) -> tuple[wire.AuthSession, list[bytes]]:
        hs = wire.Handshake(self._key, self.node_id, os.urandom(NONCE_BYTES), initiator)
        writer.write(wire.encode_frame(hs.hello()))
        frames = await self._next_frames(reader, decoder, [])
        session = hs.receive_hello(frames.pop(0))
        # The hello proves the peer knew the key at some point (it could be a replay); only a
        # frame sealed with the session keys, which need the key *and* both fresh nonces,
        # proves this peer holds it now. Each side sends an empty sealed frame to confirm.
        writer.write(wire.encode_frame(session.seal(b"")))
        frames = await self._next_frames(reader, decoder, frames)
        if session.open(frames.pop(0)) != b"":
            raise PeerProtocolError("the handshake confirmation frame must be empty")
        assert session.verified, "the peer's identity is proven before it is admitted"
        return session, frames

    async def _next_frames(
        self, reader: asyncio.StreamReader, decoder: wire.FrameDecoder, frames: list[bytes]
    ) -> list[bytes]:
        """``frames`` if any are left, else read until at least one whole frame arrives."""
        while not frames:
            data = await reader.read(self._config.read_chunk_bytes)
            if not data:
                raise _Closed("EOF during the handshake")
            self.stats.bytes_in += len(data)
            frames = decoder.feed(data)
        return frames

    def _admit(self, session: wire.AuthSession, expected: NodeId | None, remote: str) -> _Peer:
        peer_id = NodeId(session.peer_id)
        if expected is not None and peer_id != expected:
            raise PeerProtocolError(f"dialled {expected} but {peer_id} answered")
        if peer_id == self.node_id:
            raise PeerProtocolError("a peer claims this node's own id")
        peer = self._peers.get(peer_id)
        if peer is None:
            clients = sum(1 for p in self._peers.values() if p.address is None)
            if clients >= self._config.max_client_peers:
                raise PeerProtocolError("too many client connections")
            peer = self._peers[peer_id] = _Peer(peer_id, None, self._config.queue)
        return peer

    async def _read_loop(
        self, conn: _Conn, reader: asyncio.StreamReader, decoder: wire.FrameDecoder, frames: list[bytes]
    ) -> None:
        chunk = self._config.read_chunk_bytes
        idle_s = self._config.idle_timeout_ms / 1000
        while True:
            for frame in frames:
                self._on_frame(conn, frame)
            if self._inbound_space is not None:
                await self._inbound_space()
            try:
                async with asyncio.timeout(idle_s):
                    data = await reader.read(chunk)
            except TimeoutError:
                # The peer sends a keepalive well within this: it is gone (or hung) without a FIN.
                raise _Closed(f"idle for {idle_s}s") from None
            if not data:
                raise _Closed("EOF")
            self.stats.bytes_in += len(data)
            frames = decoder.feed(data)

    def _on_frame(self, conn: _Conn, frame: bytes) -> None:
        body = conn.session.open(frame)
        if not body:
            return  # a keepalive
        # One C unpack for the whole batch, then each envelope validated and built.
        messages = decode_many(body, max_messages=self._config.queue.batch_max_messages)
        if not messages:
            raise PeerProtocolError("a batch must be a non-empty array of messages")
        if not self._accept.issuperset(map(type, messages)):
            refused = next(m for m in messages if type(m) not in self._accept)
            raise PeerProtocolError(f"a {type(refused).__name__} is not accepted here")
        stats = self.stats
        stats.frames_in += 1
        stats.messages_in += len(messages)
        deliver, peer_id = self._deliver, conn.peer.id
        for msg in messages:
            deliver(peer_id, msg)  # all checked above: a frame is delivered whole or not at all

    async def _write_loop(self, conn: _Conn) -> None:
        peer, writer, stats, session = conn.peer, conn.writer, self.stats, conn.session
        keepalive_s = self._config.keepalive_ms / 1000
        max_frames = self._config.max_frames_per_write
        while True:
            try:
                async with asyncio.timeout(keepalive_s):
                    await peer.has_data.wait()
            except TimeoutError:
                writer.write(wire.encode_frame(session.seal(b"")))  # keepalive: an empty frame
                await writer.drain()
                continue
            if peer.conn is not conn:
                raise _Closed("replaced")
            # Everything queued, up to max_frames batches, goes out in one socket write.
            frames: list[bytes] = []
            count = 0
            while len(frames) < max_frames and (batch := peer.queue.pop_batch()):
                frames.append(wire.encode_frame(session.seal(join_encoded(batch))))
                count += len(batch)
            if not frames:
                assert not peer.queue, "idle only with nothing queued"
                peer.has_data.clear()
                peer.drained.set()
                peer.idle = True
                continue
            data = b"".join(frames) if len(frames) > 1 else frames[0]
            writer.write(data)
            stats.frames_out += len(frames)
            stats.messages_out += count
            stats.bytes_out += len(data)
            stats.socket_writes += 1
            try:
                await writer.drain()
            except (ConnectionError, OSError):
                stats.drops_disconnect += count  # may or may not have reached the peer
                raise


def _remote(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


__all__ = ["Address", "LinkState", "PeerStatus", "Transport", "TransportConfig"]

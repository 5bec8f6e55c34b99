"""The binary client listener: authenticated frames (as the peer transport), many requests in flight.

Why a listener of its own rather than the peer transport: clients need request/response
matching by request id, an answer to *every* request (errors included), their own bounds, and
no node ids in their configuration (a client learns a node's id from its handshake). The
framing and the authentication are the peer transport's: ``wire.Handshake`` with the cluster
key, then every frame sealed with the session keys. A client without the key is refused at
the handshake and never sends a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from stalwart import wire
from stalwart.client._protocol import (
    MAX_FRAME_BYTES,
    Consistency,
    HandshakeError,
    ReadRequest,
    ResponseStatus,
    StatusRequest,
    WriteRequest,
    decode_write,
    encode_response,
    handshake,
    pack_batch,
    unpack_batch,
)
from stalwart.errors import DecodeError, StalwartError
from stalwart.server._config import Address
from stalwart.server._server import Answer, KVServer, Waiter

log = logging.getLogger("stalwart.server.clients")

MAX_INFLIGHT_PER_CONNECTION = 4096
MAX_CONNECTIONS = 1024
_READ_OPS = {level: f"read_{level.value}" for level in Consistency}


class ClientListener:
    def __init__(self, server: KVServer, address: Address) -> None:
        self.server = server
        self._address = address
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.refused = 0

    @property
    def address(self) -> Address:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self._address[0], self._address[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= MAX_CONNECTIONS:
            self.refused += 1
            writer.close()
            return
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        node = self.server.config.node_id
        decoder = wire.FrameDecoder(MAX_FRAME_BYTES)
        self.connections += 1
        try:
            try:
                session, frames = await handshake(reader, writer, decoder, key=self.server.config.cluster_key,
                                                  my_id=node, initiator=False)  # fmt: skip
            except (StalwartError, OSError, TimeoutError) as exc:
                self.refused += 1
                # A socket closed mid-handshake (a port probe) is routine; a wrong key is not.
                level = logging.INFO if isinstance(exc, HandshakeError | OSError) else logging.WARNING
                why = type(exc).__name__
                log.log(level, "client refused node=%s remote=%s reason=%s: %s", node, remote, why, exc)
                return
            conn = _ClientConn(self.server, writer, session, remote)
            try:
                await conn.run(reader, decoder, frames)
            except (StalwartError, OSError) as exc:
                log.warning(
                    "client connection dropped node=%s client=%s remote=%s reason=%s: %s",
                    node, session.peer_id, remote, type(exc).__name__, exc,
                )  # fmt: skip
            finally:
                await conn.stop()
        finally:
            self.connections -= 1
            writer.close()


class _ClientConn:
    """One client's connection: each frame's requests are handled as one batch, synchronously.

    The writes of a frame go to the server as one batch (one proposal); answers are collected
    as they come and sent as one frame per event-loop turn. No task or future per request.
    """

    def __init__(
        self, server: KVServer, writer: asyncio.StreamWriter, session: wire.AuthSession, remote: str
    ):
        self.server, self.writer, self.session, self.remote = server, writer, session, remote
        self.inflight = 0  # requests handed to the server and not answered yet
        self.room = asyncio.Event()  # set while inflight is under MAX_INFLIGHT_PER_CONNECTION
        self.room.set()
        self.closed = False
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.latencies: dict[tuple[str, str], list[float]] = {}  # (op, status) -> start times

    async def run(
        self, reader: asyncio.StreamReader, decoder: wire.FrameDecoder, frames: list[bytes]
    ) -> None:
        while True:
            for frame in frames:
                body = self.session.open(frame)  # AuthenticationError: forged or replayed
                if body:
                    self._handle([decode_write(item) or wire.decode(item) for item in unpack_batch(body)])
                if self.inflight >= MAX_INFLIGHT_PER_CONNECTION:
                    # Bounded in flight (at most one batch over): stop reading until answers
                    # make room, and TCP pushes back on the client.
                    self.room.clear()
                    await self.room.wait()
            data = await reader.read(1 << 16)
            if not data:
                return
            frames = decoder.feed(data)  # FrameTooLargeError from the header alone

    def _handle(self, msgs: list[object]) -> None:
        """Start one frame's requests: its writes as one batch, then its reads and status asks."""
        started = time.perf_counter()
        writes: list[tuple[str, int, int, bytes, Waiter]] = []
        others: list[ReadRequest | StatusRequest] = []
        for msg in msgs:
            if type(msg) is tuple:  # a write request's fields (decode_write)
                rid, client, seq, ack, command = msg
                writes.append((client, seq, ack, command, (self, rid, started, "write")))
            elif type(msg) is WriteRequest:
                writes.append(
                    (msg.client, msg.seq, msg.ack, msg.command, (self, msg.request_id, started, "write"))
                )
            elif isinstance(msg, ReadRequest | StatusRequest):
                others.append(msg)
            else:
                raise DecodeError(f"a {type(msg).__name__} is not a client request")
        self.inflight += len(msgs)
        server = self.server
        if writes:
            server.write_batch(writes)
        for msg in others:
            if isinstance(msg, ReadRequest):
                op = _READ_OPS[msg.consistency]
                server.read_into(msg.query, msg.consistency, (self, msg.request_id, started, op))
            else:
                self.answer((self, msg.request_id, started, "status"), self._status())

    def answer(self, waiter: Waiter, answer: Answer) -> None:
        """The server's answer to one request of this connection (sent with the turn's others)."""
        self.inflight -= 1
        if not self.room.is_set() and self.inflight < MAX_INFLIGHT_PER_CONNECTION:
            self.room.set()
        key = (waiter[3], answer.status.value)
        started = self.latencies.get(key)
        if started is None:
            self.latencies[key] = [waiter[2]]
        else:
            started.append(waiter[2])
        if self.closed:
            return
        self.out.append(
            encode_response(waiter[1], answer.status, answer.result, answer.leader_hint, answer.error[:500])
        )
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _status(self) -> Answer:
        return Answer(ResponseStatus.OK, json.dumps(self.server.status()).encode())

    def _flush(self) -> None:
        self.flush_scheduled = False
        out, self.out = self.out, []
        now = time.perf_counter()
        latencies, self.latencies = self.latencies, {}
        for (op, status), starts in latencies.items():
            self.server.metrics.requests_done("binary", op, status, [now - t for t in starts])
        if self.closed:
            return
        for start in range(0, len(out), 512):
            body = pack_batch(out[start : start + 512])
            self.writer.write(wire.encode_frame(self.session.seal(body)))

    async def stop(self) -> None:
        # Pending answers stay with the server (a write may still apply); nobody sends them here.
        self.closed = True
        self.room.set()

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
    Response,
    ResponseStatus,
    StatusRequest,
    WriteRequest,
    handshake,
    pack_batch,
    unpack_batch,
)
from stalwart.errors import DecodeError, StalwartError
from stalwart.server._config import Address
from stalwart.server._server import Answer, KVServer

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
    """One client's connection: requests run concurrently; answers are batched into frames."""

    def __init__(
        self, server: KVServer, writer: asyncio.StreamWriter, session: wire.AuthSession, remote: str
    ):
        self.server, self.writer, self.session, self.remote = server, writer, session, remote
        self.slots = asyncio.Semaphore(MAX_INFLIGHT_PER_CONNECTION)
        self.futures: set[asyncio.Future[Answer]] = set()  # pending answers of this connection
        self.closed = False
        self.out: list[bytes] = []
        self.flush_scheduled = False

    async def run(
        self, reader: asyncio.StreamReader, decoder: wire.FrameDecoder, frames: list[bytes]
    ) -> None:
        while True:
            for frame in frames:
                body = self.session.open(frame)  # AuthenticationError: forged or replayed
                if body:
                    for item in unpack_batch(body):
                        await self.slots.acquire()  # bounded in flight: stop reading when full
                        self._spawn(wire.decode(item))
            data = await reader.read(1 << 16)
            if not data:
                return
            frames = decoder.feed(data)  # FrameTooLargeError from the header alone

    def _spawn(self, msg: object) -> None:
        """Start one request; its answer is sent from a future's callback (no task per request)."""
        started = time.perf_counter()
        server = self.server
        match msg:
            case WriteRequest(client=client, seq=seq, ack=ack, command=command):
                op, answer = "write", server.submit_write(client, seq, ack, command)
            case ReadRequest(query=query, consistency=consistency):
                op, answer = _READ_OPS[consistency], server.submit_read(query, consistency)
            case StatusRequest():
                op, answer = "status", self._status()
            case _:
                self.slots.release()
                raise DecodeError(f"a {type(msg).__name__} is not a client request")
        request_id = msg.request_id
        if isinstance(answer, Answer):
            self._finish(request_id, op, started, answer)
            return
        self.futures.add(answer)
        answer.add_done_callback(lambda done: self._done(request_id, op, started, done))

    def _done(self, request_id: int, op: str, started: float, future: asyncio.Future[Answer]) -> None:
        self.futures.discard(future)
        if future.cancelled():
            self.slots.release()
            return
        self._finish(request_id, op, started, future.result())

    def _finish(self, request_id: int, op: str, started: float, answer: Answer) -> None:
        self.slots.release()
        self.server.metrics.request("binary", op, answer.status.value, time.perf_counter() - started)
        if not self.closed:
            self._send(answer.response(request_id))

    def _status(self) -> Answer:
        return Answer(ResponseStatus.OK, json.dumps(self.server.status()).encode())

    def _send(self, response: Response) -> None:
        self.out.append(wire.encode(response))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        out, self.out = self.out, []
        for start in range(0, len(out), 512):
            body = pack_batch(out[start : start + 512])
            self.writer.write(wire.encode_frame(self.session.seal(body)))

    async def stop(self) -> None:
        # Pending answers stay with the server (a write may still apply); nobody sends them here.
        self.closed = True
        self.futures.clear()

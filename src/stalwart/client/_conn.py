"""One authenticated client connection to one node, with many requests in flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from stalwart import wire
from stalwart.client._errors import ConnectionLostError, KVUnavailableError
from stalwart.client._protocol import (
    MAX_FRAME_BYTES,
    Request,
    Response,
    decode_response,
    encode_request,
    handshake,
    pack_batch,
    unpack_batch,
)
from stalwart.errors import AuthenticationError, StalwartError

log = logging.getLogger("stalwart.client")

DEFAULT_MAX_INFLIGHT = 1024
FLUSH_BATCH = 512  # requests per frame (the node accepts up to MAX_BATCH_MESSAGES)


def parse_endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise KVUnavailableError(f"not a HOST:PORT endpoint: {text!r}")
    return host.strip("[]"), int(port)


class Connection:
    """``await Connection.open(...)``; ``await conn.request(msg)``; ``await conn.close()``.

    Requests are written as they come (batched by the event loop's writes) and matched to
    responses by ``request_id``. At most ``max_inflight`` are outstanding: further callers wait.
    When the connection drops, every waiting request fails with :class:`ConnectionLostError`.
    """

    def __init__(  # noqa: PLR0917  (built by open() only)
        self,
        endpoint: str,
        node_id: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: wire.AuthSession,
        decoder: wire.FrameDecoder,
        early: list[bytes],
        max_inflight: int,
    ) -> None:
        self.endpoint = endpoint
        self.node_id = node_id
        self._reader, self._writer, self._session, self._decoder = reader, writer, session, decoder
        self._pending: dict[int, asyncio.Future[Response]] = {}
        # A counter and a queue of waiters rather than asyncio.Semaphore, whose acquire() scans
        # its waiters on every call (Python 3.11): a measurable share of a loaded client's CPU.
        self._inflight = 0
        self._max_inflight = max_inflight
        self._room: deque[asyncio.Future[None]] = deque()
        self._next_id = 1
        self._closed = False
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._reader_task = asyncio.create_task(self._read_loop(early))

    @classmethod
    async def open(
        cls,
        endpoint: str,
        *,
        key: bytes,
        client_id: str,
        connect_timeout_s: float = 2.0,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
    ) -> Connection:
        host, port = parse_endpoint(endpoint)
        try:
            async with asyncio.timeout(connect_timeout_s):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            raise ConnectionLostError(f"cannot connect to {endpoint}: {exc!r}") from None
        decoder = wire.FrameDecoder(MAX_FRAME_BYTES)
        try:
            session, early = await handshake(
                reader, writer, decoder, key=key, my_id=client_id, initiator=True
            )
        except AuthenticationError:
            writer.close()
            raise
        except (StalwartError, OSError, TimeoutError) as exc:
            writer.close()
            raise ConnectionLostError(f"handshake with {endpoint} failed: {exc!r}") from None
        return cls(endpoint, session.peer_id, reader, writer, session, decoder, early, max_inflight)

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(self, build: Callable[[int], Request]) -> Response:
        """Send the request ``build(request_id)`` and wait for its response."""
        if self._inflight >= self._max_inflight:
            await self._wait_for_room()
        self._inflight += 1
        try:
            if self._closed:
                raise ConnectionLostError(f"connection to {self.endpoint} is closed")
            request_id = self._next_id
            self._next_id += 1
            msg = build(request_id)
            loop = asyncio.get_running_loop()
            future: asyncio.Future[Response] = loop.create_future()
            self._pending[request_id] = future
            try:
                self._out.append(encode_request(msg))
                if not self._flush_scheduled:
                    # Everything sent in this turn of the event loop shares one frame (one MAC).
                    self._flush_scheduled = True
                    loop.call_soon(self._flush)
                return await future
            finally:
                self._pending.pop(request_id, None)
        finally:
            self._inflight -= 1
            if self._room:
                self._wake_one()

    async def _wait_for_room(self) -> None:
        """Wait until fewer than ``max_inflight`` requests are outstanding (callers queue up)."""
        loop = asyncio.get_running_loop()
        while self._inflight >= self._max_inflight:
            waiter: asyncio.Future[None] = loop.create_future()
            self._room.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, but leaving: hand the room to the next caller
                raise

    def _wake_one(self) -> None:
        while self._room:
            waiter = self._room.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self._closed or not out:
            return
        for start in range(0, len(out), FLUSH_BATCH):
            body = pack_batch(out[start : start + FLUSH_BATCH])
            self._writer.write(wire.encode_frame(self._session.seal(body)))

    async def _read_loop(self, frames: list[bytes]) -> None:
        reason: str = "closed"
        try:
            while True:
                for frame in frames:
                    self._on_frame(frame)
                data = await self._reader.read(1 << 16)
                if not data:
                    reason = "closed by the node"
                    return
                frames = self._decoder.feed(data)
        except (OSError, StalwartError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.info("client connection to %s dropped: %s", self.endpoint, reason)
        finally:
            self._fail_all(reason)

    def _on_frame(self, frame: bytes) -> None:
        body = self._session.open(frame)
        if not body:
            return  # keepalive
        for item in unpack_batch(body):
            msg = decode_response(item)  # DecodeError for anything but a Response
            future = self._pending.get(msg.request_id)
            if future is not None and not future.done():
                future.set_result(msg)

    def _fail_all(self, reason: str) -> None:
        self._closed = True
        self._writer.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionLostError(f"connection to {self.endpoint} lost: {reason}"))

    async def close(self) -> None:
        self._closed = True
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader_task
        self._writer.close()

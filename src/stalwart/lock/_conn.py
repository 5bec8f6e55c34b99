"""A small connection pool on redis-py's asyncio ``Connection`` for the locks' hot path.

redis-py's client and pools are general; per command they cost more than the lock itself (pool
conditions, retries, health checks). Locks send only EVALSHA/SCRIPT LOAD, so this pool checks a
connection out, sends one packed command (or a pipeline), reads the reply and puts it back.
Parsing (hiredis when installed) and socket handling are redis-py's.

Bounds: connecting is bounded by ``connect_timeout_s``, each read by ``op_timeout_s`` (redis-py
applies it per read), waiting for a free connection by ``op_timeout_s``. A connection that failed
in any way (timeout, reset, garbage, cancellation mid-reply) is closed, never reused, and every
idle connection is dropped with it (a restarted server leaves them all dead).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from stalwart.lock._errors import BackendUnavailable

Command = Sequence[str | int | float | bytes]
#: Above this many unsent bytes a send waits (bounded) for the socket to drain.
SEND_BUFFER_BYTES = 64 * 1024


class ConnPool:
    def __init__(
        self, url: str, *, op_timeout_s: float, connect_timeout_s: float, max_connections: int
    ) -> None:
        self.url = url
        self.op_timeout_s = op_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._factory = redis.asyncio.ConnectionPool.from_url(
            url,
            # No socket timeout on the connection: redis-py would wrap every send in wait_for (a
            # task per command). Sends and reads are bounded here instead, see send() and read().
            socket_timeout=None,
            socket_connect_timeout=connect_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._idle: list[AbstractConnection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    async def checkout(self) -> AbstractConnection:
        if self._closed:
            raise BackendUnavailable(f"{self.url}: the connection pool is closed")
        if self._slots.locked():
            try:
                async with asyncio.timeout(self.op_timeout_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise BackendUnavailable(
                    f"{self.url}: no free connection within {self.op_timeout_s} s"
                ) from None
        else:
            await self._slots.acquire()
        if self._idle:
            return self._idle.pop()
        conn: AbstractConnection = self._factory.make_connection()  # type: ignore[no-untyped-call]
        try:
            # connect() also sends CLIENT SETINFO and reads the answer: bound the whole of it.
            async with asyncio.timeout(self.connect_timeout_s + self.op_timeout_s):
                await conn.connect()  # type: ignore[no-untyped-call]
        except TimeoutError:
            self._slots.release()
            conn._close()  # type: ignore[no-untyped-call]
            raise redis.exceptions.TimeoutError(f"{self.url}: connecting timed out") from None
        except BaseException:
            self._slots.release()
            raise
        return conn

    @property
    def has_idle(self) -> bool:
        return bool(self._idle)

    async def warm(self) -> None:
        """Open one connection ahead of a fan-out (so connects run in parallel, not in line)."""
        self.checkin(await self.checkout(), True)

    def checkin(self, conn: AbstractConnection, healthy: bool) -> None:
        """Return a connection; an unhealthy one is closed together with every idle one."""
        self._slots.release()
        if healthy and not self._closed:
            self._idle.append(conn)
            return
        dead = [conn, *self._idle]
        self._idle.clear()
        for c in dead:
            c._close()  # type: ignore[no-untyped-call]  # synchronous socket close; nothing to wait for on a broken link

    async def send(self, conn: AbstractConnection, packed: list[bytes]) -> None:
        """Write a packed command; wait for the socket (bounded) only if its buffer backs up."""
        if not conn.is_connected:
            raise redis.exceptions.ConnectionError(f"{self.url}: connection closed")
        writer = conn._writer  # redis-py's StreamWriter: write without a task per command
        assert writer is not None, "a connected redis-py connection has a writer"
        try:
            writer.writelines(packed)
            if writer.transport.get_write_buffer_size() > SEND_BUFFER_BYTES:
                async with asyncio.timeout(self.op_timeout_s):
                    await writer.drain()
        except TimeoutError:
            raise redis.exceptions.TimeoutError(f"{self.url}: send timed out") from None
        except OSError as exc:
            raise redis.exceptions.ConnectionError(f"{self.url}: send failed: {exc!r}") from exc

    async def read(self, conn: AbstractConnection, timeout_s: float | None = None) -> Any:
        """Read one reply within ``timeout_s`` (default ``op_timeout_s``); error replies raise."""
        reply = await conn.read_response(timeout=self.op_timeout_s if timeout_s is None else timeout_s)
        if reply is None:  # redis-py returns None when an explicit read timeout passes
            raise redis.exceptions.TimeoutError(f"{self.url}: no reply within the timeout")
        return reply

    async def execute(self, command: Command | bytes) -> Any:
        """Send one command (or its RESP encoding) and read its reply (error replies raise
        ResponseError)."""
        conn = await self.checkout()
        healthy = False
        try:
            await self.send(conn, [command] if isinstance(command, bytes) else conn.pack_command(*command))
            try:
                reply = await self.read(conn)
            except redis.exceptions.ResponseError:
                healthy = True  # an error reply leaves the connection in sync
                raise
            healthy = True
            return reply
        finally:
            self.checkin(conn, healthy)

    async def execute_many(self, commands: Sequence[Command]) -> list[Any]:
        """Pipeline commands in one round trip; error replies come back as exception values."""
        conn = await self.checkout()
        healthy = False
        try:
            await self.send(conn, conn.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await self.read(conn))
                except redis.exceptions.ResponseError as exc:
                    replies.append(exc)
            healthy = True
            return replies
        finally:
            self.checkin(conn, healthy)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await conn.disconnect()
        await self._factory.disconnect()


__all__ = ["Command", "ConnPool"]

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


class ConnPool:
    def __init__(
        self, url: str, *, op_timeout_s: float, connect_timeout_s: float, max_connections: int
    ) -> None:
        self.url = url
        self.op_timeout_s = op_timeout_s
        self._factory = redis.asyncio.ConnectionPool.from_url(
            url,
            socket_timeout=op_timeout_s,
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
            await conn.connect()  # type: ignore[no-untyped-call]
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

    async def execute(self, command: Command) -> Any:
        """Send one command and read its reply (error replies raise ResponseError)."""
        conn = await self.checkout()
        healthy = False
        try:
            await conn.send_packed_command(conn.pack_command(*command), check_health=False)
            try:
                reply = await conn.read_response()
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
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
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

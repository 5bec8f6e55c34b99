"""Redlock's fan-out when some servers misbehave: garbage, a wrong reply, a closed connection, a
reply too slow for the lease. Real redis-servers for the rest; the misbehaving ones are small
asyncio servers (or a delaying proxy in front of a real one) on ports the OS picks."""

# ruff: noqa: F401, F811
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis

from stalwart.lock import BackendProtocolError, BackendUnavailable, NotAcquired, Redlock, RedlockClient
from stalwart.lock._resp import _Incomplete, parse
from tests.integration._locks import run
from tests.servers.redis import RedisServer, five, flush, redis_servers5

pytestmark = pytest.mark.integration

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LOCK_KEY = b"stalwart:lock:{%s}"


def lock_keys_left(servers: list[RedisServer], name: str) -> list[bool]:
    """Per server: is the lock's key (not its fencing counter) still there?"""
    out = []
    for server in servers:
        with redis.Redis.from_url(server.url) as r:
            out.append(bool(r.exists(LOCK_KEY % name.encode())))
    return out


class FakeServers:
    """Small TCP servers on the running loop; every connection task is cancelled at the end."""

    def __init__(self) -> None:
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connections = 0

    async def start(self, handler: Handler) -> str:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await handler(reader, writer)
            finally:
                self._tasks.discard(task)
                writer.close()

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        self._servers.append(server)
        return f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"

    async def aclose(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            await server.wait_closed()


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(65536):
        writer.write(b"%not RESP2 at all\r\n")


async def wrong_shape(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Valid RESP, wrong answers: EXEC answers an integer (not [OK or nil, integer]) and so does
    every other command; MULTI and queued commands are acknowledged as Redis does."""
    buf, in_multi = b"", False
    while data := await reader.read(65536):
        buf += data
        pos, out = 0, []
        while True:
            try:
                command, pos = parse(buf, pos)
            except _Incomplete:
                break
            name = command[0].upper()
            if name == b"MULTI":
                in_multi = True
                out.append(b"+OK\r\n")
            elif name == b"EXEC":
                in_multi = False
                out.append(b":5\r\n")
            else:
                out.append(b"+QUEUED\r\n" if in_multi else b":5\r\n")
        buf = buf[pos:]
        writer.write(b"".join(out))


async def close_after_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.close()


def delaying_proxy(port: int, delay_s: float) -> Handler:
    """Requests go through to the real server at once; every reply comes back ``delay_s`` later."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)

        async def replies() -> None:
            while data := await up_reader.read(65536):
                await asyncio.sleep(delay_s)  # one at a time: replies keep their order
                writer.write(data)

        back = asyncio.create_task(replies())
        try:
            while data := await reader.read(65536):
                up_writer.write(data)
        finally:
            back.cancel()
            up_writer.close()

    return handle


def test_a_minority_answering_garbage_counts_as_no_and_its_connection_is_replaced(
    five: list[RedisServer],
) -> None:
    async def body() -> None:
        fakes = FakeServers()
        urls = [s.url for s in five[:4]] + [await fakes.start(garbage)]
        try:
            async with RedlockClient(urls, server_timeout_s=0.5) as client:
                for _ in range(3):
                    held = await Redlock(client, "garbage").acquire(blocking=False)
                    assert lock_keys_left(five[:4], "garbage") == [True] * 4
                    await held.release()
                    assert not held.lost.is_set()  # four of five released: a quorum
                    assert lock_keys_left(five[:4], "garbage") == [False] * 4
        finally:
            await fakes.aclose()
        # Each garbage reply broke that connection; the next fan-out opened a fresh one.
        assert fakes.connections >= 3

    run(body)


def test_a_wrong_reply_is_a_typed_error_and_the_others_are_released(five: list[RedisServer]) -> None:
    async def body() -> None:
        fakes = FakeServers()
        bad = await fakes.start(wrong_shape)
        urls = [s.url for s in five[:2]] + [bad] + [s.url for s in five[2:4]]
        try:
            async with RedlockClient(urls, server_timeout_s=0.5) as client:
                with pytest.raises(BackendProtocolError, match="expected EXEC's") as info:
                    await Redlock(client, "wrong").acquire(blocking=False)
                assert bad in str(info.value)  # names the server
                assert not client.watchdog.running
        finally:
            await fakes.aclose()
        # The four real servers had granted the lock: all released before the error was raised.
        assert lock_keys_left(five[:4], "wrong") == [False] * 4

    run(body)


def test_servers_closing_mid_fanout_fail_the_quorum_fast_and_release_the_rest(
    five: list[RedisServer],
) -> None:
    async def body() -> None:
        fakes = FakeServers()
        closers = [await fakes.start(close_after_request) for _ in range(3)]
        try:
            async with RedlockClient([five[0].url, *closers, five[1].url], server_timeout_s=5.0) as client:
                t0 = time.monotonic()
                with pytest.raises(BackendUnavailable, match="3 of 5 Redlock servers failed"):
                    await Redlock(client, "closing").acquire(blocking=False)
                # A closed connection answers its slot at once: no waiting for the 5 s timeout.
                assert time.monotonic() - t0 < 2.0
                with pytest.raises(BackendUnavailable):
                    await Redlock(client, "closing", max_retries=1, retry_delay_s=0.01).acquire()
        finally:
            await fakes.aclose()
        assert lock_keys_left(five[:2], "closing") == [False, False]

    run(body)


def test_a_reply_slower_than_the_validity_fails_the_acquire_and_releases_everywhere(
    five: list[RedisServer],
) -> None:
    """Validity = ttl - elapsed - drift, elapsed until the LAST reply. With drift_factor 0.9 a 10 s
    lease has 0.998 s of validity: a server that takes 1.2 s to answer makes it negative, while
    every key would still live 10 s, so a missing release would show."""

    async def body() -> None:
        fakes = FakeServers()
        slow = await fakes.start(delaying_proxy(five[4].port, 1.2))
        urls = [s.url for s in five[:4]] + [slow]
        try:
            async with RedlockClient(urls, server_timeout_s=3.0, drift_factor=0.9) as client:
                lock = Redlock(client, "slow", ttl=10.0)
                t0 = time.monotonic()
                with pytest.raises(NotAcquired):
                    await lock.acquire(blocking=False)
                # It waited for the slow reply (a quorum of four had said yes long before), then
                # for the slow server's release too.
                assert time.monotonic() - t0 >= 2.4
                assert not client.watchdog.running
                assert lock_keys_left(five, "slow") == [False] * 5
                # Control: the same lock with a lease long enough for that reply is acquired.
                lock = Redlock(client, "slow", ttl=30.0)
                held = await lock.acquire(blocking=False)
                assert held.remaining_s < 30.0 - 27.0 - 1.2  # the validity counts from the send
                assert lock_keys_left(five, "slow") == [True] * 5
                await held.release()
                assert lock_keys_left(five, "slow") == [False] * 5
        finally:
            await fakes.aclose()

    run(body)

"""Faults against real servers: a holder paused past its TTL (SIGSTOP; the choreography is
``tests.integration._locks.freeze_and_fence``), Redis killed and restarted mid-lease, and fake
servers that close connections, answer garbage or never answer."""

# ruff: noqa: F401, F811
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from stalwart.lock import (
    BackendError,
    BackendProtocolError,
    BackendUnavailable,
    FencedResource,
    Held,
    LockLost,
    RedisBackend,
    RedisLock,
    Redlock,
    RedlockClient,
)
from tests.integration._locks import Fence, freeze_and_fence
from tests.servers.redis import RedisServer, flush, redis_server, redis_server_aof, redis_server_fn

pytestmark = pytest.mark.integration


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with asyncio.timeout(60):
            return await coro_fn()

    return asyncio.run(main())


def test_paused_holder_is_fenced_off_and_learns_it_lost(redis_server: RedisServer) -> None:
    flush(redis_server)
    ttl = 0.6

    async def next_holder(stack: contextlib.AsyncExitStack) -> Held:
        backend = await stack.enter_async_context(RedisBackend(redis_server.url))
        t0 = time.monotonic()
        held = await RedisLock(backend, "paused", ttl=5.0).acquire(timeout=10)
        # The lease expired on the server only because the frozen holder stopped renewing.
        assert time.monotonic() - t0 > ttl / 3
        return held

    freeze_and_fence("redis", redis_server.url, ttl, Fence("redis", redis_server.url), next_holder)


def test_redis_killed_and_restarted_mid_lease(redis_server_fn: RedisServer) -> None:
    server = redis_server_fn

    async def body() -> None:
        lost: list[str] = []
        async with RedisBackend(server.url, op_timeout_s=0.3, connect_timeout_s=0.3) as backend:
            held = await RedisLock(
                backend, "crash", ttl=1.5, on_lost=lambda h: lost.append(h.lost_reason or "")
            ).acquire()
            server.kill()
            t0 = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await RedisLock(backend, "other").try_acquire()
            assert time.monotonic() - t0 < 1.5
            await asyncio.sleep(0.3)
            server.start()  # no persistence: the lease and the fencing counter are gone
            async with asyncio.timeout(3):
                await held.lost.wait()
            assert lost and held.lost_reason is not None
            with pytest.raises(LockLost):
                held.ensure()
            await held.release()  # best effort, no error
            # The server forgot the scripts too: NOSCRIPT is handled by reloading.
            async with RedisLock(backend, "crash") as again:
                assert again.token == 1  # the counter restarted: why fencing needs persistence
            assert not backend.watchdog.running

    run(body)


def test_tokens_survive_restart_with_fsynced_aof(redis_server_aof: RedisServer) -> None:
    server = redis_server_aof

    async def body() -> None:
        async with RedisBackend(server.url, op_timeout_s=0.5) as backend:
            for _ in range(3):
                async with RedisLock(backend, "durable"):
                    pass
            held = await RedisLock(backend, "durable", ttl=3.0).acquire()
            assert held.token == 4
            server.kill()
            server.start()
            await asyncio.sleep(1.2)  # the watchdog renews on the restarted server: same lease
            held.ensure()
            await held.release()
            async with RedisLock(backend, "durable") as after:
                assert after.token == 5

    run(body)


async def fake_server(mode: str) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if mode == "close":
                writer.close()
                return
            while await reader.read(4096):
                if mode == "garbage":
                    writer.write(b"?this is not RESP\r\n")
                    await writer.drain()
                # "silent": read everything, answer nothing
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"redis://127.0.0.1:{port}/0"


@pytest.mark.parametrize(
    ("mode", "error"),
    [("close", BackendUnavailable), ("garbage", BackendProtocolError), ("silent", BackendUnavailable)],
)
def test_fake_server_gives_typed_error_without_hanging(mode: str, error: type[BackendError]) -> None:
    async def body() -> None:
        server, url = await fake_server(mode)
        async with server:
            async with RedisBackend(url, op_timeout_s=0.5, connect_timeout_s=0.5) as backend:
                for _ in range(2):  # and again on the pool's next connection
                    t0 = time.monotonic()
                    with pytest.raises(error):
                        await RedisLock(backend, "x").acquire(timeout=5)
                    # The try's op timeout, then (after a failed try the server may still have
                    # granted the lock) the clean-up's, at most one retry: well under the 5 s.
                    assert time.monotonic() - t0 < 3.5
                    with pytest.raises(error):
                        await FencedResource(backend, "k").write(1, b"v")
            async with RedlockClient([url], server_timeout_s=0.3) as client:
                t0 = time.monotonic()
                with pytest.raises(BackendError):
                    await Redlock(client, "x", max_retries=1).acquire()
                assert time.monotonic() - t0 < 2.0

    run(body)


def test_unreachable_port_is_unavailable_fast() -> None:
    from tests.servers._proc import free_port

    async def body() -> None:
        async with RedisBackend(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.5) as backend:
            t0 = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await RedisLock(backend, "x").acquire()
            assert time.monotonic() - t0 < 1.5

    run(body)


def test_unreachable_zookeeper_is_unavailable_within_the_connect_timeout() -> None:
    from stalwart.lock import ZooKeeperClient, ZooKeeperLock
    from tests.servers._proc import free_port

    async def body() -> None:
        client = ZooKeeperClient(f"127.0.0.1:{free_port()}", connect_timeout_s=1.0)
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await ZooKeeperLock(client, "x").acquire()
        assert time.monotonic() - t0 < 3.0
        await client.aclose()

    run(body)

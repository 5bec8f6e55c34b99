"""A holder frozen with SIGSTOP past its lease, for Redlock and ZooKeeper (Redis alone is in
test_lock_faults.py): the next holder gets a higher token, the frozen holder's fenced write is
rejected when it wakes, and its ``held.lost`` is set."""

# ruff: noqa: F401, F811
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from stalwart.lock import (
    FencedResource,
    Held,
    RedisBackend,
    Redlock,
    RedlockClient,
    ZooKeeperClient,
    ZooKeeperLock,
)
from tests.servers.redis import RedisServer, flush, redis_servers5
from tests.servers.zookeeper import ZooKeeperServer, zookeeper_server

pytestmark = pytest.mark.integration

HOLDER = r"""
import asyncio, contextlib, json, sys
from stalwart.lock import (FencedResource, RedisBackend, Redlock, RedlockClient, StaleToken,
                           ZooKeeperClient, ZooKeeperLock)

async def main(kind, fence_url, target):
    async with contextlib.AsyncExitStack() as stack:
        if kind == "redlock":
            client = await stack.enter_async_context(RedlockClient(target))
            lock = Redlock(client, "paused", ttl=0.6)
        else:
            client = await stack.enter_async_context(ZooKeeperClient(target, session_timeout_s=1.0))
            lock = ZooKeeperLock(client, "paused")
        backend = await stack.enter_async_context(RedisBackend(fence_url))
        held = await lock.acquire()
        held.ensure()
        print(json.dumps({"token": held.token}), flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        assert line.strip() == "write"
        try:
            await FencedResource(backend, "guarded").write(held.token, b"from the paused holder")
            outcome = "accepted"
        except StaleToken as exc:
            outcome = f"rejected: {exc}"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(held.lost.wait(), 10)
        print(json.dumps({"write": outcome, "lost": held.lost.is_set(), "reason": held.lost_reason}),
              flush=True)
        with contextlib.suppress(Exception):
            await held.release()

asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
"""


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with asyncio.timeout(60):
            return await coro_fn()

    return asyncio.run(main())


NextHolder = Callable[[contextlib.AsyncExitStack], Awaitable[Held]]


def freeze_and_fence(kind: str, fence_url: str, target: Any, next_holder: NextHolder) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, kind, fence_url, json.dumps(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        first = json.loads(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGSTOP)

        async def take_over() -> int:
            async with contextlib.AsyncExitStack() as stack:
                backend = await stack.enter_async_context(RedisBackend(fence_url))
                held = await next_holder(stack)
                await FencedResource(backend, "guarded").write(held.token, b"from the next holder")
                await held.release()
                return held.token

        second = run(take_over)
        assert second > first["token"]
        os.kill(proc.pid, signal.SIGCONT)
        proc.stdin.write("write\n")
        proc.stdin.flush()
        report = json.loads(proc.stdout.readline())
        assert report["write"].startswith("rejected"), report
        assert report["lost"] is True, report

        async def check() -> Any:
            async with RedisBackend(fence_url) as backend:
                return await FencedResource(backend, "guarded").read()

        assert run(check) == (second, b"from the next holder")
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait(10)


def test_paused_redlock_holder(redis_servers5: list[RedisServer]) -> None:
    for server in redis_servers5:
        server.resume()
        flush(server)
    urls = [s.url for s in redis_servers5]

    async def next_holder(stack: contextlib.AsyncExitStack) -> Held:
        client = await stack.enter_async_context(RedlockClient(urls))
        # Redlock tokens are per-server and max-based (token_is_safe is False), yet they still
        # increase here: no server lost its data.
        return await Redlock(client, "paused", ttl=5.0).acquire(timeout=10)

    freeze_and_fence("redlock", urls[0], urls, next_holder)


def test_paused_zookeeper_holder(
    zookeeper_server: ZooKeeperServer, redis_servers5: list[RedisServer]
) -> None:
    flush(redis_servers5[0])

    async def next_holder(stack: contextlib.AsyncExitStack) -> Held:
        client = await stack.enter_async_context(ZooKeeperClient(zookeeper_server.hosts))
        # The frozen holder's node goes only when its 1 s session expires on the server.
        return await ZooKeeperLock(client, "paused").acquire(timeout=20)

    freeze_and_fence("zookeeper", redis_servers5[0].url, zookeeper_server.hosts, next_holder)

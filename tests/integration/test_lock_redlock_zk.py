"""Redlock over five real redis-servers and ZooKeeperLock against a real ZooKeeper."""

# ruff: noqa: F401, F811
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis

from stalwart.lock import (
    BackendUnavailable,
    BlockingLock,
    LockLost,
    LockTimeout,
    NotAcquired,
    Redlock,
    RedlockClient,
    ZooKeeperClient,
    ZooKeeperLock,
    close_shared_zk,
    run_blocking,
)
from tests.integration._locks import contend
from tests.servers.redis import RedisServer, five, flush, redis_servers5
from tests.servers.zookeeper import ZooKeeperServer, zookeeper_server

pytestmark = pytest.mark.integration


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with asyncio.timeout(90):
            return await coro_fn()

    return asyncio.run(main())


def all_keys(servers: list[RedisServer]) -> list[list[bytes]]:
    out = []
    for server in servers:
        with redis.Redis.from_url(server.url) as r:
            out.append(sorted(r.keys("*")))
    return out


def test_redlock_contention_no_lost_updates_and_no_orphans(five: list[RedisServer]) -> None:
    urls = [s.url for s in five]

    async def body() -> None:
        async with RedlockClient(urls) as client:
            count, order = await contend(
                lambda i: Redlock(client, "rl", ttl=5.0, retry_delay_s=0.01), rounds=12
            )
            assert count == 8 * 12
            # Per-server max-based tokens: increasing while no server loses data (the caveat).
            assert order == sorted(order) and len(set(order)) == len(order)
            assert not client.watchdog.running
            async with Redlock(client, "rl") as held:
                assert held.token_is_safe is False
                assert held.token > order[-1]

    run(body)
    # Released everywhere: only the per-server fencing counters remain.
    assert all_keys(five) == [[b"stalwart:lock:{rl}:fence"]] * 5


def test_redlock_ten_thousand_cycles_leave_nothing_behind(five: list[RedisServer]) -> None:
    """The issue's 10,000 cycles for Redlock: on every server only the fencing counter is left,
    the script cache holds Redlock's three scripts only, nothing subscribes, no timer or task runs."""
    urls = [s.url for s in five]
    for server in five:
        with redis.Redis.from_url(server.url) as r:
            r.script_flush()

    async def body() -> None:
        async with RedlockClient(urls) as client:
            locks = [Redlock(client, f"cyc-{i}", ttl=5.0) for i in range(4)]

            async def cycles(lock: Redlock, n: int) -> int:
                token = 0
                for _ in range(n):
                    held = await lock.acquire()
                    assert held.token > token  # strictly increasing per lock name
                    token = held.token
                    await held.release()
                return token

            assert await asyncio.gather(*(cycles(lock, 2500) for lock in locks)) == [2500] * 4
            assert not client.watchdog.running and client.watchdog.leases == 0
            assert not client._inflight  # every fan-out was answered
            assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("stalwart-")]

    run(body)
    fences = [f"stalwart:lock:{{cyc-{i}}}:fence" for i in range(4)]
    for server in five:
        with redis.Redis.from_url(server.url) as r:
            assert sorted(r.keys("*")) == sorted(f.encode() for f in fences)
            assert [int(r.get(f) or 0) for f in fences] == [2500] * 4
            # Release, renew and bump, loaded once per connection (the acquire is a MULTI
            # transaction): no per-call EVAL.
            assert r.info("memory")["number_of_cached_scripts"] == 3
            assert r.pubsub_channels() == [] and r.pubsub_numpat() == 0
            assert not any(int(c.get("sub", 0)) or int(c.get("psub", 0)) for c in r.client_list())


def test_redlock_survives_minority_failure_and_refuses_without_quorum(five: list[RedisServer]) -> None:
    urls = [s.url for s in five]

    async def body() -> None:
        async with RedlockClient(urls, server_timeout_s=0.2) as client:
            five[0].pause()
            five[1].pause()  # two of five silent: the quorum of three still answers
            t0 = time.monotonic()
            held = await Redlock(client, "minority", ttl=2.0).acquire(timeout=5)
            assert time.monotonic() - t0 < 1.5
            await asyncio.sleep(1.0)  # renewed on the majority past a third of the TTL
            held.ensure()
            await held.release()
            five[2].pause()  # three of five silent: no quorum is possible
            t0 = time.monotonic()
            with pytest.raises(BackendUnavailable, match="no quorum possible"):
                await Redlock(client, "minority", ttl=0.5).acquire(blocking=False)
            with pytest.raises(LockTimeout):
                await Redlock(client, "minority", ttl=0.5).acquire(timeout=0.5)
            assert time.monotonic() - t0 < 2.5
            for server in five[:3]:
                server.resume()
            # A paused server runs the SETs it buffered once it resumes, possibly after the
            # release that could not reach it: such a key can only expire at its TTL.
            await asyncio.sleep(0.6)

    run(body)
    left = all_keys(five)
    assert all(set(keys) <= {b"stalwart:lock:{minority}:fence"} for keys in left), left


def test_redlock_lost_when_majority_forgets(five: list[RedisServer]) -> None:
    urls = [s.url for s in five]

    async def body() -> None:
        async with RedlockClient(urls) as client:
            held = await Redlock(client, "forget", ttl=0.6).acquire()
            for server in five[:3]:
                with redis.Redis.from_url(server.url) as r:
                    r.delete("stalwart:lock:{forget}")
            async with asyncio.timeout(3):
                await held.lost.wait()
            with pytest.raises(LockLost):
                held.ensure()
            await held.release()

    run(body)


def test_zookeeper_contention_tokens_are_czxids_in_order(zookeeper_server: ZooKeeperServer) -> None:
    async def body() -> None:
        async with ZooKeeperClient(zookeeper_server.hosts) as client:
            count, order = await contend(lambda i: ZooKeeperLock(client, "zk-rmw"), rounds=12)
            assert count == 8 * 12
            assert order == sorted(order) and len(set(order)) == len(order)
            children = await client.call(client.kazoo.get_children_async(f"{client.root}/zk-rmw"), "ls")
            assert children == []

    run(body)


def test_zookeeper_try_timeout_and_predecessor_watch(zookeeper_server: ZooKeeperServer) -> None:
    async def body() -> None:
        async with ZooKeeperClient(zookeeper_server.hosts) as client:
            first = await ZooKeeperLock(client, "zk-try").acquire()
            assert first.token_is_safe
            assert await ZooKeeperLock(client, "zk-try").try_acquire() is None
            with pytest.raises(LockTimeout):
                await ZooKeeperLock(client, "zk-try").acquire(timeout=0.3)
            waiters = [asyncio.create_task(ZooKeeperLock(client, "zk-try").acquire()) for _ in range(3)]
            await asyncio.sleep(0.3)
            assert not any(w.done() for w in waiters)
            await first.release()
            tokens = []
            for w in waiters:  # each release wakes exactly the next one
                held = await w
                tokens.append(held.token)
                await held.release()
            assert tokens == sorted(tokens) and tokens[0] > first.token
            children = await client.call(client.kazoo.get_children_async(f"{client.root}/zk-try"), "ls")
            assert children == []

    run(body)


def test_zookeeper_session_loss_sets_lost(zookeeper_server: ZooKeeperServer) -> None:
    async def body() -> None:
        client = ZooKeeperClient(zookeeper_server.hosts, session_timeout_s=1.0)
        async with client:
            held = await ZooKeeperLock(client, "zk-lost").acquire()
            zookeeper_server.pause()  # the server stops answering: the session is suspended
            try:
                async with asyncio.timeout(10):
                    await held.lost.wait()
            finally:
                zookeeper_server.resume()
            assert "suspended" in (held.lost_reason or "") or "lost" in (held.lost_reason or "")
            with pytest.raises(LockLost):
                held.ensure()
            await held.release()

    run(body)


def test_zookeeper_blocking_wrapper(zookeeper_server: ZooKeeperServer) -> None:
    lock = BlockingLock(ZooKeeperLock(zookeeper_server.hosts, "zk-blocking"))
    try:
        with lock as held:
            held.ensure()
            assert lock.try_acquire() is None
        again = lock.acquire(timeout=5)
        assert again.token > held.token
        again.release()
    finally:
        # The blocking wrapper's loop outlives the test: close its shared kazoo client, or it
        # keeps reconnecting (with jittered retries) to the server this test's fixture stops.
        run_blocking(close_shared_zk())

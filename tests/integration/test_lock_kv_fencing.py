"""Redlock with fencing tokens from the stalwart CP store: real redis-servers, a real cluster."""

# ruff: noqa: F401, F811
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from stalwart.lock import BackendUnavailable, KVTokenSource, Redlock, RedlockClient
from stalwart.server._cluster import ClusterSpec, start_cluster, stop_cluster
from tests.integration._locks import contend
from tests.servers.kv import FAST, cluster
from tests.servers.kv import client as kv_client
from tests.servers.redis import RedisServer, five, flush, redis_servers5

pytestmark = pytest.mark.integration


def test_lock_redlock_store_tokens_survive_redis_data_loss(
    five: list[RedisServer], cluster: ClusterSpec
) -> None:
    """Contending workers get strictly increasing tokens in acquisition order, marked safe; and
    after every Redis server lost its data (its own counters back at zero) the next token is
    still higher than every earlier one, which Redlock's per-server counters cannot promise."""
    urls = [s.url for s in five]

    async def main() -> tuple[list[int], int, list[int]]:
        client = kv_client(cluster)
        tokens = KVTokenSource(client)
        locks = RedlockClient(urls)
        try:
            count, order = await contend(lambda i: Redlock(locks, "kvfence", ttl=5.0, tokens=tokens), 4, 10)
            assert count == 40
            async with Redlock(locks, "kvfence", ttl=5.0, tokens=tokens) as held:
                assert held.token_is_safe
                before = held.token
            for server in five:
                flush(server)  # every server restarted without its data
            async with Redlock(locks, "kvfence", ttl=5.0, tokens=tokens) as held:
                after = held.token
            async with Redlock(locks, "kvfence", ttl=5.0) as plain:  # the per-server counters
                assert not plain.token_is_safe
                plain_token = plain.token
            return order, after - before, [before, plain_token]
        finally:
            await locks.aclose()
            await client.close()

    order, gap, (store_token, plain_token) = asyncio.run(main())
    assert order == sorted(order) and len(set(order)) == len(order)
    assert gap > 0
    assert plain_token < store_token  # what Redlock's own counters would have handed out


def test_lock_redlock_store_down_fails_the_acquire_and_leaves_nothing(
    five: list[RedisServer], tmp_path: Path
) -> None:
    """The store cannot issue a token: the acquire fails with BackendUnavailable, in bounded
    time, and the quorum's keys are released at once (no orphan waits out its TTL)."""
    spec = start_cluster(tmp_path / "c", 3, **FAST)
    stop_cluster(tmp_path / "c", timeout_s=5.0)
    urls = [s.url for s in five]

    async def main() -> None:
        client = kv_client(spec, timeout_s=1.0)
        locks = RedlockClient(urls)
        try:
            async with asyncio.timeout(30):
                with pytest.raises(BackendUnavailable, match="CP store"):
                    async with Redlock(locks, "kvdown", ttl=30.0, tokens=KVTokenSource(client)):
                        pass
        finally:
            await locks.aclose()
            await client.close()

    asyncio.run(main())
    for server in five:
        with redis.Redis.from_url(server.url) as r:
            assert r.get("stalwart:lock:{kvdown}") is None, "the lock key was left until its TTL"

"""A holder frozen with SIGSTOP past its lease, for Redlock, ZooKeeper and a PostgreSQL row
(Redis alone is in test_lock_faults.py; the choreography is ``_locks.freeze_and_fence``): the next
holder gets a higher token, the frozen holder's fenced write is rejected when it wakes, and its
``held.lost`` is set."""

# ruff: noqa: F401, F811
from __future__ import annotations

import contextlib

import pytest

from stalwart.lock import (
    FencedRow,
    Held,
    RedisBackend,
    RedisLock,
    Redlock,
    RedlockClient,
    ZooKeeperClient,
    ZooKeeperLock,
)
from tests.integration._locks import Fence, freeze_and_fence
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer, flush, redis_server, redis_servers5
from tests.servers.zookeeper import ZooKeeperServer, zookeeper_server

pytestmark = pytest.mark.integration


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

    freeze_and_fence("redlock", urls, 0.6, Fence("redis", urls[0]), next_holder)


def test_paused_zookeeper_holder(
    zookeeper_server: ZooKeeperServer, redis_servers5: list[RedisServer]
) -> None:
    flush(redis_servers5[0])

    async def next_holder(stack: contextlib.AsyncExitStack) -> Held:
        client = await stack.enter_async_context(ZooKeeperClient(zookeeper_server.hosts))
        # The frozen holder's node goes only when its 1 s session expires on the server.
        return await ZooKeeperLock(client, "paused").acquire(timeout=20)

    # The frozen holder's ZooKeeper session times out after 1 s.
    freeze_and_fence(
        "zookeeper", zookeeper_server.hosts, 1.0, Fence("redis", redis_servers5[0].url), next_holder
    )


def test_paused_holder_is_fenced_off_a_postgres_row(
    redis_server: RedisServer, postgres_server: PostgresServer
) -> None:
    """The issue's "guarding a PostgreSQL row": FencedRow's one-statement token check."""
    import psycopg

    flush(redis_server)
    dsn = postgres_server.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS guarded")
        conn.execute("CREATE TABLE guarded (id int PRIMARY KEY, note text)")
        conn.execute(FencedRow("guarded").add_column_sql())
        conn.execute("INSERT INTO guarded (id, note) VALUES (1, 'initial')")

    async def next_holder(stack: contextlib.AsyncExitStack) -> Held:
        backend = await stack.enter_async_context(RedisBackend(redis_server.url))
        return await RedisLock(backend, "paused", ttl=5.0).acquire(timeout=10)

    freeze_and_fence("redis", redis_server.url, 0.6, Fence("pg", dsn), next_holder)

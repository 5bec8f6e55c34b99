"""Fencing on the resource side is exact at every token size, and bad setups are typed errors.

FencedResource compares tokens on the server as decimal strings: Lua numbers are doubles, which
made 2**53 + 1 equal to 2**53 and let a lower token through. FencedRow reports a NULL fence
column (every write would be refused) as a LockError instead of a bare TypeError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stalwart.lock._fence
from stalwart.errors import ConfigError
from stalwart.lock import FencedResource, FencedRow, LockError, RedisBackend, StaleToken
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer, flush, redis_server

pytestmark = pytest.mark.integration

__all__ = ["redis_server"]  # the fixture, imported to be used here

BIG = 2**53


def test_tokens_above_two_to_the_53_are_compared_exactly(redis_server: RedisServer) -> None:
    flush(redis_server)

    async def body() -> None:
        async with RedisBackend(redis_server.url) as backend:
            res = FencedResource(backend, "guarded")
            await res.write(BIG + 1, b"new holder")
            with pytest.raises(StaleToken) as info:
                await res.write(BIG, b"stale holder")  # one lower: equal as doubles
            assert (info.value.token, info.value.highest) == (BIG, BIG + 1)
            top = 2**64 - 1
            await res.write(top - 1, b"near the top")
            with pytest.raises(StaleToken):
                await res.write(top - 2, b"stale")
            await res.write(top, b"top")
            assert await res.read() == (top, b"top")
            with pytest.raises(ConfigError, match="2\\*\\*64"):
                await res.write(top + 1, b"over the range")
            with pytest.raises(ConfigError):
                await res.write(-1, b"negative")

    asyncio.run(body())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            st.integers(0, 2**64 - 1),
            st.integers(BIG - 3, BIG + 3),  # where doubles stop being exact
            st.integers(0, 30),  # short ones against long ones
        ),
        min_size=1,
        max_size=12,
    )
)
def test_a_write_lands_exactly_when_its_token_is_at_least_the_highest(
    redis_server: RedisServer, tokens: list[int]
) -> None:
    flush(redis_server)

    async def body() -> None:
        async with RedisBackend(redis_server.url) as backend:
            res = FencedResource(backend, "model")
            highest: int | None = None
            for i, token in enumerate(tokens):
                if highest is None or token >= highest:
                    await res.write(token, b"%d" % i)
                    highest, value = token, b"%d" % i
                else:
                    with pytest.raises(StaleToken) as info:
                        await res.write(token, b"stale")
                    assert info.value.highest == highest
                assert await res.read() == (highest, value)

    asyncio.run(body())


def test_the_value_limit_counts_bytes_not_characters(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stalwart.lock._fence, "MAX_VALUE_BYTES", 8)

    async def body() -> None:
        async with RedisBackend(redis_server.url) as backend:
            res = FencedResource(backend, "sized")
            await res.write(1, "12345678")
            with pytest.raises(ConfigError, match="10 bytes"):
                await res.write(2, "ééééé")  # 5 characters, 10 bytes in UTF-8
            assert await res.read() == (1, b"12345678")

    asyncio.run(body())


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> Iterator[str]:
    dsn = postgres_server.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS nullable_fence")
        conn.execute("CREATE TABLE nullable_fence (id int PRIMARY KEY, v int, fence bigint)")
        conn.execute("INSERT INTO nullable_fence (id, v) VALUES (1, 0)")
    yield dsn


def test_a_null_fence_column_is_a_lock_error_that_says_so(dsn: str) -> None:
    rows = FencedRow("nullable_fence")
    with psycopg.connect(dsn, autocommit=True) as conn, pytest.raises(LockError, match="NULL"):
        rows.update_sync(conn, 1, 5, {"v": 1})

    async def body() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            with pytest.raises(LockError, match="NULL"):
                await rows.update(conn, 1, 5, {"v": 1})

    asyncio.run(body())

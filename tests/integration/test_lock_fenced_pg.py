"""FencedRow against a real PostgreSQL (started by the ``postgres_server`` fixture): the token
check and the write are one UPDATE, so a lower token never lands, even racing a higher one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from stalwart.errors import ConfigError
from stalwart.lock import FencedRow, LockError, StaleToken
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.integration


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> Iterator[str]:
    dsn = postgres_server.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('DROP TABLE IF EXISTS "fenced accounts"')
        conn.execute('CREATE TABLE "fenced accounts" (id int PRIMARY KEY, balance int NOT NULL)')
        conn.execute(FencedRow("fenced accounts").add_column_sql())
        conn.execute('INSERT INTO "fenced accounts" (id, balance) VALUES (1, 100), (2, 200)')
    yield dsn


def row(dsn: str, key: int) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        got = conn.execute('SELECT balance, fence FROM "fenced accounts" WHERE id = %s', (key,)).fetchone()
    assert got is not None
    return got[0], got[1]


def test_higher_or_equal_tokens_write_lower_ones_are_rejected(dsn: str) -> None:
    rows = FencedRow("fenced accounts")
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows.update_sync(conn, 1, 5, {"balance": 110})
        rows.update_sync(conn, 1, 5, {"balance": 111})  # the same holder writes again
        with pytest.raises(StaleToken) as info:
            rows.update_sync(conn, 1, 4, {"balance": 999})
        assert (info.value.token, info.value.highest) == (4, 5)
        assert row(dsn, 1) == (111, 5)
        rows.update_sync(conn, 2, 1, {"balance": 201})  # tokens are per row
        with pytest.raises(LockError, match="no such row"):
            rows.update_sync(conn, 3, 9, {"balance": 1})
    assert row(dsn, 2) == (201, 1)


def test_async_update_and_rejection_inside_the_callers_transaction(dsn: str) -> None:
    async def body() -> None:
        rows = FencedRow("fenced accounts")
        async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
            await rows.update(conn, 1, 7, {"balance": 170})
            with pytest.raises(StaleToken):
                await rows.update(conn, 1, 6, {"balance": 160})
            # A rejection is not an SQL error: the transaction goes on and commits.
            await conn.execute('UPDATE "fenced accounts" SET balance = balance + 1 WHERE id = 2')
        assert row(dsn, 1) == (170, 7) and row(dsn, 2) == (201, 0)

    asyncio.run(body())


def test_racing_writers_the_highest_token_wins(dsn: str) -> None:
    """A lower token that waits on the row lock of a higher one re-checks after it commits."""

    async def body() -> None:
        rows = FencedRow("fenced accounts")
        high = await psycopg.AsyncConnection.connect(dsn)
        low = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        try:
            await rows.update(high, 1, 10, {"balance": 1000})  # row locked, not committed yet
            late = asyncio.create_task(rows.update(low, 1, 9, {"balance": 900}))
            await asyncio.sleep(0.3)
            assert not late.done(), "the lower token must wait for the row lock"
            await high.commit()
            with pytest.raises(StaleToken):
                await late
        finally:
            await high.close()
            await low.close()
        assert row(dsn, 1) == (1000, 10)

    asyncio.run(body())


def test_bad_arguments_are_refused_before_any_sql() -> None:
    rows = FencedRow("fenced accounts")
    for token, values in [(-1, {"balance": 1}), (1, {}), (1, {"fence": 3}), (1, {"id": 3})]:
        with pytest.raises(ConfigError):
            rows._statements(values, token)
    with pytest.raises(ConfigError):
        FencedRow("")


def test_a_column_with_a_dot_is_one_identifier_and_percent_is_refused(dsn: str) -> None:
    """Review regression: "fence.x" was split into "fence"."x", and a '%' read as a placeholder."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('ALTER TABLE "fenced accounts" ADD COLUMN "bal.ance" int NOT NULL DEFAULT 0')
        FencedRow("public.fenced accounts").update_sync(conn, 1, 3, {"bal.ance": 42})
        got = conn.execute('SELECT "bal.ance", fence FROM "fenced accounts" WHERE id = 1').fetchone()
    assert got == (42, 3)
    for bad in ("pct%(token)s", "a%sb"):
        with pytest.raises(ConfigError):
            FencedRow("fenced accounts")._statements({bad: 1}, 5)
        with pytest.raises(ConfigError):
            FencedRow("fenced accounts", fence_column=bad)


def test_repeatable_read_a_newer_concurrent_write_aborts_the_transaction(dsn: str) -> None:
    """What the docstring now says: no re-check under REPEATABLE READ, a serialization failure."""
    from stalwart.lock import BackendUnavailable

    rows = FencedRow("fenced accounts")
    with psycopg.connect(dsn) as old, psycopg.connect(dsn, autocommit=True) as new:
        old.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        old.execute('SELECT 1 FROM "fenced accounts"')  # the snapshot is taken
        rows.update_sync(new, 1, 9, {"balance": 190})  # a newer holder writes and commits
        with pytest.raises(BackendUnavailable, match="serialize"):
            rows.update_sync(old, 1, 10, {"balance": 1})  # even a higher token
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            old.execute("SELECT 1")
        old.rollback()
    assert row(dsn, 1) == (190, 9)

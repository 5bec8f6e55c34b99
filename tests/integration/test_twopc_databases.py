"""Two-phase commit across a real PostgreSQL and a real MariaDB."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from stalwart.txn import (
    CoordinatorSettings,
    MariaDBResource,
    PostgresDecisionLog,
    PostgresResource,
    PreparedTransactionsDisabledError,
    TransactionAbortedError,
    TwoPhaseCoordinator,
)
from tests.servers.mariadb import MariaDBServer, mariadb_server  # noqa: F401
from tests.servers.postgres import PostgresServer, postgres_server  # noqa: F401

FAST = CoordinatorSettings(vote_timeout_s=3, retry_interval_s=0.1, tick_ms=20, recovery_grace_s=0.2,
                           recovery_interval_s=0.2, outcome_timeout_s=10)  # fmt: skip


def _reset_pg(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        for (gid,) in c.execute("SELECT gid FROM pg_prepared_xacts").fetchall():
            c.execute(f"ROLLBACK PREPARED '{gid}'")
        c.execute("DROP TABLE IF EXISTS accounts")
        c.execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance INT NOT NULL CHECK (balance >= 0))")
        c.execute("INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 10) g")
        c.execute("DROP TABLE IF EXISTS uniq")
        c.execute("CREATE TABLE uniq (id INT, UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)")


def _reset_maria(kw: dict[str, Any]) -> None:
    c = pymysql.connect(**kw, autocommit=True)
    with c.cursor() as cur:
        cur.execute("XA RECOVER")
        for _f, glen, _b, data in cur.fetchall():
            cur.execute("XA ROLLBACK %s", (data[:glen],))
        cur.execute("DROP TABLE IF EXISTS accounts")
        cur.execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance INT NOT NULL) ENGINE=InnoDB")
        cur.execute("INSERT INTO accounts VALUES " + ",".join(f"({i}, 100)" for i in range(1, 11)))
    c.close()


@pytest.fixture
def bank(postgres_server: PostgresServer, mariadb_server: MariaDBServer) -> tuple[str, dict[str, Any]]:  # noqa: F811
    dsn = postgres_server.dsn("postgres")
    kw = mariadb_server.connect_kwargs("test")
    _reset_pg(dsn)
    _reset_maria(kw)
    return dsn, kw


def pg_sum(dsn: str) -> int:
    with psycopg.connect(dsn) as c:
        row = c.execute("SELECT sum(balance) FROM accounts").fetchone()
        assert row is not None
        return int(row[0])


def maria_sum(kw: dict[str, Any]) -> int:
    c = pymysql.connect(**kw)
    with c.cursor() as cur:
        cur.execute("SELECT sum(balance) FROM accounts")
        (total,) = cur.fetchone()
    c.close()
    return int(total)


def prepared_left(dsn: str, kw: dict[str, Any]) -> int:
    with psycopg.connect(dsn) as c:
        row = c.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone()
        assert row is not None
        n = int(row[0])
    m = pymysql.connect(**kw)
    with m.cursor() as cur:
        cur.execute("XA RECOVER")
        n += len(cur.fetchall())
    m.close()
    return n


async def transfer(coord: TwoPhaseCoordinator, amount: int, src: int = 1, dst: int = 1) -> None:
    async with coord.transaction() as tx:
        await tx.execute("pg", "UPDATE accounts SET balance = balance - %s WHERE id = %s", (amount, src))
        await tx.execute("maria", "UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, dst))


def test_twopc_commit_and_abort_across_postgres_and_mariadb(
    bank: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    dsn, kw = bank

    async def main() -> None:
        resources = [PostgresResource("pg", dsn), MariaDBResource("maria", **kw)]
        async with TwoPhaseCoordinator(resources, log_path=tmp_path / "log.db", settings=FAST) as coord:
            await transfer(coord, 30)
            with pytest.raises(psycopg.errors.CheckViolation):
                await transfer(coord, 500)  # fails at once on PostgreSQL: both branches roll back
            with pytest.raises(TransactionAbortedError, match="pg voted no"):
                async with coord.transaction() as tx:  # a deferred constraint fails at PREPARE
                    await tx.execute("maria", "UPDATE accounts SET balance = balance + 7 WHERE id = 3")
                    await tx.execute("pg", "INSERT INTO uniq VALUES (1), (1)")
            with pytest.raises(RuntimeError):
                async with coord.transaction() as tx:
                    await tx.execute("maria", "UPDATE accounts SET balance = 0 WHERE id = 2")
                    raise RuntimeError("the application gave up")

    asyncio.run(main())
    assert (pg_sum(dsn), maria_sum(kw)) == (970, 1030)
    assert prepared_left(dsn, kw) == 0


def test_twopc_concurrent_transfers_keep_the_total(bank: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    dsn, kw = bank

    async def main() -> None:
        resources = [PostgresResource("pg", dsn), MariaDBResource("maria", **kw)]
        async with TwoPhaseCoordinator(resources, log_path=tmp_path / "log.db", settings=FAST) as coord:

            async def worker(i: int) -> None:
                for j in range(10):
                    # lock conflicts may abort; atomicity is what is checked
                    with contextlib.suppress(TransactionAbortedError):
                        await transfer(coord, 1 + (i + j) % 5, src=1 + i, dst=1 + (i + j) % 10)

            await asyncio.gather(*(worker(i) for i in range(8)))

    asyncio.run(main())
    assert pg_sum(dsn) + maria_sum(kw) == 2000
    assert prepared_left(dsn, kw) == 0


def test_twopc_shared_postgres_decision_log(bank: tuple[str, dict[str, Any]]) -> None:
    dsn, kw = bank

    async def main() -> None:
        for name in ("coord-a", "coord-b"):
            resources = [PostgresResource("pg", dsn), MariaDBResource("maria", **kw)]
            log = PostgresDecisionLog(dsn, name)
            async with TwoPhaseCoordinator(resources, name=name, log=log, settings=FAST) as coord:
                await transfer(coord, 5)

    asyncio.run(main())
    assert (pg_sum(dsn), maria_sum(kw)) == (990, 1010)


def test_twopc_preflight_explains_max_prepared_transactions(tmp_path: Path) -> None:
    server = PostgresServer(max_prepared_transactions=0).start()
    try:

        async def main() -> None:
            async with TwoPhaseCoordinator(
                [PostgresResource("pg", server.dsn())], log_path=tmp_path / "l.db"
            ):
                pass

        with pytest.raises(PreparedTransactionsDisabledError, match="max_prepared_transactions"):
            asyncio.run(main())
    finally:
        server.stop()

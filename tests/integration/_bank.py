"""The bank used by the 2PC tests: accounts in a real PostgreSQL and a real MariaDB."""

from __future__ import annotations

from typing import Any

import psycopg
import pymysql
import pytest

from stalwart.txn import TwoPhaseCoordinator
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer


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
def bank(postgres_server: PostgresServer, mariadb_server: MariaDBServer) -> tuple[str, dict[str, Any]]:
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

"""Two-phase commit throughput across two PostgreSQL databases, against the hand-written floor.

The floor is what a user would write by hand with psycopg: per transaction, an UPDATE and a
PREPARE TRANSACTION on each database (in parallel), then COMMIT PREPARED on each (in parallel),
with no coordinator log at all (so no recovery). stalwart runs the same work through
TwoPhaseCoordinator with its durable SQLite decision log (fsync on, group commit). Both use the
same PostgreSQL server (fsync on, two databases), the same concurrency and the same duration,
alternating rounds; the table shows medians.

    .venv/bin/python -m bench.bench_twopc [--clients 16] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from stalwart.txn import CoordinatorSettings, PostgresResource, TwoPhaseCoordinator
from tests.servers.postgres import PostgresServer

ACCOUNTS = 1_000


def setup(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS accounts")
        c.execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL)")
        c.execute("INSERT INTO accounts SELECT g, 1000000 FROM generate_series(1, %s) g", (ACCOUNTS,))


async def branch(conn: psycopg.AsyncConnection[tuple[object, ...]], delta: int, acct: int, gid: str) -> None:
    await conn.execute("BEGIN")
    await conn.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (delta, acct))
    await conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))


async def floor(dsn1: str, dsn2: str, clients: int, seconds: float) -> int:
    done = 0
    stop_at = time.monotonic() + seconds

    async def client(k: int) -> None:
        nonlocal done
        c1 = await psycopg.AsyncConnection.connect(dsn1, autocommit=True)
        c2 = await psycopg.AsyncConnection.connect(dsn2, autocommit=True)
        i = 0
        while time.monotonic() < stop_at:
            gid = f"floor-{k}-{i}"
            acct = 1 + (k * 7919 + i) % ACCOUNTS

            await asyncio.gather(branch(c1, -1, acct, gid + "a"), branch(c2, 1, acct, gid + "b"))
            await asyncio.gather(
                c1.execute(sql.SQL("COMMIT PREPARED {}").format(sql.Literal(gid + "a"))),
                c2.execute(sql.SQL("COMMIT PREPARED {}").format(sql.Literal(gid + "b"))),
            )
            done += 1
            i += 1
        await c1.close()
        await c2.close()

    await asyncio.gather(*(client(k) for k in range(clients)))
    return done


async def stalwart_2pc(dsn1: str, dsn2: str, clients: int, seconds: float, log_dir: Path) -> int:
    done = 0
    stop_at = time.monotonic() + seconds
    settings = CoordinatorSettings(tick_ms=20, retry_interval_s=0.2, recovery_interval_s=60)
    resources = [PostgresResource("db1", dsn1), PostgresResource("db2", dsn2)]
    log_path = log_dir / f"bench-{time.monotonic_ns()}.db"
    async with TwoPhaseCoordinator(resources, log_path=log_path, settings=settings) as coord:

        async def client(k: int) -> None:
            nonlocal done
            i = 0
            while time.monotonic() < stop_at:
                acct = 1 + (k * 7919 + i) % ACCOUNTS
                async with coord.transaction() as tx:
                    await asyncio.gather(
                        tx.execute("db1", "UPDATE accounts SET balance = balance - 1 WHERE id = %s", (acct,)),
                        tx.execute("db2", "UPDATE accounts SET balance = balance + 1 WHERE id = %s", (acct,)),
                    )
                done += 1
                i += 1

        await asyncio.gather(*(client(k) for k in range(clients)))
    return done


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    server = PostgresServer(max_prepared_transactions=256).start()
    try:
        dsn1, dsn2 = server.create_database("bench1"), server.create_database("bench2")
        setup(dsn1)
        setup(dsn2)
        results: dict[str, list[float]] = {"floor": [], "stalwart": []}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):
                n = asyncio.run(floor(dsn1, dsn2, args.clients, args.seconds))
                results["floor"].append(n / args.seconds)
                n = asyncio.run(stalwart_2pc(dsn1, dsn2, args.clients, args.seconds, Path(tmp)))
                results["stalwart"].append(n / args.seconds)
    finally:
        server.stop()
    f, s = statistics.median(results["floor"]), statistics.median(results["stalwart"])
    print(
        f"2PC across two PostgreSQL databases, {args.clients} clients, {args.seconds:.0f} s x {args.rounds}"
    )
    print(f"{'variant':<44}{'tx/s (median)':>15}{'runs':>30}")
    for label, value, runs in (
        ("hand-written PREPARE/COMMIT PREPARED (floor)", f, results["floor"]),
        ("stalwart TwoPhaseCoordinator + SQLite log", s, results["stalwart"]),
    ):
        print(f"{label:<44}{value:>15.0f}{[round(x) for x in runs]!s:>30}")
    print(f"stalwart / floor = {s / f:.1%}  (goal >= 90%)")


if __name__ == "__main__":
    main()

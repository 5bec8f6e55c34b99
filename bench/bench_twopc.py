"""Two-phase commit throughput across two PostgreSQL databases, against the hand-written floor.

The floor is what a user would write by hand with psycopg: per transaction, an UPDATE and a
PREPARE TRANSACTION on each database (in parallel), then COMMIT PREPARED on each (in parallel),
with no coordinator log at all (so no recovery). stalwart runs the same work through
TwoPhaseCoordinator with its durable SQLite decision log (fsync on, group commit). Both use the
same PostgreSQL server (fsync on, two databases), the same concurrency and the same duration,
rounds alternating which goes first; the table shows medians.

The two count a transaction at different points: the floor after its COMMIT PREPARED, stalwart
when its caller returns, i.e. once the decision is durable (phase 2 then runs in the background,
as it does for any stalwart user). A reviewer counted what PostgreSQL actually committed inside
each window: it matched stalwart's count within 1%, so the background phase 2 keeps up.

Each round is measured in steady state: connections are opened and the work runs for
``--warmup`` seconds before the window opens (a coordinator is a long-lived process, and a hand
written client keeps its connections too). Besides transactions per second the table shows the
CPU each side spends per transaction: the benchmark process (client and coordinator), and the
PostgreSQL server (every process of the server this benchmark started), so a difference in
throughput can be traced to the side that costs it.

    .venv/bin/python -m bench.bench_twopc [--clients 16] [--seconds 5] [--warmup 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from stalwart.txn import CoordinatorSettings, PostgresResource, TwoPhaseCoordinator
from tests.servers.postgres import PostgresServer

ACCOUNTS = 1_000
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def setup(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS accounts")
        c.execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL)")
        c.execute("INSERT INTO accounts SELECT g, 1000000 FROM generate_series(1, %s) g", (ACCOUNTS,))


def tree_cpu_s(root: int) -> float:
    """CPU seconds of ``root`` and every process under it, including exited (reaped) children."""
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stats[int(entry)] = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited while we looked
    members, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, fields in stats.items():
            if int(fields[1]) == parent and pid not in members:
                members.add(pid)
                frontier.append(pid)
    ticks = sum(sum(int(x) for x in stats[pid][11:15]) for pid in members if pid in stats)
    return ticks / _TICKS_PER_S


@dataclass
class Window:
    """Counts the transactions that finish inside [warm-up end, warm-up end + seconds)."""

    warmup_s: float
    seconds: float
    server_pid: int
    done: int = 0
    over: bool = False
    figures: dict[str, float] = field(default_factory=dict)

    async def run(self) -> None:
        await asyncio.sleep(self.warmup_s)
        n0, c0, p0, t0 = self.done, time.process_time(), tree_cpu_s(self.server_pid), time.monotonic()
        await asyncio.sleep(self.seconds)
        n1, c1, p1, t1 = self.done, time.process_time(), tree_cpu_s(self.server_pid), time.monotonic()
        self.over = True
        n = max(1, n1 - n0)
        self.figures = {
            "tx/s": (n1 - n0) / (t1 - t0),
            "client us/tx": 1e6 * (c1 - c0) / n,
            "server us/tx": 1e6 * (p1 - p0) / n,
        }


async def branch(conn: psycopg.AsyncConnection[tuple[object, ...]], delta: int, acct: int, gid: str) -> None:
    await conn.execute("BEGIN")
    await conn.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (delta, acct))
    await conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))


async def floor(dsn1: str, dsn2: str, clients: int, window: Window) -> None:
    run_id = time.monotonic_ns()

    async def client(k: int) -> None:
        c1 = await psycopg.AsyncConnection.connect(dsn1, autocommit=True)
        c2 = await psycopg.AsyncConnection.connect(dsn2, autocommit=True)
        i = 0
        while not window.over:
            gid = f"floor-{run_id}-{k}-{i}"
            acct = 1 + (k * 7919 + i) % ACCOUNTS
            await asyncio.gather(branch(c1, -1, acct, gid + "a"), branch(c2, 1, acct, gid + "b"))
            await asyncio.gather(
                c1.execute(sql.SQL("COMMIT PREPARED {}").format(sql.Literal(gid + "a"))),
                c2.execute(sql.SQL("COMMIT PREPARED {}").format(sql.Literal(gid + "b"))),
            )
            window.done += 1
            i += 1
        await c1.close()
        await c2.close()

    await asyncio.gather(window.run(), *(client(k) for k in range(clients)))


async def stalwart_2pc(dsn1: str, dsn2: str, clients: int, window: Window, log_dir: Path) -> None:
    settings = CoordinatorSettings(tick_ms=20, retry_interval_s=0.2, recovery_interval_s=60)
    resources = [PostgresResource("db1", dsn1), PostgresResource("db2", dsn2)]
    log_path = log_dir / f"bench-{time.monotonic_ns()}.db"
    async with TwoPhaseCoordinator(resources, log_path=log_path, settings=settings) as coord:

        async def client(k: int) -> None:
            i = 0
            while not window.over:
                acct = 1 + (k * 7919 + i) % ACCOUNTS
                async with coord.transaction() as tx:
                    await asyncio.gather(
                        tx.execute("db1", "UPDATE accounts SET balance = balance - 1 WHERE id = %s", (acct,)),
                        tx.execute("db2", "UPDATE accounts SET balance = balance + 1 WHERE id = %s", (acct,)),
                    )
                window.done += 1
                i += 1

        await asyncio.gather(window.run(), *(client(k) for k in range(clients)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    server = PostgresServer(max_prepared_transactions=256).start()
    assert server.proc is not None
    results: dict[str, list[dict[str, float]]] = {"floor": [], "stalwart": []}
    try:
        dsn1, dsn2 = server.create_database("bench1"), server.create_database("bench2")
        setup(dsn1)
        setup(dsn2)
        with tempfile.TemporaryDirectory() as tmp:
            variants: dict[str, Callable[[Window], Awaitable[None]]] = {
                "floor": lambda w: floor(dsn1, dsn2, args.clients, w),
                "stalwart": lambda w: stalwart_2pc(dsn1, dsn2, args.clients, w, Path(tmp)),
            }
            for r in range(args.rounds):
                order = list(variants.items())
                for name, variant in order if r % 2 == 0 else order[::-1]:  # neither always goes first
                    window = Window(args.warmup, args.seconds, server.proc.pid)
                    asyncio.run(variant(window))
                    results[name].append(window.figures)
    finally:
        server.stop()
    print(
        f"2PC across two PostgreSQL databases, {args.clients} clients, {args.rounds} rounds of "
        f"{args.seconds:g} s after {args.warmup:g} s of warm-up; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'variant':<44}{'tx/s':>8}{'client CPU us/tx':>18}{'server CPU us/tx':>18}   tx/s by round")
    labels = {
        "floor": "hand-written PREPARE/COMMIT PREPARED (floor)",
        "stalwart": "stalwart TwoPhaseCoordinator + SQLite log",
    }
    med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in results.items()}
    for name, rounds in results.items():
        m = med[name]
        by_round = [round(r["tx/s"]) for r in rounds]
        cpu = f"{m['client us/tx']:>18.0f}{m['server us/tx']:>18.0f}"
        print(f"{labels[name]:<44}{m['tx/s']:>8.0f}{cpu}   {by_round}")
    ratios = [s["tx/s"] / f["tx/s"] for f, s in zip(results["floor"], results["stalwart"], strict=True)]
    print(
        f"stalwart / floor = {med['stalwart']['tx/s'] / med['floor']['tx/s']:.1%} of the medians; "
        f"per round {[f'{r:.0%}' for r in ratios]} (goal >= 90%)"
    )


if __name__ == "__main__":
    main()

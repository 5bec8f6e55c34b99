"""Child process for the 2PC crash tests: transfers until a fault hook SIGKILLs it.

argv: pg_dsn maria_json log_path crash_point crash_on_tx
With crash_point "random", crash_on_tx is a seed: concurrent workers transfer between random
accounts and the process is SIGKILLed at a random step boundary.
Transfers move an amount from PostgreSQL account 1 to MariaDB account 1, so their sum across
both databases is invariant exactly when every transaction is atomic.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys

from stalwart.txn import (
    CoordinatorSettings,
    MariaDBResource,
    PostgresResource,
    TransactionAbortedError,
    TwoPhaseCoordinator,
)


async def worker(coord: TwoPhaseCoordinator, w: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(400):
        amount, src, dst = rng.randint(1, 5), rng.randint(1, 10), rng.randint(1, 10)
        pg_first = rng.random() < 0.5
        try:
            async with coord.transaction() as tx:
                pg_sql = "UPDATE accounts SET balance = balance - %s WHERE id = %s"
                maria_sql = "UPDATE accounts SET balance = balance + %s WHERE id = %s"
                if pg_first:
                    await tx.execute("pg", pg_sql, (amount, src))
                    await tx.execute("maria", maria_sql, (amount, dst))
                else:
                    await tx.execute("maria", maria_sql, (amount, dst))
                    await tx.execute("pg", pg_sql, (amount, src))
        except Exception:  # aborts, lock waits and overdrafts are fine; atomicity is checked
            await asyncio.sleep(0)


def main() -> None:
    dsn, maria_json, log_path, point, crash_on = sys.argv[1:6]
    kw = json.loads(maria_json)
    seen: dict[str, int] = {}

    rng = random.Random(int(crash_on))

    def hook(where: str, txid: str) -> None:
        if point == "random":
            if rng.random() < 0.02:
                os.kill(os.getpid(), signal.SIGKILL)
            return
        if where != point:
            return
        seen.setdefault(txid, len(seen))
        if seen[txid] == int(crash_on):
            os.kill(os.getpid(), signal.SIGKILL)

    async def run() -> None:
        settings = CoordinatorSettings(
            vote_timeout_s=3, retry_interval_s=0.1, tick_ms=20, recovery_grace_s=0.5, recovery_interval_s=0.2
        )
        resources = [PostgresResource("pg", dsn), MariaDBResource("maria", **kw)]
        async with TwoPhaseCoordinator(
            resources, log_path=log_path, settings=settings, fault_hook=hook
        ) as coord:
            if point == "random":
                await asyncio.gather(*(worker(coord, w, rng.randrange(1 << 30)) for w in range(6)))
                return
            for i in range(50):
                try:
                    async with coord.transaction() as tx:
                        await tx.execute(
                            "pg", "UPDATE accounts SET balance = balance - %s WHERE id = 1", (1 + i % 3,)
                        )
                        await tx.execute(
                            "maria", "UPDATE accounts SET balance = balance + %s WHERE id = 1", (1 + i % 3,)
                        )
                except TransactionAbortedError:
                    pass

    asyncio.run(run())


if __name__ == "__main__":
    main()

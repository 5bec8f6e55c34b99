"""Child process for the 2PC crash tests: transfers until a fault hook SIGKILLs it.

argv: pg_dsn maria_json log_path crash_point crash_on_tx
Transfers move an amount from PostgreSQL account 1 to MariaDB account 1, so their sum across
both databases is invariant exactly when every transaction is atomic.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from stalwart.txn import (
    CoordinatorSettings,
    MariaDBResource,
    PostgresResource,
    TransactionAbortedError,
    TwoPhaseCoordinator,
)


def main() -> None:
    dsn, maria_json, log_path, point, crash_on = sys.argv[1:6]
    kw = json.loads(maria_json)
    seen: dict[str, int] = {}

    def hook(where: str, txid: str) -> None:
        if where != point:
            return
        seen.setdefault(txid, len(seen))
        if seen[txid] == int(crash_on):
            os.kill(os.getpid(), signal.SIGKILL)

    async def run() -> None:
        settings = CoordinatorSettings(
            vote_timeout_s=3, retry_interval_s=0.1, tick_ms=20, recovery_interval_s=60
        )
        resources = [PostgresResource("pg", dsn), MariaDBResource("maria", **kw)]
        async with TwoPhaseCoordinator(
            resources, log_path=log_path, settings=settings, fault_hook=hook
        ) as coord:
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

"""Child process for the saga crash tests: runs sagas until a fault hook SIGKILLs it.

argv: saga_log effects_db crash_point crash_on [recover]
Each saga has four steps; sagas whose number is odd fail at their last step and compensate.
Effects land in a separate SQLite database, keyed by the idempotency key, and every time an
effect really applies a counter goes up: a step that runs twice must still apply once.
With "recover" the child only resumes what the log holds and waits for every saga to finish.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys

from stalwart.txn.saga import Parallel, RetryPolicy, Saga, SagaLog, SagaOrchestrator, Step, StepContext

SAGAS = 12


def effects(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, saga TEXT, step TEXT, undone INT)")
    db.execute("CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY, n INT)")
    return db


def build(db: sqlite3.Connection) -> Saga:
    def action(step: str):  # type: ignore[no-untyped-def]
        async def fn(ctx: StepContext) -> str:
            if step == "d" and ctx.input["fail"]:
                raise RuntimeError("the last step fails for odd sagas")
            db.execute("BEGIN IMMEDIATE")
            cur = db.execute(
                "INSERT OR IGNORE INTO effects VALUES (?, ?, ?, 0)", (ctx.idempotency_key, ctx.saga_id, step)
            )
            if cur.rowcount == 1:
                db.execute(
                    "INSERT INTO applied VALUES (?, 1) ON CONFLICT (key) DO UPDATE SET n = n + 1",
                    (ctx.idempotency_key,),
                )
            db.execute("COMMIT")
            await asyncio.sleep(0.002)
            return step

        return fn

    def undo(step: str):  # type: ignore[no-untyped-def]
        async def fn(ctx: StepContext) -> None:
            db.execute("UPDATE effects SET undone = 1 WHERE saga = ? AND step = ?", (ctx.saga_id, step))

        return fn

    retry = RetryPolicy(max_attempts=2, base_delay_s=0.001, max_delay_s=0.005)
    steps = [Step(s, action(s), undo(s), timeout_s=5, retry=retry) for s in "abcd"]
    return Saga("four", [steps[0], Parallel(steps[1], steps[2]), steps[3]])


def main() -> None:
    log_path, effects_path, point, crash_on = sys.argv[1:5]
    recover = len(sys.argv) > 5
    db = effects(effects_path)
    hits = 0

    def hook(where: str, saga_id: str, step: str) -> None:
        nonlocal hits
        if where == point:
            hits += 1
            if hits == int(crash_on):
                os.kill(os.getpid(), signal.SIGKILL)

    async def run() -> None:
        orch = SagaOrchestrator(
            SagaLog.sqlite(log_path), [build(db)], fault_hook=None if recover else hook, seed=7
        )
        async with orch:
            if recover:
                async with asyncio.timeout(60):
                    while any(orch.status(s) is not None for s in list(orch._states)):
                        await asyncio.sleep(0.05)
                return
            ids = [await orch.start("four", {"fail": i % 2 == 1}, saga_id=f"s{i}") for i in range(SAGAS)]
            await asyncio.gather(*(orch.wait(i) for i in ids))

    asyncio.run(run())


if __name__ == "__main__":
    main()

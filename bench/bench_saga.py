"""Sagas per second with the SQLite saga log (fsync on, group commit).

Each saga has three steps (one of them a parallel pair) doing no work of their own, so the
figure is the orchestrator and its durable log: 2 records per step plus start and finish, each
durable before the saga goes on. Concurrency shows what group commit buys: with one saga at a
time every record costs an fsync; with many, one fsync carries many records.

    .venv/bin/python -m bench.bench_saga [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from stalwart.txn.saga import Parallel, Saga, SagaLog, SagaOrchestrator, Step, StepContext


async def noop(ctx: StepContext) -> None:
    return None


SAGA = Saga("bench", [Step("a", noop, noop), Parallel(Step("b", noop, noop), Step("c", noop, noop))])


async def run(concurrency: int, seconds: float, path: Path) -> tuple[int, int]:
    done = 0
    stop_at = time.monotonic() + seconds
    store = SagaLog.sqlite(path)
    async with SagaOrchestrator(store, [SAGA]) as orch:

        async def client() -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                await orch.run("bench")
                done += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
    records = done * (2 + 2 * 3)
    return done, records


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"sagas/s, 3 steps each (8 durable records), SQLite log with fsync, {args.rounds} rounds, median")
    print(f"{'concurrent sagas':>18}{'sagas/s':>12}{'records/s':>12}")
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        for concurrency in (1, 16, 128):
            rates = []
            for r in range(args.rounds):
                n, records = asyncio.run(run(concurrency, args.seconds, Path(tmp) / f"s{concurrency}-{r}.db"))
                rates.append((n / args.seconds, records / args.seconds))
            s = statistics.median(x for x, _ in rates)
            rec = statistics.median(y for _, y in rates)
            print(f"{concurrency:>18}{s:>12.0f}{rec:>12.0f}")


if __name__ == "__main__":
    main()

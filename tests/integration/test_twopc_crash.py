"""SIGKILL the 2PC coordinator at every step boundary, and cut participant connections at each.

After recovery every transaction is committed on both databases or on neither (the sum across
them is unchanged) and no prepared transaction is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from stalwart.txn import CoordinatorSettings, MariaDBResource, PostgresResource, TwoPhaseCoordinator
from tests.integration._bank import maria_sum, pg_sum, prepared_left, transfer

POINTS = ["before-prepare", "after-prepare", "after-decision-logged", "mid-phase-two", "after-phase-two"]
ROOT = Path(__file__).resolve().parents[2]
CHILD = ROOT / "tests/integration/_twopc_child.py"


async def recover(dsn: str, kw: dict[str, Any], log_path: Path) -> None:
    settings = CoordinatorSettings(
        retry_interval_s=0.05, tick_ms=20, recovery_grace_s=0.0, recovery_interval_s=0.1
    )
    resources = [PostgresResource("pg", dsn), MariaDBResource("maria", **kw)]
    async with TwoPhaseCoordinator(resources, log_path=log_path, settings=settings) as coord:
        async with asyncio.timeout(20):
            while prepared_left(dsn, kw) or coord._coord is None or coord._coord.inflight:
                await asyncio.sleep(0.1)


@pytest.mark.parametrize("point", POINTS)
def test_twopc_coordinator_sigkill_at_each_step(
    point: str, bank: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    dsn, kw = bank
    log_path = tmp_path / "decisions.db"
    child = subprocess.run(
        [sys.executable, str(CHILD), dsn, json.dumps(kw), str(log_path), point, "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    asyncio.run(recover(dsn, kw, log_path))
    assert pg_sum(dsn) + maria_sum(kw) == 2000, "a transaction was half applied"
    assert prepared_left(dsn, kw) == 0
    moved = 1000 - pg_sum(dsn)
    assert moved > 0, "the transactions before the crash committed"


def _cut_all(dsn: str, kw: dict[str, Any]) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND datname = current_database()"
        )
    m = pymysql.connect(**kw, autocommit=True)
    with m.cursor() as cur:
        cur.execute(
            "SELECT id FROM information_schema.processlist"
            " WHERE id <> CONNECTION_ID() AND user = 'root' AND command <> 'Daemon'"
        )
        for (pid,) in cur.fetchall():
            with contextlib.suppress(pymysql.MySQLError):  # it may have gone already
                cur.execute(f"KILL {int(pid)}")
    m.close()


@pytest.mark.parametrize("point", POINTS)
def test_twopc_participant_connections_cut_at_each_step(
    point: str, bank: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    dsn, kw = bank
    cuts = 0

    def hook(where: str, txid: str) -> None:
        nonlocal cuts
        if where == point and cuts < 3:
            cuts += 1
            _cut_all(dsn, kw)

    async def main() -> None:
        settings = CoordinatorSettings(
            vote_timeout_s=3, retry_interval_s=0.05, tick_ms=20, recovery_grace_s=0.0, recovery_interval_s=0.2
        )
        resources = [PostgresResource("pg", dsn), MariaDBResource("maria", **kw)]
        async with TwoPhaseCoordinator(
            resources, log_path=tmp_path / "d.db", settings=settings, fault_hook=hook
        ) as coord:
            for i in range(8):
                # a cut connection may fail the work itself: that is an abort
                with contextlib.suppress(Exception):
                    await transfer(coord, 1 + i % 3)
            async with asyncio.timeout(20):
                while prepared_left(dsn, kw) or coord._coord is None or coord._coord.inflight:
                    await asyncio.sleep(0.1)

    asyncio.run(main())
    assert cuts > 0, f"the fault point {point} was never reached"
    assert pg_sum(dsn) + maria_sum(kw) == 2000
    assert prepared_left(dsn, kw) == 0


def test_twopc_bank_with_random_coordinator_crashes(bank: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    """Concurrent transfers between PostgreSQL and MariaDB; the coordinator is SIGKILLed at
    random step boundaries again and again, restarting from its log each time."""
    dsn, kw = bank
    log_path = tmp_path / "decisions.db"
    kills = 0
    for seed in range(6):
        child = subprocess.run(
            [sys.executable, str(CHILD), dsn, json.dumps(kw), str(log_path), "random", str(seed)],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert child.returncode in (0, -signal.SIGKILL), child.stderr[-2000:]
        kills += child.returncode == -signal.SIGKILL
        assert pg_sum(dsn) + maria_sum(kw) == 2000 or prepared_left(dsn, kw) > 0
    assert kills >= 4, "the nemesis must really kill the coordinator"
    asyncio.run(recover(dsn, kw, log_path))
    assert pg_sum(dsn) + maria_sum(kw) == 2000, "a transfer was half applied"
    assert prepared_left(dsn, kw) == 0
    assert pg_sum(dsn) != 1000, "transfers happened"

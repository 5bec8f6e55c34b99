"""SIGKILL the saga orchestrator at every step boundary; after recovery every saga is fully
completed or fully compensated, and no step took effect twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHILD = ROOT / "tests/integration/_saga_child.py"
POINTS = ["before-action", "after-action", "before-compensation", "after-compensation"]


def run_child(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHILD), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("crash_on", [1, 5])
def test_saga_orchestrator_sigkill_at_each_step(point: str, crash_on: int, tmp_path: Path) -> None:
    log, eff = str(tmp_path / "sagas.db"), str(tmp_path / "effects.db")
    first = run_child(log, eff, point, str(crash_on))
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    second = run_child(log, eff, point, "0", "recover")
    assert second.returncode == 0, second.stderr[-2000:]

    logdb = sqlite3.connect(log)
    status = dict(logdb.execute("SELECT saga_id, status FROM saga_index").fetchall())
    effdb = sqlite3.connect(eff)
    rows = effdb.execute("SELECT saga, step, undone FROM effects").fetchall()
    twice = effdb.execute("SELECT key, n FROM applied WHERE n > 1").fetchall()
    assert twice == [], f"steps took effect twice: {twice}"
    assert status, "sagas were started before the crash"
    for saga_id, st in status.items():
        mine = [(step, undone) for s, step, undone in rows if s == saga_id]
        if st == "completed":
            assert sorted(step for step, _ in mine) == ["a", "b", "c", "d"] and all(u == 0 for _, u in mine)
            assert int(saga_id[1:]) % 2 == 0
        else:
            assert st == "compensated", f"{saga_id} ended {st}"
            assert all(u == 1 for _, u in mine), f"{saga_id} left effects behind: {mine}"

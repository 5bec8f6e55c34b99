"""Process supervision with dummy children: kill, pause, resume, restart, stop everything by PID."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from stalwart.drill import DrillError, Supervisor

SLEEPER = "import time, sys; print('up', flush=True); time.sleep(60)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('up', flush=True); time.sleep(60)"
)


def _state(pid: int) -> str:
    # field 3 of /proc/PID/stat: R/S running or sleeping, T stopped, Z zombie
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _wait_state(pid: int, want: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _state(pid) in want:
            return
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} is {_state(pid)}, wanted {want}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_kill_pause_resume_restart_and_stop_all(tmp_path: Path) -> None:
    sup = Supervisor(lambda n: [sys.executable, "-c", SLEEPER], tmp_path / "logs")
    try:
        a, b = sup.start(1), sup.start(2)
        assert a.pid is not None and b.pid is not None and a.pid != b.pid
        with pytest.raises(DrillError, match="already running"):
            sup.start(1)
        assert sup.pause(1)
        _wait_state(a.pid, "T")
        assert sup.children[1].paused
        assert sup.resume(1)
        _wait_state(a.pid, "RS")
        first = a.pid
        assert sup.kill(1)
        assert not _alive(first) and not a.running()
        assert not sup.kill(1)  # not running any more
        assert sup.exited()[1] == -9
        sup.restart(1)
        assert a.pid != first and a.running() and a.starts == 2 and a.pids == [first, a.pid]
        assert (tmp_path / "logs" / "node-1.log").read_text().count("--- start") == 2
        # a graceful stop, then a restart with another command line (kept for later starts)
        sup.pause(2)
        sup.stop(2)  # continues the paused child so that SIGTERM can end it
        assert not b.running() and b.proc is not None and b.proc.returncode == -15
        sup.restart(2, [sys.executable, "-c", SLEEPER + " # v2"])
        assert b.running() and b.argv[-1].endswith("# v2") and b.starts == 2
        sup.pause(2)  # stop_all must also end a paused child
    finally:
        sup.stop_all()
    assert not any(_alive(p) for c in sup.children.values() for p in c.pids)


def test_a_child_that_ignores_sigterm_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stalwart.drill._procs as procs

    monkeypatch.setattr(procs, "STOP_TIMEOUT_S", 0.5)
    sup = Supervisor(lambda n: [sys.executable, "-c", STUBBORN], tmp_path)
    child = sup.start(7)
    deadline = time.monotonic() + 5
    while "up" not in (tmp_path / "node-7.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    sup.stop_all()
    assert child.proc is not None and child.proc.returncode == -9

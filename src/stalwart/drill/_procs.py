"""Process supervision: start, SIGKILL, restart, SIGSTOP/SIGCONT and always clean up, by PID.

Every child runs in its own session (so a Ctrl-C in the terminal reaches only the drill, which
then stops its children in order) with stdout and stderr appended to its own log file. The
supervisor remembers every PID it started; :meth:`Supervisor.stop_all` (also registered with
``atexit``) continues paused children, sends SIGTERM, waits, then SIGKILLs what is left. It
never signals a process it did not start.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stalwart.drill._errors import DrillError

#: How long a child gets to exit after SIGTERM before it is SIGKILLed.
STOP_TIMEOUT_S = 5.0


@dataclass(slots=True)
class Child:
    """One supervised node: its command, log, current process and what was done to it."""

    node: int
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0
    pids: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    """The children of one drill, keyed by node id."""

    def __init__(
        self,
        argv_for: Callable[[int], list[str]],
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._argv_for = argv_for
        self._log_dir = log_dir
        self._env = dict(os.environ if env is None else env)
        self.children: dict[int, Child] = {}
        atexit.register(self.stop_all)

    def start(self, node: int) -> Child:
        child = self.children.get(node)
        if child is None:
            log_path = self._log_dir / f"node-{node}.log"
            child = Child(node, self._argv_for(node), log_path, self._env)
            self.children[node] = child
        if child.running():
            raise DrillError(f"node {node} is already running (pid {child.pid})")
        self._log_dir.mkdir(parents=True, exist_ok=True)
        with child.log_path.open("ab") as log:
            log.write(f"\n--- start {child.starts + 1} at {time.time():.3f} ---\n".encode())
            log.flush()
            child.proc = subprocess.Popen(
                child.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child.env,
                start_new_session=True,
            )
        child.starts += 1
        child.paused = False
        child.pids.append(child.proc.pid)
        return child

    def _signal(self, node: int, sig: signal.Signals) -> bool:
        child = self.children[node]
        if not child.running():
            return False
        assert child.proc is not None  # running() checked it
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.proc.pid, sig)
            return True
        return False

    def kill(self, node: int) -> bool:
        """SIGKILL ``node`` and reap it; False if it was not running."""
        child = self.children[node]
        sent = self._signal(node, signal.SIGKILL)
        if child.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=STOP_TIMEOUT_S)
        child.paused = False
        return sent

    def pause(self, node: int) -> bool:
        sent = self._signal(node, signal.SIGSTOP)
        self.children[node].paused = self.children[node].paused or sent
        return sent

    def resume(self, node: int) -> bool:
        sent = self._signal(node, signal.SIGCONT)
        self.children[node].paused = False
        return sent

    def stop(self, node: int) -> None:
        """SIGCONT + SIGTERM ``node`` and wait; SIGKILL after ``STOP_TIMEOUT_S``."""
        child = self.children[node]
        if not child.running():
            return
        assert child.proc is not None  # running() checked it
        self._signal(node, signal.SIGCONT)
        self._signal(node, signal.SIGTERM)
        try:
            child.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill(node)
        child.paused = False

    def restart(self, node: int, argv: list[str] | None = None) -> Child:
        """Start ``node`` again if it is not running: same data dir, and the same command
        unless ``argv`` replaces it (for this start and later ones)."""
        child = self.children[node]
        if child.running():
            return child
        if argv is not None:
            child.argv = list(argv)
        return self.start(node)

    def exited(self) -> dict[int, int]:
        """Nodes whose process ended on its own (not paused), with their exit status."""
        out: dict[int, int] = {}
        for node, child in self.children.items():
            if child.proc is not None:
                code = child.proc.poll()
                if code is not None:
                    out[node] = code
        return out

    def stop_all(self) -> None:
        """SIGCONT + SIGTERM every running child, wait, then SIGKILL stragglers. Idempotent."""
        live = [c for c in self.children.values() if c.running()]
        for child in live:
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.proc.pid, signal.SIGCONT)
                os.kill(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in live:
            assert child.proc is not None
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                child.proc.wait(timeout=STOP_TIMEOUT_S)
        # what must hold after a stop: no child of ours is left running
        assert not any(c.running() for c in self.children.values())
        atexit.unregister(self.stop_all)

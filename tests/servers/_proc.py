"""Process helpers shared by the real-server fixtures: free ports, readiness, orderly stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    ready: Callable[[], bool],
    proc: subprocess.Popen[bytes] | None,
    timeout_s: float,
    what: str,
    poll_s: float = 0.05,
) -> None:
    """Poll ``ready()`` until it holds; fail fast if ``proc`` died, and after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready within {timeout_s} s")
        time.sleep(poll_s)


def accepts(port: int) -> bool:
    """Something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, timeout_s: float, what: str) -> None:
    """Wait until something accepts on 127.0.0.1:port; fail fast if ``proc`` died."""
    wait_until(lambda: accepts(port), proc, timeout_s, f"{what} on port {port}")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGCONT (in case a test paused it), SIGTERM, then SIGKILL after ``timeout_s``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)

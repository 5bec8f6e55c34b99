"""Real redis-server processes for tests, each on its own free port and temp dir.

Never the machine's own Redis: every server here is started by the fixture, on 127.0.0.1 and a
port picked at run time, and stopped by its PID. Session-scoped fixtures share servers across
tests (``redis_server``, ``redis_servers5``); ``redis_server_fn`` is per test, for tests that kill,
restart or pause the server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers._proc import free_port, wait_until

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One redis-server child process; ``restart`` reuses its port and data dir."""

    port: int
    dir: Path
    persistent: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(
                lambda: _ping(self.port), self.proc, timeout_s, f"redis-server on port {self.port}", 0.02
            )
        except RuntimeError:
            self.stop()
            raise

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed beyond what fsync already wrote."""
        if self.proc is not None:
            self._signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)


def start_redis(persistent: bool = False) -> RedisServer:
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("redis-server is not installed")
    last: Exception | None = None
    for _ in range(5):  # the free port can be taken between probing and binding
        server = RedisServer(free_port(), Path(tempfile.mkdtemp(prefix="stalwart-redis-")), persistent)
        try:
            server.start()
            return server
        except RuntimeError as exc:
            last = exc
            shutil.rmtree(server.dir, ignore_errors=True)
    raise RuntimeError(f"could not start redis-server: {last}")


def _cleanup(server: RedisServer) -> None:
    server.resume()
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    _cleanup(server)


@pytest.fixture(scope="session")
def redis_servers5() -> Iterator[list[RedisServer]]:
    servers: list[RedisServer] = []
    try:
        for _ in range(5):
            servers.append(start_redis())
        yield servers
    finally:
        for server in servers:
            _cleanup(server)


@pytest.fixture
def five(redis_servers5: list[RedisServer]) -> Iterator[list[RedisServer]]:
    """The five session servers, running and empty for this test (and resumed after it)."""
    for server in redis_servers5:
        server.resume()
        flush(server)
    yield redis_servers5
    for server in redis_servers5:
        server.resume()


@pytest.fixture
def redis_server_fn() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    _cleanup(server)


@pytest.fixture
def redis_server_aof() -> Iterator[RedisServer]:
    server = start_redis(persistent=True)
    yield server
    _cleanup(server)


def flush(server: RedisServer) -> None:
    """Empty a shared server between tests (FLUSHALL + SCRIPT FLUSH), through a raw socket."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
        s.sendall(b"FLUSHALL\r\nSCRIPT FLUSH\r\n")
        buf = b""
        while buf.count(b"\r\n") < 2:
            chunk = s.recv(64)
            if not chunk:
                break
            buf += chunk

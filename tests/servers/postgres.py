"""A real PostgreSQL server for tests, on its own port and data dir.

PostgreSQL refuses to run as root, so the cluster is created and run as the ``postgres`` user
when the tests run as root. ``max_prepared_transactions`` is set so that two-phase commit works.
Use the ``postgres_server`` fixture, or ``PostgresServer`` directly from benchmarks.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers._proc import free_port, stop, wait_for_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found; run `make deps`")
    return found[-1]


class PostgresServer:
    """Start with ``start()``, stop with ``stop()``; ``dsn(dbname)`` connects as superuser."""

    def __init__(self, max_prepared_transactions: int = 64, fsync: bool = True) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="stalwart-pg-"))
        self.data_dir = self.root / "data"
        self.max_prepared_transactions = max_prepared_transactions
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = "postgres"

    def _as_postgres(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        else:
            self.user = os.environ.get("USER", "postgres")
        subprocess.run(
            [*self._as_postgres(), _bin("initdb"), "-D", str(self.data_dir), "-U", self.user,
             "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True,
        )  # fmt: skip
        log = open(self.root / "server.log", "wb")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(
            [*self._as_postgres(), _bin("postgres"), "-D", str(self.data_dir), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
             "-c", f"max_prepared_transactions={self.max_prepared_transactions}",
             "-c", f"fsync={'on' if self.fsync else 'off'}", "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        wait_for_port(self.port, self.proc, 30.0, "postgres")
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        for _ in range(100):
            out = subprocess.run(
                [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user],
                capture_output=True, check=False,
            )  # fmt: skip
            if out.returncode == 0:
                return
            subprocess.run(["sleep", "0.1"], check=True)
        raise RuntimeError(f"postgres on port {self.port} never became ready; see {self.root}/server.log")

    def create_database(self, name: str) -> str:
        subprocess.run(
            [_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name],
            check=True, capture_output=True,
        )  # fmt: skip
        return self.dsn(name)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={dbname}"

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout_s=20.0)
            self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()

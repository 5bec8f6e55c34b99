"""A real MariaDB server for tests, on its own port and data dir (XA transactions enabled).

Use the ``mariadb_server`` fixture, or ``MariaDBServer`` directly from benchmarks. Connect as
``root`` with no password over TCP on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers._proc import free_port, stop, wait_for_port


class MariaDBServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="stalwart-maria-"))
        self.data_dir = self.root / "data"
        self.socket = self.root / "mysqld.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MariaDBServer:
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "mysql")
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.data_dir}", f"--user={user}",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True,
        )  # fmt: skip
        log = open(self.root / "server.log", "wb")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.data_dir}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.socket}", f"--user={user}",
             f"--pid-file={self.root / 'mysqld.pid'}", "--skip-name-resolve=0",
             "--innodb-flush-log-at-trx-commit=1", "--sync-binlog=1", "--max-connections=200",
             "--innodb-buffer-pool-size=64M", "--skip-log-bin", "--innodb-lock-wait-timeout=5"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        wait_for_port(self.port, self.proc, 60.0, "mariadbd")
        # root@localhost from 127.0.0.1: allow it explicitly for TCP connections.
        subprocess.run(
            ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "-e",
             "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';"
             "GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
             "CREATE DATABASE IF NOT EXISTS test;"],
            check=True, capture_output=True,
        )  # fmt: skip
        return self

    def create_database(self, name: str) -> None:
        subprocess.run(
            ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "-e",
             f"CREATE DATABASE IF NOT EXISTS `{name}`"],
            check=True, capture_output=True,
        )  # fmt: skip

    def connect_kwargs(self, database: str = "test") -> dict[str, object]:
        return {"host": "127.0.0.1", "port": self.port, "user": "root", "password": "", "database": database}

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout_s=30.0)
            self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    server = MariaDBServer().start()
    try:
        yield server
    finally:
        server.stop()

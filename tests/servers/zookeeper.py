"""A real ZooKeeper server (Debian's ``zookeeper`` package) for tests, on its own port and dir.

Started as ``java -cp <jars> org.apache.zookeeper.server.quorum.QuorumPeerMain <cfg>`` with the
admin server disabled, 127.0.0.1 only, a free client port and a temp data dir; stopped by PID.
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

JARS = "/usr/share/java"
_CLASSPATH_JARS = [
    "zookeeper.jar", "zookeeper-jute.jar", "slf4j-api.jar", "slf4j-nop.jar", "netty-handler.jar",
    "netty-common.jar", "netty-buffer.jar", "netty-transport.jar", "netty-codec.jar",
    "netty-resolver.jar", "netty-transport-native-epoll.jar",
    "netty-transport-native-unix-common.jar", "metrics-core.jar", "commons-cli.jar", "commons-io.jar",
]  # fmt: skip


def _ruok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3) as s:
            s.sendall(b"ruok")
            return s.recv(8) == b"imok"
    except OSError:
        return False


@dataclass
class ZooKeeperServer:
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        cfg = self.dir / "zoo.cfg"
        cfg.write_text(
            "\n".join(
                [
                    "tickTime=200",
                    f"dataDir={data}",
                    f"clientPort={self.port}",
                    "clientPortAddress=127.0.0.1",
                    "admin.enableServer=false",
                    "4lw.commands.whitelist=ruok,srvr",
                    "minSessionTimeout=400",
                    "maxSessionTimeout=60000",
                    "initLimit=10",
                    "syncLimit=5",
                    "",
                ]
            )
        )
        classpath = ":".join(f"{JARS}/{jar}" for jar in _CLASSPATH_JARS)
        args = [
            "java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Dzookeeper.admin.enableServer=false", "-cp", classpath,
            "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(cfg),
        ]  # fmt: skip
        log = (self.dir / "zk.log").open("wb")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            wait_until(
                lambda: _ruok(self.port), self.proc, timeout_s, f"ZooKeeper (see {self.dir / 'zk.log'})"
            )
        except RuntimeError:
            self.stop()
            raise

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
            self.proc = None


def start_zookeeper() -> ZooKeeperServer:
    if shutil.which("java") is None or not os.path.exists(f"{JARS}/zookeeper.jar"):
        pytest.skip("java or Debian's zookeeper package is not installed")
    server = ZooKeeperServer(free_port(), Path(tempfile.mkdtemp(prefix="stalwart-zk-")))
    server.start()
    return server


@pytest.fixture(scope="session")
def zookeeper_server() -> Iterator[ZooKeeperServer]:
    server = start_zookeeper()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)

"""A local cluster of node processes on loopback, described by ``DIR/cluster.json``.

``start`` creates (or reuses) the key, ports and data directories under DIR, spawns one
``stalwart node`` per member as a background process in its own session, waits until each
answers on its client port, and writes ``cluster.json``. ``stop`` sends SIGTERM, then SIGKILL
after a timeout, by PID (only to PIDs that still run ``stalwart node`` for this DIR).
The drill and the tests use :func:`spawn_node` to restart one member with the same flags.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stalwart.errors import ConfigError, StalwartError

CLUSTER_FILE = "cluster.json"
KEY_FILE = "cluster.key"
FORMAT_VERSION = 1


class ClusterError(StalwartError):
    """The local cluster could not be started, found or stopped."""


@dataclass(slots=True)
class NodeSpec:
    id: str
    peer: str  # HOST:PORT the node listens on for Raft traffic
    client: str  # HOST:PORT of the binary client protocol
    http: str  # HOST:PORT of the HTTP API
    data_dir: str
    log: str
    pid: int | None = None


@dataclass(slots=True)
class ClusterSpec:
    dir: str
    key_file: str
    nodes: list[NodeSpec]
    tick_ms: int = 10
    election_ms: int = 1000
    heartbeat_ms: int = 100
    snapshot_every: int = 100_000
    fsync: bool = True
    extra_args: list[str] = field(default_factory=list)
    version: int = FORMAT_VERSION

    @classmethod
    def load(cls, directory: str | Path) -> ClusterSpec:
        path = Path(directory) / CLUSTER_FILE
        try:
            raw = json.loads(path.read_text())
            nodes = [NodeSpec(**n) for n in raw.pop("nodes")]
            return cls(nodes=nodes, **raw)
        except FileNotFoundError:
            raise ClusterError(f"no cluster at {directory} ({path} missing)") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise ClusterError(f"{path} is not a cluster description: {exc}") from None

    def save(self) -> None:
        path = Path(self.dir) / CLUSTER_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)

    def node(self, node_id: str) -> NodeSpec:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise ClusterError(f"no node {node_id!r} in {self.dir}")

    def peers_arg(self) -> str:
        return ",".join(f"{n.id}={n.peer}" for n in self.nodes)

    def http_arg(self) -> str:
        return ",".join(f"{n.id}={n.http}" for n in self.nodes)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the OS reports free now (bound then released; a small race is possible)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def ensure_key(directory: Path) -> Path:
    path = directory / KEY_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    os.chmod(path, 0o600)
    return path


def new_spec(directory: Path, nodes: int, **options: Any) -> ClusterSpec:
    ports = free_ports(3 * nodes)
    specs = []
    for i in range(nodes):
        node_dir = directory / f"n{i + 1}"
        specs.append(
            NodeSpec(
                id=f"n{i + 1}",
                peer=f"127.0.0.1:{ports[3 * i]}",
                client=f"127.0.0.1:{ports[3 * i + 1]}",
                http=f"127.0.0.1:{ports[3 * i + 2]}",
                data_dir=str(node_dir / "data"),
                log=str(node_dir / "node.log"),
            )
        )
    return ClusterSpec(dir=str(directory), key_file=str(ensure_key(directory)), nodes=specs, **options)


def node_args(spec: ClusterSpec, node: NodeSpec) -> list[str]:
    args = [
        sys.executable, "-m", "stalwart", "node", "--id", node.id, "--peers", spec.peers_arg(),
        "--data-dir", node.data_dir, "--listen", node.peer, "--client-listen", node.client,
        "--http-listen", node.http, "--peer-http", spec.http_arg(), "--cluster-key-file", spec.key_file,
        "--tick-ms", str(spec.tick_ms), "--election-ms", str(spec.election_ms),
        "--heartbeat-ms", str(spec.heartbeat_ms), "--snapshot-every", str(spec.snapshot_every),
    ]  # fmt: skip
    if not spec.fsync:
        args.append("--unsafe-no-fsync")
    return args + list(spec.extra_args)


def spawn_node(spec: ClusterSpec, node_id: str) -> int:
    """Start one member in the background (its own session, output appended to its log)."""
    node = spec.node(node_id)
    Path(node.log).parent.mkdir(parents=True, exist_ok=True)
    with open(node.log, "ab") as log:
        proc = subprocess.Popen(
            node_args(spec, node), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    node.pid = proc.pid
    return proc.pid


def is_running(pid: int | None, data_dir: str | None = None) -> bool:
    """True if ``pid`` runs a stalwart node (for ``data_dir``), not a reused PID."""
    if pid is None:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False  # a zombie: exited, not yet reaped
    ok = b"node" in cmdline and any(b"stalwart" in part for part in cmdline)
    return ok and (data_dir is None or data_dir.encode() in cmdline)


def wait_listening(address: str, timeout_s: float) -> bool:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def start_cluster(
    directory: str | Path, nodes: int = 3, *, timeout_s: float = 20.0, **options: Any
) -> ClusterSpec:
    """Start (or restart) the local cluster under ``directory``; returns its description."""
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if (root / CLUSTER_FILE).exists():
        spec = ClusterSpec.load(root)
        running = [n.id for n in spec.nodes if is_running(n.pid, n.data_dir)]
        if running:
            raise ClusterError(
                f"the cluster in {root} is already running ({', '.join(running)}); stop it first"
            )
        if len(spec.nodes) != nodes:
            raise ClusterError(
                f"{root} holds a {len(spec.nodes)}-node cluster; use --nodes {len(spec.nodes)}"
            )
    else:
        if nodes not in (1, 3, 5, 7):
            raise ConfigError("--nodes must be 1, 3, 5 or 7")
        spec = new_spec(root, nodes, **options)
    for node in spec.nodes:
        spawn_node(spec, node.id)
    spec.save()
    for node in spec.nodes:
        if not wait_listening(node.client, timeout_s) or not is_running(node.pid):
            tail = _tail(node.log)
            stop_cluster(root, timeout_s=5.0)
            raise ClusterError(f"node {node.id} did not start (log {node.log}):\n{tail}")
    return spec


def _tail(path: str, lines: int = 5) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_node(node: NodeSpec, timeout_s: float = 10.0) -> str:
    """SIGTERM, then SIGKILL after ``timeout_s``; returns what happened."""
    return stop_nodes([node], timeout_s)[node.id]


def stop_nodes(nodes: list[NodeSpec], timeout_s: float = 10.0) -> dict[str, str]:
    """SIGTERM every running node at once, SIGKILL those still running after ``timeout_s``."""
    outcome: dict[str, str] = {}
    running: list[NodeSpec] = []
    for node in nodes:
        if is_running(node.pid, node.data_dir):
            assert node.pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, signal.SIGTERM)
            running.append(node)
        else:
            outcome[node.id] = "not running"
    deadline = time.monotonic() + timeout_s
    while running and time.monotonic() < deadline:
        for node in [n for n in running if not is_running(n.pid, n.data_dir)]:
            outcome[node.id] = "stopped"
            running.remove(node)
        time.sleep(0.05)
    for node in running:
        assert node.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.pid, signal.SIGKILL)
        outcome[node.id] = "killed"
    for node in nodes:
        node.pid = None
    return {node.id: outcome[node.id] for node in nodes}


def stop_cluster(directory: str | Path, *, timeout_s: float = 10.0) -> dict[str, str]:
    spec = ClusterSpec.load(Path(directory).resolve())
    outcome = stop_nodes(spec.nodes, timeout_s)
    spec.save()
    return outcome

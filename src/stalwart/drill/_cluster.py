"""A drill cluster: node processes on loopback behind the proxy mesh, and its probes.

Layout under the drill directory::

    cluster.key          the cluster key (random, 32 bytes hex), mode 0600
    node-N/              node N's data dir
    logs/node-N.log      node N's stdout and stderr, across restarts
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stalwart.drill._errors import DrillConfigError, DrillError
from stalwart.drill._network import ProxyMesh
from stalwart.drill._procs import Supervisor

HOST = "127.0.0.1"
#: The node's defaults (``stalwart node --help``): a skewed clock scales all three together.
DEFAULT_TICK_MS, DEFAULT_ELECTION_MS, DEFAULT_HEARTBEAT_MS = 10, 1000, 100


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago (all held, then released)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(slots=True)
class ClusterLayout:
    """Where everything of one drill cluster lives."""

    root: Path
    node_ids: list[int]
    peer_ports: dict[int, int]
    client_ports: dict[int, int]
    key_path: Path
    extra_node_args: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path, nodes: int, extra_node_args: Sequence[str] = ()) -> ClusterLayout:
        if root.exists() and any(root.glob("node-*")):
            # old data would make the first reads see values this history never wrote
            raise DrillConfigError(f"{root} already holds a cluster's data: give the drill an empty --dir")
        root.mkdir(parents=True, exist_ok=True)
        key_path = root / "cluster.key"
        if not key_path.exists():
            key_path.write_text(secrets.token_hex(32) + "\n")
            key_path.chmod(0o600)
        ids = list(range(1, nodes + 1))
        ports = free_ports(2 * nodes)
        return cls(
            root=root,
            node_ids=ids,
            peer_ports={n: ports[2 * k] for k, n in enumerate(ids)},
            client_ports={n: ports[2 * k + 1] for k, n in enumerate(ids)},
            key_path=key_path,
            extra_node_args=list(extra_node_args),
        )

    @property
    def cluster_key(self) -> bytes:
        return self.key_path.read_text().strip().encode()

    def endpoints(self) -> list[str]:
        return [f"{HOST}:{self.client_ports[n]}" for n in self.node_ids]

    def endpoint(self, node: int) -> str:
        return f"{HOST}:{self.client_ports[node]}"

    def argv(self, node: int, mesh: ProxyMesh, clock_rate: float = 1.0) -> list[str]:
        """The node's command line; ``clock_rate`` != 1 makes its clock run that much slower
        (> 1) or faster (< 1): every tick lasts ``clock_rate`` times longer while election and
        heartbeat timeouts keep their length in ticks."""
        skew = []
        if clock_rate != 1.0:
            skew = [
                "--tick-ms", str(max(1, round(DEFAULT_TICK_MS * clock_rate))),
                "--election-ms", str(max(1, round(DEFAULT_ELECTION_MS * clock_rate))),
                "--heartbeat-ms", str(max(1, round(DEFAULT_HEARTBEAT_MS * clock_rate))),
            ]  # fmt: skip
        return [
            sys.executable,
            "-m",
            "stalwart",
            "node",
            "--id",
            str(node),
            "--peers",
            mesh.peers_arg(node),
            "--data-dir",
            str(self.root / f"node-{node}"),
            "--listen",
            f"{HOST}:{self.peer_ports[node]}",
            "--client-listen",
            self.endpoint(node),
            "--cluster-key-file",
            str(self.key_path),
            *self.extra_node_args,
            *skew,  # after the extra args: click keeps an option's last value
        ]


def make_supervisor(layout: ClusterLayout, mesh: ProxyMesh) -> Supervisor:
    env = dict(os.environ)
    env.pop("STALWART_CLUSTER_KEY", None)  # the key file is the one source of the key
    return Supervisor(lambda n: layout.argv(n, mesh), layout.root / "logs", env=env)


def leader_from_status(status: dict[str, Any]) -> int | None:
    """The leader a node's status names (its own id if it says it leads), or None."""
    for name in ("leader", "leader_id", "leader_hint"):
        value = status.get(name)
        if value not in (None, "", 0, "0"):
            with contextlib.suppress(TypeError, ValueError):
                return int(value)
    role = str(status.get("role", "")).lower()
    if role == "leader":
        for name in ("node", "node_id", "id"):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                return int(status[name])
    return None


async def probe_status(layout: ClusterLayout, node: int, timeout_s: float = 0.5) -> dict[str, Any] | None:
    """``status()`` of one node through the client, or None if it does not answer in time."""
    from stalwart.client import AsyncKVClient

    try:
        async with AsyncKVClient(
            [layout.endpoint(node)], cluster_key=layout.cluster_key, timeout_s=timeout_s
        ) as client:
            return await client.status(layout.endpoint(node))
    except Exception:
        return None


async def find_leader(layout: ClusterLayout, nodes: Sequence[int]) -> int | None:
    """The leader most of the answering ``nodes`` name (None when none is known)."""
    answers = await asyncio.gather(*(probe_status(layout, n) for n in nodes))
    votes: dict[int, int] = {}
    for status in answers:
        if status is not None and (leader := leader_from_status(status)) is not None:
            votes[leader] = votes.get(leader, 0) + 1
    return max(votes, key=lambda n: votes[n]) if votes else None


async def wait_serving(layout: ClusterLayout, timeout_s: float, key: str = "drill-probe") -> float:
    """Write and read back a probe key until both succeed; returns the seconds it took."""
    from stalwart.client import AsyncKVClient

    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + timeout_s
    last: Exception | None = None
    async with AsyncKVClient(layout.endpoints(), cluster_key=layout.cluster_key, timeout_s=2.0) as client:
        while loop.time() < deadline:
            try:
                await client.put(key, b"ok")
                got = await client.get(key)
                if got is not None:
                    return loop.time() - start
            except Exception as exc:
                last = exc
            await asyncio.sleep(0.1)
    raise DrillError(f"the cluster did not serve within {timeout_s:.0f} s (last error: {last})")

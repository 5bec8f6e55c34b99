"""The node's configuration and the parsing of its command-line values."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from stalwart.errors import ConfigError
from stalwart.sansio import NodeId

Address = tuple[str, int]
MIN_KEY_BYTES = 16
KEY_ENV = "STALWART_CLUSTER_KEY"
MAX_MEMBERS = 15


def parse_address(text: str, what: str = "address") -> Address:
    """``HOST:PORT`` -> (host, port); :class:`ConfigError` otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: not a HOST:PORT address: {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def parse_members(text: str, what: str = "--peers") -> dict[NodeId, Address]:
    """``id=host:port,...`` -> {id: (host, port)}; ids unique, at most MAX_MEMBERS."""
    members: dict[NodeId, Address] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, addr = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"{what}: not an id=host:port entry: {item!r}")
        if name in members:
            raise ConfigError(f"{what}: node {name!r} listed twice")
        if name.startswith("~"):
            raise ConfigError(f"{what}: node ids may not start with '~' (reserved): {name!r}")
        members[NodeId(name)] = parse_address(addr, f"{what} {name}")
    if len(members) > MAX_MEMBERS:
        raise ConfigError(f"{what}: at most {MAX_MEMBERS} members")
    return members


def load_cluster_key(key_file: str | None) -> bytes:
    """The cluster key from ``key_file`` (whitespace stripped) or ``STALWART_CLUSTER_KEY``."""
    if key_file is not None:
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the cluster key file {key_file}: {exc.strerror}") from None
    else:
        key = os.environ.get(KEY_ENV, "").encode().strip()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"a cluster key of at least {MIN_KEY_BYTES} bytes is required (--cluster-key-file or {KEY_ENV})"
        )
    return key


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything one node needs. Times in ms; ``members`` includes this node."""

    node_id: NodeId
    members: dict[NodeId, Address]
    listen: Address
    data_dir: Path
    cluster_key: bytes
    client_listen: Address | None = None
    http_listen: Address | None = None
    peer_http: dict[NodeId, Address] = field(default_factory=dict)  # for HTTP redirects to the leader
    fsync: bool = True
    tick_ms: int = 10
    election_ms: int = 1000
    heartbeat_ms: int = 100
    snapshot_every: int = 100_000
    session_timeout_ms: int = 120_000
    request_timeout_ms: int = 30_000  # a request pending this long is answered UNKNOWN
    max_pending_requests: int = 8_000  # under the replica's bound (10 000 writes): "busy" comes first
    history_events: int = 10_000  # watch history kept (older revisions compact away)

    def __post_init__(self) -> None:
        if self.node_id not in self.members:
            raise ConfigError(f"--peers must list every member including this node ({self.node_id})")
        if not 1 <= self.tick_ms <= 1000:
            raise ConfigError("--tick-ms must be in [1, 1000]")
        if self.election_ms < 4 * self.tick_ms or self.heartbeat_ms < self.tick_ms:
            raise ConfigError("--election-ms must be >= 4 ticks and --heartbeat-ms >= 1 tick")
        if self.heartbeat_ms * 2 > self.election_ms:
            raise ConfigError("--heartbeat-ms must be at most half of --election-ms")
        if self.snapshot_every < 1:
            raise ConfigError("--snapshot-every must be at least 1")
        if not 1 <= self.history_events <= 10_000_000:
            raise ConfigError("--watch-history must be in [1, 10000000]")

    @property
    def election_ticks(self) -> int:
        return self.election_ms // self.tick_ms

    @property
    def heartbeat_ticks(self) -> int:
        return max(1, self.heartbeat_ms // self.tick_ms)

    @property
    def peers(self) -> dict[NodeId, Address]:
        """The other members, at the addresses given (possibly fault-injecting proxies)."""
        return {n: a for n, a in self.members.items() if n != self.node_id}

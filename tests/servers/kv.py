"""A real stalwart key-value cluster for tests: ``stalwart node`` x 3 on loopback, under the test's
tmp_path (free ports, its own cluster key), stopped by PID at the end of the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stalwart.client import AsyncKVClient
from stalwart.server._cluster import ClusterSpec, start_cluster, stop_cluster

#: Fast elections and heartbeats: the tests kill and pause leaders.
FAST = {"tick_ms": 10, "election_ms": 400, "heartbeat_ms": 50}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterSpec]:
    spec = start_cluster(tmp_path / "c", 3, **FAST)
    try:
        yield spec
    finally:
        stop_cluster(tmp_path / "c", timeout_s=5.0)


def key_of(spec: ClusterSpec) -> bytes:
    return Path(spec.key_file).read_bytes().strip()


def client(spec: ClusterSpec, timeout_s: float = 10.0) -> AsyncKVClient:
    return AsyncKVClient([n.client for n in spec.nodes], cluster_key=key_of(spec), timeout_s=timeout_s)

"""Prometheus metrics of one node (its own registry, served at GET /metrics)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from stalwart.server._server import KVServer

ROLES = ("follower", "pre_candidate", "candidate", "leader")
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, node_id: str) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.role = Gauge("stalwart_raft_role", "1 for this node's current role", ["role"], registry=reg)
        self.term = Gauge("stalwart_raft_term", "Current Raft term", registry=reg)
        self.commit = Gauge("stalwart_raft_commit_index", "Raft commit index", registry=reg)
        self.applied = Gauge(
            "stalwart_raft_applied_index", "Index applied to the state machine", registry=reg
        )
        self.revision = Gauge("stalwart_kv_revision", "Store revision", registry=reg)
        self.keys = Gauge("stalwart_kv_keys", "Live keys", registry=reg)
        self.follower_lag = Gauge(
            "stalwart_raft_follower_lag_entries", "Entries a follower is behind (leader only)",
            ["follower"], registry=reg,
        )  # fmt: skip
        self.proposals = Counter("stalwart_raft_proposals", "Writes proposed by this node", registry=reg)
        self.applied_entries = Counter("stalwart_raft_applied_entries", "Entries applied", registry=reg)
        self.elections = Counter("stalwart_raft_elections_won", "Times this node became leader", registry=reg)
        self.fsyncs = Gauge("stalwart_storage_fsyncs", "fsync calls so far", registry=reg)
        self.fsync_seconds = Gauge(
            "stalwart_storage_fsync_seconds", "Total time spent in fsync", registry=reg
        )
        self.requests = Counter(
            "stalwart_requests",
            "Client requests by API, op and status",
            ["api", "op", "status"],
            registry=reg,
        )
        self.latency = Histogram(
            "stalwart_request_latency_seconds", "Client request latency at this node",
            ["api", "op"], buckets=LATENCY_BUCKETS_S, registry=reg,
        )  # fmt: skip
        self.node_id = node_id
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def request(self, api: str, op: str, status: str, seconds: float) -> None:
        """Count one request and its latency (label children cached: this runs per request)."""
        key = (api, op, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (
                self.requests.labels(api=api, op=op, status=status),
                self.latency.labels(api=api, op=op),
            )
        child[0].inc()
        child[1].observe(seconds)

    def observe(self, server: KVServer) -> None:
        """Refresh the gauges from the node's current state."""
        st = server.replica.raft.status()
        for role in ROLES:
            self.role.labels(role=role).set(1.0 if st.role.name.lower() == role else 0.0)
        self.term.set(st.term)
        self.commit.set(st.commit)
        self.applied.set(server.replica.applied)
        self.revision.set(server.machine.revision)
        self.keys.set(len(server.machine))
        self.follower_lag.clear()
        for f in st.followers:
            self.follower_lag.labels(follower=f.node).set(f.lag)
        stats = server.node.stats
        self.fsyncs.set(stats.fsyncs)
        self.fsync_seconds.set(stats.fsync_time_s)

    def render(self, server: KVServer) -> bytes:
        self.observe(server)
        return generate_latest(self.registry)

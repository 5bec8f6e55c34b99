"""Prometheus metrics of one node (its own registry, served at GET /metrics)."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from stalwart.server._server import KVServer

ROLES = ("follower", "pre_candidate", "candidate", "leader")
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Counters(Collector):
    """Per-event counters, plain ints (incremented per write and per applied entry)."""

    def __init__(self) -> None:
        self.proposals = 0
        self.applied_entries = 0
        self.elections_won = 0

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "stalwart_raft_proposals", "Writes proposed by this node", value=self.proposals
        )
        yield CounterMetricFamily(
            "stalwart_raft_applied_entries", "Entries applied", value=self.applied_entries
        )
        yield CounterMetricFamily(
            "stalwart_raft_elections_won", "Times this node became leader", value=self.elections_won
        )


class _RequestStats(Collector):
    """Request counts and latency histograms, kept in plain dicts on the event loop's thread and
    turned into Prometheus families only when scraped (prometheus-client's own metrics take a
    lock per update, a measurable cost at tens of thousands of requests per second)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], int] = {}
        self.buckets: dict[tuple[str, str], list[int]] = {}  # per bucket, then +Inf
        self.sums: dict[tuple[str, str], float] = {}

    def record(self, api: str, op: str, status: str, seconds: float) -> None:
        key = (api, op, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        series = (api, op)
        counts = self.buckets.get(series)
        if counts is None:
            counts = self.buckets[series] = [0] * (len(LATENCY_BUCKETS_S) + 1)
        counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.sums[series] = self.sums.get(series, 0.0) + seconds

    def record_many(self, api: str, op: str, status: str, latencies: list[float]) -> None:
        """:meth:`record` for many requests of one series at once."""
        key = (api, op, status)
        self.counts[key] = self.counts.get(key, 0) + len(latencies)
        series = (api, op)
        counts = self.buckets.get(series)
        if counts is None:
            counts = self.buckets[series] = [0] * (len(LATENCY_BUCKETS_S) + 1)
        bucket = bisect.bisect_left
        for seconds in latencies:
            counts[bucket(LATENCY_BUCKETS_S, seconds)] += 1
        self.sums[series] = self.sums.get(series, 0.0) + sum(latencies)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "stalwart_requests", "Client requests by API, op and status", labels=["api", "op", "status"]
        )
        for (api, op, status), count in sorted(self.counts.items()):
            requests.add_metric([api, op, status], count)
        yield requests
        latency = HistogramMetricFamily(
            "stalwart_request_latency_seconds", "Client request latency at this node", labels=["api", "op"]
        )
        for series, counts in sorted(self.buckets.items()):
            cumulative, total = [], 0
            for bound, count in zip([*map(str, LATENCY_BUCKETS_S), "+Inf"], counts, strict=True):
                total += count
                cumulative.append((bound, total))
            latency.add_metric(list(series), cumulative, sum_value=self.sums[series])
        yield latency


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
        self.counters = _Counters()
        reg.register(self.counters)
        self.fsyncs = Gauge("stalwart_storage_fsyncs", "fsync calls so far", registry=reg)
        self.fsync_seconds = Gauge(
            "stalwart_storage_fsync_seconds", "Total time spent in fsync", registry=reg
        )
        self.requests = _RequestStats()
        reg.register(self.requests)
        self.node_id = node_id

    def request(self, api: str, op: str, status: str, seconds: float) -> None:
        """Count one request and its latency (runs per request: plain dicts, no locks)."""
        self.requests.record(api, op, status, seconds)

    def requests_done(self, api: str, op: str, status: str, latencies: list[float]) -> None:
        """Count many requests of one (op, status) and their latencies (once per batch)."""
        self.requests.record_many(api, op, status, latencies)

    def observe(self, server: KVServer) -> None:
        """Refresh the gauges from the node's current state."""
        st = server.replica.raft.status()
        for role in ROLES:
            self.role.labels(role=role).set(1.0 if st.role.name.lower() == role else 0.0)
        self.term.set(st.term)
        self.commit.set(st.commit)
        self.applied.set(server.replica.applied)
        self.counters.applied_entries = server.replica.entries_applied
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

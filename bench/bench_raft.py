"""Raft benchmarks: committed entries per CPU-second at the state-machine level, and
simulated seeds per minute.

Run: ``.venv/bin/python -m bench.bench_raft``. The state-machine figure drives three
:class:`stalwart.raft.RaftNode` objects in one process: messages are handed from ``ready()``
to ``step()`` directly, storage operations are produced (and encoded) but not written, so
this measures the protocol's own cost per entry (proposal, replication, commit, apply), not
disks or sockets. Each batch size proposes ``batch`` entries at once and waits until they
are committed and handed to the application on the leader, then proposes the next batch.
"""

from __future__ import annotations

import random
import sys
import time

from stalwart.raft import ApplyEntry, RaftConfig, RaftNode, Role
from stalwart.sansio import NodeId
from stalwart.sim import RunSpec, load_target, run_seeds

NAMES = [NodeId("n1"), NodeId("n2"), NodeId("n3")]
PAYLOAD = b"x" * 64


def _cluster(batch: int) -> dict[NodeId, RaftNode]:
    nodes = {
        n: RaftNode(
            RaftConfig(
                node_id=n,
                voters=frozenset(NAMES),
                max_entries_per_msg=max(256, batch),
                max_uncommitted_entries=max(10_000, 2 * batch),
                max_apply_batch=max(4096, batch),
            ),
            random.Random(i),
        )
        for i, n in enumerate(NAMES)
    }
    nodes[NAMES[0]].campaign(pre_vote=False)
    return nodes


def _pump(nodes: dict[NodeId, RaftNode]) -> int:
    """Deliver until quiet; returns how many entries the leader applied."""
    applied = 0
    queue: list[tuple[NodeId, NodeId, object]] = []
    while True:
        for n, node in nodes.items():
            while node.has_ready():
                rd = node.ready()
                queue.extend((n, env.to, env.payload) for env in rd.messages)
                if node.role is Role.LEADER:
                    applied += sum(1 for o in rd.outputs if isinstance(o, ApplyEntry))
                node.advance(rd)
        if not queue:
            return applied
        batch, queue = queue, []
        for src, dst, msg in batch:
            nodes[dst].step(src, msg)  # type: ignore[arg-type]


def committed_per_cpu_second(batch: int, entries: int) -> float:
    nodes = _cluster(batch)
    _pump(nodes)
    leader = nodes[NAMES[0]]
    assert leader.role is Role.LEADER
    done = 0
    start = time.process_time()
    while done < entries:
        leader.propose_batch([PAYLOAD] * batch)
        before = leader.commit
        done += _pump(nodes)
        assert leader.commit == before + batch, "batch not committed"
    return done / (time.process_time() - start)


def seeds_per_minute(seeds: int) -> tuple[float, float]:
    spec = RunSpec(load_target("raft"), ops=100)
    wall, cpu = time.perf_counter(), time.process_time()
    summary = run_seeds(spec, range(1, seeds + 1))
    assert not summary.failures
    return seeds * 60 / (time.perf_counter() - wall), seeds * 60 / (time.process_time() - cpu)


def main() -> int:
    quick = "--quick" in sys.argv
    print("raft state machine, 3 nodes in one process, 64-byte entries")
    print(f"{'batch':>6} {'entries':>8} {'committed entries / CPU-second':>32}")
    for batch, entries in ((1, 5_000), (100, 100_000), (1000, 200_000)):
        n = entries // 10 if quick else entries
        print(f"{batch:>6} {n:>8} {committed_per_cpu_second(batch, n):>32,.0f}", flush=True)
    seeds = 10 if quick else 50
    wall, cpu = seeds_per_minute(seeds)
    print(f"\nstalwart sim raft, {seeds} seeds x 100 ops, swarm:")
    print(f"  {wall:,.0f} seeds/minute (wall clock), {cpu:,.0f} seeds per CPU-minute")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A deterministic in-memory Raft cluster for tests: you decide every delivery, drop and tick.

Disks follow the contract: a Ready's ``persist`` goes to the page cache and is synced before its
messages leave when ``must_sync`` is set; a crash loses the unsynced page cache; a restarted node
is built from its synced :class:`DurableState` via :func:`apply_storage_ops` alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from stalwart.raft import (
    ApplyEntry,
    EntryKind,
    LeaderChanged,
    RaftConfig,
    RaftMessage,
    RaftNode,
    ReadFailed,
    ReadReady,
    RestoreSnapshot,
)
from stalwart.sansio import DurableState, NodeId, StorageOp, apply_storage_ops


@dataclass
class App:
    """A trivial state machine: the list of applied data, plus what Raft told us."""

    applied: list[tuple[int, bytes]] = field(default_factory=list)
    snapshot_index: int = 0
    reads: dict[int, int] = field(default_factory=dict)  # ctx -> index
    failed_reads: set[int] = field(default_factory=set)
    leaders: list[tuple[int, NodeId | None]] = field(default_factory=list)

    def state(self) -> list[bytes]:
        return [d for _, d in self.applied]


@dataclass
class Disk:
    synced: DurableState = field(default_factory=DurableState)
    cache: list[StorageOp] = field(default_factory=list)

    def view(self) -> DurableState:
        return apply_storage_ops(self.synced, self.cache)


class Cluster:
    def __init__(self, ids: list[str], seed: int = 0, **options: object) -> None:
        self.ids = [NodeId(i) for i in ids]
        self.options = options
        self.rng = random.Random(seed)
        self.nodes: dict[NodeId, RaftNode] = {}
        self.disks: dict[NodeId, Disk] = {n: Disk() for n in self.ids}
        self.apps: dict[NodeId, App] = {n: App() for n in self.ids}
        self.net: list[tuple[NodeId, NodeId, RaftMessage]] = []
        self.cut: set[tuple[NodeId, NodeId]] = set()
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, data), cluster-wide
        self.boot: dict[NodeId, frozenset[NodeId]] = {}
        for n in self.ids:
            self.nodes[n] = self._build(n, None, voters=frozenset(self.ids))

    def _build(self, n: NodeId, durable: DurableState | None, voters: frozenset[NodeId]) -> RaftNode:
        opts = dict(self.options)
        self.boot[n] = voters  # a restart uses the same bootstrap configuration
        cfg = RaftConfig(node_id=n, voters=voters, **opts)  # type: ignore[arg-type]
        return RaftNode(cfg, random.Random(self.rng.random()), durable)

    def add_node(self, n: str) -> None:
        """A new, empty node that will learn the membership from the leader."""
        node = NodeId(n)
        self.ids.append(node)
        self.disks[node], self.apps[node] = Disk(), App()
        self.nodes[node] = self._build(node, None, voters=frozenset())

    # ---- driving ---------------------------------------------------------------------------

    def process(self, n: NodeId) -> None:
        node = self.nodes.get(n)
        while node is not None and node.has_ready():
            rd = node.ready()
            disk = self.disks[n]
            disk.cache.extend(rd.persist)
            if rd.must_sync:
                disk.synced, disk.cache = disk.view(), []
            for env in rd.messages:
                self.net.append((n, env.to, env.payload))
            for out in rd.outputs:
                self._output(n, out)
            node.advance(rd)

    def _output(self, n: NodeId, out: object) -> None:
        app = self.apps[n]
        match out:
            case ApplyEntry(entry=e):
                if e.kind is EntryKind.NORMAL:
                    app.applied.append((e.index, e.data))
                known = self.committed.setdefault(e.index, (e.term, e.data))
                # Committed entries never differ between nodes (State Machine Safety).
                assert known == (e.term, e.data), f"{n} applied {e} but {known} was committed"
            case RestoreSnapshot(index=index, data=data):
                app.applied = [(i, d) for i, d in self._decode_snap(data)]
                app.snapshot_index = index
            case ReadReady(ctx=ctx, index=index):
                app.reads[ctx] = index
            case ReadFailed(ctx=ctx):
                app.failed_reads.add(ctx)
            case LeaderChanged(term=term, leader=leader):
                app.leaders.append((term, leader))

    @staticmethod
    def _decode_snap(data: bytes) -> list[tuple[int, bytes]]:
        out = []
        for line in data.split(b"\n") if data else []:
            i, _, d = line.partition(b":")
            out.append((int(i), d))
        return out

    def snapshot(self, n: str, index: int | None = None) -> None:
        node = NodeId(n)
        app = self.apps[node]
        data = b"\n".join(b"%d:%s" % (i, d) for i, d in app.applied)
        self.nodes[node].compact(self.nodes[node].applied if index is None else index, data)
        self.process(node)

    def blocked(self, src: NodeId, dst: NodeId) -> bool:
        return (src, dst) in self.cut or dst not in self.nodes

    def deliver(self, src: str | None = None, dst: str | None = None, limit: int | None = None) -> int:
        """Deliver queued messages (optionally only src->dst) in FIFO order; returns how many."""
        done, keep = 0, []
        batch, self.net = self.net, []
        for s, d, m in batch:
            if (
                (src is not None and s != src)
                or (dst is not None and d != dst)
                or (limit is not None and done >= limit)
            ):
                keep.append((s, d, m))
                continue
            done += 1
            if self.blocked(s, d):
                continue
            self.nodes[d].step(s, m)
            self.process(d)
        self.net = keep + self.net
        return done

    def drop(self, src: str | None = None, dst: str | None = None) -> int:
        before = len(self.net)
        self.net = [
            (s, d, m) for s, d, m in self.net if not ((src is None or s == src) and (dst is None or d == dst))
        ]
        return before - len(self.net)

    def stabilize(self, max_rounds: int = 1000) -> None:
        for n in list(self.nodes):
            self.process(n)
        for _ in range(max_rounds):
            if not self.net:
                return
            self.deliver()
        raise AssertionError("cluster did not stabilize")

    def tick(self, n: str, times: int = 1) -> None:
        for _ in range(times):
            node = self.nodes.get(NodeId(n))
            if node is not None:
                node.tick()
                self.process(NodeId(n))

    def tick_all(self, times: int = 1) -> None:
        for _ in range(times):
            for n in list(self.nodes):
                self.tick(n)

    def campaign(self, n: str) -> None:
        node = self.nodes[NodeId(n)]
        node.campaign(pre_vote=node.cfg.pre_vote)
        self.process(NodeId(n))

    def partition(self, *groups: list[str]) -> None:
        self.cut.clear()
        where = {NodeId(n): g for g, members in enumerate(groups) for n in members}
        for a in self.ids:
            for b in self.ids:
                if a != b and where.get(a, -1) != where.get(b, -2):
                    self.cut.add((a, b))

    def heal(self) -> None:
        self.cut.clear()

    def crash(self, n: str) -> None:
        node = NodeId(n)
        del self.nodes[node]
        self.disks[node].cache.clear()  # the page cache is lost
        self.net = [(s, d, m) for s, d, m in self.net if s != node]
        self.apps[node] = App()

    def restart(self, n: str) -> None:
        node = NodeId(n)
        self.nodes[node] = self._build(node, self.disks[node].synced, voters=self.boot[node])
        self.process(node)

    # ---- looking -----------------------------------------------------------------------------

    def leader(self) -> NodeId | None:
        from stalwart.raft import Role

        leaders = [n for n, node in self.nodes.items() if node.role is Role.LEADER]
        terms = {self.nodes[n].term for n in leaders}
        assert len(terms) == len(leaders), "two leaders in one term"
        return max(leaders, key=lambda n: self.nodes[n].term, default=None)

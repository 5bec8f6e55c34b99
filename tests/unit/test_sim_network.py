"""Partitions block exactly the links they should; the network's faults do what they say."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from stalwart.errors import ConfigError
from stalwart.sansio import AppendLog, DurableState, Envelope, NodeId, Ready, Rng
from stalwart.sim import Call, Fault, Reply, SimTarget
from stalwart.sim._knobs import Knobs
from stalwart.sim._nemesis import (
    SHAPES,
    Crash,
    Cut,
    NemesisEvent,
    Partition,
    Pause,
    shape_links,
    validate_schedule,
)
from stalwart.sim._world import World


def _sees(links: frozenset[tuple[int, int]], n: int) -> dict[int, set[int]]:
    return {a: {b for b in range(n) if b != a and (a, b) not in links} for a in range(n)}


@pytest.mark.parametrize("n", [3, 4, 5, 7])
def test_halves_cut_every_cross_link_both_ways_and_nothing_else(n: int) -> None:
    for seed in range(20):
        links = shape_links("halves", n, random.Random(seed))
        sees = _sees(links, n)
        groups = {frozenset({a, *sees[a]}) for a in range(n)}
        assert len(groups) == 2  # two components, each fully connected inside
        a, b = sorted(groups, key=len)
        assert len(a) == n // 2 and len(b) == n - n // 2
        assert links == {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}


@pytest.mark.parametrize("n", [3, 5])
def test_isolate_cuts_one_node_from_all_others(n: int) -> None:
    links = shape_links("isolate", n, random.Random(1))
    sees = _sees(links, n)
    alone = [a for a in range(n) if not sees[a]]
    assert len(alone) == 1
    assert all(sees[a] == set(range(n)) - {a, alone[0]} for a in range(n) if a != alone[0])


@pytest.mark.parametrize("n", [3, 5, 6])
def test_bridge_node_sees_both_sides_which_do_not_see_each_other(n: int) -> None:
    for seed in range(10):
        links = shape_links("bridge", n, random.Random(seed))
        sees = _sees(links, n)
        bridges = [a for a in range(n) if len(sees[a]) == n - 1]
        assert len(bridges) == 1
        bridge = bridges[0]
        others = set(range(n)) - {bridge}
        side = {a: frozenset(sees[a] - {bridge}) | {a} for a in others}
        assert len(set(side.values())) == 2  # two sides, cut from each other


@pytest.mark.parametrize("n", [3, 5])
def test_one_way_blocks_a_single_direction(n: int) -> None:
    for seed in range(10):
        links = shape_links("one-way", n, random.Random(seed))
        assert links
        assert all((b, a) not in links for a, b in links)  # the reverse direction still works
        sources = {a for a, _ in links}
        sinks = {b for _, b in links}
        assert not sources & sinks
        assert links == {(a, b) for a in sources for b in sinks}


def test_majority_ring_gives_each_node_a_different_majority() -> None:
    n = 5
    for seed in range(10):
        links = shape_links("majority-ring", n, random.Random(seed))
        assert all((b, a) in links for a, b in links)  # symmetric
        views = [frozenset({a, *sees}) for a, sees in _sees(links, n).items()]
        assert all(len(v) >= n // 2 + 1 for v in views)
        assert len(set(views)) == n


def test_every_shape_is_known_and_an_unknown_one_is_refused() -> None:
    for shape in SHAPES:
        shape_links(shape, 5, random.Random(0))
    with pytest.raises(ConfigError):
        shape_links("donut", 5, random.Random(0))


def test_schedule_validation_names_the_problem() -> None:
    cluster = (NodeId("n1"), NodeId("n2"))
    with pytest.raises(ConfigError, match="unknown node"):
        validate_schedule([NemesisEvent(0, Crash(NodeId("n9")))], cluster)
    with pytest.raises(ConfigError, match="shape"):
        validate_schedule([NemesisEvent(0, Partition("donut"))], cluster)
    with pytest.raises(ConfigError, match=">= 0"):
        validate_schedule([NemesisEvent(-1, Crash(NodeId("n1")))], cluster)
    with pytest.raises(ConfigError, match="positive"):
        validate_schedule([NemesisEvent(0, Pause(NodeId("n1"), 0))], cluster)


# --- a pinger protocol, to observe the network from inside the world ---------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    sender: str
    seq: int = 0


class Pinger:
    """Pings every peer on each tick; remembers who it heard from."""

    def __init__(self, node_id: NodeId, cluster: tuple[NodeId, ...]) -> None:
        self._id, self._peers = node_id, [p for p in cluster if p != node_id]
        self.heard: list[str] = []
        self.last_seq: dict[str, int] = {}
        self.inversions = 0  # a ping older than one already heard from the same sender
        self.ticks = 0
        self._out: list[Envelope[Ping]] = []

    @property
    def node_id(self) -> NodeId:
        return self._id

    def step(self, source: NodeId, message: Ping) -> None:
        assert source == message.sender
        self.heard.append(source)
        if message.seq < self.last_seq.get(source, -1):
            self.inversions += 1
        self.last_seq[source] = max(message.seq, self.last_seq.get(source, -1))

    def tick(self) -> None:
        self.ticks += 1
        self._out += [Envelope(p, Ping(self._id, self.ticks)) for p in self._peers]

    def ready(self) -> Ready[Ping, object]:
        return Ready(messages=tuple(self._out))

    def advance(self, ready: Ready[Ping, object]) -> None:
        del self._out[: len(ready.messages)]


class PingTarget(SimTarget):
    name = "ping"
    model = None

    def build(
        self,
        node_id: NodeId,
        cluster: tuple[NodeId, ...],
        durable: DurableState,
        rng: Rng,
        mutation: str | None,
    ) -> Any:
        return Pinger(node_id, cluster)

    def new_call(self, rng: Rng, process: int) -> Call:
        return Call("read", None, None)

    def request(self, request_id: int, call: Call) -> object:
        return Ping("client")

    def reply(self, output: object) -> Reply | None:
        return None


def _world(faults: set[Fault], **knobs: Any) -> World:
    k = Knobs(nodes=4, clients=0, faults=frozenset(faults), **knobs)
    world = World(PingTarget(), k, seed=7, mutation=None, trace=False)
    world.clients = object()
    return world


def _heard(world: World) -> Mapping[str, set[str]]:
    return {name: set(p.heard) for name, p in world.live_nodes().items()}


def test_a_cut_blocks_exactly_its_links() -> None:
    world = _world({Fault.PARTITION})
    n1, n2, n3, n4 = world.cluster
    world.boot([NemesisEvent(0, Cut(((n1, n2), (n3, n4), (n4, n3))))])
    world.run(until_us=500_000)
    heard = _heard(world)
    assert heard[n2] == {n3, n4}  # n1 -> n2 is cut, one way only
    assert heard[n1] == {n2, n3, n4}
    assert heard[n3] == {n1, n2}
    assert heard[n4] == {n1, n2}


def test_a_paused_node_neither_ticks_nor_hears_until_it_resumes() -> None:
    world = _world({Fault.PAUSE})
    n1 = world.cluster[0]
    world.boot([NemesisEvent(0, Pause(n1, 300))])
    world.run(until_us=250_000)
    node = world.live_nodes()[n1]
    assert node.ticks == 0 and node.heard == []
    assert world.inbox[0]  # messages wait for it
    world.run(until_us=400_000)
    assert node.ticks > 0 and len(node.heard) > 0
    assert world.stats["pause"] == 1


def test_loss_and_duplication_are_counted_and_happen() -> None:
    world = _world({Fault.LOSS, Fault.DUPLICATE}, loss_p=0.3, duplicate_p=0.3)
    world.boot(None)
    world.run(until_us=1_000_000)
    sent, delivered = world.sent, world.messages
    assert world.stats["loss"] > 0 and world.stats["duplicate"] > 0
    expected = sent - world.stats["loss"] + world.stats["duplicate"]
    assert abs(delivered - expected) <= 3 * 12  # only the last few in flight are missing


def _inversions(world: World) -> int:
    world.boot(None)
    world.run(until_us=2_000_000)
    return sum(p.inversions for p in world.live_nodes().values())


def test_links_are_fifo_unless_reordering_is_on() -> None:
    # Latency varies 100x, so only the FIFO rule keeps pings in order.
    assert _inversions(_world(set(), latency_min_us=100, latency_max_us=50_000)) == 0
    reordering = _world({Fault.REORDER}, latency_min_us=100, latency_max_us=50_000, reorder_p=0.3)
    assert _inversions(reordering) > 0
    assert reordering.stats["reorder"] > 0


def test_crash_drops_the_node_and_restart_rebuilds_it() -> None:
    world = _world({Fault.CRASH})
    n2 = world.cluster[1]
    world.boot([NemesisEvent(0, Crash(n2))])
    world.run(until_us=200_000)
    assert n2 not in world.live_nodes()
    assert world.stats["crash"] == 1 and world.stats.get("dropped-node-down", 0) > 0


def test_drift_changes_tick_rates_per_node() -> None:
    world = _world({Fault.DRIFT}, drift_ppm_max=100_000)
    assert len(set(world.tick_us)) > 1
    assert all(9_000 <= t <= 11_000 for t in world.tick_us)
    assert _world(set()).tick_us == [10_000] * 4


def test_latency_distributions() -> None:
    uniform = _world(set(), latency_min_us=1_000, latency_max_us=5_000)
    draws = [uniform.latency_us() for _ in range(5_000)]
    assert min(draws) >= 1_000 and max(draws) <= 5_000
    assert 2_800 < sum(draws) / len(draws) < 3_200
    tail = _world(set(), latency_min_us=1_000, latency_max_us=5_000, latency_dist="long-tail")
    draws = [tail.latency_us() for _ in range(5_000)]
    assert min(draws) >= 1_000 and max(draws) > 5_000  # a few very slow messages
    assert max(draws) <= 1_000 + 8 * 4_001
    assert 1_600 < sorted(draws)[len(draws) // 2] < 1_800  # median of 1000 + Exp(mean 1000): 1693
    with pytest.raises(ConfigError):
        _world(set(), latency_dist="bimodal")


class Appender:
    """Appends one fsynced log entry per tick (to watch crashes land inside fsyncs)."""

    def __init__(self, node_id: NodeId, durable: DurableState) -> None:
        self._id, self.last = node_id, durable.last_index
        self.started_with = durable.last_index
        self._pending: list[AppendLog] = []

    @property
    def node_id(self) -> NodeId:
        return self._id

    def step(self, source: NodeId, message: object) -> None:
        pass

    def tick(self) -> None:
        self.last += 1
        self._pending.append(AppendLog(self.last, b"x"))

    def ready(self) -> Ready[object, object]:
        return Ready(persist=tuple(self._pending), must_sync=bool(self._pending))

    def advance(self, ready: Ready[object, object]) -> None:
        del self._pending[: len(ready.persist)]


class AppendTarget(PingTarget):
    name = "append"

    def build(
        self, node_id: NodeId, cluster: tuple[NodeId, ...], durable: DurableState, rng: Rng, mutation: Any
    ) -> Any:
        return Appender(node_id, durable)


def test_an_armed_crash_lands_inside_the_next_fsync_and_the_node_restarts_from_its_disk() -> None:
    k = Knobs(
        nodes=1,
        clients=0,
        faults=frozenset({Fault.CRASH, Fault.TORN}),
        fsync_min_us=5_000,
        fsync_max_us=9_000,
    )
    world = World(AppendTarget(), k, seed=3, mutation=None, trace=True)
    world.clients = object()
    world.boot(None)
    world.armed[0] = 20_000  # down for 20 ms
    world.run(until_us=200_000)
    assert world.trace is not None
    crash = next(line for line in world.trace if " crash n1 " in line)
    kept, lost = (int(part.split("=")[1]) for part in crash.split()[3:5])
    assert kept + lost == 1  # exactly the one append whose fsync was under way
    assert world.stats["crash"] == 1 and world.stats["restart"] == 1
    node = world.live_nodes()[NodeId("n1")]
    # The armed crash hit the very first fsync, so the restarted node began from what it kept.
    assert node.started_with == kept
    assert node.last - 1 <= world.disks[0].durable.last_index <= node.last  # one fsync may be under way

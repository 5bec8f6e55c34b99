"""One drill run, start to verdict: cluster up, workload + nemesis, heal, final reads, check, report."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stalwart.check import Verdict, check_operations
from stalwart.drill._cluster import ClusterLayout, find_leader, make_supervisor, wait_serving
from stalwart.drill._errors import DrillConfigError
from stalwart.drill._history import Recorder
from stalwart.drill._nemesis import SUPPORTED, Fault, Nemesis, Target, build_schedule, partition_groups
from stalwart.drill._network import ProxyMesh
from stalwart.drill._procs import Supervisor
from stalwart.drill._report import DrillSummary, count_ops, failure_json, write_report
from stalwart.drill._workload import Worker, WorkloadConfig, run_workers

#: Seconds the cluster gets to elect a leader and serve, at start and after the final heal.
SERVE_TIMEOUT_S = 30.0
#: How often the leader monitor asks every node who leads.
LEADER_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class DrillConfig:
    nodes: int = 3
    duration_s: float = 30.0
    nemeses: frozenset[Nemesis] = frozenset(SUPPORTED)
    clients: int = 10
    root: Path = Path(".")
    seed: int = 0
    op_timeout_s: float = 1.0
    check_timeout_s: float = 60.0
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    extra_node_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.nodes not in (3, 5):
            raise DrillConfigError(f"--nodes must be 3 or 5, got {self.nodes}")
        if not 5 <= self.duration_s <= 3600:
            raise DrillConfigError(f"--duration must be 5..3600 s, got {self.duration_s}")
        if not 1 <= self.clients <= 200:
            raise DrillConfigError(f"--clients must be 1..200, got {self.clients}")
        if not 0 < self.op_timeout_s <= 60:
            raise DrillConfigError(f"--op-timeout must be in (0, 60] s, got {self.op_timeout_s}")


@dataclass(slots=True)
class Progress:
    """What the drill reports while it runs (read by the CLI's progress bar)."""

    phase: str = "starting"
    elapsed_s: float = 0.0
    ops: int = 0
    faults: int = 0
    current_fault: str = ""
    leader: int | None = None


@dataclass(slots=True)
class DrillOutcome:
    summary: DrillSummary
    report_path: Path

    @property
    def exit_code(self) -> int:
        return {Verdict.LINEARIZABLE.value: 0, Verdict.NOT_LINEARIZABLE.value: 1}.get(self.summary.verdict, 2)


class _Nemesis:
    """Carries out a schedule against the supervisor and the proxy mesh."""

    def __init__(
        self, cfg: DrillConfig, layout: ClusterLayout, sup: Supervisor, mesh: ProxyMesh, rec: Recorder
    ) -> None:
        self._cfg, self._layout, self._sup, self._mesh, self._rec = cfg, layout, sup, mesh, rec
        self.injected: list[tuple[Fault, tuple[int, ...]]] = []
        self._skewed: set[int] = set()

    async def _target(self, fault: Fault) -> int:
        ids = self._layout.node_ids
        if fault.target is Target.LEADER:
            leader = await find_leader(self._layout, ids)
            if leader is not None and leader in ids:
                return leader
        return ids[random.Random(fault.pick).randrange(len(ids))]

    async def inject(self, fault: Fault, progress: Progress) -> None:
        node = await self._target(fault)
        nodes: tuple[int, ...] = (node,)
        match fault.kind:
            case Nemesis.KILL:
                self._sup.kill(node)
                self._mesh.reset_node(node)
            case Nemesis.PAUSE:
                self._sup.pause(node)
            case Nemesis.PARTITION:
                assert fault.shape is not None  # guaranteed by Fault.__post_init__
                cuts = partition_groups(fault.shape, self._layout.node_ids, node, fault.pick)
                for senders, receivers in cuts:
                    for a in senders:
                        for b in receivers:
                            self._mesh.cut(a, b)
                nodes = tuple(sorted(cuts[0][0]))  # the minority / the isolated leader / one half
            case Nemesis.CLOCK:
                # a clock that runs fast or slow: restart the node (SIGTERM, same data dir) with
                # every tick lasting clock_rate times as long; see docs/drill.md for the limits
                self._sup.stop(node)
                self._mesh.reset_node(node)
                self._sup.restart(node, self._layout.argv(node, self._mesh, fault.clock_rate))
                self._skewed.add(node)
        desc = f"{fault.describe()} on node {node}"
        index = self._rec.fault_started(fault.kind.value, desc, nodes)
        self.injected.append((fault, nodes))
        progress.faults += 1
        progress.current_fault = desc
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(max(0.0, fault.end_s - fault.start_s))
        self.heal_all()
        self._rec.fault_ended(index)
        progress.current_fault = ""

    def heal_all(self) -> None:
        """Heal every fault at once: reconnect the mesh, continue paused, restart dead nodes,
        and put skewed clocks back to the normal rate (another restart)."""
        self._mesh.heal()
        for node in sorted(self._skewed):
            self._sup.stop(node)
            self._sup.restart(node, self._layout.argv(node, self._mesh))
            self._rec.event("clock", f"node {node} restarted at the normal clock rate")
        self._skewed.clear()
        for node, child in self._sup.children.items():
            if child.paused:
                self._sup.resume(node)
            if not child.running():
                self._sup.restart(node)
                self._rec.event("restart", f"node {node} started again (start #{child.starts})")

    async def run(self, schedule: list[Fault], t0: float, progress: Progress) -> None:
        loop = asyncio.get_running_loop()
        for fault in schedule:
            await asyncio.sleep(max(0.0, t0 + fault.start_s - loop.time()))
            await self.inject(fault, progress)


async def _monitor_leader(layout: ClusterLayout, rec: Recorder, progress: Progress, seen: list[int]) -> None:
    while True:
        leader = await find_leader(layout, layout.node_ids)
        if leader is not None and (not seen or seen[-1] != leader):
            seen.append(leader)
            rec.event("leader", f"node {leader} leads")
        progress.leader = leader
        await asyncio.sleep(LEADER_POLL_S)


async def _final_reads(layout: ClusterLayout, rec: Recorder, cfg: DrillConfig) -> None:
    """After the heal, one linearizable read per key: a lost acknowledged write shows up here."""
    from stalwart.client import AsyncKVClient

    async with AsyncKVClient(layout.endpoints(), cluster_key=layout.cluster_key, timeout_s=5.0) as client:
        worker = Worker(-1, client, rec, cfg.workload, random.Random(cfg.seed))
        for key in cfg.workload.keys:
            await worker.get(key)


async def _drive(  # noqa: PLR0917
    cfg: DrillConfig,
    layout: ClusterLayout,
    sup: Supervisor,
    mesh: ProxyMesh,
    rec: Recorder,
    progress: Progress,
) -> tuple[_Nemesis, list[int], float]:
    from stalwart.client import AsyncKVClient

    for node in layout.node_ids:
        sup.start(node)
    progress.phase = "waiting for a leader"
    took = await wait_serving(layout, SERVE_TIMEOUT_S)
    rec.restart_clock()
    rec.event("serving", f"the cluster answered a write and a read {took:.1f} s after start")
    schedule = build_schedule(cfg.nemeses, cfg.duration_s, seed=cfg.seed, nodes=cfg.nodes)
    nemesis = _Nemesis(cfg, layout, sup, mesh, rec)
    leaders: list[int] = []
    stop = asyncio.Event()
    clients = [
        AsyncKVClient(layout.endpoints(), cluster_key=layout.cluster_key, timeout_s=cfg.op_timeout_s)
        for _ in range(cfg.clients)
    ]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    progress.phase = "running"
    try:
        async with asyncio.TaskGroup() as tg:
            work = tg.create_task(run_workers(clients, rec, cfg.workload, cfg.seed, stop))
            nem = tg.create_task(nemesis.run(schedule, t0, progress))
            mon = tg.create_task(_monitor_leader(layout, rec, progress, leaders))
            while loop.time() - t0 < cfg.duration_s:
                progress.elapsed_s = loop.time() - t0
                progress.ops = len(rec.operations)
                await asyncio.sleep(0.2)
            progress.elapsed_s = cfg.duration_s
            stop.set()
            nem.cancel()
            await work
            mon.cancel()
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
    progress.phase = "healing"
    nemesis.heal_all()
    rec.event("healed", "every fault healed")
    recovered = await wait_serving(layout, SERVE_TIMEOUT_S)
    progress.phase = "final reads"
    await _final_reads(layout, rec, cfg)
    return nemesis, leaders, recovered


async def run_drill(cfg: DrillConfig, progress: Progress | None = None) -> DrillOutcome:
    """Run the drill; every process it started is stopped before this returns or raises."""
    progress = progress or Progress()
    layout = ClusterLayout.create(cfg.root, cfg.nodes, cfg.extra_node_args)
    mesh = ProxyMesh({n: ("127.0.0.1", layout.peer_ports[n]) for n in layout.node_ids})
    await mesh.start()
    sup = make_supervisor(layout, mesh)
    rec = Recorder()
    try:
        _nem, leaders, recovered = await _drive(cfg, layout, sup, mesh, rec, progress)
    finally:
        sup.stop_all()
        await mesh.close()
    progress.phase = "checking"
    ops = list(rec.operations)
    started = time.monotonic()
    result = check_operations(ops, model="kv", timeout_s=cfg.check_timeout_s)
    check_s = time.monotonic() - started
    ok, failed, info, by_kind = count_ops(rec.all_operations())
    not_injected = sorted(n.value for n in cfg.nemeses - SUPPORTED)
    summary = DrillSummary(
        verdict=result.verdict.value,
        nodes=cfg.nodes,
        duration_s=cfg.duration_s,
        seed=cfg.seed,
        nemeses=sorted(n.value for n in cfg.nemeses),
        clients=cfg.clients,
        model="kv",
        ops_ok=ok,
        ops_failed=failed,
        ops_info=info,
        ops_by_kind=by_kind,
        leaders_seen=leaders,
        leader_changes=max(0, len(leaders) - 1),
        faults=[_fault_json(w) for w in rec.faults],
        not_injected=not_injected,
        check_elapsed_s=round(check_s, 3),
        recovered_after_s=round(recovered, 3),
        report_dir=str(cfg.root / "report"),
        failure=failure_json(result),
        notes=_notes(not_injected, sup, Nemesis.CLOCK in cfg.nemeses),
    )
    progress.phase = "writing the report"
    page = write_report(
        cfg.root / "report", summary, ops, rec.faults, rec.events, plotted=rec.all_operations()
    )
    progress.phase = "done"
    return DrillOutcome(summary, page)


def _fault_json(w: Any) -> dict[str, Any]:
    return {
        "kind": w.kind,
        "description": w.description,
        "start_s": round(w.start_ns / 1e9, 3),
        "end_s": None if w.end_ns is None else round(w.end_ns / 1e9, 3),
        "nodes": list(w.nodes),
    }


def _notes(not_injected: list[str], sup: Supervisor, clock_chosen: bool) -> list[str]:
    notes = []
    if "clock" in not_injected:
        notes.append("clock: not injected; see docs/drill.md.")
    elif clock_chosen:
        notes.append(
            "clock: a tick-rate skew (the node restarted with ticks 0.5x or 2x as long), not a wall-clock "
            "jump: that needs root time namespaces; see docs/drill.md."
        )
    restarts = sum(max(0, c.starts - 1) for c in sup.children.values())
    notes.append(f"{restarts} node restarts; every started process was stopped by PID")
    return notes

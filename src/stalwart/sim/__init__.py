"""The deterministic simulator (DESIGN.md section 3): virtual time, one seed, every fault.

It drives the same sans-IO protocol objects as ``runtime/``: messages travel a simulated network
(latency, loss, duplication, reordering, partitions), storage operations land on a simulated disk
(page cache lost on a crash, torn last append), nodes crash, restart, pause and drift. Client
workloads record histories that ``stalwart.check`` verifies. See docs/simulator.md.

A protocol plugs in as a :class:`SimTarget` in ``stalwart.sim.targets`` (see that package)::

    from stalwart.sim import RunSpec, load_target, run_seed
    result = run_seed(RunSpec(load_target("register"), ops=200), seed=42)
    assert result.ok, (result.violations, result.replay)
"""

from stalwart.sim._disk import CrashLoss, SimDisk, SimStorageError
from stalwart.sim._knobs import Knobs, default_knobs, parse_faults, swarm_knobs
from stalwart.sim._nemesis import (
    SHAPES,
    Action,
    Crash,
    Cut,
    Heal,
    NemesisEvent,
    Partition,
    Pause,
    Restart,
    schedule_from_json,
    shape_links,
)
from stalwart.sim._registry import UnknownTargetError, available_targets, load_target, target_names
from stalwart.sim._rng import derive_seed, stream
from stalwart.sim._run import RunSpec, SeedResult, Summary, run_seed, run_seeds, shrink_ops
from stalwart.sim._target import ALL_FAULTS, Call, Fault, Invariants, Outcome, Reply, SimTarget
from stalwart.sim._world import SimAbort, World

__all__ = [
    "ALL_FAULTS",
    "SHAPES",
    "Action",
    "Call",
    "Crash",
    "CrashLoss",
    "Cut",
    "Fault",
    "Heal",
    "Invariants",
    "Knobs",
    "NemesisEvent",
    "Outcome",
    "Partition",
    "Pause",
    "Reply",
    "Restart",
    "RunSpec",
    "SeedResult",
    "SimAbort",
    "SimDisk",
    "SimStorageError",
    "SimTarget",
    "Summary",
    "UnknownTargetError",
    "World",
    "available_targets",
    "default_knobs",
    "derive_seed",
    "load_target",
    "parse_faults",
    "run_seed",
    "run_seeds",
    "schedule_from_json",
    "shape_links",
    "shrink_ops",
    "stream",
    "swarm_knobs",
    "target_names",
]

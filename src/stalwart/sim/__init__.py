"""The deterministic simulator (DESIGN.md section 3): virtual time, one seed, every fault.

It drives the same sans-IO protocol objects as ``runtime/``: messages travel a simulated network
(latency, loss, duplication, reordering, partitions), storage operations land on a simulated disk
(page cache lost on a crash, torn last append), nodes crash, restart, pause and drift. Client
workloads record histories that ``stalwart.check`` verifies. See docs/simulator.md.

A protocol plugs in as a :class:`SimTarget` in ``stalwart.sim.targets`` (see that package).
"""

from stalwart.sim._registry import UnknownTargetError, available_targets, load_target, target_names
from stalwart.sim._target import ALL_FAULTS, Call, Fault, Invariants, Outcome, Reply, SimTarget

__all__ = [
    "ALL_FAULTS",
    "Call",
    "Fault",
    "Invariants",
    "Outcome",
    "Reply",
    "SimTarget",
    "UnknownTargetError",
    "available_targets",
    "load_target",
    "target_names",
]

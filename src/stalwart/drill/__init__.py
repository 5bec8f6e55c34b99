"""drill: chaos against real node processes, checked for linearizability.

``stalwart drill`` starts a cluster of real nodes on loopback with every peer link behind a
fault-injecting TCP proxy (:class:`LinkProxy`, :class:`ProxyMesh`), drives a recorded workload
through the client, kills, pauses and partitions nodes on a seeded schedule
(:func:`build_schedule`), heals, checks the history with :mod:`stalwart.check` and writes a
report. See docs/drill.md.
"""

from stalwart.drill._cluster import ClusterLayout, find_leader, free_ports, leader_from_status, wait_serving
from stalwart.drill._errors import DrillConfigError, DrillError
from stalwart.drill._history import Event, FaultWindow, Recorder
from stalwart.drill._nemesis import (
    SUPPORTED,
    Fault,
    Nemesis,
    PartitionShape,
    Target,
    build_schedule,
    parse_nemeses,
    partition_groups,
)
from stalwart.drill._network import ProxyMesh
from stalwart.drill._procs import Child, Supervisor
from stalwart.drill._proxy import Direction, LinkProxy, Mode
from stalwart.drill._report import DrillSummary, write_report
from stalwart.drill._run import DrillConfig, DrillOutcome, Progress, run_drill
from stalwart.drill._workload import Worker, WorkloadConfig, run_workers

__all__ = [
    "SUPPORTED",
    "Child",
    "ClusterLayout",
    "Direction",
    "DrillConfig",
    "DrillConfigError",
    "DrillError",
    "DrillOutcome",
    "DrillSummary",
    "Event",
    "Fault",
    "FaultWindow",
    "LinkProxy",
    "Mode",
    "Nemesis",
    "PartitionShape",
    "Progress",
    "ProxyMesh",
    "Recorder",
    "Supervisor",
    "Target",
    "Worker",
    "WorkloadConfig",
    "build_schedule",
    "find_leader",
    "free_ports",
    "leader_from_status",
    "parse_nemeses",
    "partition_groups",
    "run_drill",
    "run_workers",
    "wait_serving",
    "write_report",
]

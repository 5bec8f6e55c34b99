"""The fault schedule: which fault starts when, on whom, drawn from one seed.

The schedule is plain data built before the run, so a seed names the run: the same seed, node
count, duration and nemesis set give the same schedule. Targets that only exist at run time (the
current leader) are named symbolically (``Target.LEADER``) and resolved when the fault starts.

Faults never overlap: one window, then a quiet gap in which the cluster may recover, then the
next. The last ``quiet_tail_s`` seconds of the run are always fault-free, so the checker sees
the cluster serve again after the final heal.
"""

from __future__ import annotations

import enum
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import assert_never

from stalwart.drill._errors import DrillConfigError


class Nemesis(enum.Enum):
    KILL = "kill"
    PAUSE = "pause"
    PARTITION = "partition"
    CLOCK = "clock"


class PartitionShape(enum.Enum):
    HALVES = "halves"  # a minority and a majority, cut both ways
    ISOLATE_LEADER = "isolate-leader"  # the current leader alone, cut both ways
    ONE_WAY = "one-way"  # the leader's messages to everyone are lost; theirs still arrive
    BRIDGE = "bridge"  # two halves that only one node (the bridge) talks to (n >= 5)


class Target(enum.Enum):
    LEADER = "leader"
    RANDOM = "random"


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault window: starts at ``start_s``, is healed at ``end_s`` (seconds into the run)."""

    kind: Nemesis
    start_s: float
    end_s: float
    target: Target
    shape: PartitionShape | None = None
    pick: int = 0  # a seeded number that picks the random node / the partition's membership

    def __post_init__(self) -> None:
        # a window must be a real interval, and a partition needs its shape
        assert 0 <= self.start_s < self.end_s, self
        assert (self.kind is Nemesis.PARTITION) == (self.shape is not None), self

    @property
    def clock_rate(self) -> float:
        return CLOCK_RATES[self.pick % len(CLOCK_RATES)]

    def describe(self) -> str:
        extra = f" {self.shape.value}" if self.shape is not None else ""
        if self.kind is Nemesis.CLOCK:
            extra = f" x{self.clock_rate:g} tick"
        return f"{self.kind.value}{extra} ({self.target.value}) {self.start_s:.1f}-{self.end_s:.1f}s"


#: Faults a drill can inject (all of them; CLOCK is a tick-rate skew, see docs/drill.md).
SUPPORTED = frozenset(Nemesis)
#: Clock rates a CLOCK fault picks from: > 1 a slow clock, < 1 a fast one.
CLOCK_RATES = (0.5, 2.0)
#: The most fault windows in one schedule, whatever the duration.
MAX_FAULTS = 1000


def parse_nemeses(text: str) -> frozenset[Nemesis]:
    """``"kill,pause"`` -> the set; ``"all"`` -> every kind; ``""``/``"none"`` -> none."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if names in ([], ["none"]):
        return frozenset()
    if names == ["all"]:
        return frozenset(Nemesis)
    known = {n.value: n for n in Nemesis}
    bad = [n for n in names if n not in known]
    if bad:
        raise DrillConfigError(f"unknown nemesis {', '.join(bad)}; choose from {', '.join(known)} or all")
    return frozenset(known[n] for n in names)


def build_schedule(
    nemeses: frozenset[Nemesis],
    duration_s: float,
    *,
    seed: int,
    nodes: int,
    warmup_s: float = 2.0,
    fault_s: tuple[float, float] = (2.0, 4.0),
    gap_s: tuple[float, float] = (1.5, 3.0),
    quiet_tail_s: float = 3.0,
) -> list[Fault]:
    """Fault windows from ``warmup_s`` to ``duration_s - quiet_tail_s``, drawn from ``seed``."""
    if duration_s <= 0:
        raise DrillConfigError(f"duration must be positive, got {duration_s}")
    if nodes < 3:
        raise DrillConfigError(f"a drill needs at least 3 nodes, got {nodes}")
    kinds = sorted(nemeses & SUPPORTED, key=lambda n: n.value)
    rng = random.Random(seed)
    rng.shuffle(kinds)
    shapes = [PartitionShape.HALVES, PartitionShape.ISOLATE_LEADER, PartitionShape.ONE_WAY]
    if nodes >= 5:
        shapes.append(PartitionShape.BRIDGE)
    faults: list[Fault] = []
    t = warmup_s
    end_limit = duration_s - quiet_tail_s
    while kinds and len(faults) < MAX_FAULTS:
        length = rng.uniform(*fault_s)
        if t + length > end_limit:
            break
        # cycle through the kinds in a seeded order, so a short run still sees each of them
        kind = kinds[len(faults)] if len(faults) < len(kinds) else rng.choice(kinds)
        shape = rng.choice(shapes) if kind is Nemesis.PARTITION else None
        target = Target.LEADER if rng.random() < 0.5 else Target.RANDOM
        if shape in (PartitionShape.ISOLATE_LEADER, PartitionShape.ONE_WAY):
            target = Target.LEADER
        faults.append(Fault(kind, t, t + length, target, shape, rng.randrange(1 << 30)))
        t += length + rng.uniform(*gap_s)
    # the invariant the run relies on: windows are ordered, disjoint, and leave the tail quiet
    for a, b in itertools.pairwise(faults):
        assert a.end_s < b.start_s
    assert all(f.end_s <= end_limit for f in faults)
    return faults


def partition_groups(
    shape: PartitionShape, nodes: Sequence[int], focus: int, pick: int
) -> list[tuple[list[int], list[int]]]:
    """The directed cuts of a partition as ``(senders, receivers)`` pairs: every byte from a
    node in ``senders`` to a node in ``receivers`` is lost. ``focus`` is the leader (or a random
    node), ``pick`` a seeded number for the shapes that draw members."""
    others = [n for n in nodes if n != focus]
    rng = random.Random(pick)
    match shape:
        case PartitionShape.ISOLATE_LEADER:
            return [([focus], others), (others, [focus])]
        case PartitionShape.ONE_WAY:
            return [([focus], others)]
        case PartitionShape.HALVES:
            minority = [focus, *rng.sample(others, (len(nodes) - 1) // 2 - 1)]
            majority = [n for n in nodes if n not in minority]
            return [(minority, majority), (majority, minority)]
        case PartitionShape.BRIDGE:
            rest = rng.sample(others, len(others))
            left, right = rest[: len(rest) // 2], rest[len(rest) // 2 :]
            return [(left, right), (right, left)]
        case _:
            assert_never(shape)

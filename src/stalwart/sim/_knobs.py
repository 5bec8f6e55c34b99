"""Every tunable of one simulated run, fixed (defaults) or drawn from the seed (swarm mode).

Swarm testing (as TigerBeetle's VOPR does) draws which faults are on and how hard they hit from
the seed, so that over many seeds the simulator explores mild and brutal worlds alike.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from stalwart.errors import ConfigError
from stalwart.sim._nemesis import SHAPES
from stalwart.sim._rng import stream
from stalwart.sim._target import Fault, SimTarget


@dataclass(frozen=True, slots=True)
class Knobs:
    """The world of one run. Probabilities are per message; durations are virtual."""

    nodes: int
    clients: int
    faults: frozenset[Fault]  # enabled fault kinds (a subset of the target's)
    latency_min_us: int = 200
    latency_max_us: int = 2_000
    latency_dist: str = "uniform"  # "uniform" over min..max, or "long-tail" (see LATENCY_DISTS)
    spike_p: float = 0.0  # LATENCY: chance a message is slowed by up to spike_max_us
    spike_max_us: int = 0
    loss_p: float = 0.0
    duplicate_p: float = 0.0
    reorder_p: float = 0.0  # REORDER: links are not FIFO; chance of an extra delay
    reorder_max_us: int = 0
    fsync_min_us: int = 100
    fsync_max_us: int = 2_000
    drift_ppm_max: int = 0  # DRIFT: each node's tick is off by up to this many parts/million
    nemesis_mean_ms: int = 200  # mean time between random nemesis actions
    fault_max_ms: int = 600  # longest partition / downtime / pause the random nemesis picks
    shapes: tuple[str, ...] = SHAPES
    think_max_us: int = 2_000  # a client waits up to this long between operations

    def describe(self) -> str:
        """One deterministic line listing the enabled faults and their strength."""
        parts = [f"nodes={self.nodes}", f"clients={self.clients}"]
        parts.append(f"latency={self.latency_min_us}..{self.latency_max_us}us/{self.latency_dist}")
        for fault in sorted(self.faults, key=lambda f: f.value):
            match fault:
                case Fault.LOSS:
                    parts.append(f"loss={self.loss_p:.3f}")
                case Fault.DUPLICATE:
                    parts.append(f"duplicate={self.duplicate_p:.3f}")
                case Fault.REORDER:
                    parts.append(f"reorder={self.reorder_p:.3f}")
                case Fault.LATENCY:
                    parts.append(f"latency-spikes={self.spike_p:.3f}")
                case Fault.DRIFT:
                    parts.append(f"drift<={self.drift_ppm_max}ppm")
                case Fault.PARTITION:
                    parts.append("partition=" + "+".join(self.shapes))
                case Fault.CRASH | Fault.TORN | Fault.PAUSE:
                    parts.append(fault.value)
        return " ".join(parts)


def parse_faults(text: str, target: SimTarget) -> frozenset[Fault]:
    """``"all"``, ``"none"`` or a comma list of fault names, within what the target supports."""
    text = text.strip()
    if text in ("", "all"):
        return target.faults
    if text == "none":
        return frozenset()
    chosen = set()
    for name in text.split(","):
        try:
            fault = Fault(name.strip())
        except ValueError:
            known = ", ".join(f.value for f in Fault)
            raise ConfigError(f"unknown fault {name.strip()!r} (known: {known}, all, none)") from None
        if fault not in target.faults:
            raise ConfigError(f"target {target.name!r} does not support the fault {fault.value!r}")
        chosen.add(fault)
    return frozenset(chosen)


def default_knobs(target: SimTarget, faults: frozenset[Fault]) -> Knobs:
    """Moderate, fixed strengths for every enabled fault (``--no-swarm``)."""
    on = faults.__contains__
    return Knobs(
        nodes=target.node_counts[0],
        clients=target.clients,
        faults=faults,
        spike_p=0.02 if on(Fault.LATENCY) else 0.0,
        spike_max_us=50_000 if on(Fault.LATENCY) else 0,
        loss_p=0.05 if on(Fault.LOSS) else 0.0,
        duplicate_p=0.05 if on(Fault.DUPLICATE) else 0.0,
        reorder_p=0.1 if on(Fault.REORDER) else 0.0,
        reorder_max_us=5_000 if on(Fault.REORDER) else 0,
        drift_ppm_max=50_000 if on(Fault.DRIFT) else 0,
    )


def swarm_knobs(seed: int, target: SimTarget, faults: frozenset[Fault]) -> Knobs:
    """Draw every knob from the seed: which faults are on (each with odds 2/3) and how hard.

    Each knob has its own stream (``swarm.<knob>``), so allowing or forbidding one fault kind
    changes that fault's knobs only: the rest of the world drawn for a seed stays the same.
    """

    def rng(name: str) -> random.Random:
        return stream(seed, f"swarm.{name}")

    enabled = frozenset(f for f in sorted(faults, key=lambda f: f.value) if rng(f.value).random() < 2 / 3)
    on = enabled.__contains__
    lat, fsync, shape_rng = rng("latency"), rng("fsync"), rng("shapes")
    lat_min, fsync_min = lat.randrange(50, 1_000), fsync.randrange(20, 1_000)
    shapes = tuple(s for s in SHAPES if shape_rng.random() < 0.6) or (
        SHAPES[shape_rng.randrange(len(SHAPES))],
    )
    spike, loss, dup, reorder, drift = (rng(f"{f.value}.strength") for f in _STRENGTHS)
    return Knobs(
        nodes=target.node_counts[rng("nodes").randrange(len(target.node_counts))],
        clients=1 + rng("clients").randrange(max(1, target.clients * 2)),
        faults=enabled,
        latency_min_us=lat_min,
        latency_max_us=lat_min + lat.randrange(100, 10_000),
        latency_dist=LATENCY_DISTS[lat.randrange(len(LATENCY_DISTS))],
        spike_p=spike.uniform(0.001, 0.05) if on(Fault.LATENCY) else 0.0,
        spike_max_us=spike.randrange(10_000, 300_000) if on(Fault.LATENCY) else 0,
        loss_p=loss.uniform(0.0, 0.3) if on(Fault.LOSS) else 0.0,
        duplicate_p=dup.uniform(0.0, 0.2) if on(Fault.DUPLICATE) else 0.0,
        reorder_p=reorder.uniform(0.0, 0.5) if on(Fault.REORDER) else 0.0,
        reorder_max_us=reorder.randrange(1_000, 50_000) if on(Fault.REORDER) else 0,
        fsync_min_us=fsync_min,
        fsync_max_us=fsync_min + fsync.randrange(10, 10_000),
        drift_ppm_max=drift.randrange(100, 200_000) if on(Fault.DRIFT) else 0,
        nemesis_mean_ms=rng("nemesis").randrange(50, 1_000),
        fault_max_ms=rng("fault-duration").randrange(50, 2_000),
        shapes=shapes,
        think_max_us=rng("think").randrange(1, 20_000),
    )


LATENCY_DISTS = ("uniform", "long-tail")
"""uniform: min + U(0, max - min). long-tail: min + an exponential with mean (max - min) / 4,
capped at 8 x (max - min): most messages fast, a few very slow (the shape of real networks)."""

_STRENGTHS = (Fault.LATENCY, Fault.LOSS, Fault.DUPLICATE, Fault.REORDER, Fault.DRIFT)

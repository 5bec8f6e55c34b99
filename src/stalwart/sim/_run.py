"""Run one seed, or many, and say what happened: ops, faults injected, violations, replay line."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from stalwart.check import MODELS, Model, Operation, Status, Verdict, check_operations
from stalwart.errors import ConfigError
from stalwart.sim._knobs import Knobs, default_knobs, swarm_knobs
from stalwart.sim._nemesis import NemesisEvent, validate_schedule
from stalwart.sim._target import Fault, SimTarget
from stalwart.sim._workload import Workload
from stalwart.sim._world import SimAbort, World

CHECK_MAX_STATES = 500_000
"""The checker's state bound per history: deterministic (unlike a wall-clock timeout)."""
SAFETY_SLACK_MS = 120_000
"""Virtual time the safety phase may take beyond its ops' timeouts before the run is stuck."""


@dataclass(frozen=True, slots=True)
class RunSpec:
    """Everything but the seed that a run depends on (and the replay command names)."""

    target: SimTarget
    ops: int = 100
    faults: frozenset[Fault] | None = None  # None: every fault the target supports
    mutation: str | None = None
    swarm: bool = True
    schedule: tuple[NemesisEvent, ...] | None = None  # an explicit nemesis instead of a random one
    trace: bool = False
    schedule_path: str | None = None  # where the schedule came from, for the replay command
    check_max_states: int = CHECK_MAX_STATES  # the checker's bound; beyond it the verdict is unknown

    def enabled_faults(self) -> frozenset[Fault]:
        return self.target.faults if self.faults is None else self.faults

    def replay_command(self, seed: int) -> str:
        """The one command that replays ``seed`` exactly."""
        faults = self.enabled_faults()
        words = ["stalwart", "sim", self.target.name, "--seed", str(seed), "--ops", str(self.ops)]
        if faults != self.target.faults:
            words += ["--faults", ",".join(sorted(f.value for f in faults)) or "none"]
        if self.mutation:
            words += ["--mutate", self.mutation]
        if not self.swarm:
            words.append("--no-swarm")
        if self.schedule_path is not None:
            words += ["--nemesis", self.schedule_path]
        elif self.schedule is not None:
            words.append("(with the same explicit nemesis schedule)")
        return " ".join(words)


@dataclass(slots=True)
class SeedResult:
    """The outcome of one seed. ``ok`` is true when no violation was found."""

    seed: int
    knobs: Knobs
    counts: dict[str, int]  # client outcomes: ok, fail, info, dropped, redirects
    faults: dict[str, int]  # fault and network counters
    messages: int  # messages delivered to nodes
    events: int  # events the loop processed (deliveries, ticks, fsyncs, client events, faults)
    virtual_ms: int
    violations: list[str]
    verdict: str  # linearizability verdict, or "skipped"
    history: list[Operation]
    trace: list[str] | None = None
    replay: str = ""
    saved: str = ""  # path stem of the saved history and trace (CLI --save-failures)
    ops: int = 0  # the --ops of this run
    shrunk_from: int | None = None  # the --ops of the run this one was shrunk from

    @property
    def ok(self) -> bool:
        return not self.violations

    def history_digest(self) -> str:
        text = "\n".join(repr(op) for op in self.history)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def trace_digest(self) -> str | None:
        if self.trace is None:
            return None
        return hashlib.sha256("\n".join(self.trace).encode()).hexdigest()


def run_seed(spec: RunSpec, seed: int) -> SeedResult:
    """Simulate one seed: safety phase with faults, liveness phase healed, then every check."""
    target, faults = spec.target, spec.enabled_faults()
    if not faults <= target.faults:
        raise ConfigError(f"target {target.name!r} does not support {sorted(f.value for f in faults)}")
    if spec.mutation is not None and spec.mutation not in target.mutations:
        known = ", ".join(sorted(target.mutations)) or "none"
        raise ConfigError(f"target {target.name!r} has no mutation {spec.mutation!r} (known: {known})")
    if spec.ops < 1:
        raise ConfigError("--ops must be at least 1")
    knobs = swarm_knobs(seed, target, faults) if spec.swarm else default_knobs(target, faults)
    world = World(target, knobs, seed, spec.mutation, spec.trace)
    if spec.schedule is not None:
        validate_schedule(spec.schedule, world.cluster)
    load = Workload(world, spec.ops)
    violations: list[str] = []
    try:
        world.boot(None if spec.schedule is None else list(spec.schedule))
        load.start()
        per_op_ms = target.op_timeout_ms * (target.max_redirects + 2)
        world.run(until_us=(spec.ops * per_op_ms + target.liveness_bound_ms + SAFETY_SLACK_MS) * 1000)
        if not world.stopped and not load.violations:
            violations.append(f"internal: the run did not finish (phase {load.phase.value}, t={world.now}us)")
        violations += load.violations
        if not violations:
            violations += [f"invariant: {v}" for v in world.invariants.at_end(world.live_nodes())]
    except SimAbort as exc:
        violations.append(f"crash: {exc}")
    load.close()
    verdict = _check(target, load.history, violations, spec.check_max_states)
    return SeedResult(
        seed=seed,
        knobs=knobs,
        counts=dict(load.counts),
        faults=dict(sorted({**world.stats, "sent": world.sent}.items())),
        messages=world.messages,
        events=world.events,
        virtual_ms=world.now // 1000,
        violations=violations,
        verdict=verdict,
        history=load.history,
        trace=world.trace,
        replay=spec.replay_command(seed),
        ops=spec.ops,
    )


def _check(target: SimTarget, history: list[Operation], violations: list[str], max_states: int) -> str:
    if target.model is None:
        return "skipped"
    model = MODELS.get(target.model) if isinstance(target.model, str) else target.model
    ordered = sorted(history, key=lambda op: (op.invoke_time, op.process))
    if isinstance(model, Model):
        # A read that timed out saw nothing and changed nothing: it constrains no linearization,
        # so leaving it out is sound and spares the search an open-ended operation.
        ordered = [op for op in ordered if not (op.status is Status.INFO and model.read_only(op))]
    result = check_operations(ordered, target.model, None, max_states=max_states)
    if result.verdict is Verdict.NOT_LINEARIZABLE:
        failure = result.failure
        where = ""
        if failure is not None and failure.blocking is not None:
            where = f": cannot place {failure.blocking!r}"
        violations.append(f"linearizability: history is not linearizable{where}")
    return result.verdict.value


@dataclass(slots=True)
class Summary:
    """Totals over seeds, in seed order; deterministic for the same seeds and spec."""

    target: str
    seeds: list[int] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    failures: list[SeedResult] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)  # seeds whose history the checker could not decide

    def add(self, result: SeedResult) -> None:
        self.seeds.append(result.seed)
        for k, v in result.counts.items():
            self.ops[k] = self.ops.get(k, 0) + v
        for k, v in result.faults.items():
            self.faults[k] = self.faults.get(k, 0) + v
        self.messages += result.messages
        self.verdicts[result.verdict] = self.verdicts.get(result.verdict, 0) + 1
        if not result.ok:
            self.failures.append(result)
        if result.verdict == "unknown":
            self.unknown.append(result.seed)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "seeds": len(self.seeds),
            "first_seed": self.seeds[0] if self.seeds else None,
            "ops": dict(sorted(self.ops.items())),
            "faults": dict(sorted(self.faults.items())),
            "messages": self.messages,
            "verdicts": dict(sorted(self.verdicts.items())),
            "unknown_seeds": list(self.unknown),
            "violations": [
                {
                    "seed": r.seed,
                    "violations": r.violations,
                    "replay": r.replay,
                    "knobs": r.knobs.describe(),
                    "saved": r.saved or None,
                    "ops": r.ops,
                    "shrunk_from_ops": r.shrunk_from,
                }
                for r in self.failures
            ],
        }


def run_seeds(spec: RunSpec, seeds: Sequence[int], stop_on_failure: bool = False) -> Summary:
    """Run ``seeds`` in order and total them."""
    summary = Summary(spec.target.name)
    for seed in seeds:
        result = run_seed(spec, seed)
        summary.add(result)
        if stop_on_failure and not result.ok:
            break
    return summary


MAX_SHRINK_RUNS = 16
"""A shrink re-runs the seed at most this many times (a binary search over --ops needs ~7)."""


def shrink_ops(spec: RunSpec, failed: SeedResult) -> SeedResult:
    """The failing run of ``failed.seed`` with the fewest safety-phase operations found.

    A seed's world (knobs, nemesis, network draws) does not depend on ``ops``, so a run with
    fewer operations is the same run cut short: a bug hit early still shows. Binary search over
    ``1..spec.ops``; the failure need not be monotonic in ``ops``, so the answer is a small
    failing count, not always the smallest. Returns ``failed`` itself when nothing smaller fails.
    """
    best, lo, hi = failed, 1, spec.ops - 1
    runs = 0
    while lo <= hi and runs < MAX_SHRINK_RUNS:
        mid = (lo + hi) // 2
        runs += 1
        attempt = run_seed(replace(spec, ops=mid), failed.seed)
        if attempt.ok:
            lo = mid + 1
        else:
            best, hi = attempt, mid - 1
    if best is not failed:
        best.shrunk_from = failed.ops
    return best

"""Simulator speed: seeds per second and simulated messages per second of wall time, per target.

    .venv/bin/python -m bench.bench_sim [--seeds 100] [--ops 100] [--repeat 3] [--targets register,raft]

Each repeat runs the same seeds (swarm mode, every fault the target supports) and times the whole
of ``run_seed``: simulation plus the linearizability check of the history. It prints the median of
the repeats, in wall time and in CPU time of this process (steadier on a shared machine), and the
share of the time spent in the checker. Figures are recorded in bench/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

from stalwart.sim import RunSpec, available_targets, run_seed
from stalwart.sim import _run as sim_run


def measure(spec: RunSpec, seeds: range) -> dict[str, float]:
    """One pass over ``seeds``: totals and timings."""
    check_s = 0.0
    real_check = sim_run._check

    def timed_check(*args: object, **kwargs: object) -> str:
        nonlocal check_s
        t0 = time.perf_counter()
        try:
            return real_check(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            check_s += time.perf_counter() - t0

    sim_run._check = timed_check  # type: ignore[assignment]
    try:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        messages = events = ops = virtual_ms = failures = 0
        for seed in seeds:
            result = run_seed(spec, seed)
            messages += result.messages
            events += result.events
            ops += sum(result.counts[k] for k in ("ok", "fail", "info"))
            virtual_ms += result.virtual_ms
            failures += not result.ok
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        sim_run._check = real_check  # type: ignore[assignment]
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "check_s": check_s,
        "messages": messages,
        "events": events,
        "ops": ops,
        "virtual_s": virtual_ms / 1000,
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--ops", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--targets", default="", help="comma list (default: every target that loads)")
    args = parser.parse_args()
    targets = available_targets()
    names = [n for n in args.targets.split(",") if n] or sorted(targets)
    seeds = range(1, args.seeds + 1)
    header = (
        f"{'target':<10} {'seeds':>6} {'seeds/s':>9} {'seeds/s cpu':>12} {'msgs/s':>9} {'msgs/s cpu':>11} "
        f"{'events/s':>9} {'virt/wall':>9} {'check %':>8} {'fail':>5}"
    )
    print(
        f"seeds {seeds.start}..{seeds.stop - 1}, ops {args.ops}, swarm, all faults; median of {args.repeat}"
    )
    print(header)
    for name in names:
        spec = RunSpec(targets[name], ops=args.ops)
        runs = [measure(spec, seeds) for _ in range(args.repeat)]
        wall = statistics.median(r["wall_s"] for r in runs)
        cpu = statistics.median(r["cpu_s"] for r in runs)
        check = statistics.median(r["check_s"] / r["wall_s"] for r in runs)
        first = runs[0]
        msgs, events = first["messages"], first["events"]
        print(
            f"{name:<10} {len(seeds):>6} {len(seeds) / wall:>9.1f} {len(seeds) / cpu:>12.1f} "
            f"{msgs / wall:>9.0f} {msgs / cpu:>11.0f} {events / wall:>9.0f} "
            f"{first['virtual_s'] / wall:>9.0f} {100 * check:>7.1f}% {int(first['failures']):>5}"
        )


if __name__ == "__main__":
    main()

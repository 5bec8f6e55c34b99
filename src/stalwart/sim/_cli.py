"""``stalwart sim PROTOCOL``: run seeds of a target, print a deterministic summary.

Exit status: 0 when every seed is clean, 1 when a violation was found, 2 on a usage error or an
internal error of the simulator itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback
from typing import Any

import click

from stalwart.check import write_jsonl
from stalwart.errors import ConfigError, StalwartError
from stalwart.sim._knobs import parse_faults
from stalwart.sim._nemesis import NemesisEvent, schedule_from_json
from stalwart.sim._registry import available_targets, load_target
from stalwart.sim._run import RunSpec, SeedResult, Summary, run_seed, shrink_ops

MAX_REPORTED = 10
"""Failing seeds printed in full; the rest are counted."""


@click.command(name="sim")
@click.argument("protocol", required=False)
@click.option("--seeds", "n_seeds", type=click.IntRange(min=1), default=None, help="Number of seeds [100].")
@click.option("--seed", "first_seed", type=click.IntRange(min=0), default=None, help="First (or only) seed.")
@click.option(
    "--faults",
    default="all",
    show_default=True,
    help="Comma list of: latency, loss, duplicate, reorder, partition, crash, torn, pause, drift; "
    "or 'all', 'none'.",
)
@click.option(
    "--ops", type=click.IntRange(min=1), default=100, show_default=True, help="Operations per seed."
)
@click.option("--mutate", default=None, help="Run a deliberately broken variant of the protocol.")
@click.option("--swarm/--no-swarm", default=True, show_default=True, help="Draw every knob from the seed.")
@click.option(
    "--nemesis",
    "nemesis_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="A JSON nemesis schedule to follow instead of the random nemesis.",
)
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), default=None, help="Write the trace.")
@click.option(
    "--save-failures",
    "save_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write each failing seed's history (JSONL, for `stalwart check`) and trace into this directory.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--timing", is_flag=True, help="Also print wall-clock figures (not deterministic).")
@click.option("--shrink", is_flag=True, help="For each failing seed, find a smaller --ops that still fails.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failing seed.")
@click.option("--list", "list_targets", is_flag=True, help="List the targets and their mutations.")
@click.pass_context
def command(  # noqa: PLR0917 (click passes options positionally)
    ctx: click.Context,
    protocol: str | None,
    n_seeds: int | None,
    first_seed: int | None,
    faults: str,
    ops: int,
    mutate: str | None,
    swarm: bool,
    nemesis_path: str | None,
    trace_path: str | None,
    save_dir: str | None,
    as_json: bool,
    timing: bool,
    shrink: bool,
    fail_fast: bool,
    list_targets: bool,
) -> None:
    """Simulate PROTOCOL under faults for many seeds and check every history.

    \b
    Examples:
      stalwart sim register --seeds 500
      stalwart sim register --mutate read-from-backup --fail-fast
      stalwart sim raft --seed 17 --trace run.trace

    Exit status: 0 every seed clean, 1 a violation was found (each failing seed prints the
    command that replays it), 2 a usage error or an internal error of the simulator.
    """
    if list_targets:
        _print_targets()
        ctx.exit(0)
    if protocol is None:
        ctx.fail("missing PROTOCOL (see --list)")
    try:
        target = load_target(protocol)
        schedule = _load_schedule(nemesis_path) if nemesis_path else None
        spec = RunSpec(
            target,
            ops,
            parse_faults(faults, target),
            mutate,
            swarm,
            schedule,
            trace=trace_path is not None,
            schedule_path=nemesis_path,
        )
        if mutate is not None and mutate not in target.mutations:
            known = ", ".join(sorted(target.mutations)) or "none"
            raise click.UsageError(f"target {protocol!r} has no mutation {mutate!r} (known: {known})")
    except StalwartError as exc:
        ctx.fail(str(exc))
    if first_seed is None:
        seeds = list(range(1, 1 + (n_seeds or 100)))
    else:
        seeds = list(range(first_seed, first_seed + (n_seeds or 1)))
    ctx.exit(
        _run(
            spec,
            seeds,
            trace_path=trace_path,
            save_dir=save_dir,
            as_json=as_json,
            timing=timing,
            fail_fast=fail_fast,
            shrink=shrink,
        )
    )


def _run(
    spec: RunSpec,
    seeds: list[int],
    *,
    trace_path: str | None,
    save_dir: str | None,
    as_json: bool,
    timing: bool,
    fail_fast: bool,
    shrink: bool,
) -> int:
    summary = Summary(spec.target.name)
    started = time.perf_counter()
    trace_file = open(trace_path, "w", encoding="utf-8") if trace_path else None  # noqa: SIM115
    try:
        for seed in seeds:
            try:
                result = run_seed(spec, seed)
            except ConfigError as exc:  # e.g. a schedule naming n5 in a 3-node world
                click.echo(f"error at seed {seed}: {exc}", err=True)
                return 2
            except Exception as exc:  # a bug in the simulator itself, not a protocol violation
                click.echo(f"internal error at seed {seed}: {type(exc).__name__}: {exc}", err=True)
                click.echo("".join(traceback.format_exception(exc)), err=True)
                click.echo(f"replay: {spec.replay_command(seed)}", err=True)
                return 2
            if shrink and not result.ok:
                result = shrink_ops(spec, result)
            summary.add(result)
            if trace_file is not None and result.trace is not None:
                trace_file.write(f"# seed {seed} {result.knobs.describe()}\n")
                trace_file.write("\n".join(result.trace) + "\n")
            if save_dir is not None and not result.ok:
                _save_failure(spec, result, save_dir)
            if fail_fast and not result.ok:
                break
    finally:
        if trace_file is not None:
            trace_file.close()
    elapsed = time.perf_counter() - started
    if as_json:
        out: dict[str, Any] = summary.to_json()
        if timing:
            out["timing"] = _timing(summary, elapsed)
        click.echo(json.dumps(out, indent=2, sort_keys=True))
    else:
        _print_summary(spec, summary, elapsed if timing else None)
    internal = any(v.startswith("internal:") for r in summary.failures for v in r.violations)
    return 2 if internal else (1 if summary.failures else 0)


def _save_failure(spec: RunSpec, result: SeedResult, save_dir: str) -> None:
    """The history as JSONL and the trace (the seed is re-run with tracing on: same run)."""
    os.makedirs(save_dir, exist_ok=True)
    stem = os.path.join(save_dir, f"{spec.target.name}-seed-{result.seed}")
    write_jsonl(sorted(result.history, key=lambda op: (op.invoke_time, op.process)), stem + ".jsonl")
    if result.trace is None:  # re-run the same seed (and --ops) with tracing on: the same run
        result.trace = run_seed(dataclasses.replace(spec, trace=True, ops=result.ops), result.seed).trace
    with open(stem + ".trace", "w", encoding="utf-8") as out:
        out.write(f"# {result.replay}\n# {result.knobs.describe()}\n")
        out.write("\n".join(result.trace or ()) + "\n")
    result.saved = stem


def _load_schedule(path: str) -> tuple[NemesisEvent, ...]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the nemesis schedule {path}: {exc}") from None
    return schedule_from_json(data)


def _timing(summary: Summary, elapsed: float) -> dict[str, float]:
    return {
        "wall_s": round(elapsed, 3),
        "seeds_per_s": round(len(summary.seeds) / elapsed, 2) if elapsed else 0.0,
        "messages_per_s": round(summary.messages / elapsed, 1) if elapsed else 0.0,
    }


def _kv(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"


def _print_summary(spec: RunSpec, summary: Summary, elapsed: float | None) -> None:
    seeds = summary.seeds
    span = f"{seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    mode = "swarm" if spec.swarm else "fixed knobs"
    faults = ",".join(sorted(f.value for f in spec.enabled_faults())) or "none"
    mutation = f", mutation {spec.mutation}" if spec.mutation else ""
    plural = "s" if len(seeds) != 1 else ""
    nemesis = f", nemesis {spec.schedule_path}" if spec.schedule_path else ""
    click.echo(
        f"stalwart sim {spec.target.name}: {len(seeds)} seed{plural} ({span}), {mode}{mutation}{nemesis}"
    )
    click.echo(f"faults enabled: {faults}")
    click.echo(f"ops: {_kv(summary.ops)}")
    click.echo(f"messages delivered: {summary.messages}")
    click.echo(f"faults injected: {_kv(summary.faults)}")
    click.echo(f"checker verdicts: {_kv(summary.verdicts)}")
    if summary.unknown:
        shown = " ".join(str(seed) for seed in summary.unknown[:20])
        click.echo(f"checker unknown (state bound) on seeds: {shown}")
    if elapsed is not None:
        click.echo("timing: " + " ".join(f"{k}={v}" for k, v in _timing(summary, elapsed).items()))
    click.echo(f"violations: {len(summary.failures)} of {len(seeds)} seeds")
    for result in summary.failures[:MAX_REPORTED]:
        _print_failure(result)
    if len(summary.failures) > MAX_REPORTED:
        click.echo(f"... and {len(summary.failures) - MAX_REPORTED} more failing seeds")


def _print_failure(result: SeedResult) -> None:
    click.echo(f"FAILED seed {result.seed}: {result.knobs.describe()}")
    for violation in result.violations:
        click.echo(f"  {violation}")
    if result.shrunk_from is not None:
        click.echo(f"  shrunk: still fails with --ops {result.ops} (of {result.shrunk_from})")
    click.echo(f"  replay: {result.replay}")
    if result.saved:
        click.echo(f"  saved: {result.saved}.jsonl (stalwart check --model ...) and {result.saved}.trace")


def _print_targets() -> None:
    for name, target in sorted(available_targets().items()):
        click.echo(f"{name}: {target.summary}")
        faults = ",".join(sorted(f.value for f in target.faults))
        click.echo(f"  faults: {faults}")
        for mutation, what in sorted(target.mutations.items()):
            click.echo(f"  --mutate {mutation}: {what}")

"""``stalwart drill``: a chaos drill against a real local cluster, with a verdict and a report."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import signal
import tempfile
import time
from pathlib import Path

import click
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from stalwart.drill._errors import DrillConfigError, DrillError
from stalwart.drill._nemesis import parse_nemeses
from stalwart.drill._report import DrillSummary
from stalwart.drill._run import DrillConfig, DrillOutcome, run_drill
from stalwart.drill._run import Progress as DrillProgress
from stalwart.errors import StalwartError


def _word(verdict: str) -> tuple[str, str]:
    match verdict:
        case "linearizable":
            return "linearizable", "bold green"
        case "not-linearizable":
            return "NOT linearizable", "bold red"
        case _:
            return f"unknown ({verdict})", "bold yellow"


def render_summary(summary: DrillSummary, report: Path) -> Panel:
    """The one-screen summary."""
    word, style = _word(summary.verdict)
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("verdict", f"[{style}]{word}[/]")
    table.add_row("cluster", f"{summary.nodes} nodes, {summary.duration_s:.0f} s, seed {summary.seed}")
    table.add_row(
        "operations", f"{summary.ops_ok} ok, {summary.ops_failed} failed, {summary.ops_info} indeterminate"
    )
    for kind, counts in summary.ops_by_kind.items():
        table.add_row(f"  {kind}", ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    table.add_row("leaders seen", f"{summary.leaders_seen} ({summary.leader_changes} changes)")
    kinds: dict[str, int] = {}
    for f in summary.faults:
        kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
    table.add_row("faults injected", ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) or "none")
    if summary.not_injected:
        table.add_row("not injected", ", ".join(summary.not_injected) + " (see docs/drill.md)")
    table.add_row("recovered", f"served again {summary.recovered_after_s} s after the final heal")
    table.add_row("check", f"{summary.check_elapsed_s} s")
    table.add_row("report", str(report))
    return Panel(table, title="stalwart drill", border_style=style.split()[-1], expand=False)


async def _run_with_bar(cfg: DrillConfig, console: Console) -> DrillOutcome:
    state = DrillProgress()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("drill", total=cfg.duration_s, detail="")
        runner = asyncio.create_task(run_drill(cfg, state))
        while not runner.done():
            fault = f", fault: {state.current_fault}" if state.current_fault else ""
            detail = f"{state.phase}, {state.ops} ops, leader {state.leader}, {state.faults} faults{fault}"
            bar.update(task, completed=state.elapsed_s, detail=detail[:100])
            await asyncio.wait({runner}, timeout=0.25)
        return runner.result()


@click.command(name="drill")
@click.option("--nodes", type=click.Choice(["3", "5"]), default="3", show_default=True)
@click.option(
    "--duration", "duration_s", type=float, default=30.0, show_default=True, help="seconds of faults"
)
@click.option(
    "--nemesis",
    "nemesis",
    default="kill,pause,partition,clock",
    show_default=True,
    help="comma list of kill, pause, partition, clock (or all / none)",
)
@click.option("--clients", type=int, default=10, show_default=True, help="concurrent client workers")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where data, logs and the report go (default: a new temp dir, kept)",
)
@click.option("--seed", type=int, default=None, help="the schedule's seed (default: from the clock)")
@click.option("--op-timeout", "op_timeout_s", type=float, default=1.0, show_default=True)
@click.option("--node-arg", "node_args", multiple=True, help="extra argument for every node (repeatable)")
@click.option(
    "--read-consistency",
    type=click.Choice(["linearizable", "lease", "stale"]),
    default="linearizable",
    show_default=True,
    help="the workload's reads (stale can break linearizability on purpose)",
)
@click.pass_context
def command(  # noqa: PLR0917
    ctx: click.Context,
    nodes: str,
    duration_s: float,
    nemesis: str,
    clients: int,
    directory: Path | None,
    seed: int | None,
    op_timeout_s: float,
    node_args: tuple[str, ...],
    read_consistency: str,
) -> None:
    """Run a real cluster under faults, check the history, write a report.

    Exit 0 when the history is linearizable, 1 on a violation, 2 on an error or unknown verdict.
    """
    from stalwart.drill._workload import WorkloadConfig

    console = Console()
    chosen_seed = seed if seed is not None else int(time.time()) % 1_000_000
    try:
        cfg = DrillConfig(
            nodes=int(nodes),
            duration_s=duration_s,
            nemeses=parse_nemeses(nemesis),
            clients=clients,
            root=directory or Path("."),
            seed=chosen_seed,
            op_timeout_s=op_timeout_s,
            workload=WorkloadConfig(
                read_consistency=None if read_consistency == "linearizable" else read_consistency
            ),
            extra_node_args=node_args,
        )
    except DrillConfigError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        ctx.exit(2)
    if importlib.util.find_spec("matplotlib") is None:
        # found out now, not after the whole run: the report's plots need it
        console.print("[bold red]error:[/] the report needs matplotlib (pip install 'matplotlib>=3.8')")
        ctx.exit(2)
    root = directory or Path(tempfile.mkdtemp(prefix="stalwart-drill-"))
    cfg = dataclasses.replace(cfg, root=root)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop every node by PID. SIGINT is set
    # explicitly too: a process started in the background by a shell inherits SIGINT ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        console.print(
            f"drill: {cfg.nodes} nodes, {cfg.duration_s:.0f} s, seed {cfg.seed}, dir {root}", soft_wrap=True
        )
        outcome = asyncio.run(_run_with_bar(cfg, console))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: every node the drill started has been stopped[/]")
        ctx.exit(130)
    except (DrillError, StalwartError, OSError) as exc:
        console.print(f"[bold red]drill error:[/] {exc}")
        console.print(f"logs: {root / 'logs'}", soft_wrap=True)
        ctx.exit(2)
    except Exception:  # a bug in the drill itself: still exit 2 (1 means "not linearizable")
        console.print_exception()
        console.print(f"logs: {root / 'logs'}", soft_wrap=True)
        ctx.exit(2)
    console.print(render_summary(outcome.summary, outcome.report_path))
    for note in outcome.summary.notes:
        console.print(f"note: {note}", soft_wrap=True)
    word, style = _word(outcome.summary.verdict)
    console.print(f"[{style}]{word}[/]  report: {outcome.report_path}", soft_wrap=True)
    ctx.exit(outcome.exit_code)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")

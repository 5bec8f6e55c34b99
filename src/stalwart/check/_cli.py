"""``stalwart check FILE...``: decide whether recorded histories are linearizable.

Exit status: 0 when every file is linearizable; 1 when any file is not (a definite violation
outranks everything else); 2 when a verdict is unknown (timeout, state limit) or a file could not
be read.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import click

from stalwart.check._checker import check_operations
from stalwart.check._history import History, Status
from stalwart.check._html import render_timeline
from stalwart.check._models import MODELS, Model, resolve_model
from stalwart.check._readers import FORMATS, read_history
from stalwart.check._result import CheckResult, Verdict
from stalwart.errors import StalwartError

_SHOW_UNPLACED = 10  # operations listed in the text report; the HTML and --json carry them all


def _pick_model(name: str, history: History) -> Model:
    if name != "auto":
        return resolve_model(name)
    return resolve_model("kv" if any(op.key is not None for op in history.operations) else "cas-register")


def _html_name(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(path)) + ".html"


def _report_text(path: str, history: History, model: Model, result: CheckResult, parse_s: float) -> None:
    parts = len(result.partitions)
    head = (
        f"{path}: {result.verdict.value.upper()} ({model.name}, {result.operations} ops, "
        f"{parts} partition{'s' if parts != 1 else ''}, read {parse_s:.3f} s, check {result.elapsed_s:.3f} s)"
    )
    click.echo(head)
    for part in result.partitions:
        if part.verdict is Verdict.UNKNOWN and result.verdict is Verdict.UNKNOWN:
            click.echo(f"  key {part.key!r}: unknown ({part.reason})")
    failure = result.failure
    if failure is None:
        return
    where = "the whole history" if failure.key is None else f"key {failure.key!r}"
    click.echo(f"  violation in {where} ({len(failure.operations)} operations)")
    click.echo(
        f"  longest linearizable prefix: {len(failure.linearization)} operations, "
        f"state after it: {failure.final_state}"
    )
    click.echo("  operations that cannot be placed after it:")
    for op in failure.unplaced[:_SHOW_UNPLACED]:
        mark = "  <- blocking (returns first)" if op is failure.blocking else ""
        end = "open" if op.complete_time is None or op.status is Status.INFO else op.complete_time
        click.echo(f"    {model.describe_op(op)}  [t={op.invoke_time}..{end}]{mark}")
    if len(failure.unplaced) > _SHOW_UNPLACED:
        click.echo(f"    ... and {len(failure.unplaced) - _SHOW_UNPLACED} more (see --json or --html-dir)")


def _check_one(path: str, model_name: str, fmt: str, timeout_s: float | None, jobs: int) -> tuple[Any, ...]:
    started = time.perf_counter()
    history = read_history(path, fmt)
    parse_s = time.perf_counter() - started
    model = _pick_model(model_name, history)
    result = check_operations(history.operations, model, timeout_s, jobs=jobs)
    return history, model, result, parse_s


@click.command(name="check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--model",
    "model_name",
    type=click.Choice(["auto", *sorted(MODELS)]),
    default="auto",
    show_default=True,
    help="Sequential specification; auto = kv when operations carry keys, else cas-register.",
)
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="auto", show_default=True)
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), default=None, help="Seconds per file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document with every result.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Worker processes sharing a file's partitions (POSIX).",
)
@click.option("--html-dir", type=click.Path(file_okay=False), default=None, help="Draw violations here.")
@click.pass_context
def command(  # noqa: PLR0917 - one parameter per click option
    ctx: click.Context,
    files: tuple[str, ...],
    model_name: str,
    fmt: str,
    timeout_s: float | None,
    as_json: bool,
    jobs: int,
    html_dir: str | None,
) -> None:
    """Check that each history FILE is linearizable."""
    reports: list[dict[str, Any]] = []
    verdicts: list[str] = []
    for path in files:
        try:
            history, model, result, parse_s = _check_one(path, model_name, fmt, timeout_s, jobs)
        except (StalwartError, OSError) as exc:
            verdicts.append("error")
            reports.append({"file": path, "verdict": "error", "error": str(exc)})
            if not as_json:
                click.echo(f"{path}: ERROR {exc}", err=True)
            continue
        verdicts.append(result.verdict.value)
        report = {"file": path, "format": history.format, "read_s": round(parse_s, 6)}
        report.update(result.to_json(model.describe_op))
        failure = result.failure
        if html_dir is not None and failure is not None:
            os.makedirs(html_dir, exist_ok=True)
            out = os.path.join(html_dir, _html_name(path))
            with open(out, "w", encoding="utf-8") as f:
                f.write(render_timeline(failure, model, os.path.basename(path)))
            report["html"] = out
        reports.append(report)
        if not as_json:
            _report_text(path, history, model, result, parse_s)
            if "html" in report:
                click.echo(f"  timeline: {report['html']}")
    code = _exit_code(verdicts)
    if as_json:
        overall = {0: "linearizable", 1: "not-linearizable", 2: "unknown-or-error"}[code]
        click.echo(json.dumps({"verdict": overall, "files": reports}, indent=2))
    ctx.exit(code)


def _exit_code(verdicts: list[str]) -> int:
    if Verdict.NOT_LINEARIZABLE.value in verdicts:
        return 1
    if any(v != Verdict.LINEARIZABLE.value for v in verdicts):
        return 2
    return 0

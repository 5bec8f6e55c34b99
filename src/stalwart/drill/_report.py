"""The drill's report directory: history.jsonl, summary.json, latency.png, rate.png, report.html.

The plots follow Jepsen's perf graphs: one point per operation at its invocation time, its
latency on a log scale, coloured by outcome and shaped by kind; throughput in one-second
buckets per kind; every fault window shaded across both plots.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stalwart.check import CheckResult, Operation, Status, Verdict, write_jsonl
from stalwart.drill._history import Event, FaultWindow

_STATUS_COLOURS = {Status.OK: "#2a9d3a", Status.FAIL: "#d62728", Status.INFO: "#ff9f1c"}
_KIND_MARKERS = {"get": "o", "put": "s", "cas": "^", "delete": "x", "append": "D"}
_FAULT_COLOURS = {"kill": "#e76f51", "pause": "#8d99ae", "partition": "#f4a261", "clock": "#a8dadc"}
#: The most points drawn in the latency plot (a uniform sample beyond it).
MAX_PLOTTED_POINTS = 50_000


@dataclass(slots=True)
class DrillSummary:
    """What the drill saw and decided; written as summary.json and printed on one screen."""

    verdict: str
    nodes: int
    duration_s: float
    seed: int
    nemeses: list[str]
    clients: int
    model: str
    ops_ok: int
    ops_failed: int
    ops_info: int
    ops_by_kind: dict[str, dict[str, int]]
    leaders_seen: list[int]
    leader_changes: int
    faults: list[dict[str, Any]]
    not_injected: list[str]
    check_elapsed_s: float
    recovered_after_s: float | None
    report_dir: str
    failure: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def count_ops(ops: Sequence[Operation]) -> tuple[int, int, int, dict[str, dict[str, int]]]:
    by_kind: dict[str, Counter[str]] = {}
    for op in ops:
        by_kind.setdefault(op.f, Counter())[op.status.value] += 1
    total = Counter(op.status for op in ops)
    kinds = {k: dict(c) for k, c in sorted(by_kind.items())}
    return total[Status.OK], total[Status.FAIL], total[Status.INFO], kinds


def failure_json(result: CheckResult) -> dict[str, Any] | None:
    if result.verdict is Verdict.LINEARIZABLE or result.failure is None:
        return None
    bad = result.failure
    return {
        "key": bad.key,
        "verdict": bad.verdict.value,
        "prefix_length": len(bad.linearization),
        "blocking": None if bad.blocking is None else bad.blocking.to_json(),
        "unplaced": [op.to_json() for op in list(bad.unplaced)[:20]],
    }


def _shade(ax: Any, faults: Sequence[FaultWindow], end_s: float) -> None:
    seen: set[str] = set()
    for w in faults:
        stop = (w.end_ns / 1e9) if w.end_ns is not None else end_s
        label = w.kind if w.kind not in seen else None
        seen.add(w.kind)
        ax.axvspan(
            w.start_ns / 1e9, stop, color=_FAULT_COLOURS.get(w.kind, "#cccccc"), alpha=0.25, label=label
        )


def plot_latency(ops: Sequence[Operation], faults: Sequence[FaultWindow], path: Path, end_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = max(1, len(ops) // MAX_PLOTTED_POINTS)
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=100)
    _shade(ax, faults, end_s)
    groups: dict[tuple[str, Status], tuple[list[float], list[float]]] = {}
    for op in ops[::step]:
        done = op.complete_time if op.complete_time is not None else int(end_s * 1e9)
        xs, ys = groups.setdefault((op.f, op.status), ([], []))
        xs.append(op.invoke_time / 1e9)
        ys.append(max(done - op.invoke_time, 1000) / 1e6)
    for (kind, status), (xs, ys) in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1].value)):
        ax.scatter(
            xs,
            ys,
            s=10,
            marker=_KIND_MARKERS.get(kind, "."),
            color=_STATUS_COLOURS[status],
            alpha=0.6,
            linewidths=0,
            label=f"{kind} {status.value}",
        )
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency (info operations drawn up to the end of the run)")
    ax.set_xlim(0, end_s)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_rate(ops: Sequence[Operation], faults: Sequence[FaultWindow], path: Path, end_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = max(1, int(end_s) + 1)
    series: dict[tuple[str, Status], list[int]] = {}
    for op in ops:
        t = op.complete_time if op.complete_time is not None else op.invoke_time
        series.setdefault((op.f, op.status), [0] * buckets)[min(buckets - 1, int(t / 1e9))] += 1
    fig, ax = plt.subplots(figsize=(11, 3.5), dpi=100)
    _shade(ax, faults, end_s)
    xs = [b + 0.5 for b in range(buckets)]
    for (kind, status), counts in sorted(series.items(), key=lambda kv: (kv[0][0], kv[0][1].value)):
        style = "-" if status is Status.OK else ":"
        ax.plot(
            xs,
            counts,
            style,
            color=_STATUS_COLOURS[status],
            marker=_KIND_MARKERS.get(kind, "."),
            markersize=3,
            label=f"{kind} {status.value}",
        )
    ax.set_xlabel("time (s)")
    ax.set_ylabel("operations / s")
    ax.set_title("Throughput (by completion time; info by invocation)")
    ax.set_xlim(0, end_s)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _html_page(summary: DrillSummary, events: Sequence[Event]) -> str:
    good = summary.verdict == Verdict.LINEARIZABLE.value
    colour = "#2a9d3a" if good else "#d62728"
    word = {"linearizable": "linearizable", "not-linearizable": "NOT linearizable"}.get(
        summary.verdict, f"unknown ({summary.verdict})"
    )
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(json.dumps(v))}</td></tr>"
        for k, v in summary.to_json().items()
        if k not in ("faults", "failure", "ops_by_kind")
    )
    faults = "".join(
        f"<tr><td>{f['kind']}</td><td>{html.escape(f['description'])}</td><td>{f['start_s']:.2f}</td>"
        f"<td>{'' if f['end_s'] is None else format(f['end_s'], '.2f')}</td><td>{f['nodes']}</td></tr>"
        for f in summary.faults
    )
    kinds = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{c.get('ok', 0)}</td><td>{c.get('fail', 0)}</td>"
        f"<td>{c.get('info', 0)}</td></tr>"
        for k, c in summary.ops_by_kind.items()
    )
    evs = "".join(
        f"<tr><td>{e.time_ns / 1e9:.2f}</td><td>{html.escape(e.kind)}</td>"
        f"<td>{html.escape(e.detail)}</td></tr>"
        for e in events[:500]
    )
    failure = ""
    if summary.failure is not None:
        failure = f"<h2>Violation</h2><pre>{html.escape(json.dumps(summary.failure, indent=2))}</pre>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>stalwart drill: {word}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}
.verdict{{font-size:2em;color:{colour}}}</style></head><body>
<h1>stalwart drill</h1><p class="verdict">{word}</p>
<p>{summary.nodes} nodes, {summary.duration_s:.0f} s, seed {summary.seed}, nemeses
{", ".join(summary.nemeses) or "none"}, {summary.clients} clients, model {summary.model}.
Shaded bands are fault windows. Green ok, red fail (did not happen), orange info (unknown).</p>
<h2>Latency</h2><img src="latency.png" alt="latency over time">
<h2>Throughput</h2><img src="rate.png" alt="throughput over time">
<h2>Operations</h2><table><tr><th>kind</th><th>ok</th><th>fail</th><th>info</th></tr>{kinds}</table>
<h2>Faults</h2><table><tr><th>kind</th><th>what</th><th>start s</th><th>end s</th><th>nodes</th></tr>
{faults}</table>
{failure}
<h2>Summary</h2><table>{rows}</table>
<h2>Events</h2><table><tr><th>t (s)</th><th>kind</th><th>detail</th></tr>{evs}</table>
<p>Files: <a href="history.jsonl">history.jsonl</a> (stalwart check --model {summary.model} history.jsonl),
<a href="summary.json">summary.json</a>.</p>
</body></html>
"""


def write_report(
    out: Path,
    summary: DrillSummary,
    ops: Sequence[Operation],
    faults: Sequence[FaultWindow],
    events: Sequence[Event],
    *,
    plotted: Sequence[Operation] | None = None,
) -> Path:
    """Write every report file into ``out``; returns the path of report.html.

    ``ops`` is the checked history (written to history.jsonl); ``plotted`` (default ``ops``)
    also holds operations kept out of the check, such as refused cas calls.
    """
    plotted = ops if plotted is None else plotted
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(ops, str(out / "history.jsonl"))
    (out / "summary.json").write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    end_s = max([summary.duration_s, *((op.complete_time or op.invoke_time) / 1e9 for op in ops)])
    plot_latency(plotted, faults, out / "latency.png", end_s)
    plot_rate(plotted, faults, out / "rate.png", end_s)
    page = out / "report.html"
    page.write_text(_html_page(summary, events))
    return page

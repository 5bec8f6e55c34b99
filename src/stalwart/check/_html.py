"""A self-contained HTML page (SVG inside, no scripts) drawing one partition's timeline.

One lane per process, one bar per operation from its invocation to its completion (an ``INFO``
operation runs to the right edge, hatched). Times are replaced by their rank among all event
times, as Porcupine's visualization does, so bursts stay readable. Operations in the longest
linearizable prefix are green and numbered in linearization order; the operations that could not
be placed after it are red, the blocking one outlined; the rest are grey.
"""

from __future__ import annotations

from html import escape

from stalwart.check._history import Status
from stalwart.check._models import Model
from stalwart.check._result import PartitionResult, Verdict

_LANE_PX = 26
_BAR_PX = 18
_STEP_PX = 30  # horizontal pixels per distinct event time
_LEFT_PX = 60
_MAX_OPS = 20_000  # limit on what one page draws; larger partitions are truncated, and say so

_STYLE = """
body { font: 13px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.2em; } table { border-collapse: collapse; margin-top: 1em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; font-family: monospace; }
.lin rect { fill: #b7e1b0; stroke: #3c8d2f; } .bad rect { fill: #f4a7a7; stroke: #b22222; }
.block rect { fill: #e05555; stroke: #600; stroke-width: 3; } .other rect { fill: #ddd; stroke: #999; }
.info rect { stroke-dasharray: 4 3; fill-opacity: 0.55; }
text { font: 10px monospace; pointer-events: none; } .lane { font: 11px sans-serif; fill: #555; }
"""


def render_timeline(part: PartitionResult, model: Model, title: str) -> str:
    """The HTML page for ``part`` (normally a partition found not linearizable)."""
    ops = list(part.operations[:_MAX_OPS])
    times = sorted({t for op in ops for t in (op.invoke_time, op.complete_time) if t is not None})
    x_of = {t: _LEFT_PX + i * _STEP_PX for i, t in enumerate(times)}
    right = _LEFT_PX + len(times) * _STEP_PX + 40
    procs = sorted({op.process for op in ops})
    lane = {p: i for i, p in enumerate(procs)}
    order = {id(op): i for i, op in enumerate(part.linearization)}
    unplaced = {id(op) for op in part.unplaced}
    blocking = id(part.blocking) if part.blocking is not None else None
    height = len(procs) * _LANE_PX + 20
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{right}" height="{height}">']
    for p, i in lane.items():
        y = 10 + i * _LANE_PX
        svg.append(f'<text class="lane" x="4" y="{y + 13}">p{p}</text>')
        base = y + _BAR_PX + 3
        svg.append(f'<line x1="{_LEFT_PX}" y1="{base}" x2="{right}" y2="{base}" stroke="#eee"/>')
    for op in ops:
        x0 = x_of[op.invoke_time]
        is_info = op.status is Status.INFO
        x1 = right - 10 if is_info or op.complete_time is None else x_of[op.complete_time]
        y = 10 + lane[op.process] * _LANE_PX
        cls = _css_class(id(op), order, unplaced, blocking) + (" info" if is_info else "")
        label = _compact(model.describe_op(op), op.process, part.key)
        end = "..." if is_info or op.complete_time is None else op.complete_time
        tip = f"{model.describe_op(op)}  [{op.invoke_time}, {end}]"
        if id(op) in order:
            tip += f"  linearized #{order[id(op)] + 1}"
            label = f"#{order[id(op)] + 1} {label}"
        width = max(x1 - x0, 6)
        svg.append(
            f'<g class="{cls}"><title>{escape(tip)}</title>'
            f'<rect x="{x0}" y="{y}" width="{width}" height="{_BAR_PX}" rx="3"/>'
            f'<text x="{x0 + 3}" y="{y + 12}">{escape(_fit(label, width))}</text></g>'
        )
    svg.append("</svg>")
    return _page(part, model, title, "\n".join(svg), truncated=len(part.operations) > _MAX_OPS)


def _css_class(key: int, order: dict[int, int], unplaced: set[int], blocking: int | None) -> str:
    if key == blocking:
        return "block"
    if key in unplaced:
        return "bad"
    return "lin" if key in order else "other"


def _compact(text: str, process: int, key: str | None) -> str:
    """The label without what the lane (process) and the page (key) already say."""
    text = text.removeprefix(f"p{process} ")
    return text.replace(f"[{key}]", "", 1) if key is not None else text


def _fit(label: str, width_px: int) -> str:
    chars = max((width_px - 6) // 6, 0)
    return label if len(label) <= chars else label[: max(chars - 1, 0)] + ("…" if chars else "")


def _page(part: PartitionResult, model: Model, title: str, svg: str, *, truncated: bool) -> str:
    key = "whole history" if part.key is None else f"key {part.key!r}"
    verdict = {
        Verdict.NOT_LINEARIZABLE: "not linearizable",
        Verdict.LINEARIZABLE: "linearizable",
        Verdict.UNKNOWN: f"unknown ({part.reason})",
    }[part.verdict]
    rows = "".join(
        f"<tr><td>{i + 1}</td><td>{escape(model.describe_op(op))}</td></tr>"
        for i, op in enumerate(part.linearization)
    )
    bad = "".join(f"<li><code>{escape(model.describe_op(op))}</code></li>" for op in part.unplaced)
    blocking = escape(model.describe_op(part.blocking)) if part.blocking is not None else "none"
    note = f"<p>Only the first {_MAX_OPS} operations are drawn.</p>" if truncated else ""
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{escape(title)}</title><style>{_STYLE}</style></head>
<body><h1>{escape(title)}: {escape(key)} is {verdict}</h1>
<p>Model <code>{escape(model.name)}</code>, {len(part.operations)} operations. The longest linearizable
prefix found has {len(part.linearization)} operations (green, numbered); the state after it is
<code>{escape(part.final_state)}</code>. Operations that could not be placed next (red):</p>
<ul>{bad}</ul><p>Blocking operation (its completion came first, outlined): <code>{blocking}</code></p>
{note}<div style="overflow-x: auto">{svg}</div>
<table><tr><th>#</th><th>linearized prefix</th></tr>{rows}</table></body></html>
"""

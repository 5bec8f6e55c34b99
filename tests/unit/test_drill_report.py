"""The recorder, the workload against in-memory stores (a correct and a stale one), and the report."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

from stalwart.check import Status, Verdict, check_operations, read_history
from stalwart.drill import DrillSummary, Recorder, WorkloadConfig, run_workers, write_report
from stalwart.drill._cli import render_summary
from stalwart.drill._report import count_ops
from stalwart.errors import DeadlineExceededError, StalwartError


class MemoryKV:
    """A linearizable store: each call takes effect at one instant inside its interval.

    ``stale`` makes reads sometimes return the value before the last write (a broken store);
    ``flaky`` makes some writes time out after taking effect, and some fail before it.
    """

    def __init__(self, rng: random.Random, *, stale: bool = False, flaky: bool = False) -> None:
        self.data: dict[str, bytes] = {}
        self.previous: dict[str, bytes | None] = {}
        self.rng, self.stale, self.flaky = rng, stale, flaky

    async def _jitter(self) -> None:
        await asyncio.sleep(self.rng.random() * 0.002)

    async def get(self, key: str, *, consistency: Any = None) -> bytes | None:
        await self._jitter()
        value = self.previous.get(key) if self.stale and self.rng.random() < 0.3 else self.data.get(key)
        await self._jitter()
        return value

    def _set(self, key: str, value: bytes) -> None:
        self.previous[key] = self.data.get(key)
        self.data[key] = value

    async def _maybe_fail(self, applied: bool) -> None:
        if self.flaky and self.rng.random() < 0.1:
            if applied:
                raise DeadlineExceededError("timed out after applying")
            raise StalwartError("refused before applying")

    async def put(self, key: str, value: bytes) -> int:
        await self._jitter()
        await self._maybe_fail(False)
        self._set(key, value)
        await self._maybe_fail(True)
        await self._jitter()
        return 1

    async def cas(self, key: str, expected: bytes | None, value: bytes) -> tuple[bool, int]:
        await self._jitter()
        await self._maybe_fail(False)
        ok = self.data.get(key) == expected
        if ok:
            self._set(key, value)
        await self._maybe_fail(True)
        await self._jitter()
        return ok, 1


def _run(store: MemoryKV, workers: int, duration_s: float, seed: int) -> Recorder:
    rec = Recorder()

    async def main() -> None:
        stop = asyncio.Event()
        cfg = WorkloadConfig(keys=("a", "b"))
        task = asyncio.create_task(run_workers([store] * workers, rec, cfg, seed, stop))
        await asyncio.sleep(duration_s)
        stop.set()
        await task

    asyncio.run(main())
    return rec


def test_a_correct_store_is_linearizable_with_info_and_fail_outcomes() -> None:
    rec = _run(MemoryKV(random.Random(1), flaky=True), workers=5, duration_s=0.6, seed=3)
    ok, failed, info, kinds = count_ops(rec.all_operations())
    assert ok > 50 and info > 0 and failed > 0
    assert set(kinds) == {"get", "put", "cas"}
    # refused cas calls are counted, but kept out of the checked history
    assert rec.refused and all(op.f == "cas" and op.status is Status.FAIL for op in rec.refused)
    assert not set(map(id, rec.refused)) & set(map(id, rec.operations))
    # an INFO operation retires its process: no process has two operations open at once
    for op in rec.operations:
        if op.status is Status.INFO:
            assert op.complete_time is None
            later = [o for o in rec.operations if o.process == op.process and o.invoke_time > op.invoke_time]
            assert not later
    assert check_operations(rec.operations, model="kv", timeout_s=30).verdict is Verdict.LINEARIZABLE


def test_a_store_with_stale_reads_is_caught() -> None:
    rec = _run(MemoryKV(random.Random(2), stale=True), workers=4, duration_s=0.6, seed=5)
    assert check_operations(rec.operations, model="kv", timeout_s=30).verdict is Verdict.NOT_LINEARIZABLE


def _summary(report_dir: Path, verdict: str, rec: Recorder) -> DrillSummary:
    ok, failed, info, kinds = count_ops(rec.operations)
    return DrillSummary(
        verdict=verdict,
        nodes=3,
        duration_s=1.0,
        seed=9,
        nemeses=["kill", "pause"],
        clients=5,
        model="kv",
        ops_ok=ok,
        ops_failed=failed,
        ops_info=info,
        ops_by_kind=kinds,
        leaders_seen=[1, 2],
        leader_changes=1,
        faults=[
            {
                "kind": w.kind,
                "description": w.description,
                "start_s": w.start_ns / 1e9,
                "end_s": None if w.end_ns is None else w.end_ns / 1e9,
                "nodes": list(w.nodes),
            }
            for w in rec.faults
        ],
        not_injected=["clock"],
        check_elapsed_s=0.01,
        recovered_after_s=0.2,
        report_dir=str(report_dir),
    )


def test_report_files(tmp_path: Path) -> None:
    rec = Recorder()
    index = rec.fault_started("kill", "kill (leader) on node 1", (1,))
    stats = _run(MemoryKV(random.Random(3), flaky=True), workers=3, duration_s=0.3, seed=1)
    rec.operations.extend(stats.operations)
    rec.fault_ended(index)
    rec.fault_started("partition", "partition halves", (1, 2))  # never healed: drawn to the end
    rec.event("leader", "node 2 leads")
    summary = _summary(tmp_path, "linearizable", rec)
    page = write_report(tmp_path / "report", summary, rec.operations, rec.faults, rec.events)
    html = page.read_text()
    assert "linearizable" in html and "NOT" not in html and "latency.png" in html and "node 2 leads" in html
    for png in ("latency.png", "rate.png"):
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = read_history(str(tmp_path / "report" / "history.jsonl")).operations
    assert len(written) == len(rec.operations)
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["ops_ok"] == summary.ops_ok
    bad = _summary(tmp_path, "not-linearizable", rec)
    assert (
        "NOT linearizable" in write_report(tmp_path / "bad", bad, rec.operations, rec.faults, []).read_text()
    )


def test_summary_panel_names_the_verdict(tmp_path: Path) -> None:
    from rich.console import Console

    rec = _run(MemoryKV(random.Random(4)), workers=2, duration_s=0.1, seed=2)
    for verdict, word in (("linearizable", "linearizable"), ("not-linearizable", "NOT linearizable")):
        console = Console(record=True, width=120)
        console.print(render_summary(_summary(tmp_path, verdict, rec), tmp_path / "report.html"))
        text = console.export_text()
        assert word in text and "indeterminate" in text and "report.html" in text

"""The saga orchestrator end to end on a real SQLite log (in-process)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from stalwart.errors import ConfigError
from stalwart.txn._cli import command as saga_cli
from stalwart.txn.saga import (
    CompensationPolicy,
    Kind,
    Parallel,
    RetryPolicy,
    Saga,
    SagaLog,
    SagaOrchestrator,
    SagaStatus,
    Step,
    StepContext,
)

FAST = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.01)


class World:
    """Effects keyed by idempotency key, so a step that runs twice takes effect once."""

    def __init__(self) -> None:
        self.effects: dict[str, str] = {}
        self.calls: list[str] = []
        self.fail: dict[str, int] = {}  # step -> failures left

    def make(self, step: str, undo: bool = False) -> Any:
        async def fn(ctx: StepContext) -> Any:
            self.calls.append(f"{'undo' if undo else 'do'}:{step}")
            if self.fail.get(step + (":undo" if undo else ""), 0) > 0:
                self.fail[step + (":undo" if undo else "")] -= 1
                raise RuntimeError(f"{step} failed")
            self.effects.setdefault(ctx.idempotency_key, step)
            return {"step": step, "attempt": ctx.attempt, "seen": sorted(ctx.results)}

        return fn


def order_saga(w: World, policy: CompensationPolicy = CompensationPolicy.PARK) -> Saga:
    def step(name: str, timeout_s: float = 5) -> Step:
        return Step(name, w.make(name), w.make(name, undo=True), timeout_s=timeout_s, retry=FAST)

    return Saga("order", [step("reserve"), Parallel(step("charge"), step("email")), step("ship")], policy)


def test_a_saga_completes_and_sees_earlier_results(tmp_path: Path) -> None:
    w = World()

    async def main() -> None:
        async with SagaOrchestrator(SagaLog.sqlite(tmp_path / "s.db"), [order_saga(w)]) as orch:
            result = await orch.run("order", {"order": 7})
            assert result.status is SagaStatus.COMPLETED
            assert result.results["ship"]["seen"] == ["charge", "email", "reserve"]

    asyncio.run(main())
    assert w.calls[0] == "do:reserve" and w.calls[-1] == "do:ship"
    assert not [c for c in w.calls if c.startswith("undo")]


def test_a_failing_step_is_retried_then_compensated_in_reverse(tmp_path: Path) -> None:
    w = World()
    w.fail = {"ship": 99, "charge": 1}

    async def main() -> None:
        async with SagaOrchestrator(SagaLog.sqlite(tmp_path / "s.db"), [order_saga(w)], seed=1) as orch:
            result = await orch.run("order")
            assert result.status is SagaStatus.COMPENSATED
            assert "ship" in result.errors

    asyncio.run(main())
    assert w.calls.count("do:charge") == 2, "charge failed once and was retried"
    assert w.calls.count("do:ship") == FAST.max_attempts
    undo = [c for c in w.calls if c.startswith("undo")]
    assert undo[0] == "undo:ship" and undo[-1] == "undo:reserve"
    assert set(undo[1:3]) == {"undo:charge", "undo:email"}
    keys = [k for k in w.effects if k.endswith(":action")]
    assert len(keys) == 3, "each successful action took effect once despite retries"


def test_a_slow_step_times_out_and_retries(tmp_path: Path) -> None:
    slow_calls = 0

    async def slow(ctx: StepContext) -> str:
        nonlocal slow_calls
        slow_calls += 1
        if ctx.attempt == 0:
            await asyncio.sleep(5)
        return "ok"

    saga = Saga("slow", [Step("s", slow, timeout_s=0.05, retry=FAST)])

    async def main() -> None:
        async with SagaOrchestrator(SagaLog.sqlite(tmp_path / "s.db"), [saga]) as orch:
            assert (await orch.run("slow")).status is SagaStatus.COMPLETED

    asyncio.run(main())
    assert slow_calls == 2


def test_failing_compensation_parks_then_operator_resumes(tmp_path: Path) -> None:
    w = World()
    w.fail = {"email": 99, "reserve:undo": FAST.max_attempts}
    alerts: list[str] = []
    db = tmp_path / "s.db"

    async def main() -> None:
        orch = SagaOrchestrator(
            SagaLog.sqlite(db), [order_saga(w)], poll_interval_s=0.02, alert=lambda *a: alerts.append(a[1])
        )
        async with orch:
            saga_id = await orch.start("order")
            parked = await orch.wait(saga_id)
            assert parked.status is SagaStatus.PARKED and "reserve" in parked.errors
            listing = await asyncio.to_thread(
                CliRunner().invoke, saga_cli, ["list", "--log", str(db), "--json"]
            )
            assert '"parked"' in listing.output
            out = await asyncio.to_thread(CliRunner().invoke, saga_cli, ["resume", saga_id, "--log", str(db)])
            assert out.exit_code == 0, out.output
            async with asyncio.timeout(5):
                while orch.status(saga_id) is not None:
                    await asyncio.sleep(0.02)
            shown = await asyncio.to_thread(CliRunner().invoke, saga_cli, ["show", saga_id, "--log", str(db)])
            assert "comp-done" in shown.output and "finished" in shown.output

    asyncio.run(main())
    assert alerts == ["reserve"]
    assert w.calls.count("undo:reserve") == FAST.max_attempts + 1


def test_operator_abort_compensates_a_running_saga(tmp_path: Path) -> None:
    gate = asyncio.Event()
    undone: list[str] = []

    async def wait_for_gate(ctx: StepContext) -> None:
        await gate.wait()

    async def undo(ctx: StepContext) -> None:
        undone.append(ctx.step)

    saga = Saga(
        "long", [Step("first", lambda ctx: asyncio.sleep(0), undo), Step("second", wait_for_gate, undo)]
    )
    db = tmp_path / "s.db"

    async def main() -> None:
        async with SagaOrchestrator(SagaLog.sqlite(db), [saga], poll_interval_s=0.02) as orch:
            saga_id = await orch.start("long")
            await asyncio.sleep(0.1)
            out = await asyncio.to_thread(CliRunner().invoke, saga_cli, ["abort", saga_id, "--log", str(db)])
            assert out.exit_code == 0, out.output
            await asyncio.sleep(0.1)
            gate.set()
            assert (await orch.wait(saga_id)).status is SagaStatus.COMPENSATED

    asyncio.run(main())
    assert undone == ["second", "first"]


def test_retry_forever_policy_keeps_going(tmp_path: Path) -> None:
    w = World()
    w.fail = {"ship": 99, "ship:undo": FAST.max_attempts * 2}

    async def main() -> None:
        saga = order_saga(w, CompensationPolicy.RETRY_FOREVER)
        async with SagaOrchestrator(SagaLog.sqlite(tmp_path / "s.db"), [saga]) as orch:
            assert (await orch.run("order")).status is SagaStatus.COMPENSATED

    asyncio.run(main())
    assert w.calls.count("undo:ship") == FAST.max_attempts * 2 + 1


def test_bad_definitions_and_inputs_are_refused(tmp_path: Path) -> None:
    w = World()
    with pytest.raises(ConfigError):
        Saga("x", [Step("a", w.make("a")), Step("a", w.make("a"))])
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)

    async def main() -> None:
        async with SagaOrchestrator(SagaLog.sqlite(tmp_path / "s.db"), [order_saga(w)]) as orch:
            with pytest.raises(ConfigError, match="JSON"):
                await orch.start("order", {"bad": object()})
            with pytest.raises(ConfigError, match="no saga named"):
                await orch.start("nope")

    asyncio.run(main())
    out = CliRunner().invoke(saga_cli, ["list"])
    assert out.exit_code != 0


def test_every_record_is_in_the_log(tmp_path: Path) -> None:
    w = World()
    db = tmp_path / "s.db"

    async def main() -> str:
        async with SagaOrchestrator(SagaLog.sqlite(db), [order_saga(w)]) as orch:
            return (await orch.run("order")).saga_id

    saga_id = asyncio.run(main())

    async def records() -> list[Kind]:
        store = SagaLog.sqlite(db)
        try:
            return [r.record.kind for r in await store.records(saga_id)]
        finally:
            await store.close()

    kinds = asyncio.run(records())
    assert kinds[0] is Kind.SAGA_STARTED and kinds[-1] is Kind.FINISHED
    assert kinds.count(Kind.STEP_STARTED) == 4 and kinds.count(Kind.STEP_DONE) == 4


def test_saga_ids_are_never_reused_and_owners_are_exclusive(tmp_path: Path) -> None:
    w = World()
    db = tmp_path / "s.db"

    async def main() -> None:
        async with SagaOrchestrator(SagaLog.sqlite(db), [order_saga(w)]) as orch:
            await orch.run("order", saga_id="o-1")
            with pytest.raises(ConfigError, match="already exists"):
                await orch.start("order", saga_id="o-1")
            with pytest.raises(ConfigError, match="another live orchestrator"):
                async with SagaOrchestrator(SagaLog.sqlite(db), [order_saga(w)]):
                    pass
            async with SagaOrchestrator(SagaLog.sqlite(db), [order_saga(w)], owner="other") as second:
                assert (await second.run("order")).status is SagaStatus.COMPLETED
        async with SagaOrchestrator(SagaLog.sqlite(db), [order_saga(w)]) as orch:
            with pytest.raises(ConfigError, match="never reused"):
                await orch.start("order", saga_id="o-1")

    asyncio.run(main())


def test_a_failing_log_write_is_retried_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    w = World()
    store = SagaLog.sqlite(tmp_path / "s.db")
    real = store._write_sync
    failures = [2]

    def flaky(batch: Any) -> None:
        if failures[0] > 0:
            failures[0] -= 1
            raise sqlite3.OperationalError("database is locked")
        real(batch)

    monkeypatch.setattr(store, "_write_sync", flaky)

    async def main() -> None:
        async with SagaOrchestrator(store, [order_saga(w)]) as orch:
            assert (await orch.run("order")).status is SagaStatus.COMPLETED

    asyncio.run(main())
    assert failures == [0]


def test_shutdown_cancels_running_steps(tmp_path: Path) -> None:
    finished = []

    async def slow(ctx: StepContext) -> None:
        await asyncio.sleep(10)
        finished.append(ctx.step)

    saga = Saga("slow", [Step("s", slow, timeout_s=30)])

    async def main() -> None:
        async with SagaOrchestrator(SagaLog.sqlite(tmp_path / "s.db"), [saga]) as orch:
            await orch.start("slow")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.1)

    asyncio.run(main())
    assert finished == []

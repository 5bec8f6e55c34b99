"""Regression tests (no server) for defects found in review of the lock package."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import pytest

from stalwart.lock import Held
from stalwart.lock._held import drift_allowance_s
from stalwart.lock._watchdog import Watchdog


async def _noop_release(held: Held) -> None:
    del held


def make_held(name: str, ttl_s: float, **kw: object) -> Held:
    return Held(
        name=name,
        owner="o",
        token=1,
        ttl_s=ttl_s,
        sent_at=time.monotonic(),
        drift_s=drift_allowance_s(ttl_s, 0.01),
        releaser=_noop_release,
        **kw,  # type: ignore[arg-type]
    )


# -- 2. one lock's raising on_lost callback must not stop the shared watchdog -------------------


def test_raising_on_lost_callback_does_not_stop_renewals_of_other_leases(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        def boom(held: Held) -> None:
            raise RuntimeError("user callback bug")

        def boom_listener(held: Held) -> None:
            raise RuntimeError("listener bug")

        a = make_held("a", 0.3, on_lost=boom)
        a.add_lost_listener(boom_listener)
        b = make_held("b", 0.6)

        async def renew(helds: Sequence[Held]) -> list[bool | BaseException]:
            return [h is not a for h in helds]  # the server lost A's lease only

        dog = Watchdog(renew)
        dog.add(a)
        dog.add(b)
        await asyncio.wait_for(a.lost.wait(), 1)
        await asyncio.sleep(0.05)
        assert dog._task is None  # the round that marked A lost ended cleanly
        d = make_held("d", 0.6)  # added after A's round
        dog.add(d)
        await asyncio.sleep(1.5)  # 2.5 TTLs of B and D
        b.ensure()
        d.ensure()
        assert dog.running and dog.leases == 2
        dog.stop()

    with caplog.at_level(logging.ERROR, logger="stalwart.lock"):
        asyncio.run(body())
    assert "on_lost callback of lock 'a' raised" in caplog.text
    assert "lost listener of lock 'a' raised" in caplog.text


def test_raising_async_on_lost_callback_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async def boom(held: Held) -> None:
            raise RuntimeError("async bug")

        held = make_held("x", 1.0, on_lost=boom)
        held._mark_lost("test")
        await asyncio.sleep(0.01)

    with caplog.at_level(logging.ERROR, logger="stalwart.lock"):
        asyncio.run(body())
    assert "async on_lost callback raised" in caplog.text


# -- 5. no busy loop of the watchdog's timer while a renewal round is in flight ------------------


def test_watchdog_timer_does_not_spin_while_a_round_is_in_flight() -> None:
    async def body() -> tuple[int, float]:
        async def slow_batch(helds: Sequence[Held]) -> list[bool | BaseException]:
            await asyncio.sleep(1.0)  # a slow server: one round takes 1 s
            return [True] * len(helds)

        dog = Watchdog(slow_batch)
        fires = 0
        orig = dog._fire

        def counting() -> None:
            nonlocal fires
            fires += 1
            orig()

        dog._fire = counting  # type: ignore[method-assign]
        a = make_held("a", 3.0)
        b = make_held("b", 3.0)
        b._renew_at += 0.1  # falls due while a's round is in flight
        dog.add(a)
        dog.add(b)
        c0 = time.process_time()
        await asyncio.sleep(2.3)
        cpu = time.process_time() - c0
        b.ensure()  # renewed by the second round
        assert dog.rounds >= 1
        dog.stop()
        return fires, cpu

    fires, cpu = asyncio.run(body())
    # Rounds start at ~1.0 (a), ~2.0 (b joins a's next round or its own): a handful of timer
    # firings, not one per loop iteration (the bug: hundreds of thousands, a core busy).
    assert fires <= 10, fires
    assert cpu < 0.5, cpu

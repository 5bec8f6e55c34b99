"""Held (the lock handle) and the Watchdog, without any server: fake clocks and fake renewals."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalwart.lock import Held, LockError, LockLost
from stalwart.lock._held import DRIFT_FLOOR_S, drift_allowance_s
from stalwart.lock._watchdog import Watchdog


async def _noop_release(held: Held) -> None:
    del held


def make_held(ttl_s: float = 1.0, sent_at: float | None = None, **kw: object) -> Held:
    return Held(
        name="n",
        owner="o",
        token=7,
        ttl_s=ttl_s,
        sent_at=time.monotonic() if sent_at is None else sent_at,
        drift_s=drift_allowance_s(ttl_s, 0.01),
        releaser=kw.pop("releaser", _noop_release),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


@given(
    ttl_s=st.floats(min_value=0.01, max_value=1e5),
    factor=st.floats(min_value=0.0, max_value=0.1),
    sent_at=st.floats(min_value=0.0, max_value=1e9),
)
def test_deadline_is_inside_the_lease(ttl_s: float, factor: float, sent_at: float) -> None:
    drift = drift_allowance_s(ttl_s, factor)
    assert drift >= DRIFT_FLOOR_S
    held = Held(
        name="n", owner="o", token=1, ttl_s=ttl_s, sent_at=sent_at, drift_s=drift, releaser=_noop_release
    )
    # Safe means strictly before the server's own expiry, measured from the send time.
    assert sent_at < held.deadline < sent_at + ttl_s or math.isclose(held.deadline, sent_at + ttl_s - drift)
    assert held.deadline <= sent_at + ttl_s


def test_ensure_raises_after_the_deadline_and_sets_lost() -> None:
    async def body() -> None:
        seen: list[Held] = []
        held = make_held(ttl_s=0.05, on_lost=seen.append)
        held.ensure()
        await asyncio.sleep(0.06)
        with pytest.raises(LockLost, match="deadline"):
            held.ensure()
        assert held.lost.is_set() and seen == [held]
        held._mark_lost("again")  # only the first reason counts, the callback runs once
        assert len(seen) == 1 and "deadline" in (held.lost_reason or "")

    asyncio.run(body())


def test_async_callback_and_listener_run() -> None:
    async def body() -> None:
        ran = asyncio.Event()

        async def on_lost(held: Held) -> None:
            ran.set()

        held = make_held(on_lost=on_lost)
        heard: list[Held] = []
        held.add_lost_listener(heard.append)
        held._mark_lost("test")
        await asyncio.wait_for(ran.wait(), 1)
        assert heard == [held]
        late: list[Held] = []
        held.add_lost_listener(late.append)  # added after the loss: called at once
        assert late == [held]

    asyncio.run(body())


def test_release_is_idempotent_and_counts_reentry() -> None:
    async def body() -> None:
        released: list[Held] = []

        async def releaser(held: Held) -> None:
            released.append(held)

        held = make_held(releaser=releaser)
        held._depth = 2
        await held.release()
        assert released == [] and held.depth == 1
        await held.release()
        await held.release()
        assert released == [held] and held.released and held.depth == 0
        with pytest.raises(LockError, match="released"):
            held.ensure()
        held._mark_lost("after release")  # a released handle is never marked lost afterwards
        assert not held.lost.is_set()

    asyncio.run(body())


class FakeRenewer:
    def __init__(self, answers: list[bool | BaseException]) -> None:
        self.answers = answers
        self.batches: list[int] = []

    async def __call__(self, helds: Sequence[Held]) -> list[bool | BaseException]:
        self.batches.append(len(helds))
        answer = self.answers[0] if len(self.answers) == 1 else self.answers.pop(0)
        return [answer] * len(helds)


def test_watchdog_renews_in_batches_and_stops_when_empty() -> None:
    async def body() -> None:
        renewer = FakeRenewer([True])
        dog = Watchdog(renewer)
        helds = [make_held(ttl_s=0.15) for _ in range(5)]
        for held in helds:
            dog.add(held)
        assert dog.running
        await asyncio.sleep(0.4)  # several ttl/3 periods
        for held in helds:
            held.ensure()  # the deadline moved forward with each renewal
        assert dog.rounds >= 3 and max(renewer.batches) == 5  # all five in one round
        for held in helds:
            dog.remove(held)
        assert not dog.running and dog.leases == 0

    asyncio.run(body())


def test_watchdog_marks_lost_on_refusal_and_on_errors_past_deadline() -> None:
    async def body() -> None:
        refused = make_held(ttl_s=0.15)
        dog = Watchdog(FakeRenewer([False]))
        dog.add(refused)
        await asyncio.wait_for(refused.lost.wait(), 1)
        assert "no longer holds" in (refused.lost_reason or "")
        assert not dog.running

        failing = make_held(ttl_s=0.15)
        dog2 = Watchdog(FakeRenewer([ConnectionError("down")]))
        dog2.add(failing)
        t0 = time.monotonic()
        await asyncio.wait_for(failing.lost.wait(), 1)
        # Not before the safe deadline (transient errors are retried), and not long after it.
        assert time.monotonic() >= failing.deadline - 0.001
        assert time.monotonic() - t0 < 0.15 + 0.1
        assert not dog2.running

    asyncio.run(body())


def test_fast_path_handover_reaches_the_watchdog_only_if_still_held() -> None:
    from types import SimpleNamespace

    from stalwart.lock._fastsync import Handover

    async def body() -> None:
        loop = asyncio.get_running_loop()
        dog = Watchdog(FakeRenewer([True]))
        handover = Handover(loop, SimpleNamespace(watchdog=dog))  # type: ignore[arg-type]
        quick = make_held(ttl_s=0.6)
        handover.add(quick)
        quick._released = True
        assert handover.withdraw(quick)  # released before the loop saw it: never reaches it
        kept = make_held(ttl_s=0.6)
        handover.add(kept)
        await asyncio.sleep(0.15)  # the drain runs within min(HANDOVER_S, ttl/6)
        assert dog.leases == 1 and dog.running
        kept._released = True
        assert not handover.withdraw(kept)  # the watchdog has it: the caller must remove it
        dog.remove(kept)
        assert not dog.running
        late = make_held(ttl_s=0.6)
        handover.add(late)
        late._released = True  # released, but withdraw not called yet when the drain runs
        await asyncio.sleep(0.15)
        assert dog.leases == 0 and not dog.running

    asyncio.run(body())

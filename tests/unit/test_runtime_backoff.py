"""Reconnect backoff: full-jitter bounds, the cap, reset, and the attempts-per-period limit."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalwart.runtime import Backoff, BackoffPolicy, RuntimeConfigError


class FixedRng:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        return start


@given(
    base=st.floats(1, 1_000),
    factor=st.floats(1, 1_000),
    seed=st.integers(0, 2**32),
    attempts=st.integers(1, 80),
)
def test_every_delay_is_within_full_jitter_bounds(
    base: float, factor: float, seed: int, attempts: int
) -> None:
    policy = BackoffPolicy(base_ms=base, cap_ms=base * factor, max_attempts_per_period=10**6, period_ms=1.0)
    backoff = Backoff(policy, random.Random(seed))
    now = 0.0
    for attempt in range(attempts):
        delay = backoff.next_delay_ms(now)
        assert 0 <= delay <= min(policy.cap_ms, base * 2**attempt) + 1e-9
        now += delay + 1.0


def test_ceiling_doubles_then_caps_and_reset_starts_over() -> None:
    policy = BackoffPolicy(base_ms=10, cap_ms=100, max_attempts_per_period=1000, period_ms=1)
    backoff = Backoff(policy, FixedRng(1.0))  # always the ceiling
    delays = [backoff.next_delay_ms(i * 1000.0) for i in range(6)]
    assert delays == [10, 20, 40, 80, 100, 100]
    backoff.reset()
    assert backoff.next_delay_ms(10_000.0) == 10


def test_jitter_spreads_delays() -> None:
    policy = BackoffPolicy(base_ms=100, cap_ms=100, max_attempts_per_period=10**6, period_ms=1)
    backoff = Backoff(policy, random.Random(7))
    delays = [backoff.next_delay_ms(i * 1000.0) for i in range(200)]
    assert min(delays) < 20 and max(delays) > 80  # full jitter covers [0, ceiling]


@given(seed=st.integers(0, 2**32), limit=st.integers(1, 10), attempts=st.integers(1, 60))
def test_at_most_the_limit_of_attempts_start_in_a_period(seed: int, limit: int, attempts: int) -> None:
    period = 1_000.0
    policy = BackoffPolicy(base_ms=1, cap_ms=5, max_attempts_per_period=limit, period_ms=period)
    backoff = Backoff(policy, random.Random(seed))
    now = 0.0
    starts: list[float] = []
    for _ in range(attempts):
        now += backoff.next_delay_ms(now)
        starts.append(now)
    for i, start in enumerate(starts):
        in_window = [s for s in starts[i:] if s < start + period - 1e-6]
        assert len(in_window) <= limit


def test_a_full_window_waits_for_its_oldest_attempt() -> None:
    policy = BackoffPolicy(base_ms=1, cap_ms=1, max_attempts_per_period=3, period_ms=1000)
    backoff = Backoff(policy, FixedRng(0.0))
    assert [backoff.next_delay_ms(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert backoff.next_delay_ms(0.0) == 1000.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_ms": 0},
        {"base_ms": 10, "cap_ms": 5},
        {"max_attempts_per_period": 0},
        {"period_ms": 0},
    ],
)
def test_bad_policy_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(RuntimeConfigError):
        BackoffPolicy(**kwargs)  # type: ignore[arg-type]

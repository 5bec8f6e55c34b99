"""Reconnect delays: exponential backoff with full jitter and a cap on attempts per period.

Full jitter (a delay drawn uniformly from ``[0, min(cap, base * 2**attempt)]``) spreads the
reconnects of many nodes that lost the same peer at the same moment, so a restarted node is not
hit by all of them at once. The per-period cap bounds how often a flapping peer is dialled no
matter how the exponent is reset: at most ``max_attempts_per_period`` dials start in any window
of ``period_ms``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from stalwart.runtime._errors import RuntimeConfigError
from stalwart.sansio import Rng

_MAX_EXPONENT = 32
"""2**32 * base is far beyond any sane cap; the bound keeps the arithmetic small."""


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How long to wait before dialling a peer again after a failure."""

    base_ms: float = 50.0
    cap_ms: float = 5_000.0
    max_attempts_per_period: int = 30
    period_ms: float = 60_000.0

    def __post_init__(self) -> None:
        if not 0 < self.base_ms <= self.cap_ms:
            raise RuntimeConfigError(
                f"backoff needs 0 < base_ms <= cap_ms, not {self.base_ms}, {self.cap_ms}"
            )
        if self.max_attempts_per_period < 1 or self.period_ms <= 0:
            raise RuntimeConfigError("backoff needs max_attempts_per_period >= 1 and period_ms > 0")

    def ceiling_ms(self, attempt: int) -> float:
        """The largest delay that attempt number ``attempt`` (0-based) may draw."""
        return min(self.cap_ms, self.base_ms * float(1 << min(attempt, _MAX_EXPONENT)))


class Backoff:
    """The delay before each reconnect attempt to one peer; ``reset()`` after a success."""

    def __init__(self, policy: BackoffPolicy, rng: Rng) -> None:
        self._policy = policy
        self._rng = rng
        self._attempt = 0
        # Start times (ms) of recent attempts, oldest first; never more than the period's cap.
        self._recent: deque[float] = deque(maxlen=policy.max_attempts_per_period)

    @property
    def attempt(self) -> int:
        return self._attempt

    def reset(self) -> None:
        """A connection succeeded: the next failure starts again from ``base_ms``."""
        self._attempt = 0

    def next_delay_ms(self, now_ms: float) -> float:
        """The delay before the next attempt, counted from ``now_ms``; records that attempt."""
        policy = self._policy
        delay = self._rng.random() * policy.ceiling_ms(self._attempt)
        while self._recent and self._recent[0] <= now_ms - policy.period_ms:
            self._recent.popleft()
        if len(self._recent) >= policy.max_attempts_per_period:
            # The window is full: wait until its oldest attempt leaves it.
            delay = max(delay, self._recent[0] + policy.period_ms - now_ms)
        self._attempt = min(self._attempt + 1, _MAX_EXPONENT)
        self._recent.append(now_ms + delay)
        assert delay >= 0, "a delay is never negative"
        return delay


__all__ = ["Backoff", "BackoffPolicy"]

"""One watchdog per client: renews every held lease at about ttl/3, in batches.

There is no task or thread per lock. The watchdog is a single timer (``loop.call_later``) armed
for the earliest moment any lease needs attention (its renewal time or its safe deadline), plus at
most one renewal round in flight, which renews every due lease in one batch (a pipeline on Redis).
When the last lease is removed the timer is cancelled and any round in flight is cancelled: the
watchdog is then not running at all, which tests check through :attr:`Watchdog.running`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence

from stalwart.lock._held import Held

#: The backend renews a batch of leases and answers, per lease: True (renewed), False (the
#: server says it is no longer ours) or an exception (could not tell; retried until the deadline).
RenewBatch = Callable[[Sequence[Held]], Awaitable[Sequence[bool | BaseException]]]

#: Leases due within this window of each other are renewed in the same round.
COALESCE_S = 0.005
#: At most this many leases per renewal round; the rest are picked up by the next round.
MAX_BATCH = 512


class Watchdog:
    def __init__(self, renew_batch: RenewBatch, *, retry_delay_s: float = 0.05) -> None:
        self._renew_batch = renew_batch
        self._retry_delay_s = retry_delay_s
        self._held: dict[Held, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    @property
    def running(self) -> bool:
        """True while any timer or renewal round exists (False after the last release)."""
        return self._timer is not None or self._task is not None

    @property
    def leases(self) -> int:
        return len(self._held)

    def add(self, held: Held) -> None:
        self._held[held] = None
        self._arm(min(held._renew_at, held.deadline))

    def remove(self, held: Held) -> None:
        self._held.pop(held, None)
        if not self._held:
            self.stop()

    def stop(self) -> None:
        """Stop at once: cancel the timer and any renewal round in flight."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = math.inf
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _arm(self, at: float) -> None:
        if at >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_later(max(0.0, at - time.monotonic()), self._fire)

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = math.inf
        if not self._held:
            return
        if self._task is None:
            self._arm(min(min(h._renew_at, h.deadline) for h in self._held))
        else:
            # A round is in flight: no other can start before it ends (and re-arms), so only a
            # deadline matters meanwhile. A due renewal time, already past, would re-arm the timer
            # in the past and make _fire spin until the round ends.
            self._arm(min(h.deadline for h in self._held))

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        now = time.monotonic()
        for held in [h for h in self._held if now >= h.deadline]:
            self._held.pop(held, None)
            held._mark_lost("safe deadline passed before the lease could be renewed")
        if not self._held:
            self.stop()
            return
        if self._task is None:
            due = [h for h in self._held if h._renew_at <= now + COALESCE_S][:MAX_BATCH]
            if due:
                for held in due:
                    held._renew_at = math.inf  # in flight: not due again until this round ends
                self._task = asyncio.get_running_loop().create_task(
                    self._round(due), name="stalwart-lock-watchdog"
                )
        self._rearm()

    async def _round(self, due: list[Held]) -> None:
        try:
            await self._round_body(due)
        finally:
            # Whatever happened, the next round must be able to start (unless stop() cancelled
            # this one, or another round replaced it).
            if self._task is asyncio.current_task():
                self._task = None
                if self._held:
                    self._rearm()
                else:
                    self.stop()

    async def _round_body(self, due: list[Held]) -> None:
        sent_at = time.monotonic()
        results: Sequence[bool | BaseException]
        try:
            results = await self._renew_batch(due)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            results = [exc] * len(due)
        # The backend must answer once per lease, in order: anything else is a bug here.
        assert len(results) == len(due), "renew batch answered the wrong number of leases"
        self.rounds += 1
        now = time.monotonic()
        for held, result in zip(due, results, strict=True):
            if held not in self._held:
                continue  # released while the round was in flight
            if result is True:
                held._extend(sent_at)
                held._renew_at = sent_at + held.ttl_s / 3
            elif result is False:
                self._held.pop(held, None)
                held._mark_lost("the server no longer holds this lease (expired or taken over)")
            elif now >= held.deadline:
                self._held.pop(held, None)
                held._mark_lost(f"renewal failed until the safe deadline: {result!r}")
            else:
                held._renew_at = now + min(self._retry_delay_s, held.ttl_s / 10)

    async def aclose(self) -> None:
        task = self._task
        self.stop()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["COALESCE_S", "MAX_BATCH", "RenewBatch", "Watchdog"]

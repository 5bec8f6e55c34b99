"""The handle a caller gets for a held lock: fencing token, lost event, safe deadline.

Ownership lives here, in the handle (never in thread-local or task-local storage), so a handle can
be passed between asyncio tasks and released by whichever task finishes the work.

The safe deadline is computed on the monotonic clock from the moment the acquire (or renew)
request was SENT, not from when the reply arrived: the server started the TTL somewhere between
the two, so the send time is the conservative end. A clock-drift allowance is subtracted too::

    deadline = sent_at + ttl - drift,   drift = ttl * drift_factor + 2 ms

After the deadline the server may already have expired the key and handed the lock to someone
else, so :meth:`Held.ensure` raises :class:`LockLost` from then on even if no renewal failed yet.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from stalwart.errors import ConfigError
from stalwart.lock._errors import LockError, LockLost

LostCallback = Callable[["Held"], object]
Releaser = Callable[["Held"], Awaitable[None]]

#: Added to ``ttl * drift_factor`` to cover the clock's granularity and scheduling jitter.
DRIFT_FLOOR_S = 0.002
_CALLBACK_TASKS: set[asyncio.Task[Any]] = set()
log = logging.getLogger("stalwart.lock")


#: A drift allowance of the whole TTL or more would leave no lease at all.
MAX_DRIFT_FACTOR = 1.0


def drift_allowance_s(ttl_s: float, drift_factor: float) -> float:
    """The clock-drift allowance subtracted from every lease (the Redlock formula)."""
    return ttl_s * drift_factor + DRIFT_FLOOR_S


def check_drift_factor(drift_factor: float) -> float:
    """``drift_factor`` if it is in [0, 1), else :class:`ConfigError`.

    A factor near 1 still leaves a lease with a long TTL some validity (a test uses 0.9 with a
    10 s TTL); a lease whose TTL it consumes entirely is refused when acquired (LockError).
    """
    if not isinstance(drift_factor, int | float) or not 0 <= drift_factor < MAX_DRIFT_FACTOR:
        raise ConfigError(f"drift_factor must be in [0, {MAX_DRIFT_FACTOR}), got {drift_factor!r}")
    return float(drift_factor)


def no_validity(ttl_s: float, drift_s: float) -> LockError:
    """The error for a lease the drift allowance leaves nothing of (ttl_s <= drift_s): no reply,
    however fast, could make it usable. The acquirer gives back what the server granted."""
    return LockError(
        f"a lease of {ttl_s} s leaves no validity after the drift allowance of {drift_s:.3f} s:"
        " use a longer ttl or a smaller drift_factor"
    )


class Held:
    """A held lock (or semaphore slot, or read/write share).

    ``token`` is the fencing token: an int, strictly increasing per lock name in acquisition order.
    ``token_is_safe`` is False where the backend cannot promise that (Redlock: see docs/locks.md).
    ``lost`` is an :class:`asyncio.Event` set once the lease could not be kept.
    """

    __slots__ = (
        "_deadline",
        "_depth",
        "_drift_s",
        "_listeners",
        "_lost_reason",
        "_on_lost",
        "_pid",
        "_released",
        "_releaser",
        "_renew_at",
        "kind",
        "lost",
        "name",
        "owner",
        "renew_data",
        "token",
        "token_is_safe",
        "ttl_s",
    )

    def __init__(
        self,
        *,
        name: str,
        owner: str,
        token: int,
        ttl_s: float,
        sent_at: float,
        drift_s: float,
        releaser: Releaser,
        on_lost: LostCallback | None = None,
        token_is_safe: bool = True,
        kind: str = "mutex",
        renew_data: object = None,
    ) -> None:
        self.name = name
        self.owner = owner
        self.token = token
        self.token_is_safe = token_is_safe
        self.ttl_s = ttl_s
        self.kind = kind
        self.lost = asyncio.Event()
        #: Backend-specific data the watchdog hands back to the backend's renew call.
        self.renew_data = renew_data
        self._drift_s = drift_s
        if ttl_s < math.inf:
            self._deadline = sent_at + ttl_s - drift_s
            self._renew_at = sent_at + ttl_s / 3
        else:  # a session-based lease (ZooKeeper): no deadline of its own
            self._deadline = self._renew_at = math.inf
        self._releaser = releaser
        self._on_lost = on_lost
        self._lost_reason: str | None = None
        self._released = False
        # The process that acquired: a forked child's copy of this handle must never release or
        # renew on the server (its owner string matches, so it would free the parent's lock).
        self._pid = os.getpid()
        self._depth = 1
        self._listeners: list[Callable[[Held], None]] = []
        if self._deadline <= sent_at:
            # ttl * (1 - drift_factor) <= the 2 ms floor: nothing left to act on. A typed error:
            # the acquirers' clean-up then gives back what the server granted.
            raise no_validity(ttl_s, drift_s)

    def __repr__(self) -> str:
        state = "released" if self._released else ("lost" if self.lost.is_set() else "held")
        return f"<Held {self.kind} {self.name!r} token={self.token} {state}>"

    @property
    def deadline(self) -> float:
        """The monotonic time (``time.monotonic()``) until which the lease is known to be ours."""
        return self._deadline

    @property
    def remaining_s(self) -> float:
        """Seconds of safe validity left (negative once past the deadline)."""
        return self._deadline - time.monotonic()

    @property
    def released(self) -> bool:
        return self._released

    @property
    def lost_reason(self) -> str | None:
        return self._lost_reason

    def ensure(self) -> None:
        """Raise :class:`LockLost` unless the lease is still safely ours right now.

        Call it just before acting on the lock; then pass :attr:`token` to the resource as well,
        because a pause between this check and the action (GC, SIGSTOP, swap) is always possible.
        """
        if self._released:
            raise LockError(f"lock {self.name!r} was already released")
        if self._lost_reason is None and time.monotonic() >= self._deadline:
            self._mark_lost("safe deadline passed before renewal")
        if self._lost_reason is not None:
            raise LockLost(self.name, self._lost_reason)

    async def release(self) -> None:
        """Release the lock (idempotent). A lost lease is released too: best effort, no error."""
        if self._released:
            return
        if self._depth > 1:  # a reentrant acquisition: only the outermost release frees it
            self._depth -= 1
            return
        self._released = True
        if not self.owned_here():
            return  # a copy inherited across fork(): forget it here, the parent still holds it
        await self._releaser(self)

    def owned_here(self) -> bool:
        """False in a forked child for a handle its parent acquired (see :meth:`release`)."""
        return self._pid == os.getpid()

    @property
    def depth(self) -> int:
        """How many times this handle was (reentrantly) acquired and not yet released."""
        return 0 if self._released else self._depth

    def add_lost_listener(self, listener: Callable[[Held], None]) -> None:
        """Call ``listener(held)`` (on the event loop) when the lease is lost; at once if it is."""
        self._listeners.append(listener)
        if self._lost_reason is not None:
            listener(self)

    # -- used by backends and the watchdog ------------------------------------------------------

    def _extend(self, sent_at: float) -> None:
        """A renewal sent at ``sent_at`` succeeded: move the safe deadline forward."""
        self._deadline = max(self._deadline, sent_at + self.ttl_s - self._drift_s)

    def _mark_lost(self, reason: str, *, at_release: bool = False) -> None:
        if self._lost_reason is not None or (self._released and not at_release):
            return
        self._lost_reason = reason
        self._deadline = min(self._deadline, time.monotonic())
        self.lost.set()
        # A callback's bug is logged, never raised: this runs inside the shared watchdog's round
        # (or a release), and one lock's callback must not stop the renewals of every other lock.
        for listener in self._listeners:
            try:
                listener(self)
            except Exception:
                log.exception("lost listener of lock %r raised", self.name)
        if self._on_lost is not None:
            try:
                result = self._on_lost(self)
            except Exception:
                log.exception("on_lost callback of lock %r raised", self.name)
                return
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                _CALLBACK_TASKS.add(task)
                task.add_done_callback(_callback_done)


def _callback_done(task: asyncio.Task[Any]) -> None:
    _CALLBACK_TASKS.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("async on_lost callback raised", exc_info=task.exception())


__all__ = ["DRIFT_FLOOR_S", "Held", "LostCallback", "Releaser", "drift_allowance_s"]

"""RedisLock: a mutex on one Redis server with fencing tokens, leases and fair wake-ups."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import math
import os
import time
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType

from stalwart.errors import ConfigError
from stalwart.lock._backend import RedisBackend, expect_int, expect_pair
from stalwart.lock._errors import LockError, LockTimeout, NotAcquired
from stalwart.lock._held import Held, LostCallback, drift_allowance_s, no_validity
from stalwart.lock._resp import pack_items, pack_prefix
from stalwart.lock._scripts import ABANDON_FAIR, ACQUIRE_FAIR, ACQUIRE_FAST, RELEASE, RELEASE_FAIR, RENEW

#: Longest a waiter sleeps without a wake-up before it tries again (pub/sub is at-most-once).
DEFAULT_POLL_MAX_S = 0.5
MAX_NAME_BYTES = 512

_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, RedisBackend]] = (
    weakref.WeakKeyDictionary()
)


def shared_backend(url: str) -> RedisBackend:
    """The backend for ``url`` shared by every lock of the running event loop (one watchdog)."""
    per_loop = _SHARED.setdefault(asyncio.get_running_loop(), {})
    backend = per_loop.get(url)
    if backend is None or backend.closed:
        backend = per_loop[url] = RedisBackend(url)
    return backend


async def close_shared() -> None:
    """Close every shared backend of the running event loop (call before the loop ends)."""
    per_loop = _SHARED.pop(asyncio.get_running_loop(), {})
    for backend in per_loop.values():
        await backend.aclose()


def new_owner() -> str:
    """A random owner value: 128 bits, so no two acquisitions ever share one."""
    return os.urandom(16).hex()


def lock_keys(prefix: str, name: str) -> str:
    """The base key for a lock name (with a hash tag so all its keys share a cluster slot)."""
    if not isinstance(name, str) or not name or len(name.encode()) > MAX_NAME_BYTES:
        raise ConfigError(f"a lock name must be a non-empty string of at most {MAX_NAME_BYTES} bytes")
    return f"stalwart:{prefix}:{{{name}}}"


def check_ttl(ttl: float) -> int:
    if not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl < 0.01:
        raise ConfigError(f"ttl must be a finite number of seconds >= 0.01, got {ttl!r}")
    return int(ttl * 1000)


TryOnce = Callable[[], Awaitable["Held | int"]]


async def wait_loop(
    backend: RedisBackend,
    channel: str,
    ticket: str | None,
    try_once: TryOnce,
    poll_max_s: float,
    *,
    handover: Callable[[int], Awaitable[Held | int]] | None = None,
    attempt: _Attempt | None = None,
) -> Held:
    """Subscribe to the wake channel, then try / sleep until acquired (no busy polling).

    ``try_once`` returns the held lock, or how many ms the caller may sleep at most (the holder's
    remaining TTL; negative when unknown). The sleep ends early on a matching wake-up message.
    A wake-up that carries a token means a release handed the lock over to this waiter
    (``handover`` turns it into the held lock without another try).
    """
    waiter = await backend.waker.register(channel, ticket)
    if attempt is not None:
        attempt.granted = waiter.handed_over
    try:
        while True:
            waiter.event.clear()  # before trying: a release during the try still wakes us
            token = waiter.take_token()
            if token is not None and handover is not None:
                result = await handover(token)
            else:
                result = await try_once()
            if isinstance(result, Held):
                return result
            if waiter.handed_over():
                continue  # handed over while we were trying: take it at once
            delay_s = poll_max_s if result < 0 else min(poll_max_s, result / 1000 + 0.001)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await waiter.event.wait()
            await backend.waker.ensure_subscribed(waiter)
    finally:
        backend.waker.unregister(waiter)


class _LockBase(abc.ABC):
    """What every Redis-backed primitive shares: backend resolution, context management."""

    def __init__(self, target: str | RedisBackend, on_lost: LostCallback | None, auto_renew: bool) -> None:
        self._target = target
        self._on_lost = on_lost
        self._auto_renew = auto_renew
        self._by_task: dict[asyncio.Task[object] | None, list[Held]] = {}

    def _backend(self) -> RedisBackend:
        if isinstance(self._target, RedisBackend):
            return self._target
        return shared_backend(self._target)

    @abc.abstractmethod
    async def acquire(self, timeout: float | None = None, *, blocking: bool = True) -> Held:
        """Acquire and return the held lock (each primitive defines how)."""

    async def try_acquire(self) -> Held | None:
        """Acquire without waiting: the held lock, or None if someone else holds it."""
        try:
            return await self.acquire(blocking=False)
        except NotAcquired:
            return None

    async def __aenter__(self) -> Held:
        held = await self.acquire()
        self._by_task.setdefault(asyncio.current_task(), []).append(held)
        return held

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task = asyncio.current_task()
        stack = self._by_task.get(task)
        if not stack:
            raise LockError("__aexit__ without a matching __aenter__ in this task")
        held = stack.pop()
        if not stack:
            del self._by_task[task]
        await held.release()

    def _start(self, backend: RedisBackend, held: Held) -> Held:
        if self._auto_renew:
            backend.watchdog.add(held)
        return held

    async def _bounded(self, timeout: float | None, name: str, wait: Callable[[], Awaitable[Held]]) -> Held:
        try:
            async with asyncio.timeout(timeout):
                return await wait()
        except TimeoutError:
            raise LockTimeout(name, f"not acquired within {timeout} s") from None


def _no_grant() -> bool:
    return False


class _Attempt:
    """One acquisition's memory across its tries: when the last failed try was sent.

    That send time bounds the start of a lease handed over to us later only if the try ran on
    the server BEFORE the hand-over. A try that fails while a hand-over to us is already known
    (``granted()``: its message or grant arrived before the try's reply was read) may have run
    after it, once its hand-over lease had lapsed and someone else had taken the lock: taking
    its send time as the base would date that stale lease from after its end (two holders at
    once). So such a failure does not move the base (see :meth:`failed`).
    """

    __slots__ = ("granted", "last_failed_sent")

    def __init__(self) -> None:
        self.last_failed_sent = time.monotonic()
        #: True while a hand-over to this acquisition is known and not taken yet (set by the wait).
        self.granted: Callable[[], bool] = _no_grant

    def failed(self, sent_at: float) -> None:
        """A try (or the renew proving a hand-over) sent at ``sent_at`` found the lock not ours."""
        if not self.granted():
            self.last_failed_sent = sent_at


class RedisLock(_LockBase):
    """A mutex on one Redis server.

    ``async with RedisLock(url, "orders", ttl=10.0) as held:`` gives a :class:`Held` with a fencing
    token (one Lua script sets the key NX with a random owner and a TTL and INCRs the lock's
    counter, atomically), renewed by the client's single watchdog at ttl/3 until released.

    ``fair=True`` queues waiters in FIFO order (tickets in a sorted set, dead waiters expire after
    ``waiter_ttl_s``). ``reentrant=True`` lets the task holding this lock object acquire it again
    (counted; the outermost release frees it); by default that is refused with :class:`LockError`
    instead of deadlocking.
    """

    def __init__(
        self,
        target: str | RedisBackend,
        name: str,
        *,
        ttl: float = 10.0,
        fair: bool = False,
        reentrant: bool = False,
        on_lost: LostCallback | None = None,
        auto_renew: bool = True,
        poll_max_s: float = DEFAULT_POLL_MAX_S,
        waiter_ttl_s: float = 5.0,
    ) -> None:
        super().__init__(target, on_lost, auto_renew)
        base = lock_keys("lock", name)
        self.name = name
        self.ttl_s = float(ttl)
        self._ttl_ms = check_ttl(ttl)
        if poll_max_s <= 0 or waiter_ttl_s <= 0:
            raise ConfigError("poll_max_s and waiter_ttl_s must be positive")
        self.fair = fair
        self.reentrant = reentrant
        self._poll_max_s = min(poll_max_s, waiter_ttl_s / 3) if fair else poll_max_s
        self._waiter_ttl_ms = int(waiter_ttl_s * 1000)
        # A release hands the lock to the head of the FIFO queue with this lease; it is no longer
        # than the waiter's own TTL, so a waiter that died at the head stalls the lock that long.
        self._handover_ms = min(self._ttl_ms, self._waiter_ttl_ms)
        self.key = base
        self.channel = f"{base}:wake"
        # The queue keys matter only with fairness; without it the scripts never touch them, and
        # not sending them keeps the hot path as short as the bare SET NX it is measured against.
        self._queue_keys = (f"{base}:q", f"{base}:qx", f"{base}:qn")
        if fair:
            self._acquire_keys: tuple[str, ...] = (base, f"{base}:fence", *self._queue_keys, f"{base}:qw")
            self._release_keys: tuple[str, ...] = self._acquire_keys
            self._release_script = RELEASE_FAIR
        else:
            self._acquire_keys, self._release_keys = (base, f"{base}:fence"), (base,)
            self._release_script = RELEASE
        # The hot calls encoded once up to their per-call arguments.
        acquire = ACQUIRE_FAIR if fair else ACQUIRE_FAST
        head = ("EVALSHA", acquire.sha, len(self._acquire_keys), *self._acquire_keys)
        self._acquire_prefix = pack_prefix(len(head) + (3 if fair else 2), head)  # owner, ttl[, wttl]
        self._ttl_arg = pack_items((self._ttl_ms,))
        self._queue_args = (pack_items((0,)), pack_items((self._waiter_ttl_ms,)))  # by `queue`
        head = ("EVALSHA", self._release_script.sha, len(self._release_keys), *self._release_keys)
        self._release_prefix = pack_prefix(len(head) + 2, head)  # owner, channel
        self._channel_arg = pack_items((self.channel,))

    def new_owner(self) -> str:
        """A fresh owner value; a fair waiter's carries the lease a release may hand over to it."""
        return f"{new_owner()}.{self._handover_ms}" if self.fair else new_owner()

    def _reentry(self) -> Held | None:
        stack = self._by_task.get(asyncio.current_task())
        if not stack:
            return None
        held = stack[-1]
        if held.released or held.lost.is_set():
            return None
        if not self.reentrant:
            raise LockError(f"lock {self.name!r} is already held by this task (pass reentrant=True)")
        held._depth += 1
        return held

    async def acquire(self, timeout: float | None = None, *, blocking: bool = True) -> Held:
        """Acquire and return the held lock; ``timeout`` bounds the wait (:class:`LockTimeout`).

        ``blocking=False`` tries once and raises :class:`NotAcquired` at once if it is taken.
        """
        held = self._reentry()
        if held is not None:
            return held
        backend = self._backend()
        owner = self.new_owner()
        attempt = _Attempt()
        first_try = True
        if blocking and backend.waker.waiting_on(self.channel):
            # Others of this client already wait for this lock: a try now would most likely fail
            # and be repeated right after subscribing. Register first (no round trip: the
            # subscription is confirmed already), so the wait's first try is the only one.
            first_try = False
        if first_try or not blocking:
            try:
                result = await self._try(backend, owner, blocking and self.fair, attempt)
            except BaseException:
                # A cancellation (or a lost reply) can land after the server granted the lock
                # (or queued our ticket): undo it, as after a failed wait. Costs nothing when the
                # try returns; the uncontended path stays one round trip.
                await asyncio.shield(self._abandon(backend, owner))
                raise
            if isinstance(result, Held):
                return result
        if not blocking:
            raise NotAcquired(self.name)
        try:
            return await self._bounded(
                timeout,
                self.name,
                lambda: wait_loop(
                    backend,
                    self.channel,
                    owner if self.fair else None,
                    lambda: self._try(backend, owner, True, attempt),
                    self._poll_max_s,
                    handover=lambda token: self._handed_over(backend, owner, token, attempt),
                    attempt=attempt,
                ),
            )
        except BaseException:
            # The last try may have taken the lock before we gave up on its reply: undo it
            # (compare-and-delete by our unique owner is safe) and leave the FIFO queue.
            await asyncio.shield(self._abandon(backend, owner))
            raise

    async def _try(self, backend: RedisBackend, owner: str, queue: bool, attempt: _Attempt) -> Held | int:
        packed = self._acquire_prefix + pack_items((owner,)) + self._ttl_arg
        if self.fair:
            packed += self._queue_args[queue]
        sent_at = time.monotonic()
        reply = await backend.run_packed(ACQUIRE_FAIR if self.fair else ACQUIRE_FAST, packed)
        got, value = expect_pair(reply, "acquire")
        if got == 2:  # a release handed it to us after an earlier try of ours had failed
            return await self._handed_over(backend, owner, value, attempt)
        if got != 1:
            attempt.failed(sent_at)
            return value
        drift_s = drift_allowance_s(self.ttl_s, backend.drift_factor)
        if time.monotonic() >= sent_at + self.ttl_s - drift_s:
            # The reply came too late to be of any use: give it up, but keep the ticket (the
            # wait goes on with it).
            await self._abandon(backend, owner, withdraw=False)
            if self.ttl_s <= drift_s:  # not a slow reply: no reply could ever be in time
                raise no_validity(self.ttl_s, drift_s)
            return -1
        return self._held(backend, owner, value, sent_at)

    async def _handed_over(
        self, backend: RedisBackend, owner: str, token: int, attempt: _Attempt
    ) -> Held | int:
        """A release made us the owner. When exactly is unknown, but after our last failed try
        executed on the server, hence after it was sent: that send time bounds the lease's start
        (a try that failed while this hand-over was already known does not count: _Attempt).
        """
        base = attempt.last_failed_sent
        handover_s = self._handover_ms / 1000
        drift_s = drift_allowance_s(handover_s, backend.drift_factor)
        if time.monotonic() + handover_s / 3 >= base + handover_s - drift_s:
            # Too little of the handed-over lease is known to be left: renew it now, which also
            # proves it is still ours.
            sent_at = time.monotonic()
            renewed = await backend.run(RENEW, (self.key,), (owner, self._ttl_ms), idempotent=True)
            if expect_int(renewed, "renew") != 1:
                attempt.failed(sent_at)
                return -1
            return self._held(backend, owner, token, sent_at)
        held = self._held(backend, owner, token, base, start=False)
        # Known to be ours only for the handover lease, from the base time on; the watchdog
        # renews it to the full TTL a third of the way in.
        held._deadline = min(held.deadline, base + handover_s - drift_s)
        held._renew_at = base + handover_s / 3
        return self._start(backend, held)

    def _held(
        self, backend: RedisBackend, owner: str, token: int, sent_at: float, start: bool = True
    ) -> Held:
        if token < 1:
            raise LockError(f"acquire returned a non-positive fencing token {token}")
        drift_s = drift_allowance_s(self.ttl_s, backend.drift_factor)
        held = Held(
            name=self.name,
            owner=owner,
            token=token,
            ttl_s=self.ttl_s,
            sent_at=sent_at,
            drift_s=drift_s,
            releaser=self._releaser(backend),
            on_lost=self._on_lost,
            renew_data=(RENEW, (self.key,), (owner, self._ttl_ms)),
        )
        return self._start(backend, held) if start else held

    def _releaser(self, backend: RedisBackend) -> Callable[[Held], Awaitable[None]]:
        async def release(held: Held) -> None:
            backend.watchdog.remove(held)
            packed = self._release_prefix + pack_items((held.owner,)) + self._channel_arg
            reply = await backend.run_packed(self._release_script, packed, idempotent=True)
            if expect_int(reply, "release") != 1:
                held._mark_lost("the lease had already expired on the server at release", at_release=True)

        return release

    async def _abandon(self, backend: RedisBackend, owner: str, *, withdraw: bool = True) -> None:
        """Give the lock up if we hold it (compare-and-delete by our unique owner) and, when fair
        and ``withdraw``, leave the queue and withdraw the ticket, in ONE script: as two calls, a
        holder's release landing between them would hand the lock to this departed waiter
        (stalled for the handover lease). A withdrawn ticket is refused by the acquire script
        for ``waiter_ttl_s``: a try of ours sent before we gave up, on another connection, may
        still arrive after this clean-up."""
        args: tuple[str | int, ...] = (owner, self.channel)
        script = self._release_script
        if self.fair and withdraw:
            script, args = ABANDON_FAIR, (*args, self._waiter_ttl_ms)
        with contextlib.suppress(LockError):
            await backend.run(script, self._release_keys, args, idempotent=True)


__all__ = [
    "DEFAULT_POLL_MAX_S",
    "RedisLock",
    "check_ttl",
    "close_shared",
    "lock_keys",
    "new_owner",
    "shared_backend",
    "wait_loop",
]

"""The blocking RedisLock's fast path: acquire and release on a synchronous connection.

Hopping to the loop thread costs two thread wake-ups per call, more than the lock itself. So a
blocking RedisLock tries to acquire and releases with redis-py's synchronous client directly,
from the caller's thread, running the very same Lua scripts. Only waiting (when the first try
fails) goes through the asyncio implementation on the loop thread.

The lease still belongs to the one watchdog of the loop thread. Handing each lease over with
``call_soon_threadsafe`` would wake the loop on every acquisition, so leases are queued and the
loop takes the queue in one go, at most ``HANDOVER_S`` (and well before ttl/3) after the first
one arrived; a lease released before that never reaches the loop at all. The safe deadline does
not depend on the watchdog: ``ensure()`` computes it from the send time either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from stalwart.lock._backend import RedisBackend, expect_int, expect_pair, map_error
from stalwart.lock._errors import LockError, LockTimeout
from stalwart.lock._held import Held, drift_allowance_s
from stalwart.lock._redis import RedisLock, _Attempt
from stalwart.lock._scripts import ABANDON_FAIR, ACQUIRE_FAIR, ACQUIRE_FAST, RENEW, Script
from stalwart.lock._waker import Waiter

#: Continues a thread's wait on the loop: (owner, attempt, remaining timeout) -> the held lock.
Fallback = Callable[[str, _Attempt, float | None], Held]

#: Longest a fast-path lease waits before the loop's watchdog takes it over.
HANDOVER_S = 0.05

_CLIENTS: dict[str, redis.Redis] = {}
_CLIENTS_LOCK = threading.Lock()


def sync_client(url: str, op_timeout_s: float) -> redis.Redis:
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(url)
        if client is None:
            client = _CLIENTS[url] = redis.Redis.from_url(
                url,
                socket_timeout=op_timeout_s,
                socket_connect_timeout=op_timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        return client


class Handover:
    """Queues fast-path leases for the loop thread's watchdog (see the module doc).

    Lock-free: it relies only on single dict operations being atomic (the GIL guarantees it), and
    on the orders below, which make every interleaving of add/withdraw/drain end with a released
    lease out of the watchdog and a held one in it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, backend: RedisBackend) -> None:
        self._loop = loop
        self._backend = backend
        self._pending: dict[Held, None] = {}
        self._scheduled = False

    def add(self, held: Held) -> None:
        self._pending[held] = None
        if not self._scheduled:  # two threads may both schedule: a second drain is harmless
            self._scheduled = True
            delay_s = min(HANDOVER_S, held.ttl_s / 6)
            self._loop.call_soon_threadsafe(self._loop.call_later, delay_s, self._drain)

    def withdraw(self, held: Held) -> bool:
        """Take a lease back before the loop saw it; False if the watchdog may have it.

        The caller has already marked the lease released.
        """
        return self._pending.pop(held, False) is None

    def _drain(self) -> None:  # on the loop thread
        self._scheduled = False  # before the snapshot: a later add schedules another drain
        for held in list(self._pending):
            if not held._released:
                self._backend.watchdog.add(held)
            self._pending.pop(held, None)
            if held._released:  # released meanwhile, and its withdraw may have found it pending
                self._backend.watchdog.remove(held)


class FastPath:
    """Acquire/release of one blocking RedisLock on a synchronous connection.

    Everything that does not change per acquisition is computed once here: the hot path is as
    close to two bare EVALSHA calls as Python allows.
    """

    def __init__(self, lock: RedisLock, backend: RedisBackend, loop: asyncio.AbstractEventLoop) -> None:
        assert isinstance(lock._target, str), "the fast path is used only for URL targets"
        self.lock = lock
        self.backend = backend
        self.loop = loop
        self.client = sync_client(lock._target, backend.op_timeout_s)
        self.handover = Handover(loop, backend)
        self._releaser = lock._releaser(backend)
        self._drift_s = drift_allowance_s(lock.ttl_s, backend.drift_factor)
        self._acquire = ACQUIRE_FAIR if lock.fair else ACQUIRE_FAST
        self._acquire_head = (self._acquire.sha, len(lock._acquire_keys), *lock._acquire_keys)
        self._acquire_tail: tuple[Any, ...] = (lock._ttl_ms, 0) if lock.fair else (lock._ttl_ms,)
        release = lock._release_script
        self._release = release
        self._release_head = (release.sha, len(lock._release_keys), *lock._release_keys)
        self._renew_keys = (lock.key,)
        self._renew_head = (RENEW.sha, 1, lock.key)
        self._abandon_head = (ABANDON_FAIR.sha, len(lock._release_keys), *lock._release_keys)

    def _run(self, script: Script, head: tuple[Any, ...], args: tuple[Any, ...]) -> Any:
        try:
            try:
                return self.client.evalsha(*head, *args)
            except redis.exceptions.NoScriptError:
                self.client.script_load(script.source)
                return self.client.evalsha(*head, *args)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise map_error(exc, f"{script.name} on {self.backend.url}") from exc

    def try_acquire(self) -> Held | None:
        owner = self.lock.new_owner()
        sent_at = time.monotonic()
        got, token = expect_pair(
            self._run(self._acquire, self._acquire_head, (owner, *self._acquire_tail)), "acquire"
        )
        if got != 1:
            return None
        return self._new_held(owner, token, sent_at)

    def _new_held(self, owner: str, token: int, sent_at: float, *, start: bool = True) -> Held:
        lock = self.lock
        if token < 1:
            raise LockError(f"acquire returned a non-positive fencing token {token}")
        held = Held(
            name=lock.name,
            owner=owner,
            token=token,
            ttl_s=lock.ttl_s,
            sent_at=sent_at,
            drift_s=self._drift_s,
            releaser=self._releaser,
            on_lost=lock._on_lost,
            renew_data=(RENEW, self._renew_keys, (owner, lock._ttl_ms)),
        )
        if start and lock._auto_renew:
            self.handover.add(held)
        return held

    # -- waiting from the caller's thread ------------------------------------------------------

    def can_wait_here(self) -> bool:
        """True when other waiters of this process keep the lock's channel subscribed: a thread
        can then wait by itself, with the loop only delivering its wake-up."""
        return self.backend.waker.waiting_on(self.lock.channel)

    def wait(self, timeout: float | None, fallback: Fallback) -> Held:
        """A contended acquire that waits in the caller's thread.

        The waiter is added on the loop (``call_soon_threadsafe``, before this thread's first
        try is even sent, and callbacks run in order, so no wake-up for it can be dispatched
        before it is listed); tries and the hand-over run on the synchronous connection; the
        loop's subscriber sets this thread's latch straight from ``data_received``. No task and
        no thread hop per wait. If the channel's subscription went away meanwhile (the waiter is
        orphaned, or the subscriber broke), the wait continues on the loop through ``fallback``
        with the same ticket. Any failure or timeout gives the lock up (compare-and-delete by
        the unique owner: a lock handed over to us meanwhile is passed on) and leaves the queue.
        """
        lock = self.lock
        deadline = None if timeout is None else time.monotonic() + timeout
        owner = lock.new_owner()
        attempt = _Attempt()
        latch = threading.Event()
        waiter = Waiter(lock.channel.encode(), owner.encode() if lock.fair else None, latch)
        waker = self.backend.waker
        self.loop.call_soon_threadsafe(waker.add_thread_waiter, waiter)
        try:
            try:
                while True:
                    latch.clear()  # before trying: a release during the try still sets it
                    if waiter.orphaned or not waker.waiting_on(lock.channel):
                        break
                    token = waiter.take_token()
                    result = self._handed_over(owner, token, attempt) if token else self._try(owner, attempt)
                    if isinstance(result, Held):
                        return result
                    if waiter.handed_over():
                        continue
                    delay_s = lock._poll_max_s if result < 0 else min(lock._poll_max_s, result / 1000 + 0.001)
                    if deadline is not None:
                        delay_s = min(delay_s, deadline - time.monotonic())
                        if delay_s <= 0:
                            raise LockTimeout(lock.name, f"not acquired within {timeout} s")
                    latch.wait(delay_s)
            finally:
                self.loop.call_soon_threadsafe(waker.unregister, waiter)
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            return fallback(owner, attempt, remaining)
        except BaseException:
            self._abandon(owner)
            raise

    def _try(self, owner: str, attempt: _Attempt) -> Held | int:
        sent_at = time.monotonic()
        tail = (self.lock._ttl_ms, self.lock._waiter_ttl_ms) if self.lock.fair else (self.lock._ttl_ms,)
        got, value = expect_pair(self._run(self._acquire, self._acquire_head, (owner, *tail)), "acquire")
        if got == 2:  # a release handed it to us after an earlier try of ours had failed
            return self._handed_over(owner, value, attempt)
        if got != 1:
            attempt.last_failed_sent = sent_at
            return value
        if time.monotonic() >= sent_at + self.lock.ttl_s - self._drift_s:
            self._abandon(owner, withdraw=False)  # the reply came too late: keep the ticket
            return -1
        return self._new_held(owner, value, sent_at)

    def _handed_over(self, owner: str, token: int, attempt: _Attempt) -> Held | int:
        """The thread twin of RedisLock._handed_over (same bounds on the handed-over lease)."""
        lock = self.lock
        base = attempt.last_failed_sent
        handover_s = lock._handover_ms / 1000
        drift_s = drift_allowance_s(handover_s, self.backend.drift_factor)
        if time.monotonic() + handover_s / 3 >= base + handover_s - drift_s:
            sent_at = time.monotonic()
            renewed = self._run(RENEW, self._renew_head, (owner, lock._ttl_ms))
            if expect_int(renewed, "renew") != 1:
                attempt.last_failed_sent = sent_at
                return -1
            return self._new_held(owner, token, sent_at)
        held = self._new_held(owner, token, base, start=False)
        held._deadline = min(held.deadline, base + handover_s - drift_s)
        held._renew_at = base + handover_s / 3
        if lock._auto_renew:
            self.handover.add(held)
        return held

    def _abandon(self, owner: str, *, withdraw: bool = True) -> None:
        """Give the lock up and, fair, leave the queue and withdraw the ticket, in one script
        (see RedisLock._abandon)."""
        lock = self.lock
        with contextlib.suppress(LockError):
            if lock.fair and withdraw:
                self._run(ABANDON_FAIR, self._abandon_head, (owner, lock.channel, lock._waiter_ttl_ms))
            else:
                self._run(self._release, self._release_head, (owner, lock.channel))

    def release(self, held: Held) -> None:
        if held._released:
            return
        held._released = True
        if not self.handover.withdraw(held):
            self.loop.call_soon_threadsafe(self.backend.watchdog.remove, held)
        reply = self._run(self._release, self._release_head, (held.owner, self.lock.channel))
        if expect_int(reply, "release") != 1:
            mark = functools.partial(
                held._mark_lost, "the lease had already expired at release", at_release=True
            )
            self.loop.call_soon_threadsafe(mark)


__all__ = ["HANDOVER_S", "FastPath", "Handover", "sync_client"]

"""The blocking RedisLock's fast path: acquire, wait and release from the caller's thread.

Hopping to the loop thread costs two thread wake-ups per call, more than the lock itself. So a
blocking RedisLock runs the very same Lua scripts on lean synchronous connections
(``_syncresp``) from the caller's thread, and waits there too: the threads of a process waiting
for one lock form a :class:`~stalwart.lock._waker.ThreadGroup`, one waiter of the loop's
subscriber, and a fair release hands the lock to the next thread of its own group directly (see
``FastPath.wait`` and ``FastPath.release``). The loop thread only subscribes and unsubscribes a
group's channel, delivers wake-ups from other processes, and runs the watchdog.

The lease still belongs to the one watchdog of the loop thread. Handing each lease over with
``call_soon_threadsafe`` would wake the loop on every acquisition, so leases are queued and the
loop takes the queue in one go, at most ``HANDOVER_S`` (and well before ttl/3) after the first
one arrived; a lease released before that never reaches the loop at all. The safe deadline does
not depend on the watchdog: ``ensure()`` computes it from the send time either way.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from stalwart.lock._backend import RedisBackend, expect_int, expect_pair
from stalwart.lock._errors import BackendError, BackendProtocolError, LockError, LockTimeout
from stalwart.lock._held import Held, drift_allowance_s
from stalwart.lock._redis import RedisLock, _Attempt
from stalwart.lock._resp import pack, pack_items, pack_prefix
from stalwart.lock._scripts import ABANDON_FAIR, ACQUIRE_FAIR, ACQUIRE_FAST, RELEASE_FAIR_LOCAL, RENEW, Script
from stalwart.lock._syncresp import NoScript, SyncPool
from stalwart.lock._waker import ONE_FROM, ThreadWaiter

#: Runs a coroutine on the loop thread and blocks the caller until it is done.
RunOnLoop = Callable[[Coroutine[Any, Any, None]], None]

#: How long a thread group stays subscribed after its last thread left: a lock that threads keep
#: handing around (two threads: the group empties at every hand-off) is not unsubscribed and
#: subscribed again each time, and an acquire meanwhile queues at its first try.
LINGER_S = 0.05

#: At most this many hand-overs a release passes on to departed waiters of its own group before
#: it stops (each such waiter's lease then lapses after its handover lease).
MAX_PASS_ON = 8

#: Tries to leave a thread group when leaving is interrupted (a signal handler that raises).
MAX_LEAVE_TRIES = 3

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


_POOLS: dict[str, SyncPool] = {}
_TASKS: set[asyncio.Task[None]] = set()
log = logging.getLogger("stalwart.lock")


def _after_fork_in_child() -> None:
    """A parent thread may have held the lock at the fork: a fresh one (the pools reset
    themselves, see _syncresp; redis-py's clients check the pid themselves)."""
    global _CLIENTS_LOCK  # noqa: PLW0603 (rebinding it is the point: the old one may stay held)
    _CLIENTS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def sync_pool(url: str, op_timeout_s: float, connect_timeout_s: float) -> SyncPool:
    """The process's lean synchronous connections to ``url`` (shared by every blocking lock)."""
    with _CLIENTS_LOCK:
        pool = _POOLS.get(url)
        if pool is None:
            pool = _POOLS[url] = SyncPool(url, op_timeout_s=op_timeout_s, connect_timeout_s=connect_timeout_s)
        return pool


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

    def of_owner(self, owner: str) -> list[Held]:
        """The queued leases of ``owner`` (at most one; for the undo of an interrupted acquire)."""
        return [held for held in list(self._pending) if held.owner == owner]

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


class _Call:
    """One script call of one lock, encoded once up to its per-call arguments."""

    __slots__ = ("prefix", "script", "tail")

    def __init__(
        self, script: Script, keys: tuple[str, ...], n_args: int, tail: tuple[Any, ...] = ()
    ) -> None:
        self.script = script
        self.prefix = pack_prefix(
            3 + len(keys) + n_args + len(tail), ("EVALSHA", script.sha, len(keys), *keys)
        )
        self.tail = pack_items(tail)

    def pack(self, *args: str | int) -> bytes:
        return self.prefix + pack_items(args) + self.tail


class FastPath:
    """Acquire/release of one blocking RedisLock on a synchronous connection.

    Everything that does not change per acquisition is computed once here: the hot path is as
    close to two bare EVALSHA calls as Python allows.
    """

    def __init__(
        self, lock: RedisLock, backend: RedisBackend, loop: asyncio.AbstractEventLoop, run: RunOnLoop
    ) -> None:
        assert isinstance(lock._target, str), "the fast path is used only for URL targets"
        self.lock = lock
        self.backend = backend
        self.loop = loop
        self._run_on_loop = run
        #: redis-py's client on the same server, for callers who want plain commands (tests).
        self.client = sync_client(lock._target, backend.op_timeout_s)
        self.pool = sync_pool(lock._target, backend.op_timeout_s, backend.pool.connect_timeout_s)
        self.handover = Handover(loop, backend)
        self.group = backend.waker.thread_group(lock.channel)
        if lock.fair:
            self.group.on_orphan = self._orphan_on_loop
        self._releaser = lock._releaser(backend)
        self._drift_s = drift_allowance_s(lock.ttl_s, backend.drift_factor)
        acquire, keys = (ACQUIRE_FAIR if lock.fair else ACQUIRE_FAST), lock._acquire_keys
        fair = lock.fair
        # owner | owner, ttl[, waiter_ttl]: a try that does not queue (0) and one that does.
        self._try_call = _Call(acquire, keys, 1, (lock._ttl_ms, 0) if fair else (lock._ttl_ms,))
        self._wait_call = _Call(
            acquire, keys, 1, (lock._ttl_ms, lock._waiter_ttl_ms) if fair else (lock._ttl_ms,)
        )
        # owner | channel, group prefix: a fair release tells us which of our threads it woke; an
        # unfair one says who sent its "1" (our subscriber skips it: we wake one of ours here).
        release = RELEASE_FAIR_LOCAL if fair else lock._release_script
        origin = self.group.prefix if fair else (ONE_FROM + self.group.prefix.encode()).decode()
        self._release_call = _Call(release, lock._release_keys, 1, (lock.channel, origin))
        self._renew_keys = (lock.key,)
        self._renew_call = _Call(RENEW, self._renew_keys, 1, (lock._ttl_ms,))
        self._abandon_call = _Call(
            ABANDON_FAIR, lock._release_keys, 1, (lock.channel, lock._waiter_ttl_ms) if fair else ()
        )

    def _run(self, call: _Call, packed: bytes, *, idempotent: bool = False) -> Any:
        """Run a packed script call; NOSCRIPT loads the script and retries once."""
        try:
            try:
                return self.pool.call(packed, idempotent=idempotent)
            except NoScript:
                self.pool.call(pack(("SCRIPT", "LOAD", call.script.source)), idempotent=True)
                return self.pool.call(packed, idempotent=idempotent)
        except NoScript as exc:
            raise BackendProtocolError(f"{call.script.name}: the server forgot the script again") from exc
        except BackendError as exc:
            raise type(exc)(f"{call.script.name} on {self.backend.url}: {exc}") from exc

    def try_acquire(self) -> Held | None:
        owner = self.lock.new_owner()
        try:
            sent_at = time.monotonic()
            got, token = expect_pair(self._run(self._try_call, self._try_call.pack(owner)), "acquire")
            if got != 1:
                return None
            return self._new_held(owner, token, sent_at)
        except LockError:
            raise  # no lease was made: a lock the try may have taken lapses after its ttl
        except BaseException:
            # Interrupted (KeyboardInterrupt, a signal handler's exception) or failed once the
            # lock may be ours: the caller never sees a handle, so nobody would release it.
            self._undo(owner, withdraw=False)
            raise

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
        """True while the lock's thread group is subscribed (threads of this process wait for
        it, or did less than ``LINGER_S`` ago): an acquirer then goes straight to waiting,
        whose first try takes the lock if it is free. Otherwise it tries once without joining,
        so an uncontended acquire never involves the loop."""
        return self.group.attached

    def wait(self, timeout: float | None) -> Held:
        """A contended acquire, waiting in the caller's thread.

        The thread joins its lock's :class:`ThreadGroup` (the loop is involved only when the group
        gets its first thread: the channel is subscribed and confirmed before any try); tries and
        hand-overs run on the synchronous connection; it sleeps on its own latch, set either by
        the thread that released the lock to it (no message at all) or by the loop's subscriber
        (a release from elsewhere). Any failure or timeout gives the lock up (compare-and-delete
        by the unique owner: a lock handed over to us meanwhile is passed on) and leaves the
        queue.
        """
        lock = self.lock
        group = self.group
        deadline = None if timeout is None else time.monotonic() + timeout
        owner = group.prefix + lock.new_owner() if lock.fair else lock.new_owner()
        attempt = _Attempt()
        waiter = ThreadWaiter(owner.encode() if lock.fair else None)
        attempt.granted = waiter.has_grant
        latch = waiter.latch
        orphaned = False
        won: Held | None = None
        try:
            try:
                attached = group.join(waiter)
                # Unfair: a release of ours just woke another thread of the group to try; this
                # one (most likely the releaser, back at once) would only race it and, winning,
                # send it back to sleep: a wasted try each. It lets that thread go first and
                # waits to be woken (by a release, or its poll), its first try skipped.
                defer = not lock.fair and attached and group.wake_pending is not None
                while True:
                    latch.clear()  # before trying: a release during the try still sets it
                    if not attached or not group.attached:
                        self._attach(deadline, timeout)
                        attached = True
                    grant = waiter.take_grant()
                    if grant:
                        result = self._handed_over(owner, grant, attempt)
                    elif defer:
                        result, defer = -1, False
                    else:
                        result = self._try(owner, attempt)
                    if isinstance(result, Held):
                        won = result
                        return result
                    if waiter.grant is not None:
                        continue  # handed over while we were trying: take it at once
                    delay_s = lock._poll_max_s if result < 0 else min(lock._poll_max_s, result / 1000 + 0.001)
                    if deadline is not None:
                        delay_s = min(delay_s, deadline - time.monotonic())
                        if delay_s <= 0:
                            raise LockTimeout(lock.name, f"not acquired within {timeout} s")
                    latch.wait(delay_s)
            except BaseException:
                orphaned = True  # until the clean-up is known to have run (it may be interrupted)
                orphaned = not self._undo(owner)
                raise
        finally:
            self._leave(waiter, orphaned, won)

    def _leave(self, waiter: ThreadWaiter, orphaned: bool, won: Held | None) -> None:
        """Leave the group after a wait. An interrupt landing here, after the wait got the lock
        (``won``), would drop the handle on its way to the caller: the acquire undoes itself.
        ``leave`` can be repeated: a second interrupt during the first is not left half done
        (at most MAX_LEAVE_TRIES)."""
        interrupted: BaseException | None = None
        for _ in range(MAX_LEAVE_TRIES):
            try:
                if self.group.leave(waiter, orphaned=orphaned):
                    self.loop.call_soon_threadsafe(
                        self.loop.call_later, LINGER_S, self.backend.waker.detach_group, self.group
                    )
                break
            except BaseException as exc:
                interrupted = interrupted or exc
        if interrupted is None:
            return
        if won is not None:
            self._undo(won.owner, held=won)
        raise interrupted

    def _attach(self, deadline: float | None, timeout: float | None) -> None:
        """Subscribe the group's channel on the loop, bounded by what is left of the timeout."""
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        waker, group, name = self.backend.waker, self.group, self.lock.name

        async def attach() -> None:
            try:
                async with asyncio.timeout(remaining):
                    await waker.attach_group(group)
            except TimeoutError:
                raise LockTimeout(name, f"not acquired within {timeout} s") from None

        self._run_on_loop(attach())

    def _try(self, owner: str, attempt: _Attempt) -> Held | int:
        self.group.wake_pending = None  # whoever was woken to try is trying (or someone is)
        sent_at = time.monotonic()
        reply = self._run(self._wait_call, self._wait_call.pack(owner))
        got, value = expect_pair(reply, "acquire")
        if got == 2:  # a release handed it to us after an earlier try of ours had failed
            return self._handed_over(owner, (value, None), attempt)
        if got != 1:
            attempt.failed(sent_at)  # not if a hand-over was known meanwhile (see _Attempt)
            return value
        if time.monotonic() >= sent_at + self.lock.ttl_s - self._drift_s:
            self._abandon(owner, withdraw=False)  # the reply came too late: keep the ticket
            return -1
        return self._new_held(owner, value, sent_at)

    def _handed_over(self, owner: str, grant: tuple[int, float | None], attempt: _Attempt) -> Held | int:
        """The thread twin of RedisLock._handed_over (same bounds on the handed-over lease).

        A hand-over from a thread of this process executed on the server after that thread sent
        its release: that send time bounds the start of the handed-over lease. Only that one: a
        try of ours that failed after the grant was given may have run once its hand-over lease
        had lapsed and someone else had the lock, so its send time would date the stale lease
        from after its end (two holders). A hand-over from elsewhere (a message, or our own try
        finding it) is bounded by our last failed try that ran before it (see _Attempt).
        """
        lock = self.lock
        token, released_at = grant
        base = attempt.last_failed_sent if released_at is None else released_at
        handover_s = lock._handover_ms / 1000
        drift_s = drift_allowance_s(handover_s, self.backend.drift_factor)
        if time.monotonic() + handover_s / 3 >= base + handover_s - drift_s:
            sent_at = time.monotonic()
            renewed = self._run(self._renew_call, self._renew_call.pack(owner), idempotent=True)
            if expect_int(renewed, "renew") != 1:
                attempt.failed(sent_at)
                return -1
            return self._new_held(owner, token, sent_at)
        held = self._new_held(owner, token, base, start=False)
        held._deadline = min(held.deadline, base + handover_s - drift_s)
        held._renew_at = base + handover_s / 3
        if lock._auto_renew:
            self.handover.add(held)
        return held

    def _undo(self, owner: str, *, withdraw: bool = True, held: Held | None = None) -> bool:
        """An acquire that will not return its handle (interrupted, failed, timed out): stop
        renewing whatever lease of ``owner`` exists here first (memory only, so that a second
        interrupt cannot leave a lease the watchdog renews for ever), then give the lock up on
        the server (``_abandon``). False if the server could not be reached."""
        for lease in [held] if held is not None else self.handover.of_owner(owner):
            if lease._released:
                continue
            lease._released = True
            if not self.handover.withdraw(lease):
                self.loop.call_soon_threadsafe(self.backend.watchdog.remove, lease)
        return self._abandon(owner, withdraw=withdraw)

    def _abandon(self, owner: str, *, withdraw: bool = True) -> bool:
        """Give the lock up and, fair, leave the queue and withdraw the ticket, in one script
        (see RedisLock._abandon). False if that failed (the server could not be reached)."""
        try:
            if self.lock.fair and withdraw:
                self._run(self._abandon_call, self._abandon_call.pack(owner), idempotent=True)
            else:
                self._release_as(owner, time.monotonic())
        except LockError:
            return False
        return True

    def _release_as(self, owner: str, sent_at: float) -> bool:
        """Release the lock if ``owner`` holds it; True if it did. A fair release that hands the
        lock to a thread of our group wakes that thread here (no message is published for it)."""
        call = self._release_call
        reply = self._run(call, call.pack(owner), idempotent=True)
        if self.lock.fair:
            return self._hand_on(reply, sent_at)
        if expect_int(reply, "release") != 1:
            return False
        self.group.wake_next(pending=True)  # the longest-waiting idle thread of ours tries
        return True

    def release(self, held: Held) -> None:
        if held._released:
            return
        held._released = True
        if not held.owned_here():
            return  # inherited across fork(): the parent holds the lock, leave it alone
        if not self.handover.withdraw(held):
            self.loop.call_soon_threadsafe(self.backend.watchdog.remove, held)
        if not self._release_as(held.owner, time.monotonic()):
            mark = functools.partial(
                held._mark_lost, "the lease had already expired at release", at_release=True
            )
            self.loop.call_soon_threadsafe(mark)

    def _hand_on(self, reply: Any, sent_at: float) -> bool:
        """RELEASE_FAIR_LOCAL's reply: wake the thread of our group the lock went to, if any.
        Returns whether the lock was ours."""
        ours, token, ticket = _release_reply(reply)
        for _ in range(MAX_PASS_ON):
            if not token:
                break
            claimed = self.group.claim(ticket)
            if isinstance(claimed, ThreadWaiter):
                claimed.give(token, sent_at)  # no message: this is the only wake-up it gets
                break
            if not claimed:
                break  # its thread already took it (its own try found it handed over)
            # An orphaned ticket of our group (its thread gave up and could not withdraw it):
            # nobody will take the lock, so release it on its behalf right away rather than let
            # it stall for the handover lease.
            sent_at = time.monotonic()
            try:
                call = self._release_call
                reply = self._run(call, call.pack(ticket.decode()), idempotent=True)
            except LockError:
                break  # the handover lease bounds the stall
            _, token, ticket = _release_reply(reply)
        return ours

    def _orphan_on_loop(self, ticket: bytes) -> None:
        """On the loop: a release elsewhere handed the lock to an orphaned ticket of our group;
        give it up (and pass it on) in a task."""
        task = self.loop.create_task(self._give_up(ticket.decode()))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    async def _give_up(self, owner: str) -> None:
        lock = self.lock
        try:
            args = (owner, lock.channel, lock._waiter_ttl_ms)
            await self.backend.run(ABANDON_FAIR, lock._release_keys, args, idempotent=True)
        except LockError:
            log.warning("could not pass on lock %r handed to a departed waiter", lock.name, exc_info=True)


def _release_reply(reply: Any) -> tuple[bool, int, bytes]:
    if (
        type(reply) is not list
        or len(reply) != 3
        or type(reply[0]) is not int
        or type(reply[1]) is not int
        or type(reply[2]) is not bytes
    ):
        raise BackendProtocolError(f"release: expected [int, int, bytes], got {reply!r:.200}")
    return reply[0] == 1, reply[1], reply[2]


__all__ = ["HANDOVER_S", "LINGER_S", "FastPath", "Handover", "sync_client", "sync_pool"]

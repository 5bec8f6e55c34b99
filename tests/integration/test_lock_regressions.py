"""Regression tests for defects found in review of the lock package (each failed before its fix)."""

# ruff: noqa: F401, F811
from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest
import redis as redis_sync

from stalwart.lock import LockTimeout, RedisBackend, RedisLock
from stalwart.lock._blocking import BlockingLock
from stalwart.lock._scripts import ACQUIRE_FAIR
from tests.integration._locks import run, url
from tests.servers.redis import RedisServer, flush, redis_server

pytestmark = pytest.mark.integration


# -- 1. a fair waiter that gives up must not be handed the lock on its way out -------------------


def test_abandoning_fair_waiter_is_not_handed_the_lock_on_its_way_out(url: str) -> None:
    """The holder's release lands exactly while the waiter gives up: between its calls if it makes
    several (the old release-then-dequeue order), else right after its one call."""

    async def body() -> None:
        async with RedisBackend(url) as hb, RedisBackend(url) as wb, RedisBackend(url) as tb:
            holder = RedisLock(hb, "L", ttl=10, fair=True, waiter_ttl_s=5.0)
            held = await holder.acquire()
            giving_up = False
            orig_many, orig_run = wb.run_many, wb.run

            async def run_many(calls: Sequence[Any]) -> list[Any]:
                if not giving_up:
                    return await orig_many(calls)
                out = await orig_many(calls[:1])
                await held.release()
                return out + (await orig_many(calls[1:]) if len(calls) > 1 else [])

            async def run(*args: Any, **kwargs: Any) -> Any:
                out = await orig_run(*args, **kwargs)
                if giving_up:
                    await held.release()
                return out

            wb.run_many = run_many  # type: ignore[method-assign]
            wb.run = run  # type: ignore[method-assign]
            waiter = RedisLock(wb, "L", ttl=10, fair=True, waiter_ttl_s=5.0)
            task = asyncio.create_task(waiter.acquire())
            await asyncio.sleep(0.3)  # queued behind the holder
            giving_up = True
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await held.release()  # no-op if the injection released it already
            assert await tb.redis.get(waiter.key) is None
            t0 = time.monotonic()
            h3 = await RedisLock(tb, "L", ttl=10, fair=True).acquire(timeout=10)
            assert time.monotonic() - t0 < 1.0
            await h3.release()

    run(body)


def test_fair_waiters_timing_out_under_contention_never_stall_the_lock(url: str) -> None:
    """Threads cycle a fair lock while others give up after short timeouts: the key must never
    keep one owner for more than 1 s (no holder keeps it over a few ms)."""
    lock = BlockingLock(RedisLock(url, "S", ttl=10, fair=True, waiter_ttl_s=2.0))
    stop = time.monotonic() + 4.0
    acquired = [0]

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            try:
                h = lock.acquire(timeout=rng.uniform(0.0005, 0.004))
            except LockTimeout:
                continue
            acquired[0] += 1
            time.sleep(0.0005)
            h.release()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    client = redis_sync.Redis.from_url(url)
    stalls: list[Any] = []
    last, since = None, time.monotonic()
    try:
        while time.monotonic() < stop:
            v = client.get("stalwart:lock:{S}")
            now = time.monotonic()
            if v != last:
                last, since = v, now
            elif v is not None and now - since > 1.0:
                stalls.append(v)
                last, since = None, now
            time.sleep(0.01)
    finally:
        for t in threads:
            t.join()
        client.close()
    assert acquired[0] > 0
    assert stalls == []


# -- 3. an interrupt arriving as a blocking acquire completes must not leak the lease ------------


class _Interrupted(Exception):
    pass


def test_blocking_acquire_interrupted_at_the_grant_releases_the_lock(url: str) -> None:
    main = threading.main_thread().ident
    assert threading.get_ident() == main, "signals are delivered to the main thread"

    class SignalAtGrant:
        """Any lock of the package; SIGUSR1 reaches the main thread just as the grant completes."""

        def __init__(self, inner: RedisLock) -> None:
            self.inner = inner

        async def acquire(self, timeout: float | None = None, *, blocking: bool = True) -> Any:
            held = await self.inner.acquire(timeout, blocking=blocking)
            assert main is not None
            signal.pthread_kill(main, signal.SIGUSR1)
            # Block the loop (no await: this task cannot be cancelled meanwhile) while the main
            # thread, still waiting for this task, handles the signal: the interrupted caller's
            # clean-up then finds the task already finished with the lock.
            time.sleep(0.3)
            return held

    def handler(signum: int, frame: object) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGUSR1, handler)
    key = "stalwart:lock:{K}"
    try:
        lock = BlockingLock(SignalAtGrant(RedisLock(url, "K", ttl=0.6)))
        with pytest.raises(_Interrupted):
            lock.acquire()
            time.sleep(1.0)  # the signal is handled at the latest here
    finally:
        signal.signal(signal.SIGUSR1, previous)
    client = redis_sync.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 2.0  # well under the 5 TTLs the leak was renewed for
        while client.exists(key) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not client.exists(key)
        other = BlockingLock(RedisLock(url, "K", ttl=1)).try_acquire()
        assert other is not None
        other.release()
    finally:
        client.close()


def test_a_try_arriving_after_its_waiter_gave_up_neither_queues_nor_takes_the_lock(url: str) -> None:
    """A try already sent when its waiter is cancelled may reach the server after the waiter's
    clean-up (it went out on another pooled connection): its withdrawn ticket is refused."""

    async def body() -> None:
        async with RedisBackend(url) as backend:
            lock = RedisLock(backend, "W", ttl=10, fair=True, waiter_ttl_s=5.0)
            owners: list[str] = []
            new_owner = lock.new_owner

            def record() -> str:
                owners.append(new_owner())
                return owners[-1]

            lock.new_owner = record  # type: ignore[method-assign]
            holder = await RedisLock(backend, "W", ttl=10, fair=True).acquire()
            with pytest.raises(LockTimeout):
                await lock.acquire(timeout=0.2)
            ticket = owners[-1]
            queue = f"{lock.key}:q"
            assert await backend.redis.zscore(queue, ticket) is None
            late_try = (ticket, 10_000, 5_000)  # what the waiter's in-flight try carried
            got = await backend.run(ACQUIRE_FAIR, lock._acquire_keys, late_try)
            assert got[0] == 0 and await backend.redis.zscore(queue, ticket) is None  # not re-queued
            await holder.release()
            got = await backend.run(ACQUIRE_FAIR, lock._acquire_keys, late_try)
            assert got[0] == 0 and await backend.redis.get(lock.key) is None  # the free lock not taken
            other = await RedisLock(backend, "W", ttl=10, fair=True).acquire(timeout=1)
            await other.release()

    run(body)


# -- 5. a hand-over whose lease lapsed while its waiter was stalled must not be taken as held ----


def test_a_thread_stalled_past_its_hand_over_lease_does_not_hold_with_the_next_holder(url: str) -> None:
    """A release hands the lock to a waiting thread, which stalls (GIL, GC, SIGSTOP) longer than
    the hand-over lease before its next try; meanwhile someone else takes the lapsed lock. That
    try fails, and the stale grant must not then be dated from it: two holders with ensure() OK."""
    lock = BlockingLock(
        RedisLock(url, "stale", ttl=0.4, fair=True, waiter_ttl_s=0.4, poll_max_s=0.05, auto_renew=False)
    )
    other = BlockingLock(RedisLock(url, "stale", ttl=5.0, fair=True))
    holder = lock.acquire()
    fast = lock._fast
    assert fast is not None
    real_try = fast._try
    in_try, released = threading.Event(), threading.Event()
    tries = [0]
    taken: list[Any] = []

    def stalled_try(owner: str, attempt: Any) -> Any:
        tries[0] += 1
        if tries[0] == 2:  # the waiter's second try (its first queued the ticket)
            in_try.set()
            assert released.wait(5)  # the holder's release hands the lock to this thread
            time.sleep(0.6)  # stalled past the 0.4 s hand-over lease, which lapses
            taken.append(other.acquire(blocking=False))  # the queue is empty: the next holder
        return real_try(owner, attempt)  # fails: the other one holds it

    fast._try = stalled_try  # type: ignore[method-assign]
    outcome: list[Any] = []

    def waiter() -> None:
        try:
            outcome.append(lock.acquire(timeout=1.5))
        except LockTimeout as exc:
            outcome.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    assert in_try.wait(5)
    holder.release()
    released.set()
    thread.join(10)
    assert taken and len(outcome) == 1
    taken[0].ensure()
    # The other holder keeps the lock for 5 s, so the waiter must time out; before the fix it
    # returned a handle (an older token than the holder's) whose ensure() passed.
    assert isinstance(outcome[0], LockTimeout), f"two holders: {outcome[0]!r} and {taken[0]!r}"
    taken[0].release()


def test_an_async_waiter_stalled_past_its_hand_over_lease_does_not_hold_with_the_next_holder(
    url: str,
) -> None:
    """The asyncio twin: the hand-over message arrives while the waiter's next try is delayed
    past the hand-over lease; that try fails (someone else took the lapsed lock) and must not
    become the base of the stale hand-over."""

    async def body() -> None:
        async with RedisBackend(url) as wb, RedisBackend(url) as ob:
            kw: dict[str, Any] = {"ttl": 0.4, "fair": True, "waiter_ttl_s": 0.4, "poll_max_s": 0.05}
            waiter_lock = RedisLock(wb, "astale", auto_renew=False, **kw)
            holder = await RedisLock(ob, "astale", **kw).acquire()
            real_try = waiter_lock._try
            in_try, released = asyncio.Event(), asyncio.Event()
            tries = [0]
            taken: list[Any] = []

            async def stalled_try(*args: Any) -> Any:
                tries[0] += 1
                if tries[0] == 2:  # the first try (before waiting) queued the ticket
                    in_try.set()
                    await released.wait()
                    await asyncio.sleep(0.6)  # the hand-over message arrives meanwhile
                    taken.append(await RedisLock(ob, "astale", ttl=5.0, fair=True).acquire(blocking=False))
                return await real_try(*args)

            waiter_lock._try = stalled_try  # type: ignore[method-assign]
            task = asyncio.create_task(waiter_lock.acquire(timeout=1.5))
            await asyncio.wait_for(in_try.wait(), 5)
            await holder.release()  # hands the lock to the waiter's ticket (published)
            released.set()
            try:
                got = await task
            except LockTimeout:
                got = None
            assert taken
            taken[0].ensure()
            assert got is None, f"two holders: {got!r} and {taken[0]!r}"
            await taken[0].release()

    run(body)


# -- 6. a signal landing after a blocking acquire got the lock, before the caller has the handle --


@pytest.mark.parametrize(
    ("where", "fair"),
    [("leave", False), ("leave", True), ("handle", True), ("try", False)],
)
def test_a_signal_after_a_blocking_acquire_succeeded_leaks_no_lease(
    url: str, where: str, fair: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGUSR1 (its handler raises) lands once the lock is ours: as the waiting thread leaves its
    group, as the handle is built, or right after the uncontended try queued the lease for the
    watchdog. The caller never sees a handle, so the acquire must give the lock up and stop
    renewing it; before the fix the watchdog renewed it for ever."""
    from stalwart.lock import _blocking
    from stalwart.lock._waker import ThreadGroup

    main = threading.main_thread().ident
    assert threading.get_ident() == main, "signals are delivered to the main thread"
    name = f"ghost-{where}-{fair}"  # one per case: an earlier case's leak must not hide this one
    lock = BlockingLock(RedisLock(url, name, ttl=1.0, fair=fair))
    holder = lock.acquire() if where != "try" else None  # the main thread then waits
    fast = lock._fast_path()
    assert fast is not None
    armed = [True]

    def fire() -> None:
        if armed[0] and threading.get_ident() == main:
            armed[0] = False
            signal.raise_signal(signal.SIGUSR1)

    if where == "leave":
        real_leave = ThreadGroup.leave

        def leave(self: ThreadGroup, waiter: Any, *, orphaned: bool = False) -> bool:
            out = real_leave(self, waiter, orphaned=orphaned)
            fire()
            return out

        monkeypatch.setattr(ThreadGroup, "leave", leave)
    elif where == "handle":

        class Interrupted(_blocking.BlockingHeld):
            def __init__(self, *args: Any) -> None:
                super().__init__(*args)
                fire()

        monkeypatch.setattr(_blocking, "BlockingHeld", Interrupted)
    else:
        real_add = fast.handover.add

        def add(held: Any) -> None:
            real_add(held)
            fire()

        monkeypatch.setattr(fast.handover, "add", add)

    def handler(signum: int, frame: object) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        if holder is not None:
            threading.Timer(0.2, holder.release).start()
        with pytest.raises(_Interrupted):
            lock.acquire(timeout=5)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert not armed[0], "the signal was not sent"
    client = redis_sync.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 3.0  # 3 TTLs: a renewed lease would still be there
        while client.exists(f"stalwart:lock:{{{name}}}") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not client.exists(f"stalwart:lock:{{{name}}}"), "the interrupted acquire's lease is renewed"
        assert not fast.group.threads, "the interrupted thread is still in its group"
        other = BlockingLock(RedisLock(url, name, ttl=1.0, fair=fair)).acquire(timeout=1)
        other.release()
    finally:
        client.close()


# -- 7. unfair: a woken thread that leaves without trying must not stall the next acquirer -------


def test_a_woken_thread_that_times_out_does_not_stall_a_free_unfair_lock(url: str) -> None:
    """The releaser wakes a waiting thread, which times out instead of trying (a loaded machine:
    its try is slowed past its deadline). The next acquire of the process (the releaser's, at
    once) must not 'let the woken thread go first' and sleep a whole poll with the lock free."""
    lock = BlockingLock(RedisLock(url, "defer", ttl=10.0, poll_max_s=0.5))
    held = lock.acquire()
    fast = lock._fast
    assert fast is not None
    real_try = fast._try
    in_try, released = threading.Event(), threading.Event()

    def slow_try(owner: str, attempt: Any) -> Any:
        result = real_try(owner, attempt)  # fails: the main thread holds the lock
        if threading.current_thread().name == "W" and not in_try.is_set():
            in_try.set()
            released.wait(5)
            time.sleep(0.35)  # its deadline (0.3 s) passes: it leaves without trying again
        return result

    fast._try = slow_try  # type: ignore[method-assign]
    timed_out: list[bool] = []

    def waiter() -> None:
        try:
            lock.acquire(timeout=0.3).release()
        except LockTimeout:
            timed_out.append(True)

    thread = threading.Thread(target=waiter, name="W")
    thread.start()
    assert in_try.wait(5)
    held.release()  # wakes W, which is idle as far as the group knows
    released.set()
    thread.join(5)
    assert timed_out
    t0 = time.monotonic()
    again = lock.acquire(timeout=5)
    elapsed = time.monotonic() - t0
    again.release()
    assert elapsed < 0.25, f"a free lock took {elapsed:.3f} s to acquire"

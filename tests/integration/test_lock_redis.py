"""RedisLock, RedisRWLock, RedisSemaphore and FencedResource against a real redis-server."""

# ruff: noqa: F401, F811
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from stalwart.errors import StalwartError
from stalwart.lock import (
    BlockingLock,
    FencedResource,
    Held,
    LockError,
    LockLost,
    LockTimeout,
    NotAcquired,
    RedisBackend,
    RedisLock,
    RedisRWLock,
    RedisSemaphore,
    StaleToken,
    run_blocking,
)
from stalwart.lock._scripts import ACQUIRE_FAIR
from tests.integration._locks import contend, run, url
from tests.servers.redis import RedisServer, flush, redis_server

pytestmark = pytest.mark.integration


def stalwart_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("stalwart-")]


def test_token_acquire_release_and_try(url: str) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            lock = RedisLock(backend, "orders", ttl=5.0)
            async with lock as held:
                assert isinstance(held.lost, asyncio.Event) and not held.lost.is_set()
                assert held.token == 1 and held.token_is_safe
                held.ensure()
                assert 4.8 < held.remaining_s <= 5.0
                other = RedisLock(backend, "orders", ttl=5.0)
                assert await other.try_acquire() is None
                with pytest.raises(NotAcquired):
                    await other.acquire(blocking=False)
                t0 = time.monotonic()
                with pytest.raises(LockTimeout):
                    await other.acquire(timeout=0.2)
                assert time.monotonic() - t0 < 1.0
            assert held.released
            with pytest.raises(LockError):
                held.ensure()
            again = await RedisLock(backend, "orders").try_acquire()
            assert again is not None and again.token == 2
            await again.release()
            await again.release()  # idempotent
            assert await backend.redis.keys("*") == [b"stalwart:lock:{orders}:fence"]

    run(body)


def test_reentrancy_is_explicit(url: str) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            plain = RedisLock(backend, "re")
            async with plain:
                with pytest.raises(LockError, match="reentrant"):
                    async with plain:
                        pass
            lock = RedisLock(backend, "re2", reentrant=True)
            async with lock as outer:
                async with lock as inner:
                    assert inner is outer and outer.depth == 2
                assert outer.depth == 1 and not outer.released
                assert await RedisLock(backend, "re2").try_acquire() is None
            assert outer.released
            # Another task is another owner, even on the same lock object.
            async with lock:
                with pytest.raises(LockTimeout):
                    await asyncio.create_task(lock.acquire(timeout=0.1))

    run(body)


def test_watchdog_renews_past_ttl_and_stops_at_release(url: str) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            lock = RedisLock(backend, "renew", ttl=0.3)
            async with lock as held:
                await asyncio.sleep(1.0)  # more than three TTLs
                held.ensure()
                assert backend.watchdog.rounds >= 3 and backend.watchdog.running
                assert await RedisLock(backend, "renew").try_acquire() is None
            assert not backend.watchdog.running
            assert not stalwart_tasks()

    run(body)


def test_lost_when_key_taken_sets_event_and_callback(url: str) -> None:
    async def body() -> None:
        lost: list[Held] = []
        async with RedisBackend(url) as backend:
            lock = RedisLock(backend, "stolen", ttl=0.3, on_lost=lost.append)
            held = await lock.acquire()
            await backend.redis.set(lock.key, "intruder")  # someone else's value: not ours any more
            async with asyncio.timeout(2):
                await held.lost.wait()
            assert lost == [held]
            with pytest.raises(LockLost, match="no longer holds"):
                held.ensure()
            await held.release()  # compare-and-delete leaves the intruder's key alone
            assert await backend.redis.get(lock.key) == b"intruder"
            assert not backend.watchdog.running

    run(body)


def test_deadline_passes_without_renewal(url: str) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            held = await RedisLock(backend, "nowatch", ttl=0.2, auto_renew=False).acquire()
            await asyncio.sleep(0.25)
            with pytest.raises(LockLost, match="deadline"):
                held.ensure()
            assert held.lost.is_set()

    run(body)


@pytest.mark.parametrize("fair", [False, True])
def test_eight_workers_no_lost_updates_tokens_increase(url: str, fair: bool) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            count, order = await contend(lambda i: RedisLock(backend, "rmw", ttl=5.0, fair=fair))
            assert count == 8 * 25
            assert order == sorted(order) and len(set(order)) == len(order)
            assert not backend.waker.active and not backend.watchdog.running

    run(body)


def test_fair_mode_serves_waiters_in_arrival_order(url: str) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            first = await RedisLock(backend, "fifo", fair=True).acquire()
            served: list[int] = []

            async def waiter(i: int) -> None:
                async with RedisLock(backend, "fifo", fair=True):
                    served.append(i)

            tasks = []
            for i in range(6):
                tasks.append(asyncio.create_task(waiter(i)))
                await asyncio.sleep(0.05)  # arrive in order 0..5
            await first.release()
            await asyncio.gather(*tasks)
            assert served == list(range(6))
            assert await backend.redis.keys("*") == [b"stalwart:lock:{fifo}:fence"]

    run(body)


def test_dead_fifo_waiter_expires(url: str) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            lock = RedisLock(backend, "fifo-dead", fair=True, waiter_ttl_s=0.3, poll_max_s=0.05)
            # A waiter that queued and then vanished (its ticket is never refreshed).
            await backend.redis.zadd(f"{lock.key}:q", {"ghost": 1})
            await backend.redis.set(f"{lock.key}:qn", 1)
            await backend.redis.zadd(f"{lock.key}:qx", {"ghost": int(time.time() * 1000) + 300})
            t0 = time.monotonic()
            held = await lock.acquire(timeout=3)
            assert 0.2 < time.monotonic() - t0 < 2.0
            await held.release()

    run(body)


def test_timeout_and_cancel_leave_nothing(url: str) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            held = await RedisLock(backend, "cancel").acquire()
            for fair in (False, True):
                task = asyncio.create_task(RedisLock(backend, "cancel", fair=fair).acquire())
                await asyncio.sleep(0.1)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                with pytest.raises(LockTimeout):
                    await RedisLock(backend, "cancel", fair=fair).acquire(timeout=0.1)
            await held.release()
            # The fair waiters' withdrawn tickets stay refused for waiter_ttl_s (5 s), then go.
            fence, withdrawn = b"stalwart:lock:{cancel}:fence", b"stalwart:lock:{cancel}:qw"
            assert sorted(await backend.redis.keys("*")) == [fence, withdrawn]
            assert 0 < await backend.redis.pttl(withdrawn) <= 5000
            assert not backend.waker.active
            assert await backend.redis.pubsub_numsub("stalwart:lock:{cancel}:wake") == [
                (b"stalwart:lock:{cancel}:wake", 0)
            ]

    run(body)


def test_rw_lock_readers_share_writers_exclude(url: str) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            rw = RedisRWLock(backend, "doc", ttl=2.0)
            r1 = await rw.read().acquire()
            r2 = await rw.read().acquire()
            assert r2.token > r1.token
            assert await rw.write().try_acquire() is None
            writer = asyncio.create_task(rw.write().acquire(timeout=5))
            await asyncio.sleep(0.1)
            # A waiting writer blocks new readers (writer preference).
            assert await rw.read().try_acquire() is None
            await r1.release()
            await r2.release()
            w = await writer
            assert w.token > r2.token and w.kind == "write"
            assert await rw.read().try_acquire() is None
            await w.release()
            r3 = await rw.read().acquire(timeout=1)
            assert r3.token > w.token
            await asyncio.sleep(0.9)  # renewed by the watchdog past a third of the TTL
            r3.ensure()
            await r3.release()
            keys = sorted(await backend.redis.keys("*"))
            assert keys == [b"stalwart:rw:{doc}:fence"]

    run(body)


def test_semaphore_limits_and_renews(url: str) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            inside = 0
            peak = 0

            async def worker() -> None:
                nonlocal inside, peak
                async with RedisSemaphore(backend, "pool", 3, ttl=0.3) as held:
                    inside += 1
                    peak = max(peak, inside)
                    await asyncio.sleep(0.4)  # longer than the TTL: the watchdog keeps the slot
                    held.ensure()
                    inside -= 1

            await asyncio.gather(*(worker() for _ in range(7)))
            assert peak == 3
            with pytest.raises(StalwartError):
                RedisSemaphore(backend, "pool", 0)
            assert await backend.redis.keys("*") == [b"stalwart:sem:{pool}:fence"]

    run(body)


def test_fenced_resource_rejects_lower_tokens(url: str) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            resource = FencedResource(backend, "account:42")
            assert await resource.read() is None
            await resource.write(5, b"five")
            await resource.write(5, b"five again")  # the same holder may write again
            with pytest.raises(StaleToken) as err:
                await resource.write(4, b"stale")
            assert err.value.highest == 5
            await resource.write(9, "nine")
            assert await resource.read() == (9, b"nine")

    run(body)


def test_blocking_wrapper_same_shape(url: str) -> None:
    lock = BlockingLock(RedisLock(url, "blocking", ttl=2.0))
    with lock as held:
        assert held.token >= 1 and not held.lost.is_set()
        held.ensure()
        assert lock.try_acquire() is None
        with pytest.raises(LockTimeout):
            lock.acquire(timeout=0.1)
    again = lock.acquire(timeout=1)
    assert again.token == held.token + 1
    run_blocking(RedisBackend(url).redis.set(RedisLock(url, "blocking").key, "other"))
    assert again.lost.wait(3), "the blocking handle's lost event must be set too"
    with pytest.raises(LockLost):
        again.ensure()
    again.release()


def test_ten_thousand_cycles_leave_nothing_behind(url: str) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            admin = backend.redis
            names = [f"cyc-{i}" for i in range(4)]

            async def cycles(name: str, n: int) -> None:
                lock = RedisLock(backend, name, ttl=5.0)
                for _ in range(n):
                    held = await lock.acquire()
                    await held.release()
                # A few contended ones, so wake-up subscriptions are used too.
                await asyncio.gather(*(cycle_contended(name) for _ in range(4)))

            async def cycle_contended(name: str) -> None:
                for _ in range(5):
                    async with RedisLock(backend, name, ttl=5.0):
                        await asyncio.sleep(0.001)

            await asyncio.gather(*(cycles(name, 2500) for name in names))
            await asyncio.sleep(0.2)  # let the server process the wake-up connection's close
            keys = sorted(await admin.keys("*"))
            assert keys == sorted(f"stalwart:lock:{{{n}}}:fence".encode() for n in names)
            tokens = [int(await admin.get(k)) for k in keys]
            assert tokens == [2520] * 4
            assert await admin.dbsize() == 4
            info = await admin.info("memory")
            assert info["number_of_cached_scripts"] <= 3  # acquire, release (+ script load) only
            numsub = await admin.pubsub_numsub(*(f"stalwart:lock:{{{n}}}:wake" for n in names))
            assert all(count == 0 for _, count in numsub), (
                numsub,
                backend.waker._subs,
                backend.waker._waiters,
                backend.waker.active,
            )
            assert await admin.pubsub_channels() == []
            clients = await admin.client_list()
            assert not any(int(c.get("sub", 0)) for c in clients)
            assert not backend.watchdog.running and backend.watchdog.leases == 0
            assert not backend.waker.active
            assert not stalwart_tasks()

    run(body)


def test_fair_release_hands_over_even_if_the_message_is_lost(url: str) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            lock = RedisLock(backend, "handover", fair=True, ttl=5.0)
            holder = await lock.acquire()
            waiter_owner = lock.new_owner()
            keys = lock._acquire_keys
            got, pttl = await backend.run(ACQUIRE_FAIR, keys, (waiter_owner, 5000, 5000))
            assert got == 0 and pttl > 0  # queued behind the holder
            await holder.release()  # hands the lock to the queued waiter, nobody listens
            assert await backend.redis.get(lock.key) == waiter_owner.encode()
            # The waiter's next try (its poll) finds it was handed over, with the next token.
            assert await backend.run(ACQUIRE_FAIR, keys, (waiter_owner, 5000, 5000)) == [2, holder.token + 1]
            assert await RedisLock(backend, "handover", fair=True).try_acquire() is None

    run(body)


def test_dead_head_of_queue_stalls_at_most_its_handover_lease(url: str) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            lock = RedisLock(backend, "dead-head", fair=True, ttl=5.0, waiter_ttl_s=0.4, poll_max_s=0.05)
            holder = await lock.acquire()
            ghost = lock.new_owner()  # queued, then died without leaving the queue
            await backend.run(ACQUIRE_FAIR, lock._acquire_keys, (ghost, 5000, 400))
            await holder.release()  # handed to the ghost, for its 0.4 s handover lease only
            assert await backend.redis.get(lock.key) == ghost.encode()
            t0 = time.monotonic()
            held = await lock.acquire(timeout=3)
            assert 0.2 < time.monotonic() - t0 < 1.5
            assert held.token == holder.token + 2
            await held.release()

    run(body)


@pytest.mark.parametrize("fair", [False, True])
def test_blocking_threads_no_lost_updates(url: str, fair: bool) -> None:
    import threading

    lock = BlockingLock(RedisLock(url, f"brmw-{fair}", ttl=5.0, fair=fair))
    shared = {"value": 0}
    order: list[int] = []

    def worker() -> None:
        for _ in range(20):
            with lock as held:
                order.append(held.token)
                value = shared["value"]
                time.sleep(0.0002)  # let other threads run between the read and the write
                shared["value"] = value + 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert shared["value"] == 8 * 20
    assert order == sorted(order) and len(set(order)) == len(order)
    # Leases acquired on the loop (contended) and released from the threads left nothing behind.
    fast = lock._fast
    assert fast is not None
    for _ in range(100):
        if fast.backend.watchdog.leases == 0 and not fast.backend.waker.active:
            break
        time.sleep(0.02)
    assert fast.backend.watchdog.leases == 0 and not fast.backend.watchdog.running
    assert not fast.backend.waker.active
    assert fast.client.keys("*") == [f"stalwart:lock:{{brmw-{fair}}}:fence".encode()]


async def _queued(backend: RedisBackend, lock: RedisLock, n: int) -> None:
    for _ in range(200):
        if await backend.redis.zcard(f"{lock.key}:q") == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{n} waiters never queued")


def test_waiter_cancelled_as_the_lock_is_handed_to_it_passes_it_on(url: str) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            lock = RedisLock(backend, "cancel-handover", fair=True, ttl=5.0)
            holder = await lock.acquire()
            first = asyncio.create_task(lock.acquire())
            await _queued(backend, lock, 1)
            second = asyncio.create_task(RedisLock(backend, "cancel-handover", fair=True).acquire())
            await _queued(backend, lock, 2)
            await holder.release()  # the server hands the lock to `first` (token + 1) ...
            first.cancel()  # ... which gives up before (or just after) it learns so
            t0 = time.monotonic()
            try:
                got = await first
            except asyncio.CancelledError:
                pass
            else:  # it had already taken the hand-over: releasing passes it on the same way
                assert got.token == holder.token + 1
                await got.release()
            held = await asyncio.wait_for(second, 3)
            # Passed on at once by the abandoning waiter, not after the 5 s hand-over lease.
            assert time.monotonic() - t0 < 1.0
            assert held.token == holder.token + 2
            await held.release()
            keys = sorted(await backend.redis.keys("*"))  # + the withdrawn tickets, expiring
            assert keys == [f"{lock.key}:fence".encode(), f"{lock.key}:qw".encode()]
            assert 0 < await backend.redis.pttl(f"{lock.key}:qw") <= lock._waiter_ttl_ms

    run(body)


@pytest.mark.parametrize("fair", [False, True])
def test_contended_acquire_registers_before_its_first_try(url: str, fair: bool) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            name = f"register-first-{fair}"
            holder = await RedisLock(backend, name, ttl=5.0).acquire()
            waiter = asyncio.create_task(RedisLock(backend, name, fair=fair).acquire())
            lock = RedisLock(backend, name, fair=fair)
            for _ in range(200):
                if backend.waker.waiting_on(lock.channel):
                    break
                await asyncio.sleep(0.01)
            assert backend.waker.waiting_on(lock.channel)
            tries = 0
            run_packed = backend.run_packed

            async def counting(script: Any, packed: bytes, **kw: Any) -> Any:
                nonlocal tries
                tries += script.name.startswith("acquire")
                return await run_packed(script, packed, **kw)

            backend.run_packed = counting  # type: ignore[method-assign,assignment]
            late = asyncio.create_task(lock.acquire(timeout=5))
            await asyncio.sleep(0.2)
            assert tries == 1, "a contended acquire subscribes first and tries once, not twice"
            await holder.release()
            for task in (waiter, late):  # one after the other: each holds until released
                held = await asyncio.wait_for(task, 5)
                assert held.token > holder.token
                await held.release()
            backend.run_packed = run_packed  # type: ignore[method-assign]
            # And when the lock is free by the time it registers, its one try takes it.
            free = await RedisLock(backend, name, fair=fair).acquire(timeout=1)
            await free.release()
            assert not backend.waker.active

    run(body)


@pytest.mark.parametrize("fair", [False, True])
def test_blocking_waiter_in_its_own_thread_times_out_and_leaves_nothing(url: str, fair: bool) -> None:
    import threading

    name = f"thread-wait-{fair}"
    lock = BlockingLock(RedisLock(url, name, ttl=5.0, fair=fair))
    holder = lock.acquire()
    got: list[Any] = []
    first = threading.Thread(target=lambda: got.append(lock.acquire(timeout=10)))
    first.start()  # the first waiter subscribes its thread group's channel on the loop
    fast = lock._fast
    assert fast is not None
    for _ in range(200):
        if fast.can_wait_here():
            break
        time.sleep(0.01)
    assert fast.can_wait_here()
    waits: list[str] = []
    wait = fast.wait

    def spy(timeout: float | None) -> Held:
        waits.append("thread")
        return wait(timeout)

    fast.wait = spy  # type: ignore[method-assign]
    t0 = time.monotonic()
    with pytest.raises(LockTimeout):
        lock.acquire(timeout=0.3)
    assert waits == ["thread"] and 0.25 < time.monotonic() - t0 < 2.0
    queue = fast.client.zrange(f"stalwart:lock:{{{name}}}:q", 0, -1)
    assert len(queue) == (1 if fair else 0), "the timed-out thread left the FIFO queue"
    # A second thread waiter is handed the lock (fair) or woken (unfair) after the first one.
    second = threading.Thread(target=lambda: got.append(lock.acquire(timeout=10)))
    second.start()
    time.sleep(0.2)
    holder.release()
    first.join(10)
    assert len(got) >= 1
    got[0].release()
    second.join(10)
    assert len(got) == 2 and got[1].token > got[0].token > holder.token
    got[1].release()
    fast.wait = wait  # type: ignore[method-assign]
    for _ in range(100):
        if fast.backend.watchdog.leases == 0 and not fast.backend.waker.active:
            break
        time.sleep(0.02)
    assert fast.backend.watchdog.leases == 0 and not fast.backend.waker.active
    base = f"stalwart:lock:{{{name}}}"
    # A fair waiter that gave up leaves its withdrawn ticket, expiring after waiter_ttl_s.
    expected = [f"{base}:fence", f"{base}:qw"] if fair else [f"{base}:fence"]
    assert sorted(fast.client.keys("*")) == [k.encode() for k in expected]
    if fair:
        assert 0 < fast.client.pttl(f"{base}:qw") <= fast.lock._waiter_ttl_ms

"""Giving up an acquisition leaves nothing behind on a real redis-server, and a task never waits
for itself on a read/write lock or semaphore.

- A cancellation that lands after the server ran the FIRST try (its reply still on the way) must
  release what that try was granted: a RedisLock, a semaphore slot, a read share, a write lock or a
  writer's intent. A proxy delays Redis's replies to open that window wide.
- A writer that gives up withdraws its intent at once (it kept new readers out for 3 x poll_max_s)
  and wakes the readers it blocked.
- Nesting a read/write lock, or a semaphore beyond its limit, in one task raises LockError.
"""

# ruff: noqa: F401, F811
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import pytest
import redis as redis_sync

from stalwart.lock import (
    Held,
    LockError,
    LockTimeout,
    RedisBackend,
    RedisLock,
    RedisRWLock,
    RedisSemaphore,
)
from tests.integration._locks import url
from tests.servers.redis import RedisServer, flush, redis_server

pytestmark = pytest.mark.integration

LIMIT_S = 10.0  # every test body is bounded: a regression fails instead of hanging the suite


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        async with asyncio.timeout(LIMIT_S):
            await body()

    asyncio.run(main())


class DelayReplies:
    """A TCP proxy to Redis: requests go through at once, replies wait ``delay_s`` (0: none), so a
    cancellation can land after a script ran on the server but before its reply is read."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.delay_s = 0.0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def _conn(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        sr, sw = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers += [cw, sw]

        async def up() -> None:
            while data := await cr.read(65536):
                sw.write(data)
            sw.close()

        async def down() -> None:
            while data := await sr.read(65536):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                cw.write(data)
            cw.close()

        await asyncio.gather(up(), down(), return_exceptions=True)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        self.delay_s = 0.0
        for w in self._writers:
            w.close()
        # Let the handlers end on their own: one still running when the loop ends is cancelled,
        # which Python 3.11's start_server logs as an error.
        pending = [t for t in self._handlers if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=2)


@pytest.fixture
def sync_redis(url: str) -> Iterator[redis_sync.Redis]:
    client = redis_sync.Redis.from_url(url)
    yield client
    client.close()


# Each case: (what to acquire through the delaying proxy, the key its grant leaves on the server).
Make = Callable[[RedisBackend], Coroutine[Any, Any, Held]]
CASES: dict[str, tuple[Make, str]] = {
    "mutex": (lambda b: RedisLock(b, "m").acquire(timeout=5), "stalwart:lock:{m}"),
    "mutex-try": (lambda b: RedisLock(b, "m").acquire(blocking=False), "stalwart:lock:{m}"),
    "mutex-fair": (lambda b: RedisLock(b, "m", fair=True).acquire(timeout=5), "stalwart:lock:{m}"),
    "semaphore": (lambda b: RedisSemaphore(b, "pool", 1).acquire(timeout=5), "stalwart:sem:{pool}"),
    "semaphore-try": (lambda b: RedisSemaphore(b, "pool", 1).acquire(blocking=False), "stalwart:sem:{pool}"),
    "read": (lambda b: RedisRWLock(b, "doc").read().acquire(timeout=5), "stalwart:rw:{doc}:r"),
    "write": (lambda b: RedisRWLock(b, "doc").write().acquire(timeout=5), "stalwart:rw:{doc}:w"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cancel_after_the_first_try_was_granted_releases_it(
    case: str, url: str, redis_server: RedisServer, sync_redis: redis_sync.Redis
) -> None:
    make, key = CASES[case]

    async def body() -> None:
        proxy = DelayReplies(redis_server.port)
        async with RedisBackend(await proxy.start()) as backend:
            # Undelayed warm-up: the scripts are loaded and the pool has an idle connection, so the
            # cancelled try is one EVALSHA that really runs on the server.
            await (await make(backend)).release()
            proxy.delay_s = 0.25
            task = asyncio.create_task(make(backend))
            for _ in range(100):  # until the server granted it (the reply is held by the proxy)
                if sync_redis.exists(key):
                    break
                await asyncio.sleep(0.01)
            assert sync_redis.exists(key), "the try never reached the server: the test proves nothing"
            task.cancel()
            proxy.delay_s = 0.0  # only the cancelled try's reply is late; the clean-up's are not
            with pytest.raises(asyncio.CancelledError):
                await task  # returns once the clean-up it shielded is done
            assert not sync_redis.exists(key), f"a cancelled {case} acquire left {key} taken"
        await proxy.close()

    run(body)


def test_cancel_after_a_writer_first_posted_its_intent_withdraws_it(
    url: str, redis_server: RedisServer, sync_redis: redis_sync.Redis
) -> None:
    intent = "stalwart:rw:{doc}:i"

    async def body() -> None:
        proxy = DelayReplies(redis_server.port)
        async with RedisBackend(url) as direct, RedisBackend(await proxy.start()) as backend:
            reader = await RedisRWLock(direct, "doc").read().acquire()
            rw = RedisRWLock(backend, "doc")
            await (await RedisRWLock(backend, "warm").write().acquire()).release()
            proxy.delay_s = 0.25
            task = asyncio.create_task(rw.write().acquire(timeout=5))
            for _ in range(100):
                if sync_redis.exists(intent):
                    break
                await asyncio.sleep(0.01)
            assert sync_redis.exists(intent), "the writer's first try never posted its intent"
            task.cancel()
            proxy.delay_s = 0.0
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not sync_redis.exists(intent), "a cancelled writer left its intent behind"
            assert not sync_redis.exists("stalwart:rw:{doc}:w")
            again = await RedisRWLock(direct, "doc").read().acquire(blocking=False)
            await again.release()
            await reader.release()
        await proxy.close()

    run(body)


def test_writer_that_times_out_withdraws_its_intent(url: str, sync_redis: redis_sync.Redis) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            rw = RedisRWLock(backend, "doc", ttl=5.0)
            reader = await rw.read().acquire()
            with pytest.raises(LockTimeout):
                await rw.write().acquire(timeout=0.2)  # gives up: no writer waits any more
            assert not sync_redis.exists("stalwart:rw:{doc}:i")
            await reader.release()
            # Nobody holds or waits for the write side: a new reader gets in at once.
            held = await rw.read().acquire(blocking=False)
            await held.release()

    run(body)


def test_writer_that_gives_up_wakes_the_readers_its_intent_blocked(url: str) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            first = await RedisRWLock(backend, "doc").read().acquire()
            # The writer's intent lives 3 x 1 s; the blocked reader sleeps up to 2 s between tries,
            # so only the abandoning writer's wake-up lets it in quickly.
            writer = asyncio.create_task(RedisRWLock(backend, "doc", poll_max_s=1.0).write().acquire())
            await asyncio.sleep(0.1)
            blocked = asyncio.create_task(RedisRWLock(backend, "doc", poll_max_s=2.0).read().acquire())
            await asyncio.sleep(0.2)
            assert not blocked.done(), "the writer's intent should hold new readers back"
            writer.cancel()
            t0 = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await writer
            second = await blocked
            assert time.monotonic() - t0 < 1.0, "the reader waited for the intent to expire"
            await second.release()
            await first.release()

    run(body)


NESTINGS = [("read", "read"), ("read", "write"), ("write", "read"), ("write", "write")]


@pytest.mark.parametrize(("outer", "inner"), NESTINGS)
def test_rwlock_nested_in_one_task_raises_instead_of_waiting_for_itself(
    outer: str, inner: str, url: str
) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            rw = RedisRWLock(backend, "doc")
            side: dict[str, Callable[[], Any]] = {"read": rw.read, "write": rw.write}
            async with side[outer]():
                with pytest.raises(LockError, match="already held by this task"):
                    async with side[inner]():
                        pass
                # Another task is not this task: a reader may join a reader.
                if outer == "read":
                    await (await asyncio.create_task(rw.read().acquire(timeout=1))).release()
            async with side[inner]():  # once left, the same task acquires it again
                pass

    run(body)


def test_semaphore_nested_past_its_limit_in_one_task_raises(url: str) -> None:
    async def body() -> None:
        async with RedisBackend(url) as backend:
            one = RedisSemaphore(backend, "one", 1)
            async with one:
                with pytest.raises(LockError, match="already holds all 1 slots"):
                    async with one:
                        pass
            two = RedisSemaphore(backend, "two", 2)
            async with two, two:  # a second slot is there to take
                with pytest.raises(LockError, match="already holds all 2 slots"):
                    await two.acquire(blocking=False)
            async with two:
                pass

    run(body)


def test_a_lease_the_drift_allowance_consumes_is_refused_typed_and_given_back(
    redis_server: RedisServer,
) -> None:
    """drift_factor 0.9 on a 10 ms TTL leaves 1 ms, less than the allowance's 2 ms floor: the
    acquire raises LockError (it was a bare AssertionError out of Held) and gives back the slot,
    share or lock the server granted, so the next acquire with a sane TTL gets it at once."""
    flush(redis_server)

    async def body() -> None:
        async with RedisBackend(redis_server.url, drift_factor=0.9) as backend:
            for make in (
                lambda ttl: RedisSemaphore(backend, "drift-sem", 1, ttl=ttl),
                lambda ttl: RedisRWLock(backend, "drift-rw", ttl=ttl).write(),
                lambda ttl: RedisRWLock(backend, "drift-rw", ttl=ttl).read(),
                lambda ttl: RedisLock(backend, "drift-mutex", ttl=ttl),
            ):
                with pytest.raises(LockError, match="no validity"):
                    await make(0.01).acquire(blocking=False)
                held = await make(10.0).acquire(blocking=False)  # nothing left behind
                assert held.remaining_s > 0.5
                await held.release()

    run(body)

"""Helpers shared by the lock integration tests: contention, and a holder frozen with SIGSTOP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from stalwart.lock import FencedResource, FencedRow, Held, RedisBackend
from tests.servers.redis import RedisServer, flush


@pytest.fixture
def url(redis_server: RedisServer) -> Iterator[str]:
    """A flushed redis-server's URL (the module using it imports the ``redis_server`` fixture)."""
    flush(redis_server)
    yield redis_server.url


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run a test's coroutine with a 60 s limit, so a hang fails instead of stalling the suite."""

    async def main() -> Any:
        async with asyncio.timeout(60):
            return await coro_fn()

    return asyncio.run(main())


GUARDED = "guarded"  # the Redis key / PostgreSQL table the fenced writes go to; row id 1


async def contend(
    make_lock: Callable[[int], Any], workers: int = 8, rounds: int = 25
) -> tuple[int, list[int]]:
    """Workers do a non-atomic read-modify-write under the lock; returns (count, tokens in order)."""
    shared = {"value": 0}
    order: list[int] = []

    async def worker(i: int) -> None:
        lock = make_lock(i)
        for _ in range(rounds):
            async with lock as held:
                held.ensure()
                order.append(held.token)
                value = shared["value"]
                await asyncio.sleep(0)  # let every other worker run between the read and the write
                await asyncio.sleep(0.0005)
                shared["value"] = value + 1

    await asyncio.gather(*(worker(i) for i in range(workers)))
    return shared["value"], order


@dataclass(frozen=True, slots=True)
class Fence:
    """The guarded resource: a Redis key (``FencedResource``) or a PostgreSQL row (``FencedRow``,
    table ``guarded(id int primary key, note text, fence bigint)``, row 1)."""

    kind: str  # "redis" or "pg"
    where: str  # a redis:// URL or a libpq DSN

    async def write(self, token: int, note: str) -> None:
        """The fenced write; raises StaleToken when a higher token already wrote."""
        if self.kind == "redis":
            async with RedisBackend(self.where) as backend:
                await FencedResource(backend, GUARDED).write(token, note.encode())
            return
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.where, autocommit=True) as conn:
            await FencedRow(GUARDED).update(conn, 1, token, {"note": note})

    async def read(self) -> tuple[int, str] | None:
        if self.kind == "redis":
            async with RedisBackend(self.where) as backend:
                got = await FencedResource(backend, GUARDED).read()
            return None if got is None else (got[0], got[1].decode())
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.where, autocommit=True) as conn:
            cur = await conn.execute("SELECT fence, note FROM guarded WHERE id = 1")
            row = await cur.fetchone()
        return None if row is None else (int(row[0]), str(row[1]))


async def _make_lock(stack: contextlib.AsyncExitStack, kind: str, target: Any, ttl: float) -> Any:
    from stalwart.lock import RedisLock, Redlock, RedlockClient, ZooKeeperClient, ZooKeeperLock

    if kind == "redis":
        backend = await stack.enter_async_context(RedisBackend(target))
        return RedisLock(backend, "paused", ttl=ttl)
    if kind == "redlock":
        client = await stack.enter_async_context(RedlockClient(target))
        return Redlock(client, "paused", ttl=ttl)
    zk = await stack.enter_async_context(ZooKeeperClient(target, session_timeout_s=ttl))
    return ZooKeeperLock(zk, "paused")


async def _holder(kind: str, target: Any, ttl: float, fence: Fence) -> None:
    """In the child: acquire, check the lease, report the token, then wait for "write" on stdin
    and write with the token held, exactly as a holder paused between check and act would."""
    from stalwart.lock import StaleToken

    async with contextlib.AsyncExitStack() as stack:
        held = await (await _make_lock(stack, kind, target, ttl)).acquire()
        held.ensure()
        print(json.dumps({"token": held.token}), flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        assert line.strip() == "write"
        try:
            await fence.write(held.token, "from the paused holder")
            outcome = "accepted"
        except StaleToken as exc:
            outcome = f"rejected: {exc}"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(held.lost.wait(), 10)
        report = {"write": outcome, "lost": held.lost.is_set(), "reason": held.lost_reason}
        print(json.dumps(report), flush=True)
        with contextlib.suppress(Exception):
            await held.release()


NextHolder = Callable[[contextlib.AsyncExitStack], Awaitable[Held]]


def freeze_and_fence(kind: str, target: Any, ttl: float, fence: Fence, next_holder: NextHolder) -> None:
    """A holder (a child process, ``kind`` lock on ``target``) is frozen with SIGSTOP past its
    lease; ``next_holder`` takes the lock and writes through ``fence``; the holder is resumed
    and writes with its old token. Asserts: a higher token for the next holder, the old write
    rejected, the old holder's ``held.lost`` set, the resource keeping the next holder's write.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    code = "import sys, json, asyncio; from tests.integration._locks import child_main; child_main()"
    args = [kind, json.dumps(target), str(ttl), fence.kind, fence.where]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        first = json.loads(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGSTOP)

        async def take_over() -> int:
            async with contextlib.AsyncExitStack() as stack:
                held = await next_holder(stack)
                await fence.write(held.token, "from the next holder")
                await held.release()
                return held.token

        second = asyncio.run(asyncio.wait_for(take_over(), 60))
        assert second > first["token"]
        os.kill(proc.pid, signal.SIGCONT)
        proc.stdin.write("write\n")
        proc.stdin.flush()
        report = json.loads(proc.stdout.readline())
        assert report["write"].startswith("rejected"), report
        assert report["lost"] is True, report
        assert asyncio.run(fence.read()) == (second, "from the next holder")
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait(10)


def child_main() -> None:
    kind, target, ttl, fence_kind, fence_where = sys.argv[1:6]
    asyncio.run(_holder(kind, json.loads(target), float(ttl), Fence(fence_kind, fence_where)))


# -- blocking threads in several processes ------------------------------------------------------


def spawn(main: str, args: list[str]) -> subprocess.Popen[str]:
    """A child ``python -c`` running ``main()`` of this module with ``args`` as its argv (stdin
    and stdout are text pipes)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    code = f"from tests.integration._locks import {main}; {main}()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )


def contend_threads(url: str, name: str, tag: str, threads: int, rounds: int, fair: bool = True) -> None:
    """``threads`` threads of this process take the blocking lock ``name`` ``rounds`` times
    each; under it they do a non-atomic read-modify-write of the key ``count`` and append
    ``<token> <tag>`` to the list ``order`` (so the list's order is the order of the holders)."""
    import threading

    import redis as redis_sync

    from stalwart.lock import BlockingLock, RedisLock

    lock = BlockingLock(RedisLock(url, name, ttl=10.0, fair=fair))
    client = redis_sync.Redis.from_url(url)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(rounds):
                with lock as held:
                    held.ensure()
                    value = int(client.get("count") or 0)
                    client.rpush("order", f"{held.token} {tag}")
                    client.set("count", value + 1)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    client.close()
    if errors:
        raise errors[0]


def child_threads_main() -> None:
    """In a child: wait for "go" on stdin, run contend_threads, print "done"."""
    url, name, tag, threads, rounds, fair = sys.argv[1:7]
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"
    contend_threads(url, name, tag, int(threads), int(rounds), fair == "fair")
    print("done", flush=True)


def child_holder_main() -> None:
    """In a child: take the blocking fair lock (ttl argv[3]), print its token, wait for "release"
    on stdin, release it and print whether the lease was lost (and ensure()'s verdict)."""
    from stalwart.lock import BlockingLock, LockLost, RedisLock

    url, name, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
    held = BlockingLock(RedisLock(url, name, ttl=ttl, fair=True)).acquire(timeout=10)
    print(json.dumps({"token": held.token}), flush=True)
    assert sys.stdin.readline().strip() == "release"
    try:
        held.ensure()
        ensured = "ok"
    except LockLost as exc:
        ensured = f"lost: {exc}"
    held.release()
    print(json.dumps({"lost": held.lost.is_set(), "ensure": ensured}), flush=True)

"""The blocking RedisLock across os.fork(): a child never talks on its parent's connections, and
its blocking acquires work (a loop thread of its own)."""

# ruff: noqa: F401, F811
from __future__ import annotations

import asyncio
import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from stalwart.lock import (
    BlockingLock,
    LockError,
    LockTimeout,
    NotAcquired,
    RedisLock,
    Redlock,
    RedlockClient,
    close_shared,
)
from stalwart.lock._resp import pack
from stalwart.lock._syncresp import SyncPool
from tests.integration._locks import url
from tests.servers.redis import redis_server

pytestmark = pytest.mark.integration


def _fork(child: Callable[[int], str]) -> tuple[int, int]:
    """Fork; the child runs ``child(write_fd)``, writes its result to the pipe and exits at once
    (os._exit: no clean-up of the parent's objects). Returns (pid, read end) in the parent."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            result = child(w)
        except BaseException as exc:  # report anything, never return into pytest in the child
            result = f"child raised {exc!r}"
        finally:
            try:
                os.write(w, b"=" + result.encode()[:500])
            finally:
                os._exit(0)
    os.close(w)
    return pid, r


def _result(pid: int, r: int, limit_s: float = 10.0) -> str:
    """The child's result; a child still running after ``limit_s`` is killed (a hang fails)."""
    deadline = time.monotonic() + limit_s
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            pytest.fail(f"the forked child still ran after {limit_s} s")
        time.sleep(0.01)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    return data.decode().rpartition("=")[2]


def test_a_forked_child_does_not_share_the_pooled_connections(url: str) -> None:
    """The child sends on the pool and reads its reply only after the parent sent too: on a
    shared socket the parent reads the child's reply as its own."""
    pool = SyncPool(url, op_timeout_s=2.0, connect_timeout_s=2.0)
    try:
        assert pool.call(pack(("PING",))) == b"PONG"  # one idle connection, as after a lock call
        sent_r, sent_w = os.pipe()

        def child(w: int) -> str:
            os.close(sent_r)
            real_read = pool._read

            def late_read(sock: object) -> object:
                os.write(sent_w, b"s")  # sent: now the parent sends before we read
                time.sleep(0.3)
                return real_read(sock)  # type: ignore[arg-type]

            pool._read = late_read  # type: ignore[method-assign]
            return repr(pool.call(pack(("ECHO", "child"))))

        pid, r = _fork(child)
        os.close(sent_w)
        assert select.select([sent_r], [], [], 5.0)[0] and os.read(sent_r, 1) == b"s"
        os.close(sent_r)
        parent = pool.call(pack(("ECHO", "parent")))
        assert _result(pid, r) == repr(b"child")
        assert parent == b"parent"
    finally:
        pool.close()


def test_a_forked_child_acquires_on_its_own_connections_and_loop(url: str) -> None:
    """The parent has used the fast path (idle connections, its loop thread) and holds the lock:
    the child's contended acquire times out as asked instead of hanging on the parent's loop,
    which has no thread in the child; after the parent releases, the child gets the lock with a
    newer token, and the parent's lock keeps working."""
    lock = BlockingLock(RedisLock(url, "forked", ttl=5.0))
    held = lock.acquire()
    first = held.token
    release_r, release_w = os.pipe()

    def child(w: int) -> str:
        os.close(release_w)
        t0 = time.monotonic()
        try:
            lock.acquire(timeout=0.5)
            return "acquired while the parent held it"
        except LockTimeout:
            pass
        if time.monotonic() - t0 > 3.0:
            return "timed out late"
        os.write(w, b"t")
        assert os.read(release_r, 1) == b"r"
        mine = lock.acquire(timeout=5)
        token = mine.token
        mine.release()
        return f"ok {token}"

    pid, r = _fork(child)
    os.close(release_r)
    ready, _, _ = select.select([r], [], [], 5.0)
    if not ready or os.read(r, 1) != b"t":
        pytest.fail(f"the child's acquire did not time out: {_result(pid, r, limit_s=0.0)}")
    held.release()
    os.write(release_w, b"r")
    os.close(release_w)
    result = _result(pid, r)
    assert result.startswith("ok "), result
    assert int(result.split()[1]) > first
    again = lock.acquire(timeout=5)  # the parent's loop, connections and watchdog still work
    assert again.token > int(result.split()[1])
    again.ensure()
    again.release()


@pytest.mark.parametrize("blocking", [True, False])
def test_a_forked_child_releasing_an_inherited_handle_leaves_the_parents_lock(
    url: str, blocking: bool
) -> None:
    """A handle held across fork() (a ``with lock:`` block unwinding in the child): the child's
    release only forgets its copy; the owner string matches, so sending it would have deleted the
    parent's key and let a third client in while the parent is still in its critical section."""
    if blocking:
        lock = BlockingLock(RedisLock(url, "forked-held", ttl=5.0))
        held = lock.acquire()

        def child(w: int) -> str:
            held.release()
            return "released"

        pid, r = _fork(child)
        assert _result(pid, r) == "released"
        other = BlockingLock(RedisLock(url, "forked-held", ttl=5.0))
        with pytest.raises(NotAcquired):
            other.acquire(blocking=False)
        held.ensure()
        held.release()
        other.acquire(blocking=False).release()  # the parent's own release did free it
        return

    async def hold() -> tuple[Any, RedisLock]:
        lock = RedisLock(url, "forked-held-async", ttl=5.0, auto_renew=False)
        return await lock.acquire(), lock

    loop = asyncio.new_event_loop()
    try:
        held_async, _ = loop.run_until_complete(hold())

        def child_async(w: int) -> str:
            asyncio.set_event_loop(None)
            asyncio.run(held_async.release())
            return "released"

        pid, r = _fork(child_async)
        assert _result(pid, r) == "released"
        with pytest.raises(NotAcquired):
            loop.run_until_complete(RedisLock(url, "forked-held-async", ttl=5.0).acquire(blocking=False))
        held_async.ensure()
        loop.run_until_complete(held_async.release())
    finally:
        loop.run_until_complete(close_shared())
        loop.close()


def test_a_redlock_client_from_before_fork_refuses_in_the_child(url: str) -> None:
    """A RedlockClient made in the parent holds the parent's sockets and timers: used in a child
    it raises at once (it hung before, and its replies could reach the other process)."""
    client = RedlockClient([url])
    loop = asyncio.new_event_loop()
    try:
        held = loop.run_until_complete(Redlock(client, "forked-redlock", ttl=5.0).acquire())

        def child(w: int) -> str:
            asyncio.set_event_loop(None)
            try:
                asyncio.run(Redlock(client, "forked-redlock-2", ttl=5.0).acquire(blocking=False))
            except LockError as exc:
                return f"refused: {exc}"
            return "used the parent's client"

        pid, r = _fork(child)
        result = _result(pid, r)
        assert result.startswith("refused") and "fork" in result, result
        held.ensure()
        loop.run_until_complete(held.release())
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()

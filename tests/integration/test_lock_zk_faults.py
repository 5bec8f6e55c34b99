"""ZooKeeperLock under faults, against a real ZooKeeper: a reconnecting session never blocks the
event loop, an acquisition that gives up leaves no lock node behind, ``timeout`` bounds the whole
acquisition, and a task cannot queue behind its own node.

The server is paused (SIGSTOP) to make the faults: a paused server accepts bytes but answers
nothing, so a create can be sent and then answered (or run) after its acquirer gave up.
"""

# ruff: noqa: F401, F811
from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from stalwart.lock import (
    BackendUnavailable,
    LockError,
    LockTimeout,
    NotAcquired,
    ZooKeeperClient,
    ZooKeeperLock,
)
from tests.servers._proc import free_port
from tests.servers.zookeeper import ZooKeeperServer, zookeeper_server

pytestmark = pytest.mark.integration


def run(coro_fn: Callable[[], Awaitable[Any]], limit_s: float = 30.0) -> Any:
    async def main() -> Any:
        async with asyncio.timeout(limit_s):
            return await coro_fn()

    return asyncio.run(main())


async def children(client: ZooKeeperClient, name: str) -> list[str]:
    found: list[str] = await client.call(client.kazoo.get_children_async(f"{client.root}/{name}"), "ls")
    return found


async def until_connected(client: ZooKeeperClient, limit_s: float = 15.0) -> None:
    async with asyncio.timeout(limit_s):
        while not client.kazoo.connected:
            await asyncio.sleep(0.05)


async def until_no_children(client: ZooKeeperClient, name: str, limit_s: float = 3.0) -> list[str]:
    """The lock's children once they are gone, or what is left after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while (left := await children(client, name)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return left


def test_acquire_while_reconnecting_never_blocks_the_loop(zookeeper_server: ZooKeeperServer) -> None:
    """After a connection blip kazoo reconnects in its own thread; an acquire (and a start) then
    waits for it, bounded, and the event loop keeps running meanwhile. (It called kazoo's
    start_async on the loop, which joins kazoo's connection thread: the loop froze for good.)"""
    report: dict[str, Any] = {}

    async def main() -> None:
        client = ZooKeeperClient(
            zookeeper_server.hosts, session_timeout_s=4.0, connect_timeout_s=1.0, op_timeout_s=1.0
        )
        async with client:
            held = await ZooKeeperLock(client, "zk-freeze").acquire()
            zookeeper_server.pause()
            try:
                async with asyncio.timeout(10):
                    await held.lost.wait()  # SUSPENDED: kazoo now retries the connection
                ticks = 0

                async def tick() -> None:
                    nonlocal ticks
                    while True:
                        await asyncio.sleep(0.01)
                        ticks += 1

                ticker = asyncio.create_task(tick())
                t0 = time.monotonic()
                with pytest.raises(LockTimeout):
                    await ZooKeeperLock(client, "zk-freeze-other").acquire(timeout=0.5)
                report["acquire_s"] = time.monotonic() - t0
                t0 = time.monotonic()
                with pytest.raises(BackendUnavailable):
                    await client.start()  # bounded by connect_timeout_s
                report["start_s"] = time.monotonic() - t0
                ticker.cancel()
                report["ticks"] = ticks
            finally:
                zookeeper_server.resume()
            await until_connected(client)  # kazoo reconnected by itself
            other = await ZooKeeperLock(client, "zk-freeze-other").acquire(timeout=5)
            await other.release()
            await held.release()
        report["done"] = True

    def target() -> None:
        try:
            run(main)
        except BaseException as exc:  # reported to the test's thread
            report["error"] = exc

    # The loop runs in its own thread: a frozen loop fails the test instead of hanging pytest.
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(30)
    try:
        if thread.is_alive():
            assert thread.ident is not None
            stack = "".join(traceback.format_stack(sys._current_frames()[thread.ident])[-6:])
            pytest.fail(f"the event loop thread is blocked; its stack:\n{stack}")
        if "error" in report:
            raise report["error"]
        assert report.get("done")
        assert report["acquire_s"] < 1.5 and report["start_s"] < 2.0, report
        assert report["ticks"] >= 20, report  # the loop ran all along (10 ms ticks)
    finally:
        zookeeper_server.resume()


@pytest.mark.parametrize("how", ["cancel", "acquire_timeout", "op_timeout", "connection_lost"])
def test_an_abandoned_acquire_leaves_no_lock_node(zookeeper_server: ZooKeeperServer, how: str) -> None:
    """Whatever ends an acquisition before it returns, its node goes: also when kazoo creates it
    after the acquirer gave up (it keeps the request), and when the create's connection dropped
    (the server may still run it). A node left behind blocked the lock for the session's life."""
    name = f"zk-abandon-{how}"

    async def body() -> None:
        settings = {
            "cancel": {},
            "acquire_timeout": {"session_timeout_s": 10.0},
            "op_timeout": {"session_timeout_s": 10.0, "op_timeout_s": 0.3},
            "connection_lost": {"session_timeout_s": 4.0, "op_timeout_s": 0.5},
        }[how]
        a = ZooKeeperClient(zookeeper_server.hosts, **settings)
        async with a, ZooKeeperClient(zookeeper_server.hosts) as b:
            await a.call(a.kazoo.ensure_path_async(f"{a.root}/{name}"), "mkdir")
            if how == "cancel":
                task = asyncio.create_task(ZooKeeperLock(a, name).acquire(timeout=5))
                await asyncio.sleep(0)  # the create is sent; its reply not read yet
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            else:
                zookeeper_server.pause()  # the create is sent, and answered (or run) later
                try:
                    t0 = time.monotonic()
                    if how == "acquire_timeout":
                        with pytest.raises(LockTimeout):  # the timeout covers the create too
                            async with asyncio.timeout(2):
                                await ZooKeeperLock(a, name).acquire(timeout=0.3)
                        assert time.monotonic() - t0 < 1.0
                    else:
                        with pytest.raises(BackendUnavailable):
                            await ZooKeeperLock(a, name).acquire(timeout=5)
                    if how == "connection_lost":
                        async with asyncio.timeout(10):  # kazoo gave up the connection
                            while a.kazoo.client_state != "CONNECTING":
                                await asyncio.sleep(0.05)
                finally:
                    zookeeper_server.resume()
                await until_connected(a)
                await until_connected(b)  # b lost its connection to the paused server too
            assert await until_no_children(b, name) == []
            held = await ZooKeeperLock(b, name).acquire(timeout=2)
            await held.release()

    run(body)


def test_the_acquire_timeout_covers_the_session_start() -> None:
    """``timeout`` bounds the whole acquisition, the wait for a session included (it waited for
    connect_timeout_s, 15 s by default, whatever the timeout)."""

    async def body() -> None:
        client = ZooKeeperClient(f"127.0.0.1:{free_port()}")  # nothing listens there
        try:
            for _ in range(2):  # the second finds kazoo still retrying: it waits, bounded
                t0 = time.monotonic()
                with pytest.raises(LockTimeout):
                    async with asyncio.timeout(3):
                        await ZooKeeperLock(client, "x").acquire(timeout=0.3)
                assert time.monotonic() - t0 < 1.0
        finally:
            async with asyncio.timeout(10):
                await client.aclose()

    run(body)


def test_the_same_task_cannot_acquire_its_own_lock_again(zookeeper_server: ZooKeeperServer) -> None:
    """Inside ``async with lock`` the task's own node is first: a second acquire on the same
    lock raises LockError (as RedisLock does) instead of waiting on itself forever."""

    async def body() -> None:
        async with ZooKeeperClient(zookeeper_server.hosts) as client:
            lock = ZooKeeperLock(client, "zk-reenter")
            async with lock:
                for blocking in (True, False):
                    with pytest.raises(LockError) as info:
                        async with asyncio.timeout(2):
                            await lock.acquire(blocking=blocking)
                    assert not isinstance(info.value, NotAcquired), info.value
                with pytest.raises(LockError):
                    async with asyncio.timeout(2), lock:
                        pass
                assert len(await children(client, "zk-reenter")) == 1
            assert await children(client, "zk-reenter") == []
            # Another task may wait for it as usual, and the same task may take it again.
            async with lock:
                waiter = asyncio.create_task(ZooKeeperLock(client, "zk-reenter").acquire(timeout=5))
                await asyncio.sleep(0.2)
                assert not waiter.done()
            await (await waiter).release()

    run(body)


def test_a_deleted_lock_parent_is_a_typed_error_for_the_waiter(zookeeper_server: ZooKeeperServer) -> None:
    """Someone deletes the lock's parent znode (and with it every lock node) under a waiter: the
    waiter's next listing finds no parent. That was a raw kazoo NoNodeError; it is the typed
    BackendUnavailable ("our lock node vanished") like any other loss of the waiter's node."""

    async def main() -> None:
        async with ZooKeeperClient(zookeeper_server.hosts) as a, ZooKeeperClient(zookeeper_server.hosts) as b:
            await ZooKeeperLock(a, "zk-parent").acquire()
            waiter = asyncio.ensure_future(ZooKeeperLock(b, "zk-parent").acquire())
            async with asyncio.timeout(5):
                while len(await children(a, "zk-parent")) < 2:
                    await asyncio.sleep(0.02)
            # Every lock node and the parent in one multi-op: the waiter's watch fires only once
            # the parent is gone, so its next listing is the one that finds no parent.
            parent = f"{a.root}/zk-parent"
            txn = a.kazoo.transaction()
            for child in await children(a, "zk-parent"):
                txn.delete(f"{parent}/{child}")
            txn.delete(parent)
            await a.call(txn.commit_async(), "multi")
            with pytest.raises(BackendUnavailable, match="vanished"):
                await asyncio.wait_for(waiter, 5)

    run(main)

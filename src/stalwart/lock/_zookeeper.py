"""ZooKeeperLock: ephemeral sequential znodes through kazoo, bridged to asyncio.

Acquire creates ``<root>/<name>/lock-NNNNNNNNNN`` (ephemeral, sequential) and holds the lock when
its node has the lowest sequence; otherwise it watches ONLY its predecessor (no herd on release).
The fencing token is the node's ``czxid``: ZooKeeper's transaction id, totally ordered by the
ensemble's consensus, so tokens strictly increase in acquisition order.

There is no TTL: the lease is the ZooKeeper session. When the connection is SUSPENDED the lock may
or may not still be ours, and when the session is LOST it is not: both set ``held.lost`` (safe
side). A holder paused longer than the session timeout loses its session and its node.

Kazoo is blocking and thread-based. Nothing here blocks the event loop: every request uses
kazoo's ``*_async`` call, whose completion callback (on kazoo's thread) is handed to the loop
with ``call_soon_threadsafe``; watches and state changes cross the same way. Every request is
bounded by ``op_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.protocol.states import KazooState

from stalwart.errors import ConfigError
from stalwart.lock._errors import BackendUnavailable, LockError, LockTimeout, NotAcquired
from stalwart.lock._held import Held, LostCallback
from stalwart.lock._redis import MAX_NAME_BYTES, _LockBase, new_owner

_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, ZooKeeperClient]] = (
    weakref.WeakKeyDictionary()
)
_PREFIX = "lock-"


class ZooKeeperClient:
    """One kazoo session shared by the ZooKeeper locks of an event loop."""

    def __init__(
        self,
        hosts: str,
        *,
        session_timeout_s: float = 10.0,
        connect_timeout_s: float = 15.0,
        op_timeout_s: float = 5.0,
        root: str = "/stalwart/locks",
    ) -> None:
        if session_timeout_s <= 0 or connect_timeout_s <= 0 or op_timeout_s <= 0:
            raise ConfigError("timeouts must be positive")
        if not root.startswith("/") or root.endswith("/"):
            raise ConfigError(f"root must be an absolute znode path without a trailing slash: {root!r}")
        self.hosts = hosts
        self.root = root
        self.op_timeout_s = op_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.kazoo = KazooClient(hosts=hosts, timeout=session_timeout_s)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: set[Held] = set()
        self._state_events: set[asyncio.Event] = set()
        self._start_lock = asyncio.Lock()
        self.closed = False

    async def __aenter__(self) -> ZooKeeperClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        async with self._start_lock:
            if self.kazoo.connected:
                return
            self._loop = asyncio.get_running_loop()
            self.kazoo.add_listener(self._on_state)
            live = self.kazoo.start_async()
            # start_async returns a threading.Event: wait for it off the loop, bounded.
            ok = await self._loop.run_in_executor(None, live.wait, self.connect_timeout_s)
            if not ok:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.op_timeout_s):
                        await self._loop.run_in_executor(None, self._stop_kazoo)
                raise BackendUnavailable(
                    f"ZooKeeper {self.hosts}: no session within {self.connect_timeout_s} s"
                )

    def _stop_kazoo(self) -> None:
        with contextlib.suppress(KazooException):
            self.kazoo.stop()
        with contextlib.suppress(KazooException):
            self.kazoo.close()

    async def aclose(self) -> None:
        self.closed = True
        for held in list(self._held):
            held._mark_lost("the ZooKeeper client was closed")
        self._held.clear()
        # kazoo's stop joins its threads: off the loop, and not waited on forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.op_timeout_s):
                await asyncio.get_running_loop().run_in_executor(None, self._stop_kazoo)

    def _on_state(self, state: str) -> None:
        """Kazoo's thread: hand state changes to the event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._state_changed, state)

    def _state_changed(self, state: str) -> None:
        if state in (KazooState.SUSPENDED, KazooState.LOST):
            what = "suspended (connection lost)" if state == KazooState.SUSPENDED else "lost (expired)"
            for held in list(self._held):
                held._mark_lost(f"ZooKeeper session {what}")
            self._held.clear()
        for event in self._state_events:
            event.set()

    async def call(self, async_result: Any, what: str) -> Any:
        """Await a kazoo IAsyncResult from the loop, bounded by ``op_timeout_s``."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any) -> None:
            if fut.done():
                return
            exc = result.exception
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result.value)

        def done(result: Any) -> None:  # kazoo's thread
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result)

        async_result.rawlink(done)
        try:
            async with asyncio.timeout(self.op_timeout_s):
                return await fut
        except TimeoutError:
            raise BackendUnavailable(f"ZooKeeper {what}: no answer within {self.op_timeout_s} s") from None
        except NoNodeError:
            raise
        except KazooException as exc:
            raise BackendUnavailable(f"ZooKeeper {what} failed: {exc!r}") from exc


def shared_zk_client(hosts: str) -> ZooKeeperClient:
    per_loop = _SHARED.setdefault(asyncio.get_running_loop(), {})
    client = per_loop.get(hosts)
    if client is None or client.closed:
        client = per_loop[hosts] = ZooKeeperClient(hosts)
    return client


async def close_shared_zk() -> None:
    for client in _SHARED.pop(asyncio.get_running_loop(), {}).values():
        await client.aclose()


def _sequence(node: str) -> int:
    return int(node[len(_PREFIX) :])


class ZooKeeperLock(_LockBase):
    """A mutex on ZooKeeper. ``held.token`` is the lock node's czxid; the lease is the session."""

    def __init__(
        self, target: str | ZooKeeperClient, name: str, *, on_lost: LostCallback | None = None
    ) -> None:
        super().__init__("", on_lost, False)
        if not name or "/" in name or len(name.encode()) > MAX_NAME_BYTES or name in (".", ".."):
            raise ConfigError(f"a ZooKeeper lock name must be a non-empty string without '/': {name!r}")
        self._zk_target = target
        self.name = name

    async def client(self) -> ZooKeeperClient:
        t = self._zk_target
        client = t if isinstance(t, ZooKeeperClient) else shared_zk_client(t)
        await client.start()
        return client

    async def acquire(self, timeout: float | None = None, *, blocking: bool = True) -> Held:
        client = await self.client()
        kz = client.kazoo
        parent = f"{client.root}/{self.name}"
        owner = new_owner()
        sent_at = time.monotonic()
        created = kz.create_async(
            f"{parent}/{_PREFIX}",
            owner.encode(),
            ephemeral=True,
            sequence=True,
            makepath=True,
            include_data=True,
        )
        path, stat = await client.call(created, "create")
        try:
            async with asyncio.timeout(timeout):
                await self._wait_turn(client, parent, path.rsplit("/", 1)[1], blocking)
        except BaseException as exc:
            with contextlib.suppress(LockError, NoNodeError):
                await asyncio.shield(client.call(kz.delete_async(path), "delete"))
            if isinstance(exc, TimeoutError):
                raise LockTimeout(self.name, f"not acquired within {timeout} s") from None
            raise

        async def release(held: Held) -> None:
            client._held.discard(held)
            with contextlib.suppress(NoNodeError):  # gone with the session: nothing to delete
                await client.call(kz.delete_async(path), "delete")

        held = Held(
            name=self.name,
            owner=owner,
            token=stat.czxid,
            ttl_s=math.inf,
            sent_at=sent_at,
            drift_s=0.0,
            releaser=release,
            on_lost=self._on_lost,
            kind="zookeeper",
            renew_data=path,
        )
        if not kz.connected:
            held._mark_lost("ZooKeeper connection dropped during acquisition")
        client._held.add(held)
        return held

    async def _wait_turn(self, client: ZooKeeperClient, parent: str, me: str, blocking: bool) -> None:
        kz = client.kazoo
        loop = asyncio.get_running_loop()
        while True:
            children = await client.call(kz.get_children_async(parent), "get_children")
            ordered = sorted((c for c in children if c.startswith(_PREFIX)), key=_sequence)
            if me not in ordered:
                raise BackendUnavailable("our lock node vanished: the ZooKeeper session expired")
            index = ordered.index(me)
            if index == 0:
                return
            if not blocking:
                raise NotAcquired(self.name)
            changed = asyncio.Event()

            def watch(_event: object, changed: asyncio.Event = changed) -> None:  # kazoo's thread
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(changed.set)

            client._state_events.add(changed)
            try:
                # Watch only the predecessor: each release wakes exactly one waiter.
                stat = await client.call(
                    kz.exists_async(f"{parent}/{ordered[index - 1]}", watch=watch), "exists"
                )
                if stat is not None:
                    await changed.wait()
            finally:
                client._state_events.discard(changed)


__all__ = ["ZooKeeperClient", "ZooKeeperLock", "close_shared_zk", "shared_zk_client"]

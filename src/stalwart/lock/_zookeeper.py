"""ZooKeeperLock: ephemeral sequential znodes through kazoo, bridged to asyncio.

Acquire creates ``<root>/<name>/lock-<owner>-NNNNNNNNNN`` (ephemeral, sequential) and holds the
lock when its node has the lowest sequence; otherwise it watches ONLY its predecessor (no herd on
release). An acquisition that gives up deletes its node, even one whose create completes later.
The fencing token is the node's ``czxid``: ZooKeeper's transaction id, totally ordered by the
ensemble's consensus, so tokens strictly increase in acquisition order.

There is no TTL: the lease is the ZooKeeper session. When the connection is SUSPENDED the lock may
or may not still be ours, and when the session is LOST it is not: both set ``held.lost`` (safe
side). A holder paused longer than the session timeout loses its session and its node.

Kazoo is blocking and thread-based. Nothing here blocks the event loop: every request uses
kazoo's ``*_async`` call, whose completion callback (on kazoo's thread) is handed to the loop
with ``call_soon_threadsafe``; watches and state changes cross the same way. Every request is
bounded by ``op_timeout_s``. kazoo's blocking start and stop run in a worker thread, and only when
kazoo is stopped is it started: a reconnecting kazoo is waited for, bounded by
``connect_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, KazooException, NoNodeError
from kazoo.protocol.states import KazooState

from stalwart.errors import ConfigError
from stalwart.lock._errors import BackendUnavailable, LockError, LockTimeout, NotAcquired
from stalwart.lock._held import Held, LostCallback
from stalwart.lock._redis import MAX_NAME_BYTES, _LockBase, new_owner

_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, ZooKeeperClient]] = (
    weakref.WeakKeyDictionary()
)
_PREFIX = "lock-"
# How often an abandoned acquisition lists its lock's children again, looking for a node whose
# create lost its connection, when the listing itself loses its connection.
_CLEANUP_LISTINGS = 3


def _capture(fn: Callable[[], object]) -> BaseException | None:
    """Run ``fn`` (in a worker thread) and hand back its exception instead of raising it, so a
    start or stop nobody waits for any more is not logged as "exception never retrieved"."""
    try:
        fn()
    except Exception as exc:
        return exc
    return None


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
        # The kazoo start or stop running in a worker thread (see _run_blocking).
        self._blocking: asyncio.Future[BaseException | None] | None = None
        self.closed = False

    async def __aenter__(self) -> ZooKeeperClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Have a live session, or raise :class:`BackendUnavailable` within ``connect_timeout_s``.

        kazoo is (re)started only when it is stopped, and in a worker thread: its ``start_async``
        first joins the previous connection's thread with no time limit, so calling it while
        kazoo reconnects (SUSPENDED) would freeze the event loop. A reconnecting kazoo is only
        waited for: it keeps its session, and with it the nodes of the locks it holds.
        """
        if self.kazoo.connected:
            return
        self._loop = asyncio.get_running_loop()
        launched = False
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                async with self._start_lock:
                    await self._settle()
                    if not self._kazoo_running():
                        self.kazoo.add_listener(self._on_state)
                        launched = True
                        await self._run_blocking(self.kazoo.start_async, "start")
                    await self._until_connected()
        except TimeoutError:
            if launched:
                # It never had a session: stop it retrying in the background (bounded).
                with contextlib.suppress(TimeoutError, BackendUnavailable):
                    async with asyncio.timeout(self.op_timeout_s):
                        await self._run_blocking(self._stop_kazoo, "stop")
            raise BackendUnavailable(
                f"ZooKeeper {self.hosts}: no session within {self.connect_timeout_s} s"
            ) from None

    def _kazoo_running(self) -> bool:
        """Whether kazoo's connection thread is alive: connected, or retrying to connect.

        kazoo has no public flag for this (``connected`` is False while it reconnects), so this
        reads kazoo 2.x's connection routine: None once stopped, a dead thread if its connection
        loop gave up on its own (authentication failed), which a start may then replace.
        """
        routine = self.kazoo._connection._connection_routine
        return routine is not None and bool(routine.is_alive())

    async def _until_connected(self) -> None:
        """Wait on the loop for kazoo's session; the caller bounds the wait."""
        while not self.kazoo.connected:
            changed = asyncio.Event()
            self._state_events.add(changed)
            try:
                if self.kazoo.connected:
                    return
                # Woken by kazoo's next state change (CONNECTED is reported after `connected`
                # turns True); the short poll only guards against a change this missed.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await changed.wait()
            finally:
                self._state_events.discard(changed)

    async def _settle(self) -> None:
        """Wait for a kazoo start or stop still running in a worker thread (caller-bounded)."""
        while self._blocking is not None and not self._blocking.done():
            await asyncio.shield(self._blocking)

    async def _run_blocking(self, fn: Callable[[], object], what: str) -> None:
        """Run one blocking kazoo start or stop in a worker thread, one at a time.

        Never on the loop: both join kazoo's threads. One at a time: kazoo's start and stop
        must not overlap. A caller that gives up (timeout, cancel) leaves it running there, and
        the next caller waits for it first.
        """
        await self._settle()
        fut = self._blocking = asyncio.get_running_loop().run_in_executor(None, _capture, fn)
        exc = await asyncio.shield(fut)
        if exc is not None:
            raise BackendUnavailable(f"ZooKeeper {self.hosts}: {what} failed: {exc!r}") from exc

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
        with contextlib.suppress(TimeoutError, BackendUnavailable):
            async with asyncio.timeout(self.op_timeout_s):
                await self._run_blocking(self._stop_kazoo, "stop")

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
    # ZooKeeper appends the sequence as 10 characters (%010d) to the name the create gave.
    return int(node[-10:])


class _CreateGuard:
    """Deletes the lock node of an abandoned acquisition, whenever its create completes.

    kazoo keeps a request after the caller stopped waiting for it (cancelled, timed out), so
    the create may succeed after the acquirer gave up; its ephemeral node would then sit in the
    queue for the rest of the session and block every other acquirer. Its path is known only
    once kazoo answers, so the create's completion (on kazoo's thread) and the giving up (on the
    loop) meet here under a thread lock: whichever comes second issues the delete. A create
    that failed with a lost connection may still have run on the server: the node's name holds
    the owner, so the clean-up lists the lock's children (sent once kazoo reconnects; with an
    expired session the node is gone anyway) and deletes ours.
    """

    def __init__(self, kz: Any, parent: str, owner: str) -> None:
        self._kz = kz
        self._parent = parent
        self._owner = owner
        self._mutex = threading.Lock()
        self._abandoned = False
        self._outcome: Any = None  # the create's IAsyncResult, once it completed
        self._listings = 0

    def created(self, result: Any) -> None:  # kazoo's thread
        with self._mutex:
            if self._outcome is not None:  # kazoo calls every linked callback again on a rawlink
                return
            self._outcome = result
            abandoned = self._abandoned
        if abandoned:
            self._clean_up(result)

    def abandon(self) -> Any:
        """The acquirer gave up: the delete's IAsyncResult if the node is known, else None."""
        with self._mutex:
            self._abandoned = True
            outcome = self._outcome
        return None if outcome is None else self._clean_up(outcome)

    def _clean_up(self, result: Any) -> Any:
        exc = result.exception
        if exc is None:
            path, _stat = result.value
            return self._kz.delete_async(path)
        if isinstance(exc, ConnectionLoss):
            self._list()
        return None  # refused by the server (or the session expired): no node of ours

    def _list(self) -> None:
        self._listings += 1
        self._kz.get_children_async(self._parent).rawlink(self._delete_ours)

    def _delete_ours(self, result: Any) -> None:  # kazoo's thread
        exc = result.exception
        if exc is None:
            mine = f"{_PREFIX}{self._owner}-"  # the name our create gave, before its sequence
            for child in result.value:
                if child.startswith(mine):
                    self._kz.delete_async(f"{self._parent}/{child}")
        elif isinstance(exc, ConnectionLoss) and self._listings < _CLEANUP_LISTINGS:
            self._list()


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
        """Acquire and return the held lock; ``timeout`` bounds all of it (:class:`LockTimeout`):
        the session (re)start, the create and the wait for our turn.

        ``blocking=False`` raises :class:`NotAcquired` at once if another node is first.
        """
        stack = self._by_task.get(asyncio.current_task())
        if stack and not stack[-1].released:
            # Our own node would be ahead of us: without a timeout we would wait on ourselves
            # forever. Even a lost handle counts: a SUSPENDED session may still hold its node.
            raise LockError(f"lock {self.name!r} is already held by this task")
        try:
            async with asyncio.timeout(timeout):
                return await self._acquire(blocking)
        except TimeoutError:
            raise LockTimeout(self.name, f"not acquired within {timeout} s") from None

    async def _acquire(self, blocking: bool) -> Held:
        client = await self.client()
        kz = client.kazoo
        parent = f"{client.root}/{self.name}"
        owner = new_owner()
        sent_at = time.monotonic()
        created = kz.create_async(
            f"{parent}/{_PREFIX}{owner}-",  # the owner in the name: see _CreateGuard
            owner.encode(),
            ephemeral=True,
            sequence=True,
            makepath=True,
            include_data=True,
        )
        guard = _CreateGuard(kz, parent, owner)
        created.rawlink(guard.created)
        try:
            path, stat = await client.call(created, "create")
            await self._wait_turn(client, parent, path.rsplit("/", 1)[1], blocking)
        except BaseException:
            # Whatever ended the acquisition (timeout, cancel, error), our node must go: now if
            # kazoo answered the create, else from kazoo's thread once it does.
            deleting = guard.abandon()
            if deleting is not None:
                with contextlib.suppress(LockError, NoNodeError):
                    await asyncio.shield(client.call(deleting, "delete"))
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
            try:
                children = await client.call(kz.get_children_async(parent), "get_children")
            except NoNodeError:  # someone deleted the lock's parent, and our node with it
                children = []
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

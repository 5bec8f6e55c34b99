"""Blocking wrappers with the same shape as the asyncio locks: ``with lock as held: ...``.

The asyncio implementation runs on one private event loop in a daemon thread (started on first
use, shared by every blocking lock of the process), so the blocking locks get the same single
watchdog, wake-ups and bounded calls. ``held.lost`` is a :class:`threading.Event` here, set from
the loop thread at the same moment as the asyncio one.

In a child made by ``os.fork()`` that thread does not exist, and the loop's connections are the
parent's too: the child starts a loop thread of its own, and every blocking lock builds its fast
path (backend, connections, thread group) afresh there. What the parent had is kept referenced
and never closed in the child: closing the inherited loop would unregister descriptors from the
epoll instance it shares with the parent's loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Protocol, TypeVar

from stalwart.lock._errors import LockError, NotAcquired
from stalwart.lock._fastsync import FastPath
from stalwart.lock._held import Held
from stalwart.lock._redis import RedisLock

T = TypeVar("T")

log = logging.getLogger("stalwart.lock")
_UNDO_TASKS: set[asyncio.Task[None]] = set()
#: In a forked child: what the parent's loop thread owned (its loop, the fast paths built on it),
#: kept from the garbage collector so that nothing of it is ever closed here (see the module doc).
_FORSAKEN: list[object] = []


class AsyncLock(Protocol):
    async def acquire(self, timeout: float | None = None, *, blocking: bool = True) -> Held: ...


class _LoopThread:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="stalwart-lock-loop", daemon=True)
                thread.start()
                self._loop = loop
            return self._loop

    def after_fork_in_child(self) -> None:
        """The loop's thread stayed in the parent: the next use starts a new loop here. A parent
        thread may have held the lock at the fork, so it is replaced, not released."""
        self._lock = threading.Lock()
        if self._loop is not None:
            _FORSAKEN.append(self._loop)
        self._loop = None

    def run(self, coro: Coroutine[Any, Any, T], undo: Callable[[T], Awaitable[None]] | None = None) -> T:
        """Run ``coro`` on the loop thread and block until it is done.

        Leaner than ``run_coroutine_threadsafe(...).result()`` (a concurrent Future, its
        Condition and two chained callbacks): one task, one done callback and a bare lock the
        caller blocks on. If the caller is interrupted while it waits (KeyboardInterrupt, or any
        exception a signal handler raises), the task is cancelled, so an acquire in flight undoes
        itself instead of leaving a lease that nobody will release; and if the task had already
        finished with a result the caller will now never see, ``undo(result)`` runs on the loop
        (an acquire passes the release of what it acquired).
        """
        loop = self.loop()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise LockError("blocking lock used from inside an event loop; use the asyncio lock")
        done = threading.Lock()
        done.acquire()
        box: list[asyncio.Task[T]] = []

        def start() -> None:
            task = loop.create_task(coro)
            box.append(task)
            task.add_done_callback(lambda _: done.release())

        loop.call_soon_threadsafe(start)
        try:
            done.acquire()
        except BaseException:

            def settle(task: asyncio.Task[T]) -> None:
                if undo is None or task.cancelled() or task.exception() is not None:
                    return
                undo_task = loop.create_task(_logged(undo(task.result())))
                _UNDO_TASKS.add(undo_task)
                undo_task.add_done_callback(_UNDO_TASKS.discard)

            def cancel() -> None:  # runs after start() (callbacks run in scheduling order)
                task = box[0]
                if task.done():  # finished just as the caller was interrupted: undo its result
                    settle(task)
                else:
                    task.cancel()
                    task.add_done_callback(settle)  # in case it still returns a result

            loop.call_soon_threadsafe(cancel)
            raise
        return box[0].result()


async def _logged(undo: Awaitable[None]) -> None:
    try:
        await undo
    except Exception:
        log.exception("undoing an interrupted blocking call failed")


async def _release_blocking(held: BlockingHeld) -> None:
    await held.held.release()


_LOOP = _LoopThread()
#: Blocking locks with a fast path, rebuilt in a forked child (see _after_fork_in_child).
_FAST_LOCKS: weakref.WeakSet[BlockingLock] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    _LOOP.after_fork_in_child()
    for lock in list(_FAST_LOCKS):
        if lock._fast is not None:
            _FORSAKEN.append(lock._fast)
            lock._fast, lock._fast_ready = None, False
    _FAST_LOCKS.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


_FLAG_LOCK = threading.Lock()


class LostFlag:
    """A :class:`threading.Event` look-alike whose Event is only built if someone waits on it.

    Creating a threading.Event per acquisition costs more than a lock round trip on a fast path;
    most holders only ever call ``is_set()``.
    """

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        with _FLAG_LOCK:
            event = self._event
        if event is not None:
            event.set()

    def wait(self, timeout: float | None = None) -> bool:
        with _FLAG_LOCK:
            if self._set:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


class BlockingHeld:
    """The blocking twin of :class:`Held`: ``token``, ``token_is_safe``, ``lost``, ``ensure()``.

    ``lost`` has the interface of a :class:`threading.Event` (``is_set``, ``wait``).
    """

    __slots__ = ("_fast", "held", "lost", "name", "token", "token_is_safe")

    def __init__(self, held: Held, fast: FastPath | None = None) -> None:
        self.held = held
        self._fast = fast
        self.name = held.name
        self.token = held.token
        self.token_is_safe = held.token_is_safe
        self.lost = LostFlag()
        held.add_lost_listener(self._on_lost)

    def _on_lost(self, held: Held) -> None:
        del held
        self.lost.set()

    def __repr__(self) -> str:
        return f"<BlockingHeld {self.held!r}>"

    @property
    def remaining_s(self) -> float:
        return self.held.remaining_s

    @property
    def lost_reason(self) -> str | None:
        return self.held.lost_reason

    def ensure(self) -> None:
        """Raise :class:`LockLost` unless the lease is still safely ours (see Held.ensure)."""
        self.held.ensure()

    def release(self) -> None:
        if self._fast is not None:  # fast-path handles are never reentrant
            self._fast.release(self.held)
        else:
            _LOOP.run(self.held.release())


class BlockingLock:
    """Wrap any asyncio lock of this package (RedisLock, Redlock, ZooKeeperLock, rw.read(), ...)."""

    def __init__(self, lock: AsyncLock) -> None:
        self.lock = lock
        self._stacks: dict[int, list[BlockingHeld]] = {}
        self._fast: FastPath | None = None
        self._fast_ready = not (isinstance(lock, RedisLock) and isinstance(lock._target, str))

    def acquire(self, timeout: float | None = None, *, blocking: bool = True) -> BlockingHeld:
        fast = self._fast if self._fast_ready else self._fast_path()
        if fast is not None:
            # While other threads of this process wait for the lock (their group keeps its
            # wake-up channel subscribed), a try from here would most likely fail and be repeated
            # right after joining them: go straight to waiting, whose first step is a try. Read
            # without any lock; a stale answer costs one try more or less, never correctness.
            held = None
            try:
                if not blocking or not fast.can_wait_here():
                    held = fast.try_acquire()
                    if held is None and not blocking:
                        raise NotAcquired(fast.lock.name)
                if held is None:
                    held = fast.wait(timeout)
                return BlockingHeld(held, fast)
            except BaseException:
                # Acquired, but interrupted (KeyboardInterrupt, a signal handler's exception)
                # before the caller has the handle: nobody would release it, and the watchdog
                # would renew it for ever. (FastPath undoes an interrupt inside its calls.)
                if held is not None:
                    fast.release(held)
                raise
        return _LOOP.run(self._acquire(timeout, blocking), _release_blocking)

    def _fast_path(self) -> FastPath | None:
        """A plain RedisLock on a URL acquires and releases without hopping threads."""
        if not self._fast_ready:
            lock = self.lock
            assert isinstance(lock, RedisLock)
            loop = _LOOP.loop()

            async def make() -> FastPath:
                return FastPath(lock, lock._backend(), loop, _LOOP.run)

            self._fast = _LOOP.run(make())
            self._fast_ready = True
            _FAST_LOCKS.add(self)
        return self._fast

    async def _acquire(self, timeout: float | None, blocking: bool) -> BlockingHeld:
        return BlockingHeld(await self.lock.acquire(timeout, blocking=blocking))

    def try_acquire(self) -> BlockingHeld | None:
        try:
            return self.acquire(blocking=False)
        except NotAcquired:
            return None

    def __enter__(self) -> BlockingHeld:
        held = self.acquire()
        # Only the with-statement's bookkeeping is per thread; ownership is in the handle.
        self._stacks.setdefault(threading.get_ident(), []).append(held)
        return held

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack = self._stacks.get(threading.get_ident())
        if not stack:
            raise LockError("__exit__ without a matching __enter__ in this thread")
        held = stack.pop()
        if not stack:
            del self._stacks[threading.get_ident()]
        held.release()


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the blocking locks' loop thread (e.g. a FencedResource write)."""
    return _LOOP.run(coro)


__all__ = ["BlockingHeld", "BlockingLock", "LostFlag", "run_blocking"]

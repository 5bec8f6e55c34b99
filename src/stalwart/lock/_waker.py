"""Wake-ups for waiters: one subscriber connection per backend, channels subscribed on demand.

A waiter subscribes to its lock's wake channel BEFORE trying to acquire, so a release between its
failed try and its sleep cannot be missed: the subscription is confirmed (the server's reply to
SUBSCRIBE) before :meth:`Waker.register` returns. A release publishes ``1`` (wake one waiter per
client: only one can win a mutex), ``*`` (everyone: a freed read/write lock or semaphore slot),
or with FIFO fairness ``<ticket> <token>`` (the lock was handed over to that waiter). Pub/sub is
at-most-once, so every wait is also bounded by a fallback poll in the caller.

The subscriber connection is our own RESP connection (``_resp``): pushes are dispatched straight
from ``data_received``, with no reader task. A channel is unsubscribed as soon as its last waiter
leaves, and the connection is closed when nobody waits at all: nothing lingers on the server.
If the connection breaks, every waiter is woken (they retry, and resubscribe on the next wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from stalwart.lock._errors import BackendError, BackendUnavailable
from stalwart.lock._resp import RedisAddress, RespConnection, pack

ANYONE = b"*"
ONE = b"1"
#: "1:<prefix>": "1", sent by a thread of the group with that prefix (see RELEASE).
ONE_FROM = b"1:"
#: Orphaned tickets a thread group remembers (see ThreadGroup.orphans).
MAX_ORPHANS = 64


class Waiter:
    """One waiting acquirer (an asyncio task waits on ``event``)."""

    __slots__ = ("channel", "event", "ticket", "token")

    def __init__(self, channel: bytes, ticket: bytes | None) -> None:
        self.channel = channel
        self.ticket = ticket
        self.event = asyncio.Event()
        #: Set when a release handed the lock over to this waiter with this fencing token.
        self.token: int | None = None

    def wake(self) -> None:
        self.event.set()

    def awake(self) -> bool:
        return self.event.is_set()

    def take_token(self) -> int | None:
        token, self.token = self.token, None
        return token

    def handed_over(self) -> bool:
        return self.token is not None

    # -- dispatch from the subscriber (on the loop) ----------------------------------------------

    def hand_over(self, ticket: bytes, token: int) -> None:
        """A release handed the lock to ``ticket`` with ``token``."""
        if self.ticket == ticket:
            self.token = token
            self.wake()

    def wake_one(self, origin: bytes = b"") -> bool:
        """A mutex was released (only one waiter can win): wake unless awake already.
        ``origin``: the prefix of the thread group whose thread released it, if any."""
        del origin
        if self.awake():
            return False
        self.wake()
        return True

    def wake_if(self, data: bytes) -> None:
        """``*`` (everyone) or a ticket without a hand-over."""
        if data in (ANYONE, self.ticket):
            self.wake()

    def broken(self) -> None:
        """The subscriber connection broke or was closed: the waiter re-checks and resubscribes."""
        self.wake()


class Latch:
    """What one waiting thread sleeps on: set from any thread, cleared by its thread.

    A bare lock held while clear: cheaper than a threading.Event (no Condition, no lock allocated
    per wait), which matters at thousands of hand-offs per second.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # set already (two wakers raced): nothing to do
            self._lock.release()

    def is_set(self) -> bool:
        return not self._lock.locked()

    def clear(self) -> None:
        self._lock.acquire(False)

    def wait(self, timeout: float) -> bool:
        """Sleep until set or ``timeout`` s passed; leaves it set (only clear() clears)."""
        if not self._lock.acquire(True, max(0.0, timeout)):
            return False
        self.set()
        return True


class ThreadWaiter:
    """One blocking thread waiting in a :class:`ThreadGroup`."""

    __slots__ = ("grant", "latch", "ticket")

    def __init__(self, ticket: bytes | None) -> None:
        self.ticket = ticket
        self.latch = Latch()
        #: (token, base): a release handed the lock to this waiter with this fencing token; the
        #: hand-over happened after ``base`` (a monotonic time in this process) if not None. One
        #: attribute, so a reader never sees a token with another hand-over's base.
        self.grant: tuple[int, float | None] | None = None

    def give(self, token: int, base: float | None) -> None:
        self.grant = (token, base)
        self.latch.set()

    def has_grant(self) -> bool:
        return self.grant is not None

    def take_grant(self) -> tuple[int, float | None] | None:
        grant, self.grant = self.grant, None
        return grant


class ThreadGroup(Waiter):
    """Every blocking thread of this process waiting on one lock, as ONE waiter of the waker.

    Threads join and leave the group under ``mutex`` without involving the loop; the loop only
    subscribes the channel when the group gets its first thread (``Waker.attach_group``) and drops
    it when the last one left (``Waker.detach_group``). Wake-ups from other processes arrive
    through the subscriber and are dispatched to the threads here; a release by a thread of this
    group hands the lock to its successor in this group directly, without any message (see
    RELEASE_FAIR_LOCAL and _fastsync). ``prefix`` starts the tickets of this group's fair
    waiters, which is how the release script tells them apart.
    """

    __slots__ = (
        "__weakref__",
        "attached",
        "detach_pending",
        "listed",
        "mutex",
        "on_orphan",
        "orphans",
        "prefix",
        "threads",
        "tickets",
        "wake_pending",
    )

    def __init__(self, channel: bytes) -> None:
        super().__init__(channel, None)
        self.mutex = threading.Lock()
        self.threads: dict[ThreadWaiter, None] = {}  # ordered: longest waiting first
        self.tickets: dict[bytes, ThreadWaiter] = {}
        #: True while the channel's subscription is confirmed for this group (set on the loop).
        self.attached = False
        #: True while the group is listed as a waiter of the waker (from the start of an attach
        #: to its detach), attached or not: an attach cut short or a broken subscriber connection
        #: leaves it listed, and its last thread out must still have it detached.
        self.listed = False
        self.detach_pending = False
        #: Unfair: a release by one of our threads woke this thread to try, and nobody has
        #: tried since. Cleared by any try, and when that thread leaves without trying (it
        #: timed out): a stale one would make the next acquirer let nobody go first, sleeping
        #: a whole poll with the lock free.
        self.wake_pending: ThreadWaiter | None = None
        self.prefix = f"t{os.urandom(8).hex()}:"
        #: Tickets whose thread left without acquiring and whose clean-up failed: a hand-over to
        #: one of them will never be taken (at most MAX_ORPHANS remembered, oldest dropped).
        self.orphans: dict[bytes, None] = {}
        #: On the loop: give up a lock handed over to an orphaned ticket (set by the fast path).
        self.on_orphan: Callable[[bytes], None] | None = None

    def join(self, waiter: ThreadWaiter) -> bool:
        """Add a thread; True if the group is attached (else the caller attaches it)."""
        with self.mutex:
            self.threads[waiter] = None
            if waiter.ticket is not None:
                self.tickets[waiter.ticket] = waiter
            return self.attached

    def leave(self, waiter: ThreadWaiter, *, orphaned: bool = False) -> bool:
        """Remove a thread (``orphaned``: it gave up and could not withdraw its ticket). True if
        it was the last one of an attached group and no detach is pending yet: the caller then
        schedules one (``Waker.detach_group``, after a linger)."""
        with self.mutex:
            self.threads.pop(waiter, None)
            if self.wake_pending is waiter:
                self.wake_pending = None
            if waiter.ticket is not None:
                self.tickets.pop(waiter.ticket, None)
                if orphaned:
                    self.orphans[waiter.ticket] = None
                    if len(self.orphans) > MAX_ORPHANS:
                        del self.orphans[next(iter(self.orphans))]
            if (self.attached or self.listed) and not self.threads and not self.detach_pending:
                self.detach_pending = True
                return True
            return False

    def snapshot(self) -> list[ThreadWaiter]:
        with self.mutex:
            return list(self.threads)

    def wake(self) -> None:
        for waiter in self.snapshot():
            waiter.latch.set()

    def awake(self) -> bool:
        return all(w.latch.is_set() for w in self.snapshot())

    def claim(self, ticket: bytes) -> ThreadWaiter | bool:
        """Who takes a hand-over to ``ticket`` of this group: its waiting thread; True: nobody
        ever will (an orphaned ticket, now forgotten: the caller passes the lock on); False:
        nobody needs to (its thread found the lock handed over by itself, took it and left; or
        the ticket is not ours). Never pass on a lock on a guess: it may be held right now."""
        with self.mutex:
            waiter = self.tickets.get(ticket)
            if waiter is not None:
                return waiter
            if ticket in self.orphans:
                del self.orphans[ticket]
                return True
            return False

    def hand_over(self, ticket: bytes, token: int) -> None:
        if not ticket.startswith(self.prefix.encode()):
            return
        claimed = self.claim(ticket)
        if isinstance(claimed, ThreadWaiter):
            claimed.give(token, None)
        elif claimed and self.on_orphan is not None:
            self.on_orphan(ticket)

    def wake_one(self, origin: bytes = b"") -> bool:
        if origin and origin == self.prefix.encode():
            return False  # released by one of our threads, which woke one of us already
        return self.wake_next() is not None

    def wake_next(self, *, pending: bool = False) -> ThreadWaiter | None:
        """Wake the longest-waiting thread that is not awake already; the one woken, if any.
        ``pending``: record it as ``wake_pending`` (under the mutex, so that its leave, which
        clears it, cannot come before)."""
        with self.mutex:
            for waiter in self.threads:
                if not waiter.latch.is_set():
                    waiter.latch.set()
                    if pending:
                        self.wake_pending = waiter
                    return waiter
        return None

    def wake_if(self, data: bytes) -> None:
        if data == ANYONE:
            self.wake()
            return
        waiter = self.tickets.get(data)
        if waiter is not None:
            waiter.latch.set()

    def broken(self) -> None:
        with self.mutex:
            self.attached = False
        self.wake()


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve a fire-and-forget request's outcome so a broken link logs nothing."""
    if not fut.cancelled():
        fut.exception()


class Waker:
    def __init__(self, address: RedisAddress | None, timeout_s: float) -> None:
        self._address = address
        self._timeout_s = timeout_s
        self._conn: RespConnection | None = None
        self._connecting: asyncio.Task[RespConnection] | None = None
        self._waiters: dict[bytes, dict[Waiter, None]] = {}  # ordered: longest waiting first
        # Per channel: the connection it was subscribed on and the SUBSCRIBE confirmation.
        self._subs: dict[bytes, tuple[RespConnection, asyncio.Future[Any]]] = {}
        # One thread group per lock channel, shared by every blocking lock on it (so a release
        # from any of them wakes the next thread directly); gone when no lock refers to it.
        self._groups: weakref.WeakValueDictionary[bytes, ThreadGroup] = weakref.WeakValueDictionary()
        self._groups_lock = threading.Lock()

    @property
    def active(self) -> bool:
        """True while the subscriber connection is open or opening (False once nobody waits)."""
        return (self._conn is not None and self._conn.usable) or self._connecting is not None

    def thread_group(self, channel: str) -> ThreadGroup:
        """The :class:`ThreadGroup` of ``channel`` (any thread)."""
        key = channel.encode()
        with self._groups_lock:
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = ThreadGroup(key)
            return group

    def waiting_on(self, channel: str) -> bool:
        """True while a waiter of this client waits on ``channel`` with a confirmed subscription:
        the lock is contended, so a new acquirer may as well register before its first try."""
        if not self._waiters:
            return False  # the uncontended case, checked on every blocking acquire: no encoding
        key = channel.encode()
        entry = self._subs.get(key)
        return (
            bool(self._waiters.get(key))
            and entry is not None
            and entry[0].usable
            and entry[1].done()
            and not entry[1].cancelled()
            and entry[1].exception() is None
        )

    async def register(self, channel: str, ticket: str | None = None) -> Waiter:
        """Subscribe (if needed) and return a waiter; its subscription is confirmed on return."""
        waiter = Waiter(channel.encode(), ticket.encode() if ticket is not None else None)
        self._waiters.setdefault(waiter.channel, {})[waiter] = None
        try:
            await self.ensure_subscribed(waiter)
        except BaseException:
            self.unregister(waiter)
            raise
        return waiter

    async def ensure_subscribed(self, waiter: Waiter) -> None:
        channel = waiter.channel
        entry = self._subs.get(channel)
        if (
            entry is not None
            and entry[0].usable
            and entry[1].done()
            and not entry[1].cancelled()
            and entry[1].exception() is None
        ):
            return  # confirmed already: the usual case after a wake-up, no timer needed
        try:
            async with asyncio.timeout(self._timeout_s):
                entry = self._subs.get(channel)
                if entry is None or not entry[0].usable or (entry[1].done() and entry[1].exception()):
                    conn = await self._connection()
                    fut = conn.request(pack(("SUBSCRIBE", channel)))
                    fut.add_done_callback(_consume)
                    entry = self._subs[channel] = (conn, fut)
                await asyncio.shield(entry[1])
        except TimeoutError:
            raise BackendUnavailable("subscription to wake-ups was not confirmed in time") from None
        except BackendError as exc:
            raise BackendUnavailable(f"subscribing to wake-ups failed: {exc}") from exc

    def unregister(self, waiter: Waiter) -> None:
        """Forget the waiter; unsubscribe (fire and forget) or close once nobody waits. Never
        awaits, so it cannot be interrupted halfway."""
        waiters = self._waiters.get(waiter.channel)
        if waiters is None:
            return
        waiters.pop(waiter, None)
        if waiters:
            return
        del self._waiters[waiter.channel]
        entry = self._subs.pop(waiter.channel, None)
        if not self._waiters:
            self._shutdown()  # closing ends every subscription on the server, whatever happened
        elif entry is not None and entry[0].usable:
            entry[0].request(pack(("UNSUBSCRIBE", waiter.channel))).add_done_callback(_consume)

    async def _connection(self) -> RespConnection:
        if self._conn is not None and self._conn.usable:
            return self._conn
        if self._address is None:
            raise BackendUnavailable("no server address for wake-ups")
        task = self._connecting
        if task is None:
            task = self._connecting = asyncio.get_running_loop().create_task(self._open(self._address))
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _open(self, address: RedisAddress) -> RespConnection:
        conn = await RespConnection.open(
            address, self._timeout_s, select_db=False, on_push=self._on_push, on_close=self._on_close
        )
        self._conn = conn
        return conn

    def _on_push(self, msg: list[Any]) -> None:
        if len(msg) == 3 and isinstance(msg[1], bytes) and isinstance(msg[2], bytes):
            self._deliver(msg[1], msg[2])

    def _deliver(self, channel: bytes, data: bytes) -> None:
        waiters = self._waiters.get(channel)
        if not waiters:
            return
        if b" " in data:  # "<ticket> <token>": the lock was handed over to that ticket
            ticket, _, token = data.partition(b" ")
            if token.isdigit():
                for waiter in list(waiters):
                    waiter.hand_over(ticket, int(token))
            return
        if data == ONE or data.startswith(ONE_FROM):
            # The longest-waiting waiter that is not already awake; if every one is awake
            # already, one of them will take the lock anyway.
            origin = data[len(ONE_FROM) :]
            for waiter in list(waiters):
                if waiter.wake_one(origin):
                    break
            return
        for waiter in list(waiters):
            waiter.wake_if(data)

    def _on_close(self, exc: BaseException) -> None:
        """The subscriber connection broke: wake everyone (they retry and resubscribe)."""
        del exc  # waiters re-check the lock; a dead server shows up there as a typed error
        if self._conn is not None and self._conn.usable:
            return  # an older connection, already replaced
        self._subs.clear()
        for waiters in list(self._waiters.values()):
            for waiter in list(waiters):
                waiter.broken()

    def _shutdown(self) -> None:
        conn, self._conn = self._conn, None
        self._subs.clear()
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        if conn is not None:
            conn.close()

    async def aclose(self) -> None:
        self._shutdown()
        for waiters in list(self._waiters.values()):
            for waiter in list(waiters):
                waiter.broken()  # a thread group must not think it is still subscribed
        self._waiters.clear()

    # -- thread groups (the blocking wrapper's waiting threads) ----------------------------------

    async def attach_group(self, group: ThreadGroup) -> None:
        """On the loop: list the group as a waiter of its channel and confirm the subscription
        before returning (its threads try only after that, so no release in between is missed)."""
        try:
            for _ in range(2):
                with group.mutex:
                    group.listed = True
                self._waiters.setdefault(group.channel, {})[group] = None
                await self.ensure_subscribed(group)
                if group in self._waiters.get(group.channel, {}):
                    with group.mutex:
                        group.attached = True
                    return
                # Detached while subscribing (the waker was closed, or every thread had left):
                # the caller is in the group again, so list it once more.
            raise BackendUnavailable("the wake-up subscriber was closed while subscribing")
        except BaseException:
            # Cut short (timeout, the caller interrupted, the server): if every thread has left
            # already, none will have it detached, so drop it here; otherwise the last one does.
            with group.mutex:
                drop = not group.threads and not group.attached and not group.detach_pending
                if drop:
                    group.listed = False
            if drop:
                self.unregister(group)
            raise

    def detach_group(self, group: ThreadGroup) -> None:
        """On the loop: drop the group if it has no threads (one may have joined meanwhile)."""
        with group.mutex:
            group.detach_pending = False
            if group.threads:
                return  # its next last thread out asks again
            group.attached = group.listed = False
        self.unregister(group)


__all__ = ["ANYONE", "ONE", "ONE_FROM", "Latch", "ThreadGroup", "ThreadWaiter", "Waiter", "Waker"]

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
import threading
from typing import Any

from stalwart.lock._errors import BackendError, BackendUnavailable
from stalwart.lock._resp import RedisAddress, RespConnection, pack

ANYONE = b"*"
ONE = b"1"


class Waiter:
    """One waiting acquirer. A task waits on ``event``; a thread of the blocking wrapper waits on
    ``latch`` instead (set from the loop, like the event; the thread clears it before each try).
    ``orphaned`` tells a thread waiter that it was added when its channel had no confirmed
    subscription any more: it must register through the loop instead."""

    __slots__ = ("channel", "event", "latch", "orphaned", "ticket", "token")

    def __init__(self, channel: bytes, ticket: bytes | None, latch: threading.Event | None = None) -> None:
        self.channel = channel
        self.ticket = ticket
        self.event = asyncio.Event()
        self.latch = latch
        self.orphaned = False
        #: Set when a release handed the lock over to this waiter with this fencing token.
        self.token: int | None = None

    def wake(self) -> None:
        self.event.set()
        if self.latch is not None:
            self.latch.set()

    def awake(self) -> bool:
        return self.latch.is_set() if self.latch is not None else self.event.is_set()

    def take_token(self) -> int | None:
        token, self.token = self.token, None
        return token

    def handed_over(self) -> bool:
        return self.token is not None


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

    @property
    def active(self) -> bool:
        """True while the subscriber connection is open or opening (False once nobody waits)."""
        return (self._conn is not None and self._conn.usable) or self._connecting is not None

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

    def add_thread_waiter(self, waiter: Waiter) -> None:
        """On the loop: add a blocking thread's waiter to a channel it saw subscribed. If the
        subscription is gone meanwhile, the waiter is marked orphaned and woken at once."""
        if not self.waiting_on(waiter.channel.decode()):
            waiter.orphaned = True
            waiter.wake()
            return
        self._waiters.setdefault(waiter.channel, {})[waiter] = None

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
        waiters = self._waiters.get(channel, {})
        if b" " in data:  # "<ticket> <token>": the lock was handed over to that ticket
            ticket, _, token = data.partition(b" ")
            for waiter in waiters:
                if waiter.ticket == ticket and token.isdigit():
                    waiter.token = int(token)
                    waiter.wake()
            return
        if data == ONE:
            # The longest-waiting waiter that is not already awake; if every one is awake
            # already, one of them will take the lock anyway.
            for waiter in waiters:
                if not waiter.awake():
                    waiter.wake()
                    break
            return
        for waiter in waiters:
            if data in (ANYONE, waiter.ticket):
                waiter.wake()

    def _on_close(self, exc: BaseException) -> None:
        """The subscriber connection broke: wake everyone (they retry and resubscribe)."""
        del exc  # waiters re-check the lock; a dead server shows up there as a typed error
        if self._conn is not None and self._conn.usable:
            return  # an older connection, already replaced
        self._subs.clear()
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.wake()

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
        self._waiters.clear()


__all__ = ["ANYONE", "ONE", "Waiter", "Waker"]

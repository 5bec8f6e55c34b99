"""Wake-ups for waiters: one pub/sub connection per backend, channels subscribed on demand.

A waiter subscribes to its lock's wake channel BEFORE trying to acquire, so a release between its
failed try and its sleep cannot be missed. A release publishes ``*`` (anyone may try) or, with
FIFO fairness, the ticket of the waiter at the head of the queue, and only that waiter wakes.
Pub/sub is at-most-once, so every wait is also bounded by a fallback poll in the caller.

A channel is unsubscribed as soon as its last waiter leaves, and the pub/sub connection is closed
and its reader task ends when no channel is left: nothing lingers after the waiting stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio
import redis.asyncio.client
import redis.exceptions

from stalwart.lock._errors import BackendUnavailable

#: Wake-up messages: every waiter may try (a freed read/write lock or semaphore slot), or one
#: waiter per client (a freed mutex: only one can win, so waking all would only burn round trips);
#: anything else is the one ticket that should try (FIFO fairness).
ANYONE = b"*"
ONE = b"1"


class Waiter:
    __slots__ = ("channel", "event", "ticket", "token")

    def __init__(self, channel: bytes, ticket: bytes | None) -> None:
        self.channel = channel
        self.ticket = ticket
        self.event = asyncio.Event()
        #: Set when a release handed the lock over to this waiter with this fencing token.
        self.token: int | None = None

    def take_token(self) -> int | None:
        token, self.token = self.token, None
        return token

    def handed_over(self) -> bool:
        return self.token is not None


class Waker:
    def __init__(self, client: redis.asyncio.Redis, timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._pubsub: redis.asyncio.client.PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[bytes, dict[Waiter, None]] = {}  # ordered: longest waiting first
        self._subscribed: set[bytes] = set()
        self._pending: dict[bytes, asyncio.Future[None]] = {}
        self._drop: asyncio.Task[None] | None = None
        # Subscribe, unsubscribe and close never overlap on the pub/sub connection.
        self._ops = asyncio.Lock()

    @property
    def active(self) -> bool:
        """True while a pub/sub connection or its reader exists (False once nobody waits)."""
        return self._pubsub is not None or self._reader is not None

    async def register(self, channel: str, ticket: str | None = None) -> Waiter:
        """Subscribe (if needed) and return a waiter; its subscription is confirmed on return."""
        waiter = Waiter(channel.encode(), ticket.encode() if ticket is not None else None)
        self._waiters.setdefault(waiter.channel, {})[waiter] = None
        try:
            await self.ensure_subscribed(waiter)
        except BaseException:
            await self.unregister(waiter)
            raise
        return waiter

    async def ensure_subscribed(self, waiter: Waiter) -> None:
        channel = waiter.channel
        if channel in self._subscribed:
            return
        fut = self._pending.get(channel)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._pending[channel] = fut
            try:
                async with asyncio.timeout(self._timeout_s), self._ops:
                    if self._pubsub is None:
                        self._pubsub = self._client.pubsub()
                    await self._pubsub.subscribe(channel)
                    if self._reader is None:
                        self._reader = asyncio.get_running_loop().create_task(
                            self._read(self._pubsub), name="stalwart-lock-waker"
                        )
            except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
                self._pending.pop(channel, None)
                fut.cancel()
                raise BackendUnavailable(f"subscribe to wake-ups failed: {exc!r}") from exc
        try:
            async with asyncio.timeout(self._timeout_s):
                await asyncio.shield(fut)
        except TimeoutError as exc:
            raise BackendUnavailable("subscription to wake-ups was not confirmed in time") from exc
        except asyncio.CancelledError:
            if fut.cancelled() and not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise BackendUnavailable("the wake-up connection failed while subscribing") from None
            raise

    async def unregister(self, waiter: Waiter) -> None:
        waiters = self._waiters.get(waiter.channel)
        if waiters is None:
            return
        waiters.pop(waiter, None)
        if waiters:
            return
        del self._waiters[waiter.channel]
        await self._drop_channel(waiter.channel)

    async def _drop_channel(self, channel: bytes) -> None:
        """Unsubscribe a channel nobody waits on; close the connection when nobody waits at all."""
        try:
            async with asyncio.timeout(self._timeout_s), self._ops:
                if channel in self._waiters or channel in self._pending:
                    return  # someone started waiting on it again meanwhile
                if not self._waiters and not self._pending:
                    # Closing the connection ends every subscription on the server, whatever
                    # the bookkeeping says, and stops the reader.
                    await self._shutdown()
                elif channel in self._subscribed and self._pubsub is not None:
                    self._subscribed.discard(channel)
                    await self._pubsub.unsubscribe(channel)
        except (redis.exceptions.RedisError, OSError, TimeoutError):
            await self._fail("unsubscribe failed")

    def _deliver(self, msg: dict[str, Any]) -> None:
        kind, channel = msg["type"], msg["channel"]
        if kind == "message":
            data = msg["data"]
            waiters = self._waiters.get(channel, {})
            if b" " in data:  # "<ticket> <token>": the lock was handed over to that ticket
                ticket, _, token = data.partition(b" ")
                for waiter in waiters:
                    if waiter.ticket == ticket and token.isdigit():
                        waiter.token = int(token)
                        waiter.event.set()
                return
            if data == ONE:
                # The longest-waiting waiter that is not already awake; if every one is awake
                # already, one of them will take the lock anyway.
                for waiter in waiters:
                    if not waiter.event.is_set():
                        waiter.event.set()
                        break
                return
            for waiter in waiters:
                if data in (ANYONE, waiter.ticket):
                    waiter.event.set()
        elif kind == "subscribe":
            self._subscribed.add(channel)
            fut = self._pending.pop(channel, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
            # Nobody left waiting on it (the waiter was cancelled meanwhile): drop it again.
            if channel not in self._waiters:
                self._drop = asyncio.get_running_loop().create_task(self._drop_channel(channel))

    async def _shutdown(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        reader, self._reader = self._reader, None
        self._subscribed.clear()
        if reader is not None:
            reader.cancel()
        if pubsub is not None:
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _read(self, pubsub: redis.asyncio.client.PubSub) -> None:
        try:
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
                if msg is not None:
                    self._deliver(msg)
        except asyncio.CancelledError:
            raise
        except (redis.exceptions.RedisError, OSError, TimeoutError, RuntimeError) as exc:
            if self._pubsub is pubsub:
                self._reader = None
                await self._fail(f"wake-up connection failed: {exc!r}")

    async def _fail(self, reason: str) -> None:
        """The pub/sub connection broke: wake everyone (they retry and poll) and start afresh."""
        del reason  # waiters re-check the lock; the error shows up there if the server is gone
        for fut in self._pending.values():
            fut.cancel()
        self._pending.clear()
        self._subscribed.clear()
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.event.set()
        pubsub, self._pubsub = self._pubsub, None
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        if pubsub is not None:
            with contextlib.suppress(redis.exceptions.RedisError, OSError, TimeoutError):
                async with asyncio.timeout(self._timeout_s), self._ops:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await self._fail("closed")
        self._waiters.clear()


__all__ = ["ANYONE", "Waiter", "Waker"]

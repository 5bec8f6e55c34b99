"""The blocking RedisLock's fast path: acquire and release on a synchronous connection.

Hopping to the loop thread costs two thread wake-ups per call, more than the lock itself. So a
blocking RedisLock tries to acquire and releases with redis-py's synchronous client directly,
from the caller's thread, running the very same Lua scripts. Only waiting (when the first try
fails) goes through the asyncio implementation on the loop thread.

The lease still belongs to the one watchdog of the loop thread. Handing each lease over with
``call_soon_threadsafe`` would wake the loop on every acquisition, so leases are queued and the
loop takes the queue in one go, at most ``HANDOVER_S`` (and well before ttl/3) after the first
one arrived; a lease released before that never reaches the loop at all. The safe deadline does
not depend on the watchdog: ``ensure()`` computes it from the send time either way.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from typing import Any

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from stalwart.lock._backend import RedisBackend, expect_int, expect_pair, map_error
from stalwart.lock._errors import LockError
from stalwart.lock._held import Held, drift_allowance_s
from stalwart.lock._redis import RedisLock
from stalwart.lock._scripts import ACQUIRE_FAIR, ACQUIRE_FAST, RENEW, Script

#: Longest a fast-path lease waits before the loop's watchdog takes it over.
HANDOVER_S = 0.05

_CLIENTS: dict[str, redis.Redis] = {}
_CLIENTS_LOCK = threading.Lock()


def sync_client(url: str, op_timeout_s: float) -> redis.Redis:
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(url)
        if client is None:
            client = _CLIENTS[url] = redis.Redis.from_url(
                url,
                socket_timeout=op_timeout_s,
                socket_connect_timeout=op_timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        return client


class Handover:
    """Queues fast-path leases for the loop thread's watchdog (see the module doc)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, backend: RedisBackend) -> None:
        self._loop = loop
        self._backend = backend
        self._lock = threading.Lock()
        self._pending: dict[Held, None] = {}
        self._scheduled = False

    def add(self, held: Held) -> None:
        with self._lock:
            self._pending[held] = None
            if self._scheduled:
                return
            self._scheduled = True
        delay_s = min(HANDOVER_S, held.ttl_s / 6)
        self._loop.call_soon_threadsafe(self._loop.call_later, delay_s, self._drain)

    def withdraw(self, held: Held) -> bool:
        """Take a lease back before the loop saw it; False if the watchdog already has it."""
        with self._lock:
            return self._pending.pop(held, False) is None

    def _drain(self) -> None:  # on the loop thread
        with self._lock:
            pending, self._pending = self._pending, {}
            self._scheduled = False
        for held in pending:
            if not held.released:
                self._backend.watchdog.add(held)


class FastPath:
    """Acquire/release of one blocking RedisLock on a synchronous connection."""

    def __init__(self, lock: RedisLock, backend: RedisBackend, loop: asyncio.AbstractEventLoop) -> None:
        assert isinstance(lock._target, str), "the fast path is used only for URL targets"
        self.lock = lock
        self.backend = backend
        self.loop = loop
        self.client = sync_client(lock._target, backend.op_timeout_s)
        self.handover = Handover(loop, backend)

    def _run(self, script: Script, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        try:
            try:
                return self.client.evalsha(script.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                self.client.script_load(script.source)
                return self.client.evalsha(script.sha, len(keys), *keys, *args)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise map_error(exc, f"{script.name} on {self.backend.url}") from exc

    def try_acquire(self) -> Held | None:
        lock = self.lock
        owner = lock.new_owner()
        sent_at = time.monotonic()
        if lock.fair:
            reply = self._run(ACQUIRE_FAIR, lock._acquire_keys, (owner, lock._ttl_ms, 0))
        else:
            reply = self._run(ACQUIRE_FAST, lock._acquire_keys, (owner, lock._ttl_ms))
        got, token = expect_pair(reply, "acquire")
        if got != 1:
            return None
        if token < 1:
            raise LockError(f"acquire returned a non-positive fencing token {token}")
        drift_s = drift_allowance_s(lock.ttl_s, self.backend.drift_factor)
        held = Held(
            name=lock.name,
            owner=owner,
            token=token,
            ttl_s=lock.ttl_s,
            sent_at=sent_at,
            drift_s=drift_s,
            releaser=lock._releaser(self.backend),
            on_lost=lock._on_lost,
            renew_data=(RENEW, (lock.key,), (owner, lock._ttl_ms)),
        )
        if lock._auto_renew:
            self.handover.add(held)
        return held

    def release(self, held: Held) -> None:
        if held.released:
            return
        held._released = True
        if not self.handover.withdraw(held):
            self.loop.call_soon_threadsafe(self.backend.watchdog.remove, held)
        lock = self.lock
        reply = self._run(lock._release_script, lock._release_keys, (held.owner, lock.channel))
        if expect_int(reply, "release") != 1:
            mark = functools.partial(
                held._mark_lost, "the lease had already expired at release", at_release=True
            )
            self.loop.call_soon_threadsafe(mark)


__all__ = ["HANDOVER_S", "FastPath", "Handover", "sync_client"]

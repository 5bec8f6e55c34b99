"""A read/write lock and a counting semaphore on one Redis server, with fencing tokens and leases.

Read/write lock ``N`` (writer-preferring, so a stream of readers cannot starve a writer):

- ``stalwart:rw:{N}:w``     the writer's owner value, PX TTL
- ``stalwart:rw:{N}:r``     readers: zset owner -> lease expiry (server ms); expired ones purged
- ``stalwart:rw:{N}:i``     a waiting writer's intent, PX; new readers wait while it exists
- ``stalwart:rw:{N}:fence`` one fencing counter for readers and writers alike

Semaphore ``N`` of ``limit`` slots: ``stalwart:sem:{N}`` zset owner -> lease expiry, plus
``:fence``. Every party must use the same ``limit``. Each slot is a lease renewed by the watchdog.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence

from stalwart.errors import ConfigError
from stalwart.lock._backend import Arg, RedisBackend, expect_int, expect_pair
from stalwart.lock._errors import LockError, NotAcquired
from stalwart.lock._held import Held, LostCallback, drift_allowance_s
from stalwart.lock._redis import DEFAULT_POLL_MAX_S, _LockBase, check_ttl, lock_keys, new_owner, wait_loop
from stalwart.lock._scripts import RENEW, Script

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# Keep a lease zset's own TTL at its latest member's expiry, so an abandoned one vanishes.
_EXPIRE_AT_LAST = """
local function expire_at_last(z)
  local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', z, math.ceil(tonumber(last[2]))) end
end
"""

# KEYS: w, r, i, fence   ARGV: owner, ttl_ms   -> {1, token} | {0, wait_ms}
ACQUIRE_READ = Script(
    "acquire_read",
    _NOW
    + _EXPIRE_AT_LAST
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local wpttl = redis.call('PTTL', KEYS[1])
if wpttl ~= -2 then return {0, wpttl} end
local ipttl = redis.call('PTTL', KEYS[3])
if ipttl ~= -2 then return {0, ipttl} end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
expire_at_last(KEYS[2])
return {1, redis.call('INCR', KEYS[4])}
""",
)

# KEYS: w, r, i, fence   ARGV: owner, ttl_ms, intent_ttl_ms (0: do not announce intent)
ACQUIRE_WRITE = Script(
    "acquire_write",
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local intent = redis.call('GET', KEYS[3])
local function wait(ms)
  if tonumber(ARGV[3]) > 0 and (not intent or intent == ARGV[1]) then
    redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3])
  end
  return {0, ms}
end
local wpttl = redis.call('PTTL', KEYS[1])
if wpttl ~= -2 then return wait(wpttl) end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then return wait(math.ceil(tonumber(first[2]) - now)) end
if intent and intent ~= ARGV[1] then return {0, redis.call('PTTL', KEYS[3])} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if intent then redis.call('DEL', KEYS[3]) end
return {1, redis.call('INCR', KEYS[4])}
""",
)

# KEYS: zset   ARGV: owner, channel    Leave a lease zset; wake waiters.
RELEASE_SHARE = Script(
    "release_share",
    """
local n = redis.call('ZREM', KEYS[1], ARGV[1])
if n == 1 then redis.call('PUBLISH', ARGV[2], '*') end
return n
""",
)

# KEYS: w   ARGV: owner, channel
RELEASE_WRITE = Script(
    "release_write",
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], '*')
return 1
""",
)

# KEYS: w, i   ARGV: owner, channel    A writer that gives up (timeout, cancel, error): drop the
# write lock if a try of ours took it AND withdraw our intent, atomically, then wake the waiters.
# Left behind, the intent would keep new readers out for intent_ms although no writer waits.
ABANDON_WRITE = Script(
    "abandon_write",
    """
local n = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]); n = 1 end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]); n = 1 end
if n == 1 then redis.call('PUBLISH', ARGV[2], '*') end
return n
""",
)

# KEYS: zset   ARGV: owner, ttl_ms    Renew one member's lease if it has not expired.
RENEW_SHARE = Script(
    "renew_share",
    _NOW
    + _EXPIRE_AT_LAST
    + """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
expire_at_last(KEYS[1])
return 1
""",
)

# KEYS: zset, fence   ARGV: owner, ttl_ms, limit
ACQUIRE_SLOT = Script(
    "acquire_slot",
    _NOW
    + _EXPIRE_AT_LAST
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  expire_at_last(KEYS[1])
  return {1, redis.call('INCR', KEYS[2])}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, math.ceil(tonumber(first[2]) - now)}
""",
)

Attempt = Callable[[str, bool], Awaitable[Held | int]]


class _LeaseLock(_LockBase):
    """Shared acquire logic: try, then wait on the wake channel with a bounded poll."""

    def __init__(
        self,
        target: str | RedisBackend,
        name: str,
        *,
        ttl: float,
        on_lost: LostCallback | None,
        auto_renew: bool,
        poll_max_s: float,
    ) -> None:
        super().__init__(target, on_lost, auto_renew)
        self.name = name
        self.ttl_s = float(ttl)
        self._ttl_ms = check_ttl(ttl)
        if poll_max_s <= 0:
            raise ConfigError("poll_max_s must be positive")
        self._poll_max_s = poll_max_s

    async def _acquire(
        self, timeout: float | None, blocking: bool, channel: str, attempt: Attempt, abandon: Script
    ) -> Held:
        self._refuse_reentry()
        backend = self._backend()
        owner = new_owner()
        try:
            result = await attempt(owner, blocking)
        except BaseException:
            # A cancellation (or a lost reply) can land after the server ran the try: it may hold
            # a share/slot (and a writer's intent) that no handle will ever renew or release.
            await asyncio.shield(self._undo(backend, abandon, owner, channel))
            raise
        if isinstance(result, Held):
            return result
        if not blocking:
            raise NotAcquired(self.name)  # a non-blocking try takes nothing when it fails
        try:
            return await self._bounded(
                timeout,
                self.name,
                lambda: wait_loop(backend, channel, None, lambda: attempt(owner, True), self._poll_max_s),
            )
        except BaseException:
            await asyncio.shield(self._undo(backend, abandon, owner, channel))
            raise

    async def _undo(self, backend: RedisBackend, script: Script, owner: str, channel: str) -> None:
        keys = self._undo_keys(script)
        with contextlib.suppress(LockError):  # best effort: the lease expires by itself
            await backend.run(script, keys, (owner, channel), idempotent=True)

    @abc.abstractmethod
    def _undo_keys(self, script: Script) -> Sequence[str]:
        """The keys that the abandon script ``script`` needs for this primitive."""

    def _live_in_task(self) -> int:
        """How many handles of this object the current task holds through ``async with``."""
        stack = self._by_task.get(asyncio.current_task())
        return sum(1 for h in stack if not h.released and not h.lost.is_set()) if stack else 0

    @abc.abstractmethod
    def _refuse_reentry(self) -> None:
        """Raise LockError if this task's acquire could only wait for itself (never reentrant)."""

    def _held(
        self,
        backend: RedisBackend,
        owner: str,
        *,
        token: int,
        sent_at: float,
        kind: str,
        renew: tuple[Script, Sequence[str], Sequence[Arg]],
        release: tuple[Script, Sequence[str]],
        channel: str,
    ) -> Held:
        if token < 1:
            raise LockError(f"acquire returned a non-positive fencing token {token}")

        async def releaser(held: Held) -> None:
            backend.watchdog.remove(held)
            reply = await backend.run(release[0], release[1], (held.owner, channel), idempotent=True)
            if expect_int(reply, "release") != 1:
                held._mark_lost("the lease had already expired on the server at release", at_release=True)

        held = Held(
            name=self.name,
            owner=owner,
            token=token,
            ttl_s=self.ttl_s,
            sent_at=sent_at,
            drift_s=drift_allowance_s(self.ttl_s, backend.drift_factor),
            releaser=releaser,
            on_lost=self._on_lost,
            kind=kind,
            renew_data=renew,
        )
        return self._start(backend, held)


class RedisRWLock:
    """A read/write lock: ``async with rw.read() as held`` or ``async with rw.write() as held``.

    Many readers or one writer; a waiting writer blocks new readers (writer preference). Every
    acquisition, read or write, gets a fencing token from the one counter of the lock.
    """

    def __init__(
        self,
        target: str | RedisBackend,
        name: str,
        *,
        ttl: float = 10.0,
        on_lost: LostCallback | None = None,
        auto_renew: bool = True,
        poll_max_s: float = DEFAULT_POLL_MAX_S,
    ) -> None:
        base = lock_keys("rw", name)
        self.keys = (f"{base}:w", f"{base}:r", f"{base}:i", f"{base}:fence")
        self.channel = f"{base}:wake"
        self._read = _RWSide(
            self,
            target,
            name,
            ttl=ttl,
            on_lost=on_lost,
            auto_renew=auto_renew,
            poll_max_s=poll_max_s,
            write=False,
        )
        self._write = _RWSide(
            self,
            target,
            name,
            ttl=ttl,
            on_lost=on_lost,
            auto_renew=auto_renew,
            poll_max_s=poll_max_s,
            write=True,
        )

    def read(self) -> _RWSide:
        return self._read

    def write(self) -> _RWSide:
        return self._write


class _RWSide(_LeaseLock):
    def __init__(
        self,
        rw: RedisRWLock,
        target: str | RedisBackend,
        name: str,
        *,
        ttl: float,
        on_lost: LostCallback | None,
        auto_renew: bool,
        poll_max_s: float,
        write: bool,
    ) -> None:
        super().__init__(target, name, ttl=ttl, on_lost=on_lost, auto_renew=auto_renew, poll_max_s=poll_max_s)
        self._rw = rw
        self._write = write
        # A waiting writer's intent outlives a few polls, so a crashed writer blocks readers briefly.
        self._intent_ms = int(max(3 * poll_max_s, 0.05) * 1000)

    async def acquire(self, timeout: float | None = None, *, blocking: bool = True) -> Held:
        abandon = ABANDON_WRITE if self._write else RELEASE_SHARE
        return await self._acquire(timeout, blocking, self._rw.channel, self._attempt, abandon)

    def _undo_keys(self, script: Script) -> Sequence[str]:
        w, r, i, _ = self._rw.keys
        return (w, i) if script is ABANDON_WRITE else (r,)

    def _refuse_reentry(self) -> None:
        # Any nesting can wait for itself: a write waits for our own read share or write, and a
        # nested read waits for a writer's intent while that writer waits for our outer read.
        if self._rw.read()._live_in_task() or self._rw.write()._live_in_task():
            raise LockError(f"read/write lock {self.name!r} is already held by this task (not reentrant)")

    async def _attempt(self, owner: str, queue: bool) -> Held | int:
        backend = self._backend()
        w, r, _, _ = self._rw.keys
        sent_at = time.monotonic()
        if self._write:
            args: tuple[Arg, ...] = (owner, self._ttl_ms, self._intent_ms if queue else 0)
            reply = await backend.run(ACQUIRE_WRITE, self._rw.keys, args)
        else:
            reply = await backend.run(ACQUIRE_READ, self._rw.keys, (owner, self._ttl_ms))
        got, value = expect_pair(reply, "acquire")
        if got != 1:
            return value
        if self._write:
            renew = (RENEW, (w,), (owner, self._ttl_ms))
            release = (RELEASE_WRITE, (w,))
            return self._held(
                backend,
                owner,
                token=value,
                sent_at=sent_at,
                kind="write",
                renew=renew,
                release=release,
                channel=self._rw.channel,
            )
        renew = (RENEW_SHARE, (r,), (owner, self._ttl_ms))
        return self._held(
            backend,
            owner,
            token=value,
            sent_at=sent_at,
            kind="read",
            renew=renew,
            release=(RELEASE_SHARE, (r,)),
            channel=self._rw.channel,
        )


class RedisSemaphore(_LeaseLock):
    """A counting semaphore of ``limit`` slots; each slot is a lease with a fencing token."""

    def __init__(
        self,
        target: str | RedisBackend,
        name: str,
        limit: int,
        *,
        ttl: float = 10.0,
        on_lost: LostCallback | None = None,
        auto_renew: bool = True,
        poll_max_s: float = DEFAULT_POLL_MAX_S,
    ) -> None:
        super().__init__(target, name, ttl=ttl, on_lost=on_lost, auto_renew=auto_renew, poll_max_s=poll_max_s)
        if not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"a semaphore needs a limit >= 1, got {limit!r}")
        self.limit = limit
        base = lock_keys("sem", name)
        self.keys = (base, f"{base}:fence")
        self.channel = f"{base}:wake"

    async def acquire(self, timeout: float | None = None, *, blocking: bool = True) -> Held:
        return await self._acquire(timeout, blocking, self.channel, self._attempt, RELEASE_SHARE)

    def _undo_keys(self, script: Script) -> Sequence[str]:
        return (self.keys[0],)

    def _refuse_reentry(self) -> None:
        # With all `limit` slots held by this very task, the acquire could only wait for itself.
        if self._live_in_task() >= self.limit:
            raise LockError(f"semaphore {self.name!r}: this task already holds all {self.limit} slots")

    async def _attempt(self, owner: str, queue: bool) -> Held | int:
        del queue  # a semaphore has no FIFO queue
        backend = self._backend()
        sent_at = time.monotonic()
        reply = await backend.run(ACQUIRE_SLOT, self.keys, (owner, self._ttl_ms, self.limit))
        got, value = expect_pair(reply, "acquire")
        if got != 1:
            return value
        renew = (RENEW_SHARE, (self.keys[0],), (owner, self._ttl_ms))
        release = (RELEASE_SHARE, (self.keys[0],))
        return self._held(
            backend,
            owner,
            token=value,
            sent_at=sent_at,
            kind="slot",
            renew=renew,
            release=release,
            channel=self.channel,
        )


__all__ = ["RedisRWLock", "RedisSemaphore"]

"""Redlock: one lock over N independent Redis servers (quorum N/2+1), with an honest token.

Acquire: the same Lua script as :class:`RedisLock` is sent to every server at once; the client
waits for EVERY reply, each bounded by ``server_timeout_s`` (a silent server counts as a no), and
holds the lock if a quorum said yes and ``validity = ttl - elapsed - drift`` is still positive,
elapsed measured from the moment the requests were sent. Otherwise it releases on every server at
once (including servers that did not answer: their SET may have landed) and retries after a
jittered delay. Release also goes to every server, so no key is left behind.

Fencing tokens: each server keeps its own counter. The Redlock token is the maximum of the quorum's
counters, and every server of the quorum is raised to that maximum before the lock is returned
(and again at release), so in the absence of server data loss any two quorums intersect in a server
whose counter already passed the earlier token, and tokens increase. This is NOT a safe fencing
token: a server that restarts without its data (no fsync) or a partition that isolates an old
holder can break it, and Redlock itself rests on timing assumptions. ``held.token_is_safe`` is
therefore False. A consensus-backed counter (the stalwart CP store, once it exists) is the fix;
see docs/locks.md.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import redis.exceptions

from stalwart.errors import ConfigError
from stalwart.lock._backend import Arg, expect_int, expect_pair, map_error
from stalwart.lock._conn import ConnPool
from stalwart.lock._errors import BackendError, BackendUnavailable, LockError, LockTimeout, NotAcquired
from stalwart.lock._held import Held, LostCallback, drift_allowance_s
from stalwart.lock._redis import _LockBase, check_ttl, lock_keys, new_owner
from stalwart.lock._scripts import ACQUIRE_FAST, BUMP, RELEASE_BUMP, RENEW, Script
from stalwart.lock._watchdog import Watchdog

#: Upper bound on Redlock servers (a fan-out larger than this is a configuration mistake).
MAX_SERVERS = 15
_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], RedlockClient]] = (
    weakref.WeakKeyDictionary()
)


class RedlockClient:
    """Connection pools to N independent Redis servers plus one watchdog for all Redlock leases."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        server_timeout_s: float = 0.25,
        connect_timeout_s: float = 0.25,
        drift_factor: float = 0.01,
        max_connections: int = 64,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= len(urls) <= MAX_SERVERS or len(set(urls)) != len(urls):
            raise ConfigError(f"Redlock needs 1..{MAX_SERVERS} distinct server URLs, got {list(urls)!r}")
        if server_timeout_s <= 0 or connect_timeout_s <= 0:
            raise ConfigError("timeouts must be positive")
        self.urls = tuple(urls)
        self.quorum = len(urls) // 2 + 1
        self.server_timeout_s = server_timeout_s
        self.drift_factor = drift_factor
        self.pools = [
            ConnPool(
                u,
                op_timeout_s=server_timeout_s,
                connect_timeout_s=connect_timeout_s,
                max_connections=max_connections,
            )
            for u in urls
        ]
        self.watchdog = Watchdog(self._renew_batch)
        self.rng = rng or random.Random()
        self.closed = False

    async def __aenter__(self) -> RedlockClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.closed = True
        await self.watchdog.aclose()
        for pool in self.pools:
            await pool.aclose()

    async def fanout(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> list[Any]:
        """Run a script on every server in parallel; wait for every reply or its timeout.

        Returns one entry per server: the reply, or a :class:`BackendError` value. No tasks are
        spawned: all requests are written first, then the replies are read against one deadline.
        """
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        results = await self._fanout_once(command)
        for i, result in enumerate(results):
            if isinstance(result, redis.exceptions.NoScriptError):  # that server restarted
                try:
                    await self.pools[i].execute(("SCRIPT", "LOAD", script.source))
                    results[i] = await self.pools[i].execute(command)
                except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
                    results[i] = exc
        return [
            map_error(r, f"{script.name} on {self.urls[i]}") if isinstance(r, BaseException) else r
            for i, r in enumerate(results)
        ]

    async def _fanout_once(self, command: Sequence[Arg]) -> list[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.server_timeout_s
        # A server with no open connection (first use, or it failed last time) gets its own task
        # for connect + request, so a slow connect cannot delay the others; the rest go inline.
        cold = {
            i: loop.create_task(self._cold_call(p, command, deadline))
            for i, p in enumerate(self.pools)
            if not p.has_idle
        }
        results: list[Any] = [None] * len(self.pools)
        pending: list[tuple[int, Any]] = []
        packed: list[bytes] | None = None  # the same bytes go to every server: encode once
        try:
            for i, pool in enumerate(self.pools):
                if i in cold:
                    continue
                try:
                    conn = await pool.checkout()  # an idle connection: no network, no wait
                except (redis.exceptions.RedisError, OSError, TimeoutError, LockError) as exc:
                    results[i] = exc
                    continue
                try:
                    if packed is None:
                        packed = conn.pack_command(*command)
                    await pool.send(conn, packed)
                except BaseException as exc:
                    pool.checkin(conn, False)
                    if not isinstance(exc, Exception):
                        raise
                    results[i] = exc
                    continue
                pending.append((i, conn))
            # One deadline for all the replies (no timer per read); whatever has not answered
            # by then counts as a failure and its connection is dropped.
            async with asyncio.timeout_at(deadline):
                while pending:
                    i, conn = pending[0]
                    healthy = False
                    results[i] = redis.exceptions.TimeoutError(f"no reply within {self.server_timeout_s} s")
                    try:
                        results[i], healthy = await conn.read_response(timeout=math.inf), True
                    except redis.exceptions.ResponseError as exc:
                        results[i], healthy = exc, True
                    except (redis.exceptions.RedisError, OSError) as exc:
                        results[i] = exc
                    finally:
                        pending.pop(0)
                        self.pools[i].checkin(conn, healthy)
        except TimeoutError:
            for i, _ in pending:
                results[i] = redis.exceptions.TimeoutError(f"no reply within {self.server_timeout_s} s")
        except BaseException:
            for task in cold.values():
                task.cancel()
            raise
        finally:
            for i, conn in pending:  # timed out or cancelled mid-read: never read these replies
                self.pools[i].checkin(conn, False)
        for i, task in cold.items():
            results[i] = await task
        # Every server has an answer: a reply or the error that stood in for it.
        assert all(r is not None for r in results), "a server was left without an answer"
        return results

    @staticmethod
    async def _cold_call(pool: ConnPool, command: Sequence[Arg], deadline: float) -> Any:
        try:
            async with asyncio.timeout_at(deadline):
                return await pool.execute(command)
        except (redis.exceptions.RedisError, OSError, TimeoutError, LockError) as exc:
            return exc

    async def _renew_batch(self, helds: Sequence[Held]) -> list[bool | BaseException]:
        out: list[bool | BaseException] = []
        for held in helds:
            key = cast(str, held.renew_data)  # Redlock stores the lock key as its renew data
            replies = await self.fanout(RENEW, (key,), (held.owner, int(held.ttl_s * 1000)))
            yes = sum(1 for r in replies if r == 1)
            no = sum(1 for r in replies if r == 0)
            if yes >= self.quorum:
                out.append(True)
            elif no > len(replies) - self.quorum:
                out.append(False)
            else:
                out.append(LockError(f"renewal reached only {yes} of {len(replies)} servers"))
        return out


def shared_redlock_client(urls: Sequence[str]) -> RedlockClient:
    per_loop = _SHARED.setdefault(asyncio.get_running_loop(), {})
    key = tuple(urls)
    client = per_loop.get(key)
    if client is None or client.closed:
        client = per_loop[key] = RedlockClient(urls)
    return client


class Redlock(_LockBase):
    """A mutex over N independent Redis servers (Redlock). See the module doc for its limits.

    ``held.token_is_safe`` is False: Redlock tokens are per-server, max-based counters, monotonic
    only while no server loses its data. Use a consensus-backed lock where fencing must be safe.
    """

    def __init__(
        self,
        target: Sequence[str] | RedlockClient,
        name: str,
        *,
        ttl: float = 10.0,
        on_lost: LostCallback | None = None,
        auto_renew: bool = True,
        retry_delay_s: float = 0.05,
        max_retries: int | None = None,
    ) -> None:
        super().__init__("", on_lost, auto_renew)
        self._redlock_target = target
        base = lock_keys("lock", name)
        self.name = name
        self.ttl_s = float(ttl)
        self._ttl_ms = check_ttl(ttl)
        if retry_delay_s <= 0 or (max_retries is not None and max_retries < 0):
            raise ConfigError("retry_delay_s must be positive and max_retries >= 0")
        self.retry_delay_s = retry_delay_s
        self.max_retries = max_retries
        self.key = base
        self.channel = f"{base}:wake"
        self._acquire_keys = (base, f"{base}:fence")
        self._release_keys = (base, f"{base}:fence")

    def client(self) -> RedlockClient:
        t = self._redlock_target
        return t if isinstance(t, RedlockClient) else shared_redlock_client(t)

    async def acquire(self, timeout: float | None = None, *, blocking: bool = True) -> Held:
        client = self.client()
        if not blocking:
            held = await self._attempt(client)
            if isinstance(held, BackendError):
                raise held
            if held is None:
                raise NotAcquired(self.name, "no quorum")
            return held
        try:
            async with asyncio.timeout(timeout):
                return await self._retry_loop(client)
        except TimeoutError:
            raise LockTimeout(self.name, f"no quorum within {timeout} s") from None

    async def _retry_loop(self, client: RedlockClient) -> Held:
        attempts = 0
        while True:
            held = await self._attempt(client)
            if isinstance(held, Held):
                return held
            attempts += 1
            if self.max_retries is not None and attempts > self.max_retries:
                if held is not None:
                    raise held  # too many servers failed for a quorum to be possible
                raise NotAcquired(self.name, f"no quorum after {attempts} attempts")
            # Jitter desynchronises competing clients so one of them can win a majority.
            await asyncio.sleep(client.rng.uniform(0.5, 1.5) * self.retry_delay_s)

    async def _attempt(self, client: RedlockClient) -> Held | BackendError | None:
        owner = new_owner()
        try:
            return await self._attempt_owner(client, owner)
        except BaseException:
            await asyncio.shield(self._release_everywhere(client, owner, 0))
            raise

    async def _attempt_owner(self, client: RedlockClient, owner: str) -> Held | BackendError | None:
        sent_at = time.monotonic()
        replies = await client.fanout(ACQUIRE_FAST, self._acquire_keys, (owner, self._ttl_ms))
        tokens: list[tuple[int, int]] = []  # (server index, token)
        errors: list[BaseException] = []
        for i, reply in enumerate(replies):
            if isinstance(reply, BaseException):
                errors.append(reply)
                continue
            got, value = expect_pair(reply, f"acquire on {client.urls[i]}")
            if got == 1:
                tokens.append((i, value))
        drift_s = drift_allowance_s(self.ttl_s, client.drift_factor)
        token = max((t for _, t in tokens), default=0)
        if len(tokens) >= client.quorum and any(t != token for _, t in tokens):
            # Raise every lagging counter of the quorum to the token before handing it out.
            bumped = await client.fanout(BUMP, (self._acquire_keys[1],), (token,))
            ok = {
                i
                for i, r in enumerate(bumped)
                if not isinstance(r, BaseException) and expect_int(r, "bump") >= token
            }
            tokens = [(i, t) for i, t in tokens if i in ok]
        validity_s = self.ttl_s - (time.monotonic() - sent_at) - drift_s
        if len(tokens) < client.quorum or validity_s <= 0:
            await self._release_everywhere(client, owner, token)
            if len(errors) > len(replies) - client.quorum:
                what = f"{len(errors)} of {len(replies)} Redlock servers failed, no quorum possible"
                failure = BackendUnavailable(f"{what}: {errors[0]}")
                failure.__cause__ = errors[0]
                return failure
            return None
        held = Held(
            name=self.name,
            owner=owner,
            token=token,
            ttl_s=self.ttl_s,
            sent_at=sent_at,
            drift_s=drift_s,
            releaser=self._releaser(client),
            on_lost=self._on_lost,
            token_is_safe=False,
            kind="redlock",
            renew_data=self.key,
        )
        if self._auto_renew:
            client.watchdog.add(held)
        return held

    def _releaser(self, client: RedlockClient) -> Callable[[Held], Awaitable[None]]:
        async def release(held: Held) -> None:
            client.watchdog.remove(held)
            released = await self._release_everywhere(client, held.owner, held.token)
            if released < client.quorum:
                held._mark_lost(f"only {released} servers still held the lease at release", at_release=True)

        return release

    async def _release_everywhere(self, client: RedlockClient, owner: str, token: int) -> int:
        replies = await client.fanout(RELEASE_BUMP, self._release_keys, (owner, self.channel, token))
        return sum(1 for r in replies if r == 1)


__all__ = ["MAX_SERVERS", "Redlock", "RedlockClient", "shared_redlock_client"]

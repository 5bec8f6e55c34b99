"""One Redis server as a lock backend: bounded calls, typed errors, scripts by SHA, one watchdog.

Every call is bounded twice: by the socket timeouts of redis-py and by ``asyncio.timeout`` around
the whole call (pool wait included), so a server that stops answering yields
:class:`BackendUnavailable` within ``op_timeout_s``, never a hang. redis-py's own retries are off:
a lock must decide itself whether retrying is safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from stalwart.errors import ConfigError
from stalwart.lock._conn import ConnPool
from stalwart.lock._errors import BackendError, BackendProtocolError, BackendUnavailable
from stalwart.lock._held import Held, check_drift_factor
from stalwart.lock._resp import RedisAddress, pack
from stalwart.lock._scripts import Script
from stalwart.lock._waker import Waker
from stalwart.lock._watchdog import Watchdog

Arg = str | int | float | bytes
RenewCall = tuple[Script, Sequence[str], Sequence[Arg]]


def map_error(exc: BaseException, what: str) -> BackendError:
    """Turn a redis-py or socket failure into the lock package's typed error."""
    match exc:
        case BackendError():
            return exc
        case (
            redis.exceptions.ConnectionError() | redis.exceptions.TimeoutError() | TimeoutError() | OSError()
        ):
            return BackendUnavailable(f"{what}: server unreachable or silent: {exc!r}")
        case (
            redis.exceptions.InvalidResponse()
            | redis.exceptions.ResponseError()
            | redis.exceptions.DataError()
        ):
            return BackendProtocolError(f"{what}: invalid reply: {exc!r}")
        case _:
            return BackendError(f"{what}: {exc!r}")


def expect_int(reply: Any, what: str) -> int:
    if type(reply) is not int:
        raise BackendProtocolError(f"{what}: expected an integer reply, got {reply!r:.200}")
    return reply


def expect_pair(reply: Any, what: str) -> tuple[int, int]:
    if type(reply) is not list or len(reply) != 2 or type(reply[0]) is not int or type(reply[1]) is not int:
        raise BackendProtocolError(f"{what}: expected a pair of integers, got {reply!r:.200}")
    return reply[0], reply[1]


class RedisBackend:
    """A connection pool to one Redis server, shared by every lock built on it.

    One :class:`Watchdog` renews all leases held through this backend; one :class:`Waker` holds
    the single pub/sub connection that wakes waiters. Close it with :meth:`aclose` (or use it as
    ``async with``).
    """

    def __init__(
        self,
        url: str,
        *,
        op_timeout_s: float = 2.0,
        connect_timeout_s: float = 1.0,
        max_connections: int = 64,
        drift_factor: float = 0.01,
    ) -> None:
        if op_timeout_s <= 0 or connect_timeout_s <= 0 or max_connections < 1:
            raise ConfigError("timeouts must be positive and max_connections at least 1")
        self.url = url
        self.op_timeout_s = op_timeout_s
        self.drift_factor = check_drift_factor(drift_factor)
        self.pool = ConnPool(
            url,
            op_timeout_s=op_timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_connections=max_connections,
        )
        # redis-py's own client: for pub/sub (wake-ups) and for callers who want plain commands.
        self.redis: redis.asyncio.Redis = redis.asyncio.Redis.from_pool(
            redis.asyncio.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=op_timeout_s,
                socket_timeout=op_timeout_s,
                socket_connect_timeout=connect_timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        )
        self.watchdog = Watchdog(self._renew_batch)
        self.waker = Waker(RedisAddress(url), op_timeout_s)
        self.closed = False

    async def __aenter__(self) -> RedisBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.closed = True
        await self.watchdog.aclose()
        await self.waker.aclose()
        await self.pool.aclose()
        await self.redis.aclose()

    async def run(
        self, script: Script, keys: Sequence[str], args: Sequence[Arg], *, idempotent: bool = False
    ) -> Any:
        """EVALSHA the script (loading it on NOSCRIPT). Every step is bounded by the timeouts.

        ``idempotent`` calls (release, renew) are retried once on a fresh connection when the
        connection broke (a restarted server leaves every pooled connection dead); an acquire is
        never retried blindly, since it may have taken the lock before the link broke.
        """
        return await self.run_packed(
            script, pack(("EVALSHA", script.sha, len(keys), *keys, *args)), idempotent=idempotent
        )

    async def run_packed(self, script: Script, command: bytes, *, idempotent: bool = False) -> Any:
        """:meth:`run` of an ``EVALSHA`` of ``script`` already encoded (hot paths build it from a
        prefix encoded once)."""
        for attempt in range(2):
            try:
                try:
                    return await self.pool.execute(command)
                except redis.exceptions.NoScriptError:
                    # The server forgot its scripts (restart or SCRIPT FLUSH): load once more.
                    await self.pool.execute(("SCRIPT", "LOAD", script.source))
                    return await self.pool.execute(command)
            except redis.exceptions.ConnectionError as exc:
                if not idempotent or attempt == 1:
                    raise map_error(exc, f"{script.name} on {self.url}") from exc
            except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
                raise map_error(exc, f"{script.name} on {self.url}") from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def run_many(self, calls: Sequence[tuple[Script, Sequence[str], Sequence[Arg]]]) -> list[Any]:
        """Pipeline several script calls in one round trip; per-call errors come back as values."""
        commands = [("EVALSHA", s.sha, len(keys), *keys, *args) for s, keys, args in calls]
        try:
            results = await self.pool.execute_many(commands)
            if any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
                await self.pool.execute_many([("SCRIPT", "LOAD", s.source) for s in {c[0] for c in calls}])
                results = await self.pool.execute_many(commands)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise map_error(exc, f"pipeline on {self.url}") from exc
        return [map_error(r, "pipelined call") if isinstance(r, BaseException) else r for r in results]

    async def _renew_batch(self, helds: Sequence[Held]) -> list[bool | BaseException]:
        calls: list[tuple[Script, Sequence[str], Sequence[Arg]]] = []
        for held in helds:
            # Every Redis-family lock stores (script, keys, args) as its renew data.
            calls.append(cast(RenewCall, held.renew_data))
        results = await self.run_many(calls)
        out: list[bool | BaseException] = []
        for r in results:
            if isinstance(r, BaseException):
                out.append(r)
            elif type(r) is int:
                out.append(r == 1)
            else:
                out.append(BackendProtocolError(f"renew: expected an integer reply, got {r!r:.200}"))
        return out


__all__ = ["Arg", "RedisBackend", "expect_int", "expect_pair", "map_error"]

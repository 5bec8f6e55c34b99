"""The Redlock client: one pipelined connection per server, parallel fan-out, one watchdog."""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import Sequence
from typing import Any, cast

from stalwart.errors import ConfigError
from stalwart.lock._backend import Arg
from stalwart.lock._errors import BackendError, BackendProtocolError, BackendUnavailable, LockError
from stalwart.lock._held import Held
from stalwart.lock._resp import RedisAddress, RespConnection, RespError, pack
from stalwart.lock._scripts import RENEW, Script
from stalwart.lock._watchdog import Watchdog

#: Upper bound on Redlock servers (a fan-out larger than this is a configuration mistake).
MAX_SERVERS = 15
_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], RedlockClient]] = (
    weakref.WeakKeyDictionary()
)


class RedlockClient:
    """Connections to N independent Redis servers plus one watchdog for all Redlock leases."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        server_timeout_s: float = 0.25,
        connect_timeout_s: float = 0.25,
        drift_factor: float = 0.01,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= len(urls) <= MAX_SERVERS or len(set(urls)) != len(urls):
            raise ConfigError(f"Redlock needs 1..{MAX_SERVERS} distinct server URLs, got {list(urls)!r}")
        if server_timeout_s <= 0 or connect_timeout_s <= 0:
            raise ConfigError("timeouts must be positive")
        self.urls = tuple(urls)
        self._servers = [RedisAddress(u) for u in urls]
        self.quorum = len(urls) // 2 + 1
        self.server_timeout_s = server_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.drift_factor = drift_factor
        self._conns: list[RespConnection | None] = [None] * len(urls)
        self._connecting: list[asyncio.Task[RespConnection] | None] = [None] * len(urls)
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
        for task in self._connecting:
            if task is not None and not task.done():
                task.cancel()
        for conn in self._conns:
            if conn is not None:
                conn.close()

    async def fanout(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> list[Any]:
        """Run a script on every server in parallel; wait for every reply or its timeout.

        Returns one entry per server: the reply, or a :class:`BackendError` value. The request is
        encoded once and written to every open connection, then all replies are awaited against
        one deadline; a server without an open connection connects in a task of its own.
        """
        packed = pack(("EVALSHA", script.sha, len(keys), *keys, *args))
        results = await self._fanout_once(packed)
        for i, result in enumerate(results):
            if isinstance(result, RespError) and result.message.startswith("NOSCRIPT"):
                # That server lost its scripts (a restart): load the script and ask once more.
                try:
                    async with asyncio.timeout(self.server_timeout_s):
                        conn = await self._connection(i)
                        await conn.request(pack(("SCRIPT", "LOAD", script.source)))
                        results[i] = await conn.request(packed)
                except (BackendError, TimeoutError) as exc:
                    results[i] = exc
        out = [
            BackendProtocolError(f"{script.name} on {self.urls[i]}: {r.message}")
            if isinstance(r, RespError)
            else r
            for i, r in enumerate(results)
        ]
        # Every server has an answer: a reply or the error that stood in for it.
        assert len(out) == len(self._servers), "one answer per server"
        return out

    async def _fanout_once(self, packed: bytes) -> list[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.server_timeout_s
        results: list[Any] = [None] * len(self._servers)
        sent: list[tuple[int, asyncio.Future[Any]]] = []
        cold: dict[int, asyncio.Task[Any]] = {}
        for i, conn in enumerate(self._conns):
            if conn is not None and conn.usable:
                sent.append((i, conn.request(packed)))
            else:
                cold[i] = loop.create_task(self._cold_call(i, packed, deadline))
        answered = 0
        try:
            async with asyncio.timeout_at(deadline):
                for i, fut in sent:
                    try:
                        results[i] = await fut
                    except BackendError as exc:
                        results[i] = exc
                    answered += 1
        except TimeoutError:
            for i, fut in sent[answered:]:
                fut.cancel()  # its reply, if it ever comes, is dropped by the connection
                results[i] = BackendUnavailable(f"{self.urls[i]}: no reply within {self.server_timeout_s} s")
        except BaseException:
            for _, fut in sent:
                fut.cancel()
            for task in cold.values():
                task.cancel()
            raise
        for i, task in cold.items():
            results[i] = await task
        return results

    async def _cold_call(self, i: int, packed: bytes, deadline: float) -> Any:
        try:
            async with asyncio.timeout_at(deadline):
                conn = await self._connection(i)
                return await conn.request(packed)
        except TimeoutError:
            return BackendUnavailable(f"{self.urls[i]}: no reply within {self.server_timeout_s} s")
        except BackendError as exc:
            return exc

    async def _connection(self, i: int) -> RespConnection:
        conn = self._conns[i]
        if conn is not None and conn.usable:
            return conn
        task = self._connecting[i]
        if task is None or task.done():
            # One connect per server at a time, shared by every caller that needs it.
            task = self._connecting[i] = asyncio.get_running_loop().create_task(self._open(i))
        return await asyncio.shield(task)

    async def _open(self, i: int) -> RespConnection:
        conn = await RespConnection.open(self._servers[i], self.connect_timeout_s)
        self._conns[i] = conn
        return conn

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


async def close_shared_redlock() -> None:
    for client in _SHARED.pop(asyncio.get_running_loop(), {}).values():
        await client.aclose()


__all__ = ["MAX_SERVERS", "RedlockClient", "close_shared_redlock", "shared_redlock_client"]

"""The Redlock client: one pipelined connection per server, parallel fan-out, one watchdog."""

from __future__ import annotations

import asyncio
import os
import random
import weakref
from collections.abc import Sequence
from typing import Any, cast

from stalwart.errors import ConfigError
from stalwart.lock._backend import Arg
from stalwart.lock._errors import BackendError, BackendProtocolError, BackendUnavailable, LockError
from stalwart.lock._held import Held, check_drift_factor
from stalwart.lock._resp import Gather, RedisAddress, RespConnection, RespError, pack, request_all
from stalwart.lock._scripts import BUMP, RELEASE_BUMP, RENEW, Script
from stalwart.lock._watchdog import Watchdog

#: Upper bound on Redlock servers (a fan-out larger than this is a configuration mistake).
MAX_SERVERS = 15
#: The scripts Redlock calls by SHA, loaded on every new connection.
_PRELOADED = (RELEASE_BUMP, RENEW, BUMP)
_PRELOAD = b"".join(pack(("SCRIPT", "LOAD", s.source)) for s in _PRELOADED)
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
        self.drift_factor = check_drift_factor(drift_factor)
        self._conns: list[RespConnection | None] = [None] * len(urls)
        self._connecting: list[asyncio.Task[RespConnection] | None] = [None] * len(urls)
        self._cold_tasks: set[asyncio.Task[Any]] = set()
        self._inflight: dict[Gather, float] = {}  # fan-outs awaiting replies -> their deadline
        self._sweeper: asyncio.TimerHandle | None = None
        self.watchdog = Watchdog(self._renew_batch)
        self.rng = rng or random.Random()
        self.closed = False
        self._pid = os.getpid()  # its connections and timers belong to this process's loop

    async def __aenter__(self) -> RedlockClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for gather in list(self._inflight):
            gather.expire(lambda i: BackendUnavailable(f"{self.urls[i]}: client closed"))
        await self.watchdog.aclose()
        for task in [*self._connecting, *self._cold_tasks]:
            if task is not None and not task.done():
                task.cancel()
        for conn in self._conns:
            if conn is not None:
                conn.close()

    async def fanout(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> list[Any]:
        """Run a script on every server in parallel; wait for every reply or its timeout.

        Returns one entry per server: the reply, or a :class:`BackendError` value.
        """
        return await self.fanout_packed(script, pack(("EVALSHA", script.sha, len(keys), *keys, *args)))

    async def fanout_packed(self, script: Script | None, packed: bytes, acks: int = 0) -> list[Any]:
        """:meth:`fanout` of an already encoded ``EVALSHA`` of ``script``, or (``script`` None) of
        a ``MULTI`` ... ``EXEC`` transaction whose first ``acks`` replies only acknowledge.

        The same bytes are written to every open connection, and ONE future (a :class:`Gather`)
        is resolved when the last reply arrived or, through the client's one sweeper timer, at the
        deadline; a server without an open connection connects in a task of its own under the
        same deadline. No task, timeout scope or future per server on the usual path.
        """
        if self._pid != os.getpid():
            # A forked child: the connections are the parent's sockets (a reply could go to the
            # wrong process) and the sweeper timer belongs to a loop that has no thread here.
            raise LockError(
                "this RedlockClient was created in the parent before fork(); create one in this process"
            )
        loop = asyncio.get_running_loop()
        gather = Gather(len(self._conns), loop.create_future())
        cold = request_all(self._conns, packed, gather, 0, acks)
        if gather.remaining:
            deadline = loop.time() + self.server_timeout_s
            tasks = [self._start_cold(gather, i, packed, deadline, acks) for i in cold] if cold else []
            # No timer per call: one sweeper per client, armed for the earliest deadline in flight
            # (on loopback nearly every fan-out completes long before it would fire).
            self._inflight[gather] = deadline
            if self._sweeper is None:
                self._sweeper = loop.call_at(deadline, self._sweep)
            try:
                await gather.future
            except BaseException:
                for task in tasks:
                    task.cancel()
                raise
            finally:
                self._inflight.pop(gather, None)
        results = gather.results
        # (A Gather resolves only once every slot is filled: by a reply, an error or the deadline.)
        if RespError in map(type, results):
            return await self._answer_errors(script, packed, results)
        return results

    async def _answer_errors(self, script: Script | None, packed: bytes, results: list[Any]) -> list[Any]:
        """Turn error replies into typed errors; a server that lost its scripts gets them loaded."""
        for i, first in enumerate(results):
            if type(first) is not RespError:
                continue
            answer: Any = first
            if script is not None and first.message.startswith("NOSCRIPT"):
                # That server lost its scripts (a restart): load the script and ask once more.
                try:
                    async with asyncio.timeout(self.server_timeout_s):
                        conn = await self._connection(i)
                        await conn.request(pack(("SCRIPT", "LOAD", script.source)))
                        answer = await conn.request(packed)
                except (BackendError, TimeoutError) as exc:
                    answer = exc
            if isinstance(answer, RespError):
                what = script.name if script is not None else "transaction"
                answer = BackendProtocolError(f"{what} on {self.urls[i]}: {answer.message}")
            results[i] = answer
        return results

    def _sweep(self) -> None:
        """Answer every fan-out past its deadline with timeouts; re-arm for the next one."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for gather, deadline in list(self._inflight.items()):
            if deadline <= now:
                del self._inflight[gather]
                gather.expire(self._no_reply)
        if self._inflight:
            self._sweeper = loop.call_at(min(self._inflight.values()), self._sweep)

    def _no_reply(self, i: int) -> BackendUnavailable:
        return BackendUnavailable(f"{self.urls[i]}: no reply within {self.server_timeout_s} s")

    def _start_cold(
        self, gather: Gather, i: int, packed: bytes, deadline: float, acks: int = 0
    ) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(self._cold_call(i, packed, deadline, acks))
        self._cold_tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._cold_tasks.discard(t)
            if t.cancelled():
                gather.deliver(i, BackendUnavailable(f"{self.urls[i]}: request cancelled"))
            else:
                exc = t.exception()
                gather.deliver(i, exc if exc is not None else t.result())

        task.add_done_callback(done)
        return task

    async def _cold_call(self, i: int, packed: bytes, deadline: float, acks: int = 0) -> Any:
        try:
            async with asyncio.timeout_at(deadline):
                conn = await self._connection(i)
                return await conn.request(packed, acks)
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
        # The scripts, loaded ahead of any request on this connection (no round trip: the replies
        # are dropped; the connection is ordered, so every EVALSHA after this finds them). The
        # acquire is a MULTI transaction that always takes effect, so a release to a server
        # without the script (new, restarted) must not depend on a NOSCRIPT reply arriving in
        # time: on a paused server it would not, and the lock key would stay until its TTL.
        conn.send_ignoring_replies(_PRELOAD, len(_PRELOADED))
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

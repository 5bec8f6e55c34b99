"""A client of a runtime cluster: dials nodes like a peer, sends requests, receives replies.

It authenticates with the cluster key like any peer and is known to the nodes by its id (which
must not be a node's). Replies land in a bounded inbox; when it is full the newest reply is
dropped and counted (a client re-asks on timeout).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import TracebackType
from typing import Self

from stalwart.errors import DeadlineExceededError
from stalwart.runtime._stats import RuntimeStats
from stalwart.runtime._tasks import exit_task_group
from stalwart.runtime._transport import Address, Transport, TransportConfig
from stalwart.sansio import NodeId


class Client:
    """``async with Client(...) as c: c.send(node, msg); source, reply = await c.receive(1.0)``."""

    def __init__(
        self,
        client_id: NodeId,
        cluster_key: bytes,
        nodes: Mapping[NodeId, Address],
        accept: tuple[type, ...],
        *,
        config: TransportConfig | None = None,
        max_inbox: int = 10_000,
    ) -> None:
        self.stats = RuntimeStats()
        self._inbox: asyncio.Queue[tuple[NodeId, object]] = asyncio.Queue(max_inbox)
        self.transport: Transport[object] = Transport(
            client_id,
            cluster_key,
            self._deliver,
            accept,
            listen=None,
            peers=nodes,
            config=config,
            stats=self.stats,
        )
        self._tg: asyncio.TaskGroup | None = None

    def _deliver(self, source: NodeId, message: object) -> None:
        try:
            self._inbox.put_nowait((source, message))
        except asyncio.QueueFull:
            self.stats.drops_overflow += 1

    def send(self, to: NodeId, message: object) -> None:
        self.transport.send(to, message)

    async def connected(self, to: NodeId, timeout_s: float) -> None:
        """Wait until the connection to ``to`` is authenticated."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.transport.wait_connected(to)
        except TimeoutError:
            raise DeadlineExceededError(f"no authenticated connection to {to} within {timeout_s}s") from None

    async def receive(self, timeout_s: float) -> tuple[NodeId, object]:
        """The next reply from any node; :class:`DeadlineExceededError` after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._inbox.get()
        except TimeoutError:
            raise DeadlineExceededError(f"no reply within {timeout_s}s") from None

    async def __aenter__(self) -> Self:
        tg = self._tg = asyncio.TaskGroup()
        await tg.__aenter__()
        await self.transport.start(tg)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tg is not None
        await self.transport.close()
        await exit_task_group(self._tg, exc_type, exc, tb)


__all__ = ["Client"]

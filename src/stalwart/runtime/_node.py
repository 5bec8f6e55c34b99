"""One node process: a protocol host, its storage and its transport, run under ``async with``.

Start: storage is loaded on the I/O thread and the protocol built from it, then the transport
listens and dials. Shutdown (leaving the ``async with``, normally or by an error):

1. the host finishes the cycle it is in (a persisted Ready is still sent) and stops;
2. the transport stops accepting, flushes queued messages for up to ``flush_timeout_ms``,
   drops (and counts) what is left, closes every connection and cancels its tasks;
3. storage is closed once no storage call is running.

A task that fails (a storage error, a broken protocol invariant) cancels the node: the error
leaves the ``async with`` in an ``ExceptionGroup``. A node that cannot fsync must stop, never
carry on as if its writes were durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, Self, TypeVar

from stalwart.runtime._host import HostConfig, ProtocolHost, Storage
from stalwart.runtime._stats import RuntimeStats
from stalwart.runtime._tasks import exit_task_group
from stalwart.runtime._transport import Address, LinkState, Transport, TransportConfig
from stalwart.sansio import DurableState, NodeId, Rng, SansIOProtocol

I = TypeVar("I")  # noqa: E741
M = TypeVar("M")
O = TypeVar("O")  # noqa: E741


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    host: HostConfig = field(default_factory=HostConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)


class Node(Generic[I, M, O]):
    """Runs ``protocol_factory(storage.load())`` over TCP until the ``async with`` ends."""

    def __init__(
        self,
        node_id: NodeId,
        *,
        cluster_key: bytes,
        storage: Storage,
        protocol_factory: Callable[[DurableState], SansIOProtocol[I, M, O]],
        accept: tuple[type, ...],
        on_output: Callable[[O], None],
        listen: Address | None,
        peers: Mapping[NodeId, Address],
        config: RuntimeConfig | None = None,
        rng: Rng | None = None,
        on_link: Callable[[NodeId, LinkState], None] | None = None,
    ) -> None:
        config = config or RuntimeConfig()
        self.stats = RuntimeStats()
        self.transport: Transport[I] = Transport(
            node_id,
            cluster_key,
            self._deliver,
            accept,
            listen=listen,
            peers=peers,
            config=config.transport,
            stats=self.stats,
            rng=rng,
            inbound_space=self._inbound_space,
            on_link=on_link,
        )
        self.host: ProtocolHost[I, M, O] = ProtocolHost(
            protocol_factory, storage, self.transport, on_output, config=config.host, stats=self.stats
        )
        self._tg: asyncio.TaskGroup | None = None
        self._host_task: asyncio.Task[None] | None = None

    @property
    def address(self) -> Address | None:
        """Where the node listens (the real port when 0 was asked for)."""
        return self.transport.address

    def deliver(self, source: NodeId, message: I) -> None:
        """Hand the protocol a message or request from inside this process."""
        self.host.deliver(source, message)

    def _deliver(self, source: NodeId, message: I) -> None:
        self.host.deliver(source, message)

    async def _inbound_space(self) -> None:
        await self.host.wait_for_space()

    async def __aenter__(self) -> Self:
        tg = self._tg = asyncio.TaskGroup()
        await tg.__aenter__()
        try:
            host_task = self._host_task = tg.create_task(self.host.run())
            started = asyncio.ensure_future(self.host.wait_started())
            await asyncio.wait([host_task, started], return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            if host_task.done():
                host_task.result()  # raises why loading or building the protocol failed
            await self.transport.start(tg)
        except BaseException as exc:
            try:
                await self._shutdown(type(exc), exc, exc.__traceback__)
            except BaseExceptionGroup as group:
                if len(group.exceptions) == 1:
                    # Starting failed for one reason (storage would not load, the protocol
                    # refused what it kept): raise that, not a group, as a failed open would.
                    raise group.exceptions[0] from None
                raise
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._shutdown(exc_type, exc, tb)

    async def _shutdown(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tg is not None
        try:
            self.host.stop()
            if self._host_task is not None:
                await asyncio.wait([self._host_task])
            await self.transport.close()
            await exit_task_group(self._tg, exc_type, exc, tb)
        finally:
            await self.host.close()


__all__ = ["Node", "RuntimeConfig"]

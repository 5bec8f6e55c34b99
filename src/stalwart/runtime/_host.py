"""The host loop: drives one sans-IO protocol by the contract of DESIGN.md section 2.

One *cycle* is::

    drain inbound (up to a bound) -> step each; tick as many times as the loop clock says
    ready = protocol.ready()
    1. storage.apply(ready.persist); if ready.must_sync: storage.sync()   (in the I/O thread)
    2. send ready.messages            (only after step 1 has returned: durable before sent)
    3. on_output(o) for ready.outputs
    protocol.advance(ready)

Group commit: while one cycle waits for its fsync, transports keep delivering messages into the
inbound buffer; the next cycle steps all of them and issues one fsync for everything they
produced. The fsync runs on a dedicated single I/O thread, so the event loop keeps reading
sockets and writing earlier (already durable) messages meanwhile; nothing of this cycle is
handed to the transport before the fsync returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from stalwart.errors import StalwartError
from stalwart.runtime._errors import RuntimeConfigError
from stalwart.runtime._stats import RuntimeStats
from stalwart.sansio import DurableState, NodeId, Ready, SansIOProtocol, StorageOp

log = logging.getLogger("stalwart.runtime.host")

I = TypeVar("I")  # noqa: E741  (what the protocol accepts)
M = TypeVar("M")
O = TypeVar("O")  # noqa: E741
T = TypeVar("T")


class Storage(Protocol):
    """What the host needs of stable storage; ``stalwart.storage.NodeStorage`` satisfies it."""

    def apply(self, ops: Sequence[StorageOp]) -> None: ...

    def sync(self) -> None: ...

    def load(self) -> DurableState: ...

    def close(self) -> None: ...


class Sender(Protocol):
    """Where the host hands messages to send: a non-blocking enqueue (the transport)."""

    def send(self, to: NodeId, payload: object) -> None: ...


@dataclass(frozen=True, slots=True)
class HostConfig:
    """Timing and bounds of the host loop."""

    tick_ms: float = 50.0
    max_catchup_ticks: int = 10
    max_inbound_messages: int = 10_000
    max_steps_per_cycle: int = 4_096

    def __post_init__(self) -> None:
        if not (self.tick_ms > 0 and math.isfinite(self.tick_ms)):
            raise RuntimeConfigError(f"tick_ms must be a positive number, got {self.tick_ms}")
        if min(self.max_catchup_ticks, self.max_inbound_messages, self.max_steps_per_cycle) < 1:
            raise RuntimeConfigError("host limits must be >= 1")


class ProtocolHost(Generic[I, M, O]):
    """Runs one protocol: builds it from storage, steps, ticks and executes its Ready."""

    def __init__(
        self,
        factory: Callable[[DurableState], SansIOProtocol[I, M, O]],
        storage: Storage,
        sender: Sender,
        on_output: Callable[[O], None],
        *,
        config: HostConfig | None = None,
        stats: RuntimeStats | None = None,
    ) -> None:
        self._factory = factory
        self._storage = storage
        self._sender = sender
        self._on_output = on_output
        self._config = config or HostConfig()
        self.stats = stats or RuntimeStats()
        self._protocol: SansIOProtocol[I, M, O] | None = None
        self._inbound: deque[tuple[NodeId, I]] = deque()
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._started = asyncio.Event()
        self._stopping = False
        # One I/O thread: storage calls are serialized in submission order and never overlap.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stalwart-io")
        self._pending_io: asyncio.Future[Any] | None = None

    @property
    def protocol(self) -> SansIOProtocol[I, M, O]:
        assert self._protocol is not None, "the protocol exists once run() has loaded storage"
        return self._protocol

    async def wait_started(self) -> None:
        """Return once the protocol has been built from what storage kept."""
        await self._started.wait()

    def deliver(self, source: NodeId, message: I) -> None:
        """Queue one inbound message for the next cycle (called by transports, never blocks)."""
        self._inbound.append((source, message))
        if len(self._inbound) >= self._config.max_inbound_messages:
            self._space.clear()
        self._wake.set()

    async def wait_for_space(self) -> None:
        """Backpressure for transports: wait while the inbound buffer is at its bound."""
        await self._space.wait()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Ask the loop to finish its current cycle and return (never cuts a cycle in half)."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Load, build the protocol and run cycles until :meth:`stop`."""
        loop = asyncio.get_running_loop()
        durable = await self._io(self._storage.load)
        self._protocol = self._factory(durable)
        self._started.set()
        tick_s = self._config.tick_ms / 1000.0
        next_tick = loop.time() + tick_s
        busy = False
        while not self._stopping:
            self._wake.clear()
            if not (self._inbound or busy):
                delay = next_tick - loop.time()
                if delay > 0:
                    try:
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                if self.stopping:
                    break
            else:
                # More work is ready at once: still let the transports run between cycles, so a
                # busy protocol can never starve the sockets (a cycle may not suspend at all).
                await asyncio.sleep(0)
            ticks, next_tick = self._due_ticks(loop.time(), next_tick, tick_s)
            busy = await self._cycle(ticks)

    async def close(self) -> None:
        """Wait for any storage call still running, then close storage and the I/O thread."""
        if self._pending_io is not None:
            await asyncio.wait([self._pending_io])
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._storage.close)
        finally:
            self._executor.shutdown(wait=True)

    def _due_ticks(self, now: float, next_tick: float, tick_s: float) -> tuple[int, float]:
        if now < next_tick:
            return 0, next_tick
        behind = int((now - next_tick) / tick_s) + 1
        # After a long pause (GC, SIGSTOP, an overloaded machine) deliver a bounded number of
        # ticks rather than a storm: the protocol sees time pass, but not faster than it can act.
        return min(behind, self._config.max_catchup_ticks), next_tick + behind * tick_s

    async def _cycle(self, ticks: int) -> bool:
        """One step/tick -> ready -> persist -> send -> outputs -> advance; True if ready was not empty."""
        protocol = self.protocol
        stats = self.stats
        for _ in range(min(len(self._inbound), self._config.max_steps_per_cycle)):
            source, message = self._inbound.popleft()
            stats.steps += 1
            try:
                protocol.step(source, message)
            except StalwartError as exc:
                # The protocol refused it before changing any state (the contract): log, go on.
                stats.step_errors += 1
                log.info("step refused node=%s source=%s reason=%r", protocol.node_id, source, exc)
        if len(self._inbound) < self._config.max_inbound_messages:
            self._space.set()
        for _ in range(ticks):
            protocol.tick()
        stats.ticks += ticks
        ready = protocol.ready()
        if not ready.is_empty:
            stats.ready_cycles += 1
            await self._execute(ready)
        protocol.advance(ready)
        return not ready.is_empty

    async def _execute(self, ready: Ready[M, O]) -> None:
        stats = self.stats
        if ready.persist:
            stats.persists += 1
            if ready.must_sync:
                elapsed_s = await self._io(self._apply_and_sync, ready.persist)
                stats.fsyncs += 1
                stats.fsync_time_s += elapsed_s
            else:
                await self._io(self._storage.apply, ready.persist)
        # Only now, with everything durable that must be, may anything leave this process.
        for envelope in ready.messages:
            self._sender.send(envelope.to, envelope.payload)
        for output in ready.outputs:
            stats.outputs += 1
            self._on_output(output)

    def _apply_and_sync(self, ops: Sequence[StorageOp]) -> float:
        self._storage.apply(ops)
        start = time.perf_counter()
        self._storage.sync()
        return time.perf_counter() - start

    async def _io(self, fn: Callable[..., T], *args: object) -> T:
        """Run a storage call on the I/O thread; on cancellation remember it so close() waits."""
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        self._pending_io = future
        result = await asyncio.shield(future)
        self._pending_io = None
        return result


__all__ = ["HostConfig", "ProtocolHost", "Sender", "Storage"]

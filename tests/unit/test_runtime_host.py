"""The host loop with a fake protocol, fake storage and a fake transport.

Asserts the contract's order (persist -> sync -> send -> outputs -> advance), that nothing is
handed to the transport before the fsync returned, group commit, ticks from the loop clock,
and fail-stop on storage errors.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pytest

from stalwart.errors import ProtocolError, StorageError
from stalwart.runtime import HostConfig, ProtocolHost, RuntimeConfigError
from stalwart.sansio import DurableState, Envelope, NodeId, PutMeta, Ready, StorageOp

A = NodeId("a")


def aio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run


B = NodeId("b")


class Log:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.lock = threading.Lock()

    def add(self, event: str) -> None:
        with self.lock:
            self.events.append(event)


class FakeStorage:
    def __init__(self, log: Log, durable: DurableState | None = None, fail_sync: bool = False) -> None:
        self.log = log
        self.durable = durable or DurableState()
        self.fail_sync = fail_sync
        self.gate = threading.Event()
        self.gate.set()
        self.sync_started = threading.Event()
        self.syncs = 0
        self.applied: list[StorageOp] = []
        self.closed = False

    def apply(self, ops: Sequence[StorageOp]) -> None:
        self.applied.extend(ops)
        self.log.add("apply")

    def sync(self) -> None:
        self.sync_started.set()
        assert self.gate.wait(10)
        if self.fail_sync:
            raise StorageError("disk on fire")
        self.syncs += 1
        self.log.add("sync")

    def load(self) -> DurableState:
        return self.durable

    def close(self) -> None:
        self.closed = True

    def is_closed(self) -> bool:
        return self.closed


class FakeSender:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.sent: list[tuple[NodeId, object]] = []

    def send(self, to: NodeId, payload: object) -> None:
        self.sent.append((to, payload))
        self.log.add("send")


class FakeProtocol:
    """Each step asks to persist one record (synced), send one message and output one value."""

    def __init__(self, log: Log, durable: DurableState, fail_on: str | None = None) -> None:
        self.log = log
        self.durable = durable
        self.fail_on = fail_on
        self.pending: list[str] = []
        self.ticks = 0
        self.ticks_per_cycle: list[int] = []
        self._ticks_at_ready = 0
        self.in_ready = False

    @property
    def node_id(self) -> NodeId:
        return A

    def step(self, source: NodeId, message: str) -> None:
        assert not self.in_ready, "stepped between ready() and advance()"
        if message == "refuse":
            raise ProtocolError("refused")
        if message == "crash":
            raise RuntimeError("a broken invariant")
        self.pending.append(message)

    def tick(self) -> None:
        assert not self.in_ready, "ticked between ready() and advance()"
        self.ticks += 1

    def ready(self) -> Ready[str, str]:
        self.ticks_per_cycle.append(self.ticks - self._ticks_at_ready)
        self._ticks_at_ready = self.ticks
        if not self.pending:
            return Ready()
        self.in_ready = True
        return Ready(
            persist=tuple(PutMeta(m, b"x") for m in self.pending),
            must_sync=True,
            messages=tuple(Envelope(B, m) for m in self.pending),
            outputs=tuple(self.pending),
        )

    def advance(self, ready: Ready[str, str]) -> None:
        if not ready.is_empty:
            self.log.add("advance")
        self.in_ready = False
        self.pending.clear()


class Harness:
    def __init__(self, tick_ms: float = 1000.0, durable: DurableState | None = None) -> None:
        self.log = Log()
        self.storage = FakeStorage(self.log, durable)
        self.sender = FakeSender(self.log)
        self.outputs: list[str] = []
        self.protocols: list[FakeProtocol] = []
        self.host: ProtocolHost[str, str, str] = ProtocolHost(
            self.factory, self.storage, self.sender, self.on_output, config=HostConfig(tick_ms=tick_ms)
        )

    def factory(self, durable: DurableState) -> FakeProtocol:
        proto = FakeProtocol(self.log, durable)
        self.protocols.append(proto)
        return proto

    def on_output(self, value: str) -> None:
        self.outputs.append(value)
        self.log.add("output")


async def until(predicate: object, timeout_s: float = 5.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.002)


@aio
async def test_order_is_persist_sync_send_output_advance() -> None:
    h = Harness()
    task = asyncio.create_task(h.host.run())
    await h.host.wait_started()
    h.host.deliver(B, "m1")
    await until(lambda: "advance" in h.log.events)
    assert h.log.events == ["apply", "sync", "send", "output", "advance"]
    assert h.sender.sent == [(B, "m1")] and h.outputs == ["m1"]
    assert h.storage.applied == [PutMeta("m1", b"x")]
    h.host.stop()
    await task
    await h.host.close()
    assert h.storage.is_closed()


@aio
async def test_nothing_is_sent_before_the_sync_returns_and_waiters_share_one_sync() -> None:
    h = Harness()
    h.storage.gate.clear()  # the fsync blocks until we open the gate
    task = asyncio.create_task(h.host.run())
    await h.host.wait_started()
    h.host.deliver(B, "first")
    await until(h.storage.sync_started.is_set)
    # The loop is free while the fsync runs: messages keep arriving, nothing leaves.
    for i in range(100):
        h.host.deliver(B, f"m{i}")
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    assert h.sender.sent == [] and h.outputs == []
    h.storage.gate.set()
    await until(lambda: len(h.sender.sent) == 101)
    # Group commit: the 100 messages that arrived during the first fsync share one more fsync.
    assert h.storage.syncs == 2
    assert h.log.events.count("sync") == 2
    first_send = h.log.events.index("send")
    assert h.log.events[:first_send] == ["apply", "sync"]
    h.host.stop()
    await task
    await h.host.close()


@aio
async def test_stop_during_a_sync_finishes_the_cycle_and_close_waits() -> None:
    h = Harness()
    h.storage.gate.clear()
    task = asyncio.create_task(h.host.run())
    await h.host.wait_started()
    h.host.deliver(B, "m")
    await until(h.storage.sync_started.is_set)
    h.host.stop()
    await asyncio.sleep(0.02)
    assert not task.done()
    h.storage.gate.set()
    await task
    assert h.sender.sent == [(B, "m")]
    await h.host.close()
    assert h.storage.is_closed()


@aio
async def test_cancelled_during_sync_sends_nothing_and_close_waits_for_the_sync() -> None:
    h = Harness()
    h.storage.gate.clear()
    task = asyncio.create_task(h.host.run())
    await h.host.wait_started()
    h.host.deliver(B, "m")
    await until(h.storage.sync_started.is_set)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    closing = asyncio.create_task(h.host.close())
    await asyncio.sleep(0.02)
    assert not h.storage.is_closed(), "storage closed while a sync was still running"
    h.storage.gate.set()
    await closing
    assert h.sender.sent == []
    assert h.storage.is_closed()


@aio
async def test_sync_failure_stops_the_node_before_anything_is_sent() -> None:
    h = Harness()
    h.storage.fail_sync = True
    task = asyncio.create_task(h.host.run())
    await h.host.wait_started()
    h.host.deliver(B, "m")
    with pytest.raises(StorageError):
        await asyncio.wait_for(task, 5)
    assert h.sender.sent == [] and h.outputs == []
    await h.host.close()


@aio
async def test_refused_steps_are_counted_and_a_crash_propagates() -> None:
    h = Harness()
    task = asyncio.create_task(h.host.run())
    await h.host.wait_started()
    h.host.deliver(B, "refuse")
    h.host.deliver(B, "ok")
    await until(lambda: h.outputs == ["ok"])
    assert h.host.stats.step_errors == 1
    h.host.deliver(B, "crash")
    with pytest.raises(RuntimeError, match="broken invariant"):
        await asyncio.wait_for(task, 5)
    await h.host.close()


@aio
async def test_ticks_follow_the_loop_clock() -> None:
    h = Harness(tick_ms=10)
    loop = asyncio.get_running_loop()
    start = loop.time()
    task = asyncio.create_task(h.host.run())
    await h.host.wait_started()
    await asyncio.sleep(0.3)
    h.host.stop()
    await task
    elapsed = loop.time() - start
    ticks = h.protocols[0].ticks
    assert ticks <= elapsed / 0.010 + 1
    assert ticks >= 10  # a shared machine may be slow, but 30 ticks were due
    assert h.host.stats.ticks == ticks
    await h.host.close()


@aio
async def test_a_long_pause_delivers_a_bounded_number_of_ticks() -> None:
    h = Harness(tick_ms=5)
    task = asyncio.create_task(h.host.run())
    await h.host.wait_started()
    await asyncio.sleep(0.02)
    time.sleep(0.3)  # block the loop: 60 ticks fall due at once
    await asyncio.sleep(0.05)
    h.host.stop()
    await task
    per_cycle = h.protocols[0].ticks_per_cycle
    assert max(per_cycle) == 10  # the catch-up happened, and was capped
    await h.host.close()


@aio
async def test_the_protocol_is_built_from_what_storage_kept() -> None:
    durable = DurableState(meta={"k": b"v"})
    h = Harness(durable=durable)
    task = asyncio.create_task(h.host.run())
    await h.host.wait_started()
    assert h.protocols[0].durable is durable
    h.host.stop()
    await task
    await h.host.close()


@aio
async def test_inbound_backpressure() -> None:
    log = Log()
    host: ProtocolHost[str, str, str] = ProtocolHost(
        lambda d: FakeProtocol(log, d),
        FakeStorage(log),
        FakeSender(log),
        lambda o: None,
        config=HostConfig(max_inbound_messages=5),
    )
    for i in range(5):
        host.deliver(B, str(i))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(host.wait_for_space(), 0.05)
    task = asyncio.create_task(host.run())
    await asyncio.wait_for(host.wait_for_space(), 5)
    host.stop()
    await task
    await host.close()


@pytest.mark.parametrize(
    "kwargs",
    [{"tick_ms": 0}, {"tick_ms": float("nan")}, {"max_inbound_messages": 0}, {"max_catchup_ticks": 0}],
)
def test_bad_host_config_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(RuntimeConfigError):
        HostConfig(**kwargs)  # type: ignore[arg-type]


class BusyProtocol(FakeProtocol):
    """Always has something to send: the host must still let other tasks run."""

    def ready(self) -> Ready[str, str]:
        self.in_ready = True
        return Ready(messages=(Envelope(B, "again"),))


@aio
async def test_a_busy_protocol_does_not_starve_the_event_loop() -> None:
    log = Log()
    sender = FakeSender(log)
    host: ProtocolHost[str, str, str] = ProtocolHost(
        lambda d: BusyProtocol(log, d), FakeStorage(log), sender, lambda o: None, config=HostConfig(tick_ms=1)
    )
    # If the host never yielded, only this thread could stop it (by the flag the loop checks).
    watchdog = threading.Timer(3, host.stop)
    watchdog.start()
    start = time.monotonic()
    task = asyncio.create_task(host.run())
    await host.wait_started()
    await asyncio.sleep(0.1)  # returns only if the busy host yields between cycles
    elapsed = time.monotonic() - start
    watchdog.cancel()
    host.stop()
    await task
    await host.close()
    assert elapsed < 2 and len(sender.sent) > 10

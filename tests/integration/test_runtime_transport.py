"""The runtime over real sockets and real files, in one process: convergence, durability before
acknowledgement, authentication, hostile bytes, the dial rule, bounded queues, restart."""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from stalwart import wire
from stalwart.errors import DeadlineExceededError, StorageError
from stalwart.gossip import (
    INPUT_TYPES,
    GossipCounter,
    Increment,
    IncrementAck,
    ReadTotal,
    TotalChanged,
    TotalReply,
)
from stalwart.runtime import (
    BackoffPolicy,
    Client,
    HostConfig,
    Node,
    QueueLimits,
    RuntimeConfig,
    RuntimeConfigError,
    Transport,
    TransportConfig,
    pack_batch,
)
from stalwart.sansio import DurableState, NodeId
from stalwart.storage import NodeStorage

KEY = b"integration-test-cluster-key-0001"
N1, N2, N3, C = NodeId("n1"), NodeId("n2"), NodeId("n3"), NodeId("client-1")
REPLIES = (IncrementAck, TotalReply)
FAST = RuntimeConfig(
    host=HostConfig(tick_ms=10),
    transport=TransportConfig(backoff=BackoffPolicy(base_ms=10, cap_ms=100), flush_timeout_ms=200),
)


def aio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 30))

    return run


class Cluster:
    """Gossip nodes on 127.0.0.1 with ports chosen up front (bound to 0, then reused)."""

    def __init__(self, tmp: Path, names: tuple[NodeId, ...], config: RuntimeConfig = FAST) -> None:
        self.tmp, self.names, self.config = tmp, names, config
        self.ports = dict.fromkeys(names, 0)
        self.outputs: dict[NodeId, list[TotalChanged]] = {n: [] for n in names}

    def node(self, name: NodeId, port: int = 0, key: bytes = KEY) -> Node[Any, Any, TotalChanged]:
        peers = {p: ("127.0.0.1", self.ports[p]) for p in self.names if p != name and self.ports[p]}

        def build(durable: DurableState) -> GossipCounter:
            return GossipCounter(
                name, sorted(p for p in self.names if p != name), durable, gossip_every_ticks=2
            )

        return Node(
            name,
            cluster_key=key,
            storage=NodeStorage(self.tmp / name),
            protocol_factory=build,
            accept=INPUT_TYPES,
            on_output=self.outputs[name].append,
            listen=("127.0.0.1", port),
            peers=peers,
            config=self.config,
        )

    def total(self, name: NodeId) -> int:
        return self.outputs[name][-1].total if self.outputs[name] else -1


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def increment(port: int, node: NodeId, amount: int, key: bytes = KEY, rid: int = 1) -> IncrementAck:
    async with Client(NodeId(f"client-{rid}"), key, {node: ("127.0.0.1", port)}, REPLIES) as client:
        await client.connected(node, 5)
        client.send(node, Increment(rid, amount))
        source, reply = await client.receive(5)
        assert source == node and isinstance(reply, IncrementAck) and reply.request_id == rid
        return reply


@aio
async def test_two_nodes_converge_ack_after_durable_and_restart(tmp_path: Path) -> None:
    cl = Cluster(tmp_path, (N1, N2))
    cl.ports = {N1: free_port(), N2: free_port()}
    async with cl.node(N1, cl.ports[N1]) as a, cl.node(N2, cl.ports[N2]) as b:
        ack = await increment(cl.ports[N1], N1, 5)
        assert ack.count == 5
        # The ack left only after the fsync: the count is on disk now (read it without the node).
        assert a.stats.fsyncs >= 1
        await increment(cl.ports[N2], N2, 2, rid=2)
        await until(lambda: cl.total(N1) == 7 and cl.total(N2) == 7)
        assert N2 in a.transport.connected_peers() and N1 in b.transport.connected_peers()
        # The dial rule: n1 < n2, so only n1 dials; n2 never tried.
        assert b.stats.connect_failures == 0
    # Clean shutdown released the storage lock; a restarted n1 comes back with its count.
    async with cl.node(N1, cl.ports[N1]) as again:
        proto = again.host.protocol
        assert isinstance(proto, GossipCounter) and proto.count == 5


@aio
async def test_wrong_key_is_refused_and_logged_node_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stalwart.runtime")
    cl = Cluster(tmp_path, (N1,))
    async with cl.node(N1) as node:
        assert node.address is not None
        port = node.address[1]
        async with Client(C, b"not-the-cluster-key-at-all-0000", {N1: ("127.0.0.1", port)}, REPLIES) as bad:
            bad.send(N1, Increment(1, 1000))
            with pytest.raises(DeadlineExceededError):
                await bad.connected(N1, 0.5)
        assert node.stats.auth_failures >= 1
        refused = [r for r in caplog.records if "peer refused" in r.getMessage()]
        assert refused and "AuthenticationError" in refused[0].getMessage()
        assert "remote=127.0.0.1:" in refused[0].getMessage()
        proto = node.host.protocol
        assert isinstance(proto, GossipCounter) and proto.count == 0  # never obeyed
        assert (await increment(port, N1, 1)).count == 1


async def _raw_exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        async with asyncio.timeout(5):
            return await reader.read()  # until the node drops us
    finally:
        writer.close()


@aio
async def test_garbage_and_oversized_frames_drop_the_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stalwart.runtime")
    cl = Cluster(tmp_path, (N1,))
    async with cl.node(N1) as node:
        assert node.address is not None
        port = node.address[1]
        hello_and_more = await _raw_exchange(port, b"\x00\x00\x00\x05garbage bytes that are no hello")
        assert hello_and_more.startswith(b"\x00\x00")  # the node's hello, then EOF
        await _raw_exchange(port, struct.pack(">I", 2**31) + b"x" * 100)  # announces 2 GiB
        assert node.stats.protocol_errors + node.stats.auth_failures >= 2
        messages = " ".join(r.getMessage() for r in caplog.records)
        assert "FrameTooLargeError" in messages
        assert (await increment(port, N1, 3)).count == 3


NOT_BATCHES = {
    "garbage": b"\x00\x00\x00\x03abc",
    # The batch format before wire.join_encoded: an array of bin items, each an encoded message.
    "old-format": pack_batch([wire.encode(ReadTotal(1))]),
    "empty": wire.join_encoded([]),
}


@pytest.mark.parametrize("body", list(NOT_BATCHES.values()), ids=list(NOT_BATCHES))
@aio
async def test_authenticated_peer_sending_garbage_is_dropped(tmp_path: Path, body: bytes) -> None:
    cl = Cluster(tmp_path, (N1,))
    async with cl.node(N1) as node:
        assert node.address is not None
        reader, writer = await asyncio.open_connection(*node.address)
        import os

        hs = wire.Handshake(KEY, "intruder", os.urandom(32), True)
        writer.write(wire.encode_frame(hs.hello()))
        decoder = wire.FrameDecoder(1 << 20)
        frames: list[bytes] = []
        while len(frames) < 2:
            frames += decoder.feed(await reader.read(4096))
        session = hs.receive_hello(frames[0])
        assert session.open(frames[1]) == b""
        writer.write(wire.encode_frame(session.seal(b"")))
        # A well-sealed frame whose content is not a batch of messages:
        writer.write(wire.encode_frame(session.seal(body)))
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # dropped
        writer.close()
        await until(lambda: node.stats.protocol_errors >= 1)
        async with Client(C, KEY, {N1: node.address}, REPLIES) as client:
            await client.connected(N1, 5)
            # A reply sent to a node is refused by the protocol (typed), the connection stays.
            client.send(N1, IncrementAck(1, 1))
            client.send(N1, ReadTotal(2))
            assert (await client.receive(5))[1] == TotalReply(2, 0)
            assert node.stats.step_errors == 1
            # A registered message type the node does not accept at all is a protocol error.
            client.send(N1, wire.Hello(1, "x", b"0" * 16, True, b"0" * 32))
            client.send(N1, ReadTotal(3))
            with pytest.raises(DeadlineExceededError):
                await client.receive(0.5)
        assert node.stats.protocol_errors >= 2


@aio
async def test_queue_to_a_down_peer_is_bounded_and_reconnects_back_off(tmp_path: Path) -> None:
    config = RuntimeConfig(
        host=HostConfig(tick_ms=5),
        transport=TransportConfig(
            queue=QueueLimits(max_messages=10),
            backoff=BackoffPolicy(base_ms=5, cap_ms=40),
            flush_timeout_ms=50,
        ),
    )
    cl = Cluster(tmp_path, (N1, N2), config)
    cl.ports = {N1: 0, N2: free_port()}  # n2 never starts
    async with cl.node(N1) as node:
        await asyncio.sleep(0.5)
        assert node.stats.drops_overflow > 0  # gossip to n2 piles up, the oldest go
        assert node.transport.queued(N2) <= 10
        assert 3 <= node.stats.connect_failures <= 0.5 / 0.005  # retried, but backed off
    assert node.stats.drops_shutdown <= 10


class FailingStorage(NodeStorage):
    """A real NodeStorage whose fsync fails from the second call on (a dying disk)."""

    calls = 0

    def sync(self) -> None:
        FailingStorage.calls += 1
        if FailingStorage.calls > 1:
            raise StorageError("injected: the disk is gone")
        super().sync()


@aio
async def test_a_failing_fsync_stops_the_node_and_nothing_depending_on_it_is_sent(tmp_path: Path) -> None:
    sent: list[object] = []

    def build(durable: DurableState) -> GossipCounter:
        return GossipCounter(N1, [], durable)

    node: Node[Any, Any, TotalChanged] = Node(
        N1, cluster_key=KEY, storage=FailingStorage(tmp_path / "n1"), protocol_factory=build,
        accept=INPUT_TYPES, on_output=sent.append, listen=("127.0.0.1", 0), peers={}, config=FAST,
    )  # fmt: skip
    with pytest.raises(ExceptionGroup) as caught:
        async with node:
            assert node.address is not None
            await increment(node.address[1], N1, 1)  # first fsync works
            async with Client(C, KEY, {N1: node.address}, REPLIES) as client:
                await client.connected(N1, 5)
                client.send(N1, Increment(2, 1))
                with pytest.raises(DeadlineExceededError):
                    await client.receive(1)  # the ack depends on the failed fsync: never sent
            await asyncio.sleep(5)  # the node's failure cancels this body
    assert caught.group_contains(StorageError)
    assert all(isinstance(o, TotalChanged) and o.total <= 1 for o in sent)


@aio
async def test_newest_connection_of_a_peer_wins(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stalwart.runtime")
    cl = Cluster(tmp_path, (N1,))
    async with cl.node(N1) as node:
        assert node.address is not None
        nodes = {N1: node.address}
        async with Client(C, KEY, nodes, REPLIES) as old, Client(C, KEY, nodes, REPLIES) as new:
            await old.connected(N1, 5)
            await new.connected(N1, 5)
            new.send(N1, ReadTotal(1))
            assert (await new.receive(5))[1] == TotalReply(1, 0)
            # The node closed the older connection when the newer one authenticated; the old
            # client redials (backoff) and in turn replaces the new one: either way, one at a time.
            await until(lambda: node.stats.connects >= 2)
            assert any("connection replaced node=n1 peer=client-1" in r.getMessage() for r in caplog.records)


@aio
async def test_shutdown_flushes_queued_messages_in_order(tmp_path: Path) -> None:
    cl = Cluster(tmp_path, (N1,))
    port = free_port()
    async with Client(C, KEY, {N1: ("127.0.0.1", port)}, REPLIES) as client:
        async with cl.node(N1, port) as node:
            await client.connected(N1, 5)
            for i in range(2000):
                node.transport.send(C, TotalReply(i, i))
        # The node is closed: what it had queued was flushed before its sockets closed.
        got = [await client.receive(5) for _ in range(2000)]
    assert [reply for _, reply in got] == [TotalReply(i, i) for i in range(2000)]
    assert node.stats.drops_shutdown == 0 and node.stats.frames_out < 2000  # batched


@aio
async def test_listening_on_a_busy_port_is_a_typed_error(tmp_path: Path) -> None:
    cl = Cluster(tmp_path, (N1, N2))
    async with cl.node(N1) as first:
        assert first.address is not None
        with pytest.raises(RuntimeConfigError, match="cannot listen"):
            async with cl.node(N2, first.address[1]):
                pass


@aio
async def test_keepalives_hold_quiet_connections_and_silent_peers_are_dropped(tmp_path: Path) -> None:
    import os

    transport = TransportConfig(keepalive_ms=100, idle_timeout_ms=600)
    cl = Cluster(tmp_path, (N1,), RuntimeConfig(host=HostConfig(tick_ms=10), transport=transport))
    async with cl.node(N1) as node:
        assert node.address is not None
        async with Client(C, KEY, {N1: node.address}, REPLIES, config=transport) as client:
            await client.connected(N1, 5)
            await asyncio.sleep(1.5)  # no messages either way, only keepalives
            assert client.transport.connected_peers() == {N1} and node.stats.connects == 1
        # A peer that completes the handshake and then says nothing at all is dropped.
        reader, writer = await asyncio.open_connection(*node.address)
        hs = wire.Handshake(KEY, "silent", os.urandom(32), True)
        writer.write(wire.encode_frame(hs.hello()))
        decoder = wire.FrameDecoder(1 << 20)
        frames: list[bytes] = []
        while len(frames) < 2:
            frames += decoder.feed(await reader.read(4096))
        session = hs.receive_hello(frames[0])
        writer.write(wire.encode_frame(session.seal(b"")))
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with asyncio.timeout(5):
            while await reader.read(4096):
                pass  # the node's keepalives, until it hangs up
        assert 0.5 <= loop.time() - start < 5
        writer.close()


@aio
async def test_a_node_whose_disk_holds_a_bad_state_refuses_to_start(tmp_path: Path) -> None:
    from stalwart.gossip import COUNT_KEY, GossipStateError
    from stalwart.sansio import PutMeta

    with NodeStorage(tmp_path / N1) as storage:
        storage.apply([PutMeta(COUNT_KEY, b"not 8 bytes")])
        storage.sync()
    cl = Cluster(tmp_path, (N1,))
    with pytest.raises(GossipStateError):
        async with cl.node(N1):
            pass
    async with Cluster(tmp_path, (N2,)).node(N2):  # nothing leaked: the loop and other nodes are fine
        pass


SENDER_SCRIPT = """
import asyncio, sys
from stalwart.gossip import TotalReply
from stalwart.runtime import Transport, TransportConfig
from stalwart.sansio import NodeId

async def main(port: int, total: int) -> None:
    peer = NodeId("n1")
    t = Transport(NodeId("client-9"), KEY, lambda s, m: None, (), listen=None,
                  peers={peer: ("127.0.0.1", port)}, config=TransportConfig(flush_timeout_ms=20_000))
    async with asyncio.TaskGroup() as tg:
        await t.start(tg)
        await t.wait_connected(peer)
        for i in range(total):
            t.send(peer, TotalReply(i, i))
            if i % 1000 == 999 and t.queued(peer) > 5000:
                await t.wait_drained(peer)
        await t.close()
    print(t.stats.drops_shutdown, flush=True)

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


@aio
async def test_a_process_that_exits_right_after_close_delivered_everything(tmp_path: Path) -> None:
    """close() hands every socket buffer to the kernel before returning, even to a slow reader."""
    import sys

    total = 60_000
    got: list[object] = []
    reading = asyncio.Event()

    async def slow_start() -> None:
        await reading.wait()  # the receiver does not read at first: buffers fill up

    receiver: Transport[object] = Transport(
        N1, KEY, lambda s, m: got.append(m), (TotalReply,), listen=("127.0.0.1", 0), inbound_space=slow_start
    )
    async with asyncio.TaskGroup() as tg:
        await receiver.start(tg)
        assert receiver.address is not None
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", f"KEY = {KEY!r}\n" + SENDER_SCRIPT, str(receiver.address[1]), str(total),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(1.5)
        reading.set()
        out, _ = await proc.communicate()
        assert proc.returncode == 0 and out.strip() == b"0"  # nothing dropped at shutdown
        await until(lambda: len(got) == total, timeout_s=20)
        await receiver.close()
    assert got[-1] == TotalReply(total - 1, total - 1)

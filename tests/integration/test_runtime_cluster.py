"""Three real `stalwart demo-node` processes on loopback: convergence, SIGKILL and restart from
the data dir, a wrong cluster key, hostile bytes, and a clean SIGTERM exit.

The tests share one cluster (module fixture) and run in file order; each states what it adds.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stalwart.errors import DeadlineExceededError
from stalwart.gossip import Increment, IncrementAck, ReadTotal, TotalReply
from stalwart.runtime import Client
from stalwart.sansio import NodeId

pytestmark = pytest.mark.integration

KEY = "cluster-test-key-0123456789abcdef"
NAMES = ("n1", "n2", "n3")
REPLIES = (IncrementAck, TotalReply)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeProc:
    """One demo-node process; its stdout JSON lines are collected by a thread."""

    def __init__(self, name: str, ports: dict[str, int], root: Path) -> None:
        self.name, self.ports, self.root = name, ports, root
        self.events: list[dict[str, Any]] = []
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.proc: subprocess.Popen[str] | None = None
        self.stderr_path = root / f"{name}.stderr"

    def start(self) -> None:
        peers = ",".join(f"{n}=127.0.0.1:{p}" for n, p in self.ports.items() if n != self.name)
        cmd = [
            sys.executable, "-m", "stalwart", "demo-node", "--id", self.name,
            "--listen", f"127.0.0.1:{self.ports[self.name]}", "--peers", peers,
            "--data-dir", str(self.root / self.name), "--tick-ms", "20", "--gossip-every-ticks", "2",
        ]  # fmt: skip
        env = {**os.environ, "STALWART_CLUSTER_KEY": KEY}
        self.events = []
        with self.stderr_path.open("a") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.put(json.loads(line))

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 15.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        for event in self.events:
            if predicate(event):
                return event
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.events.append(event)
            if predicate(event):
                return event
        raise AssertionError(f"{self.name}: no matching event in {timeout_s}s; saw {self.events[-5:]}")

    def wait_total(self, total: int) -> dict[str, Any]:
        return self.wait_for(lambda e: e["event"] == "total" and e["total"] == total)

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=15)


class DemoCluster:
    def __init__(self, root: Path) -> None:
        self.ports = {name: free_port() for name in NAMES}
        self.nodes = {name: NodeProc(name, self.ports, root) for name in NAMES}
        self.expected = dict.fromkeys(NAMES, 0)

    def increment(self, name: str, amount: int, key: str = KEY, connect_s: float = 10) -> IncrementAck:
        reply = asyncio.run(self._request(name, Increment(1, amount), key, connect_s))
        assert isinstance(reply, IncrementAck)
        self.expected[name] += amount
        assert reply.count == self.expected[name]
        return reply

    def read_total(self, name: str) -> int:
        reply = asyncio.run(self._request(name, ReadTotal(2)))
        assert isinstance(reply, TotalReply)
        return reply.total

    async def _request(self, name: str, msg: object, key: str = KEY, connect_s: float = 10) -> object:
        node = NodeId(name)
        async with Client(
            NodeId("test-client"), key.encode(), {node: ("127.0.0.1", self.ports[name])}, REPLIES
        ) as c:
            await c.connected(node, connect_s)
            c.send(node, msg)
            source, reply = await c.receive(10)
            assert source == node
            return reply

    def converge(self) -> None:
        total = sum(self.expected.values())
        for proc in self.nodes.values():
            proc.wait_total(total)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoCluster]:
    demo = DemoCluster(tmp_path_factory.mktemp("demo"))
    for proc in demo.nodes.values():
        proc.start()
    for proc in demo.nodes.values():
        proc.wait_for(lambda e: e["event"] == "started")
    yield demo
    for proc in demo.nodes.values():
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()


def test_three_nodes_converge(cluster: DemoCluster) -> None:
    cluster.increment("n1", 3)
    cluster.increment("n2", 2)
    cluster.increment("n3", 1)
    cluster.converge()
    assert cluster.read_total("n2") == 6


def test_sigkilled_node_restarts_from_its_data_dir_and_reconverges(cluster: DemoCluster) -> None:
    n2 = cluster.nodes["n2"]
    assert n2.signal(signal.SIGKILL) == -signal.SIGKILL
    cluster.increment("n1", 4)  # while n2 is down
    cluster.nodes["n1"].wait_total(10)
    cluster.nodes["n3"].wait_total(10)
    n2.start()
    started = n2.wait_for(lambda e: e["event"] == "started")
    assert started["count"] == 2  # its acknowledged, fsynced count survived SIGKILL
    cluster.increment("n2", 5)
    cluster.converge()
    # n1 (the lower id) redials the restarted n2 after its backoff.
    cluster.nodes["n2"].wait_for(
        lambda e: e["event"] == "link" and e["peer"] == "n1" and e["state"] == "connected"
    )


def test_wrong_cluster_key_is_refused_logged_and_the_cluster_keeps_working(cluster: DemoCluster) -> None:
    with pytest.raises(DeadlineExceededError, match="no authenticated connection"):
        cluster.increment("n3", 100, key="wrong-cluster-key-0123456789abcdef", connect_s=1)
    assert cluster.read_total("n3") == sum(cluster.expected.values())  # never obeyed
    log = cluster.nodes["n3"].stderr()
    assert "peer refused node=n3" in log and "AuthenticationError" in log and "remote=127.0.0.1:" in log
    cluster.increment("n3", 1)
    cluster.converge()


def _send_raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        received = b""
        while chunk := s.recv(65536):  # until the node drops the connection
            received += chunk
        return received


def test_garbage_and_an_oversized_frame_are_dropped_and_the_node_keeps_serving(cluster: DemoCluster) -> None:
    port = cluster.ports["n1"]
    _send_raw(port, os.urandom(64))
    _send_raw(port, struct.pack(">I", 0xFFFF_FFF0))  # a header announcing ~4 GiB
    log = cluster.nodes["n1"].stderr()
    assert "FrameTooLargeError" in log
    assert log.count("peer refused node=n1") >= 2
    cluster.increment("n1", 2)
    cluster.converge()


def test_sigterm_stops_every_node_cleanly(cluster: DemoCluster) -> None:
    for proc in cluster.nodes.values():  # n1 first: its peers are still up when it reports
        assert proc.signal(signal.SIGTERM) == 0
        stopped = proc.wait_for(lambda e: e["event"] == "stopped", timeout_s=5)
        assert stopped["stats"]["frames_in"] > 0 and stopped["stats"]["fsyncs"] > 0
        if proc.name == "n1":
            links = {link["peer"]: link["state"] for link in stopped["links"] if not link["client"]}
            assert links == {"n2": "connected", "n3": "connected"}


def _increment_until_failure(port: int, acked: list[int], stop: threading.Event) -> None:
    """Increment n1 by 1 as fast as acks come back; record each acknowledged count."""

    async def loop() -> None:
        node = NodeId("n1")
        async with Client(NodeId("loader"), KEY.encode(), {node: ("127.0.0.1", port)}, REPLIES) as c:
            await c.connected(node, 10)
            rid = 0
            while not stop.is_set():
                rid += 1
                c.send(node, Increment(rid, 1))
                try:
                    _, reply = await c.receive(1.0)
                except DeadlineExceededError:
                    return  # the node died under us
                assert isinstance(reply, IncrementAck)
                acked.append(reply.count)

    asyncio.run(loop())


def test_acknowledged_increments_survive_repeated_sigkill(tmp_path: Path) -> None:
    import random

    rounds = 20 if os.environ.get("STALWART_LONG") else 3
    rng = random.Random(os.environ.get("STALWART_SEED", "7"))
    ports = {"n1": free_port(), "n2": free_port()}
    nodes = {name: NodeProc(name, ports, tmp_path) for name in ports}
    try:
        for proc in nodes.values():
            proc.start()
        n1 = nodes["n1"]
        n1.wait_for(lambda e: e["event"] == "started")
        for _ in range(rounds):
            acked: list[int] = []
            stop = threading.Event()
            loader = threading.Thread(
                target=_increment_until_failure, args=(ports["n1"], acked, stop), daemon=True
            )
            loader.start()
            time.sleep(rng.uniform(0.2, 0.6))  # increments (each an fsync) are in flight now
            assert n1.signal(signal.SIGKILL) == -signal.SIGKILL
            stop.set()
            loader.join(timeout=15)
            assert acked, "no increment was acknowledged before the kill"
            n1.start()
            restarted = n1.wait_for(lambda e: e["event"] == "started")
            # Every acknowledged increment was durable before its ack left the node.
            assert restarted["count"] >= max(acked)
        total = n1.wait_for(lambda e: e["event"] == "started")["count"]
        nodes["n2"].wait_total(total)
    finally:
        for proc in nodes.values():
            if proc.proc is not None and proc.proc.poll() is None:
                proc.proc.kill()
                proc.proc.wait()

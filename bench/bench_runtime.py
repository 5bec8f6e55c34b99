"""Small messages per second between two processes on loopback: the runtime transport against
raw asyncio streams, in the same run.

Modes (each a receiver process and a sender process, TCP on 127.0.0.1):

- ``raw-streams``: length-prefixed bytes, no auth, no codec; the sender writes each frame with
  ``writer.write`` (draining every 64 frames), the receiver reads each with ``readexactly`` (the
  idiomatic asyncio-streams loop). This is the baseline of the goal (>= 80 %).
- ``raw-chunked``: the same bytes, but the receiver reads 256 KiB chunks and splits frames
  itself: a tougher baseline, printed for context.
- ``stalwart``: ``stalwart.runtime.Transport``: each message is a real ``gossip.Increment``
  encoded with ``wire.encode`` at every send, queued, batched into frames sealed with
  HMAC-SHA256 after the wire handshake, and decoded with ``wire.decode`` (validated, a new
  object per message) on the receiving side. The message objects (1024 distinct ones, cycled)
  are built before the timed loop, as raw's payload is.

Raw payloads have exactly the size of the encoded message. The rate is measured by the receiver
from its first message to its last.

Runs are interleaved: each round runs every mode once, the order reversed every other round, so
load from a noisy neighbour falls on all modes alike. "vs raw-streams" is the median over rounds
of each round's own ratio (stalwart's rate over raw-streams' rate in the same round); the ratio
of the two medians is printed too. Wall-clock rates swing with a shared machine's load; CPU time
per message does not, so "CPU-bound vs raw" compares the rates the CPU costs allow when each
process has a core to itself: 1 / max(receiver, sender CPU per message), against raw-streams'.

A second table shows group commit end to end: a real gossip node process (``NodeStorage``, real
fsync) and a client process with K concurrent clients, each sending ``Increment`` and waiting
for its ack (sent only after the fsync). With more clients, more increments share one fsync.

Usage::

    .venv/bin/python -m bench.bench_runtime [--messages 200000] [--runs 5] [--commit-seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

from stalwart import wire
from stalwart.gossip import INPUT_TYPES, GossipCounter, Increment, IncrementAck, TotalChanged
from stalwart.runtime import Client, Node, Transport, TransportConfig
from stalwart.sansio import DurableState, NodeId
from stalwart.storage import NodeStorage

KEY = b"bench-cluster-key-0123456789abcdef"
RECV, SEND = NodeId("recv"), NodeId("send")
HEADER = struct.Struct(">I")
MODES = ("raw-streams", "raw-chunked", "stalwart")
HIGH_WATER = int(os.environ.get("BENCH_HIGH_WATER", "4096"))


def payload_size() -> int:
    return len(wire.encode(Increment(123_456, 1)))


class Counter:
    def __init__(self, total: int) -> None:
        self.total, self.count, self.first, self.last = total, 0, 0.0, 0.0
        self.cpu_first = self.cpu_last = 0.0
        self.done = asyncio.Event()

    def hit(self, n: int = 1) -> None:
        if self.count == 0:
            self.first = time.perf_counter()
            self.cpu_first = time.process_time()
        self.count += n
        if self.count >= self.total:
            self.last = time.perf_counter()
            self.cpu_last = time.process_time()
            self.done.set()

    def deliver(self, source: NodeId, message: object) -> None:
        """The transport's per-message callback: one call per message, as raw's hit()."""
        if self.count == 0:
            self.first = time.perf_counter()
            self.cpu_first = time.process_time()
        self.count += 1
        if self.count >= self.total:
            self.last = time.perf_counter()
            self.cpu_last = time.process_time()
            self.done.set()


async def wait_all(counter: Counter) -> None:
    try:
        async with asyncio.timeout(120):
            await counter.done.wait()
    except TimeoutError:
        raise SystemExit(f"receiver: only {counter.count} of {counter.total} messages arrived") from None


async def recv_raw(total: int, chunked: bool) -> dict[str, Any]:
    counter = Counter(total)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if chunked:
                buf = b""
                while counter.count < total:
                    data = await reader.read(256 * 1024)
                    if not data:
                        break
                    buf += data
                    pos, n = 0, 0
                    while len(buf) - pos >= 4:
                        (size,) = HEADER.unpack_from(buf, pos)
                        if len(buf) - pos - 4 < size:
                            break
                        _ = buf[pos + 4 : pos + 4 + size]
                        pos += 4 + size
                        n += 1
                    buf = buf[pos:]
                    counter.hit(n)
            else:
                while counter.count < total:
                    (size,) = HEADER.unpack(await reader.readexactly(4))
                    await reader.readexactly(size)
                    counter.hit()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    await wait_all(counter)
    server.close()
    return {
        "elapsed_s": counter.last - counter.first,
        "recv_cpu_s": counter.cpu_last - counter.cpu_first,
        "received": counter.count,
    }


async def send_raw(port: int, total: int) -> dict[str, Any]:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = b"x" * payload_size()
    frame = HEADER.pack(len(payload)) + payload
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(total):
        writer.write(frame)
        if i % 64 == 63:
            await writer.drain()
    await writer.drain()
    send_s, send_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    writer.close()
    await writer.wait_closed()
    return {"send_s": send_s, "send_cpu_s": send_cpu_s}


async def recv_stalwart(total: int) -> dict[str, Any]:
    counter = Counter(total)
    transport: Transport[Increment] = Transport(
        RECV,
        KEY,
        counter.deliver,
        (Increment,),
        listen=("127.0.0.1", 0),
        config=TransportConfig(),
    )
    async with asyncio.TaskGroup() as tg:
        await transport.start(tg)
        assert transport.address is not None
        print(json.dumps({"port": transport.address[1]}), flush=True)
        await wait_all(counter)
        await transport.close()
    stats = transport.stats
    return {
        "elapsed_s": counter.last - counter.first,
        "recv_cpu_s": counter.cpu_last - counter.cpu_first,
        "received": counter.count,
        "frames_in": stats.frames_in,
        "protocol_errors": stats.protocol_errors,
    }


async def send_stalwart(port: int, total: int) -> dict[str, Any]:
    transport: Transport[object] = Transport(
        SEND,
        KEY,
        lambda src, msg: None,
        (),
        listen=None,
        peers={RECV: ("127.0.0.1", port)},
        config=TransportConfig(flush_timeout_ms=30_000),
    )
    async with asyncio.TaskGroup() as tg:
        await transport.start(tg)
        await transport.wait_connected(RECV)
        send = transport.send
        # Built before the timed loop, as raw's payload is: building messages is the protocol's
        # work, carrying them is the transport's. Each send still encodes its message.
        messages = [Increment(123_000 + i, 1) for i in range(1024)]
        start, cpu_start = time.perf_counter(), time.process_time()
        for i in range(total):
            send(RECV, messages[i & 1023])
            if i % 256 == 255 and transport.queued(RECV) >= HIGH_WATER:
                await transport.wait_drained(RECV)
        await transport.wait_drained(RECV)
        send_s, send_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        await transport.close()
    s = transport.stats
    return {
        "frames_out": s.frames_out,
        "drops": s.drops_overflow + s.drops_shutdown,
        "writes": s.socket_writes,
        "send_s": send_s,
        "send_cpu_s": send_cpu_s,
    }


def child(role: str, mode: str, total: int, port: int) -> None:
    if role == "recv":
        result = asyncio.run(
            recv_stalwart(total) if mode == "stalwart" else recv_raw(total, mode == "raw-chunked")
        )
    else:
        result = asyncio.run(send_stalwart(port, total) if mode == "stalwart" else send_raw(port, total))
    print(json.dumps(result), flush=True)


def run_once(mode: str, total: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_runtime", "--mode", mode, "--messages", str(total)]
    recv = subprocess.Popen([*cmd, "--role", "recv"], stdout=subprocess.PIPE, text=True)
    assert recv.stdout is not None
    port = json.loads(recv.stdout.readline())["port"]
    sender = subprocess.run(
        [*cmd, "--role", "send", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out, _ = recv.communicate(timeout=300)
    if recv.returncode != 0 or sender.returncode != 0:
        raise SystemExit(f"{mode}: a child failed: {sender.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result.update(json.loads(sender.stdout.strip().splitlines()[-1]))
    if result["received"] != total:
        raise SystemExit(f"{mode}: received {result['received']} of {total}")
    result["rate"] = (total - 1) / result["elapsed_s"]
    return result


async def run_commit_node(data_dir: str) -> None:
    """A gossip node with real storage; prints its port, then its stats when SIGTERM arrives."""
    node_id = NodeId("n1")

    def build(durable: DurableState) -> GossipCounter:
        return GossipCounter(node_id, [], durable)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    node: Node[Any, Any, TotalChanged] = Node(
        node_id, cluster_key=KEY, storage=NodeStorage(data_dir), protocol_factory=build,
        accept=INPUT_TYPES, on_output=lambda o: None, listen=("127.0.0.1", 0), peers={},
    )  # fmt: skip
    async with node:
        assert node.address is not None
        print(json.dumps({"port": node.address[1]}), flush=True)
        await stop.wait()
    print(json.dumps(node.stats.snapshot()), flush=True)


async def run_clients(port: int, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` concurrent clients, each: send Increment, wait for its ack, repeat."""
    node = NodeId("n1")
    acks = 0

    async def one(j: int) -> None:
        nonlocal acks
        async with Client(NodeId(f"c{j}"), KEY, {node: ("127.0.0.1", port)}, (IncrementAck,)) as client:
            await client.connected(node, 10)
            deadline = time.monotonic() + seconds
            rid = 0
            while time.monotonic() < deadline:
                rid += 1
                client.send(node, Increment(rid, 1))
                _, reply = await client.receive(10)
                assert isinstance(reply, IncrementAck) and reply.request_id == rid
                acks += 1

    async with asyncio.TaskGroup() as tg:
        for j in range(clients):
            tg.create_task(one(j))
    return {"acks": acks}


def group_commit(clients: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        base = [sys.executable, "-m", "bench.bench_runtime"]
        node = subprocess.Popen(
            [*base, "--role", "node", "--data-dir", tmp], stdout=subprocess.PIPE, text=True
        )
        assert node.stdout is not None
        port = json.loads(node.stdout.readline())["port"]
        load = subprocess.run(
            [*base, "--role", "clients", "--port", str(port), "--clients", str(clients),
             "--commit-seconds", str(seconds)],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        node.send_signal(signal.SIGTERM)
        out, _ = node.communicate(timeout=30)
    stats = json.loads(out.strip().splitlines()[-1])
    acks = json.loads(load.stdout.strip().splitlines()[-1])["acks"]
    return {"acks": acks, "fsyncs": stats["fsyncs"], "fsync_time_s": stats["fsync_time_s"]}


def report_group_commit(seconds: float) -> None:
    print(f"\ngroup commit: acknowledged increments (each durable before its ack), {seconds:.0f} s per row")
    print(f"{'clients':>8} {'acks/s':>10} {'fsyncs/s':>10} {'acks per fsync':>15} {'mean fsync ms':>14}")
    for clients in (1, 16, 64):
        r = group_commit(clients, seconds)
        fsyncs = max(1, r["fsyncs"])
        print(
            f"{clients:>8} {r['acks'] / seconds:>10,.0f} {r['fsyncs'] / seconds:>10,.0f} "
            f"{r['acks'] / fsyncs:>15.1f} {r['fsync_time_s'] / fsyncs * 1000:>14.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mode", choices=MODES)
    parser.add_argument("--role", choices=("recv", "send", "node", "clients"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--commit-seconds", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--data-dir", default="")
    args = parser.parse_args()
    if args.role == "node":
        asyncio.run(run_commit_node(args.data_dir))
        return
    if args.role == "clients":
        print(json.dumps(asyncio.run(run_clients(args.port, args.clients, args.commit_seconds))), flush=True)
        return
    if args.role:
        child(args.role, args.mode, args.messages, args.port)
        return
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for round_ in range(args.runs):
        # Interleaved, and alternating which mode goes first, so a noisy neighbour (or a machine
        # warming up) hurts every mode alike.
        for mode in MODES if round_ % 2 == 0 else reversed(MODES):
            results[mode].append(run_once(mode, args.messages))
    report(results, args.messages, args.runs)
    if args.commit_seconds > 0:
        report_group_commit(args.commit_seconds)


def report(results: dict[str, list[dict[str, Any]]], total: int, runs: int) -> None:
    def med(mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in results[mode]))

    base = med("raw-streams", "rate")
    load = os.getloadavg()[0]
    print(f"\nsmall messages ({payload_size()} B payload), {total} per run, {runs} runs, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average {load:.1f}")  # fmt: skip
    head = ("mode", "median msg/s", "min", "max", "vs raw-streams", "ratio of meds", "recv CPU us/msg",
            "send CPU us/msg", "CPU-bound vs raw")  # fmt: skip
    print(
        f"{head[0]:<12} {head[1]:>13} {head[2]:>10} {head[3]:>10} {head[4]:>15} {head[5]:>15} "
        f"{head[6]:>16} {head[7]:>16} {head[8]:>17}"
    )

    def cpu_bound(mode: str) -> float:
        # The rate the busier of the two processes allows when each has a core to itself.
        return 1 / max(med(mode, "recv_cpu_s"), med(mode, "send_cpu_s"))

    for mode in MODES:
        rates = [r["rate"] for r in results[mode]]
        # Paired by round: each run against the raw-streams run of its own round.
        pairs = zip(results[mode], results["raw-streams"], strict=True)
        paired = statistics.median(r["rate"] / b["rate"] for r, b in pairs)
        recv_us = med(mode, "recv_cpu_s") / total * 1e6
        send_us = med(mode, "send_cpu_s") / total * 1e6
        print(
            f"{mode:<12} {med(mode, 'rate'):>13,.0f} {min(rates):>10,.0f} {max(rates):>10,.0f} "
            f"{paired:>15.0%} {med(mode, 'rate') / base:>15.0%} {recv_us:>16.2f} {send_us:>16.2f} "
            f"{cpu_bound(mode) / cpu_bound('raw-streams'):>17.0%}"
        )
    st = results["stalwart"][-1]
    print(
        f"stalwart last run: {st['frames_out']} frames for {total} messages "
        f"({total / max(1, st['frames_out']):.0f} msg/frame), drops={st['drops']}, "
        f"protocol_errors={st['protocol_errors']}"
    )
    print("vs raw-streams: median over rounds of the ratio to raw-streams in the same round.")
    print("CPU us/msg is process CPU time (user+sys) over the measured window: robust on a shared machine.")
    print("CPU-bound vs raw: 1/max(recv, send CPU per msg) against raw-streams', the ratio on idle cores.")


if __name__ == "__main__":
    main()

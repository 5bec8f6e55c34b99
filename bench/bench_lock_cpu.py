"""Where a Redlock cycle's client CPU goes, without the network: in-memory transports.

Every connection's transport answers each request on the next loop turn with the reply Redis
would give (the acquire transaction: ``+OK +QUEUED +QUEUED [OK, n]``; a script: ``:1``), so no
system call is made and what is left is Python: the event loop, the parser, the lock. Rows, each
a Redlock acquire+release over 5 "servers" (client CPU per cycle, median of the runs):

- raw floor: the same two requests over bare Protocols that only count reply lines (as the
  ``raw fan-out floor`` of ``bench.bench_locks``);
- fan-out machinery: the same requests through ``RedlockClient.fanout_packed`` (RESP parsing,
  the Gather, the deadline bookkeeping), no lock logic;
- Redlock, no watchdog: ``Redlock(..., auto_renew=False)``;
- Redlock: with the watchdog (a timer armed per acquire, cancelled per release).

The differences between rows are the cost of each layer. ``--cycles`` per row per run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.bench_locks import RawFanout, _RawReply, raw_floor_cycle
from stalwart.lock import Redlock, RedlockClient
from stalwart.lock._resp import RespConnection, pack
from stalwart.lock._scripts import RELEASE_BUMP

SERVERS = 5
_MULTI = b"*1\r\n$5\r\nMULTI\r\n"


class MemoryTransport(asyncio.Transport):
    """Answers each request, on the next loop turn, as Redis would answer the Redlock cycle's."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._counter = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if bytes(data[: len(_MULTI)]) == _MULTI:
            self._counter += 1
            reply = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:%d\r\n" % self._counter
        else:  # the release script: released
            reply = b":1\r\n"
        self._loop.call_soon(self._protocol.data_received, reply)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


async def cpu_us(cycle: Callable[[], Awaitable[Any]], n: int) -> float:
    for _ in range(min(500, n)):
        await cycle()
    c0 = time.process_time()
    for _ in range(n):
        await cycle()
    return (time.process_time() - c0) / n * 1e6


async def measure(cycles: int, runs: int) -> dict[str, list[float]]:
    client = RedlockClient([f"redis://127.0.0.1:{7001 + i}" for i in range(SERVERS)])
    for i in range(SERVERS):
        conn = RespConnection(f"memory-{i}")
        conn.connection_made(MemoryTransport(conn))
        client._conns[i] = conn
    raws = []
    for _ in range(SERVERS):
        raw = _RawReply()
        raw.connection_made(MemoryTransport(raw))
        raws.append(raw)
    plain = Redlock(client, "cpu", ttl=10.0, auto_renew=False)
    renewed = Redlock(client, "cpu-renewed", ttl=10.0)
    acquire = plain._acquire_head + b"$32\r\n" + b"o" * 32 + b"\r\n" + plain._acquire_tail
    release = pack(("EVALSHA", RELEASE_BUMP.sha, 2, plain.key, plain._fence_key, "o" * 32, 0))

    async def machinery() -> None:
        await client.fanout_packed(None, acquire, 3)
        await client.fanout_packed(RELEASE_BUMP, release)

    def lock_cycle(lock: Redlock) -> Callable[[], Awaitable[None]]:
        async def cycle() -> None:
            held = await lock.acquire()
            await held.release()

        return cycle

    rows: dict[str, Callable[[], Awaitable[Any]]] = {
        "raw floor": raw_floor_cycle(RawFanout(raws), "cpu-raw"),
        "fan-out machinery": machinery,
        "Redlock, no watchdog": lock_cycle(plain),
        "Redlock": lock_cycle(renewed),
    }
    out: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(runs):  # interleaved: each run measures every row once
        for name, cycle in rows.items():
            out[name].append(await cpu_us(cycle, cycles))
    await client.aclose()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=20000, help="cycles per row per run")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    out = asyncio.run(measure(args.cycles, args.runs))
    print(f"\nRedlock acquire+release over {SERVERS} in-memory servers: client CPU per cycle (us)")
    print(f"{'row':24} {'median':>7} {'+ over the row above':>21}   runs")
    previous = None
    for name, values in out.items():
        med = statistics.median(values)
        step = "" if previous is None else f"{med - previous:+.1f}"
        print(f"{name:24} {med:7.1f} {step:>21}   " + " ".join(f"{v:.1f}" for v in values))
        previous = med
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Distributed locks side by side: stalwart.lock against the libraries a user would pick instead.

Run: ``.venv/bin/python -m bench.bench_locks [--iterations N] [--runs R] [--seconds S] [--only TEXT]``

Starts its own servers (five redis-servers and one ZooKeeper, 127.0.0.1, free ports, temp dirs)
and measures, in one process on the same machine:

- uncontended acquire+release latency (median per run, then the median of the runs), for the bare
  floor (SET NX PX + EVALSHA compare-and-delete, sync and asyncio), the raw fan-out floors (the
  locks' own acquire and release requests sent over bare asyncio Protocols to 1 server and to 5
  servers at once, waiting for every reply: what the machine allows before any client code),
  stalwart RedisLock (asyncio
  and the blocking wrapper), redis-py's Lock (sync and asyncio), python-redis-lock, pottery's
  Redlock (sync and asyncio, 5 servers), aioredlock (5 servers), stalwart Redlock (5 servers),
  kazoo's Lock and stalwart ZooKeeperLock;
- contended throughput: 8 workers (threads for sync libraries, tasks for asyncio ones) looping
  acquire / increment / release on one lock for a fixed time, in acquisitions per second.

Peers run with their defaults (e.g. redis-py's Lock polls every 0.1 s while blocked, as a user
who does not tune it gets). Benchmarks are never timed assertions: this prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio

from stalwart.lock import (
    BlockingLock,
    RedisBackend,
    RedisLock,
    Redlock,
    RedlockClient,
    ZooKeeperClient,
    ZooKeeperLock,
)
from stalwart.lock._scripts import ACQUIRE_FAST, RELEASE_BUMP, SCRIPTS
from stalwart.lock._scripts import RELEASE as RELEASE_SCRIPT
from tests.servers.redis import RedisServer, start_redis
from tests.servers.zookeeper import ZooKeeperServer, start_zookeeper

RELEASE = "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end"
WORKERS = 8

SyncCycle = Callable[[], None]
AsyncCycle = Callable[[], Awaitable[None]]


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


#: CPU time of this process (every thread) per cycle of the last latency measurement, in us:
#: steadier than wall time on a shared machine (servers' CPU is not included).
LAST_CPU_US = [float("nan")]
#: CPU time of the Redis servers together per cycle of the last latency measurement, in us.
LAST_SERVER_CPU_US = [float("nan")]
#: The Redis servers' process ids (set by main).
SERVER_PIDS: list[int] = []


def servers_cpu_ns() -> int:
    """CPU time the Redis servers have used so far, in ns (/proc/<pid>/schedstat: ns, not ticks)."""
    total = 0
    for pid in SERVER_PIDS:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return -1  # not Linux, or a server gone: reported as nan
    return total


def _note_cpu(c0: float, s0: int, n: int) -> None:
    LAST_CPU_US[0] = (time.process_time() - c0) / n * 1e6
    s1 = servers_cpu_ns()
    LAST_SERVER_CPU_US[0] = (s1 - s0) / n / 1e3 if s0 >= 0 and s1 >= 0 else float("nan")


def time_sync(cycle: SyncCycle, n: int) -> float:
    for _ in range(min(50, n)):
        cycle()
    samples = []
    c0, s0 = time.process_time(), servers_cpu_ns()
    for _ in range(n):
        t0 = time.perf_counter()
        cycle()
        samples.append(time.perf_counter() - t0)
    _note_cpu(c0, s0, n)
    return median_us(samples)


async def time_async(cycle: AsyncCycle, n: int) -> float:
    for _ in range(min(50, n)):
        await cycle()
    samples = []
    c0, s0 = time.process_time(), servers_cpu_ns()
    for _ in range(n):
        t0 = time.perf_counter()
        await cycle()
        samples.append(time.perf_counter() - t0)
    _note_cpu(c0, s0, n)
    return median_us(samples)


#: The slowest worker's share of the mean, from the last contended run (1.0: perfectly even;
#: near 0: some workers starved while one kept re-acquiring).
LAST_MIN_SHARE = [float("nan")]


def note_shares(counts: list[int]) -> int:
    total = sum(counts)
    LAST_MIN_SHARE[0] = min(counts) / (total / len(counts)) if total else float("nan")
    return total


def contend_sync(
    make: Callable[[], Any], enter: Callable[[Any], Any], leave: Callable[[Any, Any], None], seconds: float
) -> float:
    counts = [0] * WORKERS
    stop = time.monotonic() + seconds

    def worker(w: int) -> None:
        lk = make()
        while time.monotonic() < stop:
            token = enter(lk)
            counts[w] += 1
            leave(lk, token)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return note_shares(counts) / (time.monotonic() - t0)


async def contend_async(cycle_factory: Callable[[], AsyncCycle], seconds: float) -> float:
    counts = [0] * WORKERS
    stop = time.monotonic() + seconds

    async def worker(w: int) -> None:
        cycle = cycle_factory()
        while time.monotonic() < stop:
            await cycle()
            counts[w] += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(WORKERS)))
    return note_shares(counts) / (time.monotonic() - t0)


class _RawReply(asyncio.Protocol):
    """The floor's connection: no parser at all, a reply is done after ``lines`` CRLFs."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.lines = 0
        self.done: Callable[[], None] = lambda: None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.buf.count(b"\r\n") >= self.lines:
            self.buf = b""
            self.done()


class RawFanout:
    """The physical floor of a fan-out: one packed request written to N bare asyncio Protocols,
    one future resolved when the last reply arrived. No parsing, timeouts or error handling."""

    def __init__(self, conns: list[_RawReply]) -> None:
        self.conns = conns

    @classmethod
    async def open(cls, urls: list[str]) -> RawFanout:
        loop = asyncio.get_running_loop()
        conns = []
        for url in urls:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            _, proto = await loop.create_connection(_RawReply, "127.0.0.1", port)
            conns.append(proto)
        return cls(conns)

    async def call(self, packed: bytes, lines: int) -> None:
        fut = asyncio.get_running_loop().create_future()
        remaining = [len(self.conns)]

        def one() -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                fut.set_result(None)

        for conn in self.conns:
            conn.lines, conn.done = lines, one
            assert conn.transport is not None
            conn.transport.write(packed)
        await fut

    def close(self) -> None:
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()


def pack(*args: str | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def raw_floor_cycle(fan: RawFanout, key: str, *, script_acquire: bool = False) -> AsyncCycle:
    """The locks' own requests, bare. One server, RedisLock's: EVALSHA acquire (a 2-item array: 3
    lines) and release (an integer: 1 line). Several, Redlock's: the MULTI / SET NX PX / INCR /
    EXEC acquire (+OK, 2 x +QUEUED, a 2-item array: 6 lines) and its release script (1 line);
    ``script_acquire``: RedisLock's acquire script instead of the transaction (what Redlock sent
    before), to show what the transaction saves the servers."""
    lua = len(fan.conns) == 1 or script_acquire

    async def cycle() -> None:
        owner = os.urandom(16).hex()
        if lua:
            await fan.call(pack("EVALSHA", ACQUIRE_FAST.sha, 2, key, key + ":fence", owner, 10000), 3)
        else:
            acquire = pack("SET", key, owner, "NX", "PX", 10000) + pack("INCR", key + ":fence")
            await fan.call(pack("MULTI") + acquire + pack("EXEC"), 6)
        if len(fan.conns) == 1:
            await fan.call(pack("EVALSHA", RELEASE_SCRIPT.sha, 1, key, owner, key + ":wake"), 1)
        else:
            await fan.call(pack("EVALSHA", RELEASE_BUMP.sha, 2, key, key + ":fence", owner, 0), 1)

    return cycle


class Bench:
    def __init__(
        self,
        servers: list[RedisServer],
        zk: ZooKeeperServer | None,
        n: int,
        seconds: float,
        only: list[str] | None = None,
    ) -> None:
        self.url = servers[0].url
        self.urls = [s.url for s in servers]
        self.zk = zk
        self.n = n
        self.seconds = seconds
        self.latency: dict[str, list[float]] = {}
        self.throughput: dict[str, list[float]] = {}
        self.fairness: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.server_cpu: dict[str, list[float]] = {}
        self.only = [o.lower() for o in only or []]

    def wanted(self, name: str) -> bool:
        return not self.only or any(o in name.lower() for o in self.only)

    def record(self, table: dict[str, list[float]], name: str, fn: Callable[[], float]) -> None:
        if not self.wanted(name):
            return
        LAST_CPU_US[0] = LAST_SERVER_CPU_US[0] = float("nan")
        try:
            value = fn()
        except Exception as exc:  # a peer that cannot run here is reported, not fatal
            print(f"  {name}: failed: {exc!r}", file=sys.stderr)
            value = float("nan")
        self._store(table, name, value)

    def _store(self, table: dict[str, list[float]], name: str, value: float) -> None:
        table.setdefault(name, []).append(value)
        if table is self.throughput:
            self.fairness.setdefault(name, []).append(LAST_MIN_SHARE[0])
        else:
            self.cpu.setdefault(name, []).append(LAST_CPU_US[0])
            self.server_cpu.setdefault(name, []).append(LAST_SERVER_CPU_US[0])

    # -- uncontended -----------------------------------------------------------------------------

    def sync_latencies(self) -> None:
        r = redis.Redis.from_url(self.url)
        sha = r.script_load(RELEASE)

        def floor() -> None:
            v = os.urandom(16).hex()
            r.set("bench:floor", v, nx=True, px=10000)
            r.evalsha(sha, 1, "bench:floor", v)

        self.record(self.latency, "bare SET NX + EVALSHA (sync)", lambda: time_sync(floor, self.n))
        stl = BlockingLock(RedisLock(self.url, "bench:stalwart-blocking", ttl=10.0))
        self.record(
            self.latency,
            "stalwart RedisLock (blocking)",
            lambda: time_sync(lambda: stl.acquire().release(), self.n),
        )
        rl = r.lock("bench:redispy", timeout=10)

        def redispy() -> None:
            rl.acquire()
            rl.release()

        self.record(self.latency, "redis-py Lock (sync)", lambda: time_sync(redispy, self.n))

        import redis_lock

        def prl() -> None:
            lk = redis_lock.Lock(r, "bench:prl", expire=10)
            lk.acquire()
            lk.release()

        self.record(self.latency, "python-redis-lock", lambda: time_sync(prl, self.n))
        from pottery import Redlock as PotteryRedlock

        masters = {redis.Redis.from_url(u) for u in self.urls}
        prl5 = PotteryRedlock(key="bench:pottery", masters=masters, auto_release_time=10)

        def pottery_sync() -> None:
            prl5.acquire()
            prl5.release()

        self.record(
            self.latency,
            "pottery Redlock (sync, 5 servers)",
            lambda: time_sync(pottery_sync, max(50, self.n // 4)),
        )
        if self.zk is not None:
            from kazoo.client import KazooClient

            kz = KazooClient(hosts=self.zk.hosts)
            kz.start(10)
            klock = kz.Lock("/bench/kazoo")

            def kazoo_cycle() -> None:
                klock.acquire()
                klock.release()

            self.record(self.latency, "kazoo Lock", lambda: time_sync(kazoo_cycle, max(50, self.n // 4)))
            kz.stop()
            kz.close()
        r.close()

    async def async_latencies(self) -> None:
        r = redis.asyncio.Redis.from_url(self.url)
        sha = await r.script_load(RELEASE)

        async def floor() -> None:
            v = os.urandom(16).hex()
            await r.set("bench:afloor", v, nx=True, px=10000)
            await r.evalsha(sha, 1, "bench:afloor", v)

        await self.arecord(self.latency, "bare SET NX + EVALSHA (asyncio)", time_async(floor, self.n))
        for script in SCRIPTS:
            for url in self.urls:
                async with redis.asyncio.Redis.from_url(url) as one:
                    await one.script_load(script.source)
        for urls, script_acquire in ((self.urls[:1], False), (self.urls, False), (self.urls, True)):
            fan = await RawFanout.open(urls)
            name = f"raw fan-out floor ({len(urls)} server{'s' if len(urls) > 1 else ''}"
            try:
                await self.arecord(
                    self.latency,
                    name + (", script acquire)" if script_acquire else ")"),
                    time_async(
                        raw_floor_cycle(fan, f"bench:raw{len(urls)}", script_acquire=script_acquire), self.n
                    ),
                )
            finally:
                fan.close()
        async with RedisBackend(self.url) as backend:
            lock = RedisLock(backend, "bench:stalwart", ttl=10.0)

            async def stalwart_cycle() -> None:
                held = await lock.acquire()
                await held.release()

            await self.arecord(
                self.latency, "stalwart RedisLock (asyncio)", time_async(stalwart_cycle, self.n)
            )
        rl = r.lock("bench:aredispy", timeout=10)

        async def redispy() -> None:
            await rl.acquire()
            await rl.release()

        await self.arecord(self.latency, "redis-py Lock (asyncio)", time_async(redispy, self.n))
        await r.aclose()
        from pottery import AIORedlock

        masters = {redis.asyncio.Redis.from_url(u) for u in self.urls}
        apl = AIORedlock(key="bench:apottery", masters=masters, auto_release_time=10)

        async def pottery_async() -> None:
            await apl.acquire()
            await apl.release()

        await self.arecord(
            self.latency, "pottery AIORedlock (5 servers)", time_async(pottery_async, max(50, self.n // 4))
        )
        for m in masters:
            await m.aclose()
        await self.arecord(self.latency, "aioredlock (5 servers)", self._aioredlock_latency())
        async with RedlockClient(self.urls) as client:
            rlk = Redlock(client, "bench:stalwart-redlock", ttl=10.0)

            async def redlock_cycle() -> None:
                held = await rlk.acquire()
                await held.release()

            await self.arecord(
                self.latency, "stalwart Redlock (5 servers)", time_async(redlock_cycle, self.n)
            )
        if self.zk is not None:
            async with ZooKeeperClient(self.zk.hosts) as zk:
                zl = ZooKeeperLock(zk, "bench-stalwart")

                async def zk_cycle() -> None:
                    held = await zl.acquire()
                    await held.release()

                await self.arecord(
                    self.latency, "stalwart ZooKeeperLock", time_async(zk_cycle, max(50, self.n // 4))
                )

    async def _aioredlock_latency(self) -> float:
        from aioredlock import Aioredlock

        mgr = Aioredlock(
            [{"host": "127.0.0.1", "port": int(u.rsplit(":", 1)[1].split("/")[0])} for u in self.urls]
        )
        try:

            async def cycle() -> None:
                lk = await mgr.lock("bench:aioredlock", lock_timeout=10)
                await mgr.unlock(lk)

            return await time_async(cycle, max(50, self.n // 4))
        finally:
            await mgr.destroy()

    async def arecord(self, table: dict[str, list[float]], name: str, coro: Awaitable[float]) -> None:
        if not self.wanted(name):
            if asyncio.iscoroutine(coro):
                coro.close()
            return
        LAST_CPU_US[0] = LAST_SERVER_CPU_US[0] = float("nan")
        try:
            value = await coro
        except Exception as exc:
            print(f"  {name}: failed: {exc!r}", file=sys.stderr)
            value = float("nan")
        self._store(table, name, value)

    # -- contended -------------------------------------------------------------------------------

    def sync_throughput(self) -> None:
        r = redis.Redis.from_url(self.url, max_connections=32)
        self.record(
            self.throughput,
            "redis-py Lock (sync, threads)",
            lambda: contend_sync(
                lambda: r.lock("bench:c-redispy", timeout=10),
                lambda lk: lk.acquire(),
                lambda lk, _t: lk.release(),
                self.seconds,
            ),
        )
        import redis_lock

        self.record(
            self.throughput,
            "python-redis-lock (threads)",
            lambda: contend_sync(
                lambda: redis_lock.Lock(r, "bench:c-prl", expire=10),
                lambda lk: lk.acquire(),
                lambda lk, _t: lk.release(),
                self.seconds,
            ),
        )
        for fair in (False, True):
            stl = BlockingLock(RedisLock(self.url, f"bench:c-stalwart-blocking-{fair}", ttl=10.0, fair=fair))
            self.record(
                self.throughput,
                f"stalwart RedisLock (blocking, threads{', fair FIFO' if fair else ''})",
                lambda stl=stl: contend_sync(
                    lambda: stl, lambda lk: lk.acquire(), lambda _lk, held: held.release(), self.seconds
                ),
            )
        if self.zk is not None:
            from kazoo.client import KazooClient

            kz = KazooClient(hosts=self.zk.hosts)
            kz.start(10)
            self.record(
                self.throughput,
                "kazoo Lock (threads)",
                lambda: contend_sync(
                    lambda: kz.Lock("/bench/c-kazoo"),
                    lambda lk: lk.acquire(),
                    lambda lk, _t: lk.release(),
                    self.seconds,
                ),
            )
            kz.stop()
            kz.close()
        r.close()

    async def async_throughput(self) -> None:
        r = redis.asyncio.Redis.from_url(self.url, max_connections=32)

        def redispy_factory() -> AsyncCycle:
            lk = r.lock("bench:c-aredispy", timeout=10)

            async def cycle() -> None:
                await lk.acquire()
                await lk.release()

            return cycle

        await self.arecord(
            self.throughput, "redis-py Lock (asyncio)", contend_async(redispy_factory, self.seconds)
        )
        await r.aclose()
        async with RedisBackend(self.url) as backend:
            for fair in (False, True):

                def factory(fair: bool = fair) -> AsyncCycle:
                    lock = RedisLock(backend, "bench:c-stalwart", ttl=10.0, fair=fair)

                    async def cycle() -> None:
                        held = await lock.acquire()
                        await held.release()

                    return cycle

                name = f"stalwart RedisLock (asyncio{', fair FIFO' if fair else ''})"
                await self.arecord(self.throughput, name, contend_async(factory, self.seconds))
        async with RedlockClient(self.urls) as client:

            def rl_factory() -> AsyncCycle:
                lock = Redlock(client, "bench:c-redlock", ttl=10.0, retry_delay_s=0.002)

                async def cycle() -> None:
                    held = await lock.acquire()
                    await held.release()

                return cycle

            await self.arecord(
                self.throughput, "stalwart Redlock (5 servers)", contend_async(rl_factory, self.seconds)
            )
        if self.zk is not None:
            async with ZooKeeperClient(self.zk.hosts) as zk:

                def zk_factory() -> AsyncCycle:
                    lock = ZooKeeperLock(zk, "bench-c-stalwart")

                    async def cycle() -> None:
                        held = await lock.acquire()
                        await held.release()

                    return cycle

                await self.arecord(
                    self.throughput, "stalwart ZooKeeperLock", contend_async(zk_factory, self.seconds)
                )


def report(bench: Bench) -> None:
    def med(values: list[float]) -> float:
        ok = [v for v in values if v == v]
        return statistics.median(ok) if ok else float("nan")

    lat = {k: med(v) for k, v in bench.latency.items()}
    cpu = {k: med(v) for k, v in bench.cpu.items()}
    srv = {k: med(v) for k, v in bench.server_cpu.items()}
    print(
        "\nUncontended acquire+release, median latency (us), client CPU and the Redis servers' CPU"
        " per cycle; median of the runs"
    )
    print(f"{'lock':50} {'median us':>10} {'cpu us':>7} {'srv us':>7}   runs")
    for name, values in bench.latency.items():
        print(
            f"{name:50} {lat[name]:10.0f} {cpu[name]:7.0f} {srv[name]:7.0f}   "
            + " ".join(f"{v:.0f}" for v in values)
        )
    thr = {k: med(v) for k, v in bench.throughput.items()}
    print(f"\nContended throughput, {WORKERS} workers on one lock (acquisitions/s); median of the runs")
    print(f"{'lock':50} {'acq/s':>10} {'slowest':>8}   runs")
    for name, values in bench.throughput.items():
        share = med(bench.fairness.get(name, []))
        print(f"{name:50} {thr[name]:10.0f} {share:8.2f}   " + " ".join(f"{v:.0f}" for v in values))
    print("  slowest = the slowest worker's acquisitions / the mean (1.00 even, near 0 starved)")

    def ratio(a: str, b: str, table: dict[str, float]) -> str:
        return f"{table.get(a, float('nan')) / table.get(b, float('nan')):.2f}x"

    print("\nGoals")
    goals = [
        ("stalwart RedisLock asyncio / bare floor asyncio", "stalwart RedisLock (asyncio)",
         "bare SET NX + EVALSHA (asyncio)", lat, "<= 1.10x"),
        ("stalwart RedisLock blocking / bare floor sync", "stalwart RedisLock (blocking)",
         "bare SET NX + EVALSHA (sync)", lat, "<= 1.10x"),
        ("stalwart Redlock 5 servers / RedisLock asyncio", "stalwart Redlock (5 servers)",
         "stalwart RedisLock (asyncio)", lat, "<= 2x"),
        ("  the same for the raw floors: 5 servers / 1 server", "raw fan-out floor (5 servers)",
         "raw fan-out floor (1 server)", lat, "physical"),
        ("  raw 5-server floor / RedisLock asyncio", "raw fan-out floor (5 servers)",
         "stalwart RedisLock (asyncio)", lat, "no Redlock client beats this"),
        ("  servers' CPU: raw floors 5 servers / 1 server", "raw fan-out floor (5 servers)",
         "raw fan-out floor (1 server)", srv, "-"),
        ("  servers' CPU: 5-server floor, transaction / script acquire", "raw fan-out floor (5 servers)",
         "raw fan-out floor (5 servers, script acquire)", srv, "< 1x"),
        ("  latency: 5-server floor, transaction / script acquire", "raw fan-out floor (5 servers)",
         "raw fan-out floor (5 servers, script acquire)", lat, "< 1x"),
        ("  stalwart Redlock 5 servers / redis-py Lock asyncio", "stalwart Redlock (5 servers)",
         "redis-py Lock (asyncio)", lat, "-"),
        ("  stalwart Redlock / raw 5-server floor", "stalwart Redlock (5 servers)",
         "raw fan-out floor (5 servers)", lat, "near 1x"),
        ("  stalwart RedisLock asyncio / raw 1-server floor", "stalwart RedisLock (asyncio)",
         "raw fan-out floor (1 server)", lat, "near 1x"),
        ("  client CPU: Redlock 5 servers / RedisLock asyncio", "stalwart Redlock (5 servers)",
         "stalwart RedisLock (asyncio)", cpu, "-"),
        ("  client CPU: raw floors 5 servers / 1 server", "raw fan-out floor (5 servers)",
         "raw fan-out floor (1 server)", cpu, "-"),
        ("contended stalwart asyncio / redis-py asyncio", "stalwart RedisLock (asyncio)",
         "redis-py Lock (asyncio)", thr, ">= 1x"),
        ("contended stalwart fair / redis-py asyncio", "stalwart RedisLock (asyncio, fair FIFO)",
         "redis-py Lock (asyncio)", thr, ">= 1x"),
        ("contended stalwart blocking / redis-py sync", "stalwart RedisLock (blocking, threads)",
         "redis-py Lock (sync, threads)", thr, ">= 1x"),
        ("contended stalwart blocking fair / redis-py sync",
         "stalwart RedisLock (blocking, threads, fair FIFO)", "redis-py Lock (sync, threads)", thr, ">= 1x"),
    ]  # fmt: skip
    for label, a, b, table, goal in goals:
        # Per run too: both sides of a ratio ran in the same run, back to back.
        runs = {id(cpu): bench.cpu, id(srv): bench.server_cpu, id(thr): bench.throughput}.get(
            id(table), bench.latency
        )
        pairs = zip(runs.get(a, []), runs.get(b, []), strict=False)
        per_run = " ".join(f"{x / y:.2f}" for x, y in pairs if x == x and y == y and y)
        print(f"  {label:50} {ratio(a, b, table):>8} (goal {goal})   runs {per_run}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--iterations", type=int, default=2000, help="uncontended cycles per contender per run"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.5, help="contended duration per contender per run")
    parser.add_argument("--no-zookeeper", action="store_true")
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="measure only the rows whose name contains TEXT (case-insensitive; repeatable)",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    servers = [start_redis() for _ in range(5)]
    SERVER_PIDS[:] = [s.proc.pid for s in servers]
    zk = None if args.no_zookeeper or shutil.which("java") is None else start_zookeeper()
    try:
        bench = Bench(servers, zk, args.iterations, args.seconds, args.only)
        for run in range(args.runs):
            print(f"run {run + 1}/{args.runs} ...", flush=True)
            bench.sync_latencies()
            asyncio.run(bench.async_latencies())
            bench.sync_throughput()
            asyncio.run(bench.async_throughput())
        load = os.getloadavg()[0]
        print(f"\nmachine: {os.cpu_count()} cores, load average {load:.2f} (shared: figures are indicative)")
        report(bench)
    finally:
        for server in servers:
            server.stop()
            shutil.rmtree(server.dir, ignore_errors=True)
        if zk is not None:
            zk.stop()
            shutil.rmtree(zk.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

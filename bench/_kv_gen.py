"""One load-generator process for bench_kv: ``CONCURRENCY`` closed-loop writers for ``SECONDS``.

Run by bench_kv, several at once, each as ``python -m bench._kv_gen SPEC_JSON OUT_JSON``. Every
writer puts a 64-byte value to one of 10,000 keys, waits for the acknowledgement, and goes again
(a closed loop: in-flight requests = writers). The process writes its count, errors, sampled
latencies and its own CPU time, so bench_kv can tell whether the generator was the bottleneck
(CPU time / wall time near 1.0 means it was).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

VALUE = b"v" * 64
KEYS = 10_000
#: The most latencies a generator keeps (a uniform reservoir beyond it).
MAX_SAMPLES = 100_000

Put = Callable[[str, bytes], Awaitable[None]]


class Stats:
    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.samples: list[float] = []
        self.rng = random.Random(7)

    def add(self, latency_s: float) -> None:
        self.count += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(latency_s)
        else:
            slot = self.rng.randrange(self.count)
            if slot < MAX_SAMPLES:
                self.samples[slot] = latency_s


async def _loop(put: Put, stats: Stats, prefix: str, deadline: float) -> None:
    rng = random.Random(prefix)
    while time.monotonic() < deadline:
        key = f"{prefix}{rng.randrange(KEYS)}"
        start = time.monotonic()
        try:
            await put(key, VALUE)
        except Exception:
            stats.errors += 1
            await asyncio.sleep(0.01)
            continue
        stats.add(time.monotonic() - start)


async def _stalwart(spec: dict[str, Any]) -> tuple[Put, Callable[[], Awaitable[None]]]:
    from stalwart.client import AsyncKVClient

    client = AsyncKVClient(
        spec["endpoints"], cluster_key=spec["key"].encode(), timeout_s=10.0, max_inflight=4096
    )

    async def put(key: str, value: bytes) -> None:
        await client.put(key, value)

    return put, client.close


async def _read_http_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response: (status, body); Content-Length or chunked bodies."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, body
            body += chunk[:-2]
    return status, await reader.readexactly(int(headers.get("content-length", "0")))


async def _etcd(spec: dict[str, Any]) -> tuple[Put, Callable[[], Awaitable[None]]]:
    # etcd's v3 HTTP/JSON gateway over plain keep-alive HTTP/1.1 connections, one per writer,
    # spread over the members: a few lines of asyncio cost far less CPU per request than a
    # general HTTP client, so the generator stays cheap next to the server
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter, str]] = asyncio.Queue()
    for i in range(spec["concurrency"]):
        endpoint = spec["endpoints"][i % len(spec["endpoints"])]
        host, port = endpoint.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        pool.put_nowait((reader, writer, endpoint))

    async def put(key: str, value: bytes) -> None:
        reader, writer, endpoint = await pool.get()
        try:
            body = json.dumps(
                {"key": base64.b64encode(key.encode()).decode(), "value": base64.b64encode(value).decode()}
            ).encode()
            writer.write(
                b"POST /v3/kv/put HTTP/1.1\r\nHost: "
                + endpoint.encode()
                + b"\r\nContent-Type: application/json"
                b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            status, answer = await asyncio.wait_for(_read_http_response(reader), 10)
            if status != 200 or b"header" not in answer:
                raise RuntimeError(f"etcd answered {status}: {answer[:200]!r}")
        finally:
            pool.put_nowait((reader, writer, endpoint))

    async def close() -> None:
        while not pool.empty():
            pool.get_nowait()[1].close()

    return put, close


def _pb_bytes(field: int, data: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2)."""
    n, varint = len(data), bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        varint.append(byte | (0x80 if n else 0))
        if not n:
            return bytes([field << 3 | 2]) + bytes(varint) + data


async def _etcd_grpc(spec: dict[str, Any]) -> tuple[Put, Callable[[], Awaitable[None]]]:
    # etcd's native protocol: gRPC KV.Put, the request (PutRequest{key=1, value=2}) written as
    # raw protobuf bytes and the reply taken as bytes (grpcio without generated stubs); a few
    # HTTP/2 channels per member, the writers spread over them
    import grpc  # only the bench extra needs it

    channels = [
        grpc.aio.insecure_channel(e, options=[("grpc.use_local_subchannel_pool", 1)])
        for e in spec["endpoints"]
        for _ in range(2)
    ]
    calls = [c.unary_unary("/etcdserverpb.KV/Put") for c in channels]
    turn = iter(range(1 << 62))

    async def put(key: str, value: bytes) -> None:
        call = calls[next(turn) % len(calls)]
        answer = await call(_pb_bytes(1, key.encode()) + _pb_bytes(2, value), timeout=10)
        if not answer.startswith(b"\x0a"):  # PutResponse: field 1, the ResponseHeader
            raise RuntimeError(f"etcd answered {answer[:100]!r}")

    async def close() -> None:
        for c in channels:
            await c.close()

    return put, close


async def _pysyncobj(spec: dict[str, Any]) -> tuple[Put, Callable[[], Awaitable[None]]]:
    # one connection per writer (a closed loop: one request in flight per connection)
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for i in range(spec["concurrency"]):
        host, port = spec["endpoints"][i % len(spec["endpoints"])].split(":")
        pool.put_nowait(await asyncio.open_connection(host, int(port)))

    async def put(key: str, value: bytes) -> None:
        reader, writer = await pool.get()
        try:
            writer.write(key.encode() + b" " + value + b"\n")
            line = await asyncio.wait_for(reader.readline(), 10)
            if line != b"ok\n":
                raise RuntimeError(f"pysyncobj answered {line!r}")
        finally:
            pool.put_nowait((reader, writer))

    async def close() -> None:
        while not pool.empty():
            pool.get_nowait()[1].close()

    return put, close


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    makers = {"stalwart": _stalwart, "etcd": _etcd_grpc, "etcd-http": _etcd, "pysyncobj": _pysyncobj}
    make = makers[spec["system"]]
    put, close = await make(spec)
    await asyncio.sleep(max(0.0, spec["start_at"] - time.time()))  # all generators start together
    stats = Stats()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.monotonic()
    deadline = wall0 + spec["seconds"]
    prefix = f"g{spec['index']}-"
    await asyncio.gather(*(_loop(put, stats, f"{prefix}{w}-", deadline) for w in range(spec["concurrency"])))
    wall = time.monotonic() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    await close()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "count": stats.count,
        "errors": stats.errors,
        "wall_s": wall,
        "cpu_s": cpu,
        "samples": stats.samples,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = asyncio.run(run(spec))
    with open(sys.argv[2], "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()

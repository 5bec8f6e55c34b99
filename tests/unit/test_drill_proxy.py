"""The drill's link proxy and proxy mesh on real loopback sockets, against a TCP echo server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from stalwart.drill import Direction, DrillConfigError, LinkProxy, Mode, ProxyMesh


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def _roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, wait_s: float
) -> bytes:
    writer.write(data)
    await writer.drain()
    got = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            while len(got) < len(data):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                got += chunk
    return got


def test_pass_then_drop_then_heal_resets_the_connection() -> None:
    async def main() -> None:
        async with echo_server() as port, LinkProxy("127.0.0.1", port) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            assert await _roundtrip(reader, writer, b"hello", 2.0) == b"hello"
            proxy.set_mode(Direction.FORWARD, Mode.DROP)
            assert await _roundtrip(reader, writer, b"lost", 0.3) == b""
            assert proxy.bytes_dropped[Direction.FORWARD] == 4
            # healing a direction that lost bytes closes the connection: the stream is no longer whole
            proxy.heal()
            assert await reader.read(10) == b""
            writer.close()
            # a new connection passes again
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            assert await _roundtrip(reader, writer, b"again", 2.0) == b"again"
            writer.close()

    asyncio.run(main())


def test_one_way_cut_drops_only_the_replies() -> None:
    async def main() -> None:
        got: list[bytes] = []

        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                got.append(data)
                writer.write(b"ack")
                await writer.drain()

        server = await asyncio.start_server(sink, "127.0.0.1", 0)
        async with LinkProxy("127.0.0.1", server.sockets[0].getsockname()[1]) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            proxy.set_mode(Direction.BACKWARD, Mode.DROP)
            assert await _roundtrip(reader, writer, b"req", 0.3) == b""
            assert b"".join(got) == b"req"  # the forward direction still delivered
            assert proxy.mode(Direction.FORWARD) is Mode.PASS
            writer.close()
        server.close()

    asyncio.run(main())


def test_delay_holds_bytes_in_order() -> None:
    async def main() -> None:
        async with echo_server() as port, LinkProxy("127.0.0.1", port) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            proxy.set_mode(Direction.FORWARD, Mode.DELAY, delay_ms=150)
            start = time.monotonic()
            assert await _roundtrip(reader, writer, b"abcdef", 3.0) == b"abcdef"
            assert time.monotonic() - start >= 0.14
            proxy.set_mode(Direction.FORWARD, Mode.PASS)
            start = time.monotonic()
            assert await _roundtrip(reader, writer, b"x", 3.0) == b"x"
            assert time.monotonic() - start < 0.14
            writer.close()

    asyncio.run(main())


def test_dead_target_closes_the_dialer() -> None:
    async def main() -> None:
        async with echo_server() as port:
            pass  # the port is free again: nothing listens there
        async with LinkProxy("127.0.0.1", port) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            async with asyncio.timeout(5):
                assert await reader.read(10) == b""
            writer.close()

    asyncio.run(main())


def test_only_loopback_and_valid_delay() -> None:
    with pytest.raises(DrillConfigError):
        LinkProxy("10.0.0.1", 80)
    with pytest.raises(DrillConfigError):
        LinkProxy("127.0.0.1", 80).set_mode(Direction.FORWARD, Mode.DELAY, delay_ms=-1)


def test_mesh_peers_and_partitions() -> None:
    async def main() -> None:
        async with echo_server() as p1, echo_server() as p2, echo_server() as p3:
            listen = {1: ("127.0.0.1", p1), 2: ("127.0.0.1", p2), 3: ("127.0.0.1", p3)}
            mesh = ProxyMesh(listen)
            await mesh.start()
            try:
                peers = dict(part.split("=") for part in mesh.peers_arg(1).split(","))
                assert peers["1"] == f"127.0.0.1:{p1}"  # itself at its real address
                assert peers["2"] == mesh.proxies[(1, 2)].address
                # node 1 talks to node 2 through P[1][2]
                r, w = await asyncio.open_connection(*peers["2"].split(":"))
                assert await _roundtrip(r, w, b"ping", 2.0) == b"ping"
                # a one-way cut 1 -> 2 drops on P[1][2] forward and on P[2][1] backward
                mesh.cut(1, 2)
                assert mesh.proxies[(1, 2)].mode(Direction.FORWARD) is Mode.DROP
                assert mesh.proxies[(2, 1)].mode(Direction.BACKWARD) is Mode.DROP
                assert mesh.proxies[(2, 1)].mode(Direction.FORWARD) is Mode.PASS
                assert await _roundtrip(r, w, b"lost", 0.3) == b""
                mesh.heal()
                assert mesh.is_healed()
                w.close()
                cut = mesh.partition([[1], [2, 3]])
                assert sorted(cut) == [(1, 2), (1, 3), (2, 1), (3, 1)]
                with pytest.raises(DrillConfigError):
                    mesh.partition([[1], [2]])
                with pytest.raises(DrillConfigError):
                    mesh.cut(1, 1)
            finally:
                await mesh.close()

    asyncio.run(main())

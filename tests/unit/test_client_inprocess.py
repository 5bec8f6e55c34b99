"""The client against an in-process node over the real binary protocol: watch, compaction,
the blocking wrapper, many requests in flight on one connection."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stalwart.client import AsyncKVClient, EventKind, KVClient, KVCompactedError
from stalwart.sansio import NodeId
from stalwart.server import ClientListener, KVServer, ServerConfig

KEY = b"k" * 32


def config(tmp_path: Path, history_events: int = 10_000) -> ServerConfig:
    return ServerConfig(
        node_id=NodeId("n1"), members={NodeId("n1"): ("127.0.0.1", 0)}, listen=("127.0.0.1", 0),
        data_dir=tmp_path, cluster_key=KEY, fsync=False, tick_ms=5, election_ms=40, heartbeat_ms=10,
        history_events=history_events,
    )  # fmt: skip


class BackgroundNode:
    """A one-member node with its client listener, on an event loop in a thread."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.endpoint = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with KVServer(self.cfg) as server:
            listener = ClientListener(server, ("127.0.0.1", 0))
            await listener.start()
            while not server.is_leader:
                await asyncio.sleep(0.005)
            host, port = listener.address
            self.endpoint = f"{host}:{port}"
            self._ready.set()
            await self._stop.wait()
            await listener.close()

    def __enter__(self) -> BackgroundNode:
        self._thread.start()
        assert self._ready.wait(10), "the node did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[BackgroundNode]:
    with BackgroundNode(config(tmp_path, history_events=50)) as running:
        yield running


def test_watch_yields_every_change_in_revision_order(node: BackgroundNode) -> None:
    async def main() -> None:
        async with AsyncKVClient([node.endpoint], cluster_key=KEY) as kv:
            first = await kv.put("w/a", b"1")
            await kv.put("other", b"x")
            await kv.delete("w/a")
            seen = []
            async with asyncio.timeout(5):
                async for event in kv.watch("w/", first - 1):
                    seen.append((event.kind, event.key, event.value))
                    if len(seen) == 2:
                        break
            assert seen == [(EventKind.PUT, "w/a", b"1"), (EventKind.DELETE, "w/a", b"")]
            # A watch from "now" sees only later changes.
            now = await kv.put("w/b", b"2")
            gen = kv.watch("w/", now)
            later = asyncio.ensure_future(anext(gen))
            await asyncio.sleep(0.05)
            assert not later.done()
            await kv.put("w/c", b"3")
            event = await asyncio.wait_for(later, 5)
            assert (event.key, event.revision) == ("w/c", now + 1)
            await gen.aclose()

    asyncio.run(main())


def test_a_watch_older_than_the_history_is_refused(node: BackgroundNode) -> None:
    async def main() -> None:
        async with AsyncKVClient([node.endpoint], cluster_key=KEY) as kv:
            await asyncio.gather(*(kv.put(f"k{i}", b"v") for i in range(120)))
            with pytest.raises(KVCompactedError, match="compacted"):
                async for _ in kv.watch("", 1):
                    pass

    asyncio.run(main())


def test_many_requests_in_flight_on_one_connection(node: BackgroundNode) -> None:
    async def main() -> None:
        async with AsyncKVClient([node.endpoint], cluster_key=KEY, max_inflight=64) as kv:
            revisions = await asyncio.gather(*(kv.put(f"k{i}", str(i).encode()) for i in range(500)))
            assert sorted(revisions) == list(range(1, 501)), "each write applied exactly once"
            values = await asyncio.gather(*(kv.get(f"k{i}") for i in range(500)))
            assert [v.value for v in values if v is not None] == [str(i).encode() for i in range(500)]
            assert len(await kv.range("k", limit=10_000, consistency="stale")) == 500

    asyncio.run(main())


def test_the_blocking_client_has_the_same_methods(node: BackgroundNode) -> None:
    with KVClient([node.endpoint], cluster_key=KEY) as kv:
        rev = kv.put("a", b"1", ttl_s=60)
        got = kv.get("a")
        assert got is not None and got.mod_revision == rev and got.expires_at_ms is not None
        assert kv.cas("a", b"1", b"2") == (True, rev + 1)
        assert kv.cas("a", b"1", b"3")[0] is False
        assert kv.append("a", b"+") == b"2+"
        assert [r.key for r in kv.range("a")] == ["a"]
        assert kv.delete("a") is True and kv.get("a", consistency="lease") is None
        assert kv.status()["role"] == "leader"
        events = kv.watch("a", rev - 1)
        assert next(events).kind is EventKind.PUT
        events.close()


def test_a_connection_bounds_its_requests_in_flight_and_cancelled_waiters_pass_their_turn(
    node: BackgroundNode,
) -> None:
    from stalwart.client import Connection, Consistency
    from stalwart.client._protocol import ReadRequest, ResponseStatus
    from stalwart.kv import Get, encode_query

    query = encode_query(Get("k"))

    async def main() -> None:
        conn = await Connection.open(node.endpoint, key=KEY, client_id="bound", max_inflight=2)
        peak = 0

        def build(rid: int) -> ReadRequest:
            nonlocal peak
            peak = max(peak, conn._inflight)
            return ReadRequest(rid, query, Consistency.LINEARIZABLE)

        try:
            calls = [asyncio.ensure_future(conn.send(build)) for _ in range(12)]
            await asyncio.sleep(0)
            for call in calls[3:6]:  # waiting for room: cancelled before their turn
                call.cancel()
            done = await asyncio.gather(*calls, return_exceptions=True)
            answered = [r for r in done if not isinstance(r, BaseException)]
            assert len(answered) == 9 and all(r.status is ResponseStatus.OK for r in answered)
            assert peak == 2 and conn._inflight == 0 and not conn._room
        finally:
            await conn.close()

    asyncio.run(main())

"""The HTTP API and request routing of one in-process node (a one-member cluster, fsync off)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from stalwart.client._protocol import Consistency, ResponseStatus
from stalwart.kv import Get, Put, Tick, encode_command, encode_query
from stalwart.sansio import NodeId
from stalwart.server import HttpApi, KVServer, ServerConfig
from stalwart.server._openapi import OPENAPI

KEY = b"k" * 32


def config(tmp_path: Path, members: tuple[str, ...] = ("n1",)) -> ServerConfig:
    return ServerConfig(
        node_id=NodeId("n1"),
        members={NodeId(m): ("127.0.0.1", 0 if m == "n1" else 1) for m in members},
        listen=("127.0.0.1", 0),
        data_dir=tmp_path,
        cluster_key=KEY,
        fsync=False,
        tick_ms=5,
        election_ms=40,
        heartbeat_ms=10,
    )


@asynccontextmanager
async def node(
    tmp_path: Path, members: tuple[str, ...] = ("n1",)
) -> AsyncIterator[tuple[KVServer, TestClient]]:
    async with KVServer(config(tmp_path, members)) as server:
        api = HttpApi(server, ("127.0.0.1", 0))
        async with TestClient(TestServer(api.app)) as http:
            if members == ("n1",):
                for _ in range(400):
                    if server.is_leader:
                        break
                    await asyncio.sleep(0.005)
                assert server.is_leader
            yield server, http


def run(
    tmp_path: Path,
    body: Callable[[KVServer, TestClient], Awaitable[None]],
    members: tuple[str, ...] = ("n1",),
):
    async def main() -> None:
        async with node(tmp_path, members) as (server, http):
            await body(server, http)

    asyncio.run(main())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_put_get_delete_round_trip(tmp_path: Path) -> None:
    async def body(server: KVServer, http: TestClient) -> None:
        resp = await http.put("/v1/kv/dir/a", data=b"\x00\xffraw")
        assert resp.status == 200
        rev = (await resp.json())["revision"]
        got = await (await http.get("/v1/kv/dir/a")).json()
        assert base64.b64decode(got["value"]) == b"\x00\xffraw" and got["mod_revision"] == rev
        assert got["version"] == 1 and got["key"] == "dir/a"
        stale = await http.get("/v1/kv/dir/a?consistency=stale")
        assert stale.status == 200
        deleted = await (await http.delete("/v1/kv/dir/a")).json()
        assert deleted["deleted"] is True and deleted["revision"] == rev + 1
        assert (await http.get("/v1/kv/dir/a")).status == 404
        assert (await (await http.delete("/v1/kv/dir/a")).json())["deleted"] is False

    run(tmp_path, body)


def test_cas_scan_and_their_errors(tmp_path: Path) -> None:
    async def body(server: KVServer, http: TestClient) -> None:
        made = await (await http.post("/v1/kv/c/cas", json={"expected": None, "value": b64(b"1")})).json()
        assert made["swapped"] is True
        miss = await (
            await http.post("/v1/kv/c/cas", json={"expected": b64(b"0"), "value": b64(b"2")})
        ).json()
        assert miss["swapped"] is False and base64.b64decode(miss["current"]) == b"1"
        hit = await (await http.post("/v1/kv/c/cas", json={"expected": b64(b"1"), "value": b64(b"2")})).json()
        assert hit["swapped"] is True
        bad = await http.post("/v1/kv/c/cas", json={"expected": "***", "value": b64(b"2")})
        assert bad.status == 400 and "base64" in (await bad.json())["error"]
        assert (await http.post("/v1/kv/c/cas", data=b"[1]")).status == 400
        for i in range(5):
            await http.put(f"/v1/kv/p/{i}", data=b"v")
        scan = await (await http.get("/v1/kv?prefix=p/&limit=3")).json()
        assert [r["key"] for r in scan["items"]] == ["p/0", "p/1", "p/2"]
        assert (await http.get("/v1/kv?limit=0")).status == 400
        assert (await http.get("/v1/kv/c?consistency=eventual")).status == 400
        assert (await http.put("/v1/kv/t?ttl_s=-1", data=b"v")).status == 400
        too_long = "k" * 2000
        resp = await http.put(f"/v1/kv/{too_long}", data=b"v")
        assert resp.status == 400 and "key" in (await resp.json())["error"]
        big = await http.put("/v1/kv/big", data=b"x" * (3 << 20))
        assert big.status == 413

    run(tmp_path, body)


def test_ttl_expires_on_the_log_clock(tmp_path: Path) -> None:
    async def body(server: KVServer, http: TestClient) -> None:
        assert (await http.put("/v1/kv/t?ttl_s=0.05", data=b"v")).status == 200
        got = await (await http.get("/v1/kv/t")).json()
        assert got["expires_at_ms"] is not None
        await asyncio.sleep(0.1)
        await http.put("/v1/kv/other", data=b"v")  # a later write moves the log clock past the expiry
        assert (await http.get("/v1/kv/t")).status == 404

    run(tmp_path, body)


def test_watch_streams_server_sent_events_in_revision_order(tmp_path: Path) -> None:
    async def body(server: KVServer, http: TestClient) -> None:
        await http.put("/v1/kv/w/a", data=b"1")
        await http.put("/v1/kv/x", data=b"ignored")
        await http.delete("/v1/kv/w/a")
        resp = await http.get("/v1/watch?prefix=w/&since=0")
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = []
        async with asyncio.timeout(5):
            while len(events) < 2:
                line = (await resp.content.readline()).decode().strip()
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        resp.close()
        assert [(e["type"], e["key"]) for e in events] == [("put", "w/a"), ("delete", "w/a")]
        assert events[0]["revision"] < events[1]["revision"]
        assert (await http.get("/v1/watch?since=-1")).status == 400

    run(tmp_path, body)


def test_status_metrics_and_an_openapi_document_covering_every_route(tmp_path: Path) -> None:
    async def body(server: KVServer, http: TestClient) -> None:
        await http.put("/v1/kv/a", data=b"1")
        status = await (await http.get("/v1/status")).json()
        assert status["role"] == "leader" and status["applied"] >= 1 and status["keys"] == 1
        metrics = await (await http.get("/metrics")).text()
        expected = [
            "stalwart_raft_term",
            "stalwart_raft_commit_index",
            'stalwart_raft_role{role="leader"} 1.0',
            "stalwart_request_latency_seconds_bucket",
            "stalwart_storage_fsync_seconds",
            "stalwart_raft_proposals_total 1.0",
        ]
        for name in expected:
            assert name in metrics, name
        assert 'stalwart_request_latency_seconds_count{api="http",op="put"} 1.0' in metrics
        assert 'stalwart_request_latency_seconds_bucket{api="http",le="+Inf",op="put"} 1.0' in metrics
        assert 'stalwart_requests_total{api="http",op="put",status="200"} 1.0' in metrics
        doc = await (await http.get("/openapi.json")).json()
        assert doc["openapi"].startswith("3.") and doc == json.loads(json.dumps(OPENAPI))
        routes = {r.resource.canonical for r in http.app.router.routes() if r.resource is not None}
        assert routes == set(doc["paths"])

    run(tmp_path, body)


def test_without_a_leader_writes_and_linearizable_reads_are_503_stale_reads_answer(tmp_path: Path) -> None:
    async def body(server: KVServer, http: TestClient) -> None:
        put = await http.put("/v1/kv/a", data=b"1")
        assert put.status == 503 and put.headers["Retry-After"] == "1"
        assert (await http.get("/v1/kv/a")).status == 503
        assert (await http.get("/v1/kv/a?consistency=stale")).status == 404

    run(tmp_path, body, members=("n1", "n2"))  # n2 never answers: no quorum, no leader


def test_the_request_router_refuses_bad_requests_before_proposing(tmp_path: Path) -> None:
    async def body(server: KVServer, http: TestClient) -> None:
        put = encode_command(Put("a", b"1"), 0)
        for client, seq, command, why in [
            ("~tick-n1", 1, put, "client id"),
            ("n1", 1, put, "client id"),
            ("c", 0, put, "seq"),
            ("c", 1, encode_command(Tick(), 0), "internal"),
            ("c", 1, b"\x93\x01\x01", "bad command"),
        ]:
            answer = await server.write(client, seq, 0, command)
            assert answer.status is ResponseStatus.ERROR and why in answer.error, (client, answer)
        assert server.machine.revision == 0, "nothing was applied"
        ok = await server.write("c", 1, 0, put)
        assert ok.status is ResponseStatus.OK
        again = await server.write("c", 1, 0, put)  # the same (session, seq): answered, not re-run
        assert again.result == ok.result and server.machine.revision == 1
        read = await server.read(encode_query(Get("a")), Consistency.LEASE)
        assert read.status is ResponseStatus.OK
        bad = await server.read(b"\x01", Consistency.LINEARIZABLE)
        assert bad.status is ResponseStatus.ERROR

    run(tmp_path, body)


def test_concurrent_http_writes_all_apply_once(tmp_path: Path) -> None:
    async def body(server: KVServer, http: TestClient) -> None:
        async def put(i: int) -> int:
            resp = await http.put(f"/v1/kv/c/{i}", data=str(i).encode())
            assert resp.status == 200, await resp.text()
            return int((await resp.json())["revision"])

        revisions = await asyncio.gather(*(put(i) for i in range(100)))
        assert sorted(revisions) == list(range(1, 101))
        scan = await (await http.get("/v1/kv?prefix=c/")).json()
        assert len(scan["items"]) == 100

    run(tmp_path, body)


def test_only_lease_reads_ask_raft_for_the_lease(tmp_path: Path) -> None:
    from stalwart.raft.replica import ClientRead

    async def body(server: KVServer, http: TestClient) -> None:
        seen: list[object] = []
        deliver = server.node.deliver

        def spy(source: NodeId, message: object) -> None:
            seen.append(message)
            deliver(source, message)

        server.node.deliver = spy  # type: ignore[method-assign]
        for level in (Consistency.LINEARIZABLE, Consistency.LEASE, Consistency.STALE):
            assert (await server.read(encode_query(Get("a")), level)).status is ResponseStatus.OK
        assert [m.lease for m in seen if isinstance(m, ClientRead)] == [False, True], "stale is local"
        cfg = server.replica.raft.cfg
        assert cfg.lease_reads and cfg.check_quorum, "lease reads allowed, so the restart guard is on"

    run(tmp_path, body)


def test_a_batch_of_writes_is_answered_per_request_refusals_at_once(tmp_path: Path) -> None:
    from stalwart.server._server import Answer, Waiter

    class Sink:
        def __init__(self) -> None:
            self.answers: dict[int, Answer] = {}

        def answer(self, waiter: Waiter, answer: Answer) -> None:
            assert waiter[1] not in self.answers, "answered once"
            self.answers[waiter[1]] = answer

    async def body(server: KVServer, http: TestClient) -> None:
        sink = Sink()
        put = encode_command(Put("a", b"1"), 0)
        server.write_batch([
            ("c1", 1, 0, put, (sink, 1, 0.0, "write")),
            ("~bad", 1, 0, put, (sink, 2, 0.0, "write")),
            ("c2", 1, 0, encode_command(Put("b", b"2"), 0), (sink, 3, 0.0, "write")),
            ("c1", 1, 0, put, (sink, 4, 0.0, "write")),  # the same write again: one outcome
            ("c3", 0, 0, put, (sink, 5, 0.0, "write")),
        ])  # fmt: skip
        assert {k: a.status for k, a in sink.answers.items()} == {
            2: ResponseStatus.ERROR,
            5: ResponseStatus.ERROR,
        }, "refused at once, the rest pending"
        for _ in range(200):
            if len(sink.answers) == 5:
                break
            await asyncio.sleep(0.005)
        assert all(sink.answers[k].status is ResponseStatus.OK for k in (1, 3, 4))
        assert sink.answers[1].result == sink.answers[4].result
        assert server.machine.revision == 2 and server._pending() == 0

    run(tmp_path, body)


def test_a_write_with_wide_int_fields_is_stored_as_acknowledged(tmp_path: Path) -> None:
    """Version/op/time packed wider than one byte (valid msgpack, accepted by the node's check):
    the node must store what it acknowledges (restamp spliced into those fields: an undecodable
    log entry answered OK)."""
    from stalwart.kv import decode_get_result, decode_result

    rest = b"\xa3key\xc4\x05value\xc0"
    crafted = [
        b"\x96\xce\x00\x00\x00\x01\x01\x00" + rest,  # version as uint32
        b"\x96\x01\xcd\x00\x01\x00" + rest,  # op as uint16
        b"\x96\x01\xd1\x00\x01\x00" + rest,  # op as int16
        b"\x96\x01\x01\xcf" + bytes(8) + rest,  # time as uint64
    ]

    async def body(server: KVServer, http: TestClient) -> None:
        for seq, command in enumerate(crafted, 1):
            answer = await server.write("c", seq, 0, command)
            assert answer.status is ResponseStatus.OK and answer.result is not None
            result = decode_result(answer.result)
            assert result.ok and result.revision == seq, result
            read = await server.read(encode_query(Get("key")), Consistency.LINEARIZABLE)
            assert read.result is not None
            _, got = decode_get_result(read.result)
            assert got is not None and got.value == b"value" and got.mod_revision == seq

    run(tmp_path, body)


@asynccontextmanager
async def leader_with(tmp_path: Path, **changes: int) -> AsyncIterator[KVServer]:
    import dataclasses

    async with KVServer(dataclasses.replace(config(tmp_path), **changes)) as server:
        for _ in range(400):
            if server.is_leader:
                break
            await asyncio.sleep(0.005)
        assert server.is_leader
        yield server


def test_answered_requests_leave_the_deadline_queue(tmp_path: Path) -> None:
    """An answered request must not stay in _deadlines until its timeout (it held the future with
    its answer, or the connection): the queue stays within the pending limit."""
    limit = 20

    async def main() -> None:
        async with leader_with(tmp_path, max_pending_requests=limit) as server:
            big = await server.write("c", 1, 0, encode_command(Put("big", b"x" * 100_000), 0))
            assert big.status is ResponseStatus.OK
            query = encode_query(Get("big"))
            seq = 1
            for _ in range(30):
                answers = await asyncio.gather(
                    *(server.read(query, Consistency.LINEARIZABLE) for _ in range(limit // 2)),
                    *(
                        server.write("c", seq + i, seq, encode_command(Put(f"k{i}", b"v"), 0))
                        for i in range(1, limit // 2)
                    ),
                )
                seq += limit // 2
                assert all(a.status is ResponseStatus.OK for a in answers)
                assert len(server._deadlines) <= limit
                held = _flatten(list(server._deadlines))
                assert not any(isinstance(x, asyncio.Future) for x in held), "no answered futures held"
            assert server._pending() == 0
            assert len(server._deadlines) <= limit

    asyncio.run(main())


def _flatten(items: object) -> list[object]:
    if isinstance(items, (list, tuple)):
        return [y for x in items for y in _flatten(x)]
    return [items]


def test_requests_still_time_out_and_each_waiter_by_its_own_deadline(tmp_path: Path) -> None:
    from stalwart.raft.replica import ClientRead, ClientWrites

    async def main() -> None:
        async with leader_with(tmp_path, request_timeout_ms=200) as server:
            deliver = server.node.deliver

            def drop(source: NodeId, message: object) -> None:  # never committed, never read
                if not isinstance(message, ClientWrites | ClientRead):
                    deliver(source, message)

            server.node.deliver = drop  # type: ignore[method-assign]
            put = encode_command(Put("a", b"1"), 0)
            w1 = server.submit_write("c", 1, 0, put)
            r1 = server.submit_read(encode_query(Get("a")), Consistency.LINEARIZABLE)
            assert isinstance(w1, asyncio.Future) and isinstance(r1, asyncio.Future)
            await asyncio.sleep(0.12)
            w2 = server.submit_write("c", 1, 0, put)  # the same write again, later
            assert isinstance(w2, asyncio.Future)
            assert server._pending() == 3
            await asyncio.sleep(0.1)
            server._sweep()
            assert w1.done() and r1.done() and not w2.done()
            assert w1.result().status is ResponseStatus.UNKNOWN
            assert r1.result().status is ResponseStatus.UNKNOWN
            assert server._pending() == 1
            await asyncio.sleep(0.12)
            server._sweep()
            assert w2.done() and w2.result().status is ResponseStatus.UNKNOWN
            assert server._pending() == 0 and not server._deadlines

    asyncio.run(main())


def test_waiters_of_one_pending_write_count_against_the_pending_limit(tmp_path: Path) -> None:
    """The same (client, seq) sent again and again while it is pending adds a waiter each time:
    they count as pending requests (else the waiters, and their deadlines, were unbounded)."""
    from stalwart.raft.replica import ClientWrites

    async def main() -> None:
        async with leader_with(tmp_path, max_pending_requests=10) as server:
            deliver = server.node.deliver

            def drop(source: NodeId, message: object) -> None:
                if not isinstance(message, ClientWrites):
                    deliver(source, message)

            server.node.deliver = drop  # type: ignore[method-assign]
            put = encode_command(Put("a", b"1"), 0)
            answers = [server.submit_write("c", 1, 0, put) for _ in range(15)]
            busy = [a for a in answers if not isinstance(a, asyncio.Future)]
            assert len(busy) == 5 and all(a.status is ResponseStatus.BUSY for a in busy)
            assert server._pending() == 10 and len(server._deadlines) <= 10

    asyncio.run(main())

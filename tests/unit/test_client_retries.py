"""AsyncKVClient's routing on a fake transport: redirects, lost connections, unknown outcomes,
expired sessions, timeouts; a retried write always carries the same (session, seq)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.client import AsyncKVClient, KVRequestError, KVTimeoutError, KVUnavailableError
from stalwart.client._errors import ConnectionLostError
from stalwart.client._protocol import (
    Consistency,
    ReadRequest,
    Request,
    Response,
    ResponseStatus,
    WriteRequest,
)
from stalwart.errors import DeadlineExceededError
from stalwart.kv import MAX_TTL_MS, Put, WriteResult, decode_command, decode_query
from stalwart.kv._commands import encode_query_result, encode_result

KEY = b"k" * 32
OK_WRITE = encode_result(WriteResult(True, 7))

Handler = Callable[[str, Request], Response | Exception]


@dataclass
class FakeConn:
    node_id: str
    handler: Handler
    log: list[tuple[str, Request]]
    paused: set[str]
    closed: bool = False

    async def send(self, build: Callable[[int], Request]) -> Response:
        if self.closed:
            raise ConnectionLostError("closed")
        request = build(1)
        self.log.append((self.node_id, request))
        await asyncio.sleep(0)
        if self.node_id in self.paused:
            await asyncio.sleep(3600)  # a SIGSTOPped node: the socket is open, nothing answers
        answer = self.handler(self.node_id, request)
        if isinstance(answer, Exception):
            self.closed = True
            raise answer
        return answer

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeCluster:
    handler: Handler
    log: list[tuple[str, Request]] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    paused: set[str] = field(default_factory=set)
    connects: list[str] = field(default_factory=list)

    async def connect(self, endpoint: str, label: str) -> FakeConn:
        node = endpoint.split(":", maxsplit=1)[0]  # endpoints are "<node>:1"
        self.connects.append(node)
        if node in self.down:
            raise ConnectionLostError(f"{node} is down")
        return FakeConn(node, self.handler, self.log, self.paused)

    def client(self, timeout_s: float = 2.0, backoff_cap_s: float = 0.002) -> AsyncKVClient:
        return AsyncKVClient(
            ["n1:1", "n2:1", "n3:1"], cluster_key=KEY, timeout_s=timeout_s, connector=self.connect,
            rng=random.Random(1), backoff_base_s=0.0005, backoff_cap_s=backoff_cap_s,
        )  # fmt: skip


def leader_is(leader: str) -> Handler:
    def handle(node: str, request: Request) -> Response:
        if node != leader:
            return Response(request.request_id, ResponseStatus.REDIRECT, leader_hint=leader)
        if isinstance(request, WriteRequest):
            return Response(request.request_id, ResponseStatus.OK, OK_WRITE)
        return Response(request.request_id, ResponseStatus.OK, encode_query_result(3, None))

    return handle


def writes(log: list[tuple[str, Request]]) -> list[tuple[str, WriteRequest]]:
    return [(n, r) for n, r in log if isinstance(r, WriteRequest)]


def test_redirects_reach_the_leader_and_later_calls_go_straight_there() -> None:
    cluster = FakeCluster(leader_is("n3"))

    async def main() -> None:
        async with cluster.client() as kv:
            assert await kv.put("a", b"1") == 7
            cluster.log.clear()
            assert await kv.put("b", b"2") == 7
            assert [n for n, _ in cluster.log] == ["n3"], "the leader is remembered"

    asyncio.run(main())


def test_a_write_retried_after_unknown_outcomes_and_lost_connections_keeps_its_session_and_seq() -> None:
    answers: list[ResponseStatus | Exception] = [
        ResponseStatus.UNKNOWN, ConnectionLostError("reset"), ResponseStatus.BUSY, ResponseStatus.OK,
    ]  # fmt: skip

    def handle(node: str, request: Request) -> Response | Exception:
        step = answers.pop(0)
        if isinstance(step, Exception):
            return step
        return Response(request.request_id, step, OK_WRITE if step is ResponseStatus.OK else None)

    cluster = FakeCluster(handle)

    async def main() -> None:
        async with cluster.client() as kv:
            assert await kv.put("a", b"1") == 7
            sent = writes(cluster.log)
            assert len(sent) == 4
            assert len({(r.client, r.seq) for _, r in sent}) == 1, "every resend is the same write"
            assert kv.retries >= 3

    asyncio.run(main())


def test_concurrent_writes_use_distinct_sessions_and_a_session_is_reused_in_order() -> None:
    cluster = FakeCluster(leader_is("n1"))

    async def main() -> None:
        async with cluster.client() as kv:
            await asyncio.gather(*(kv.put(f"k{i}", b"v") for i in range(5)))
            first = writes(cluster.log)
            assert len({r.client for _, r in first}) == 5, "one session per in-flight write"
            cluster.log.clear()
            await kv.put("again", b"v")
            ((_, again),) = writes(cluster.log)
            assert again.client in {r.client for _, r in first} and again.seq == 2 and again.ack == 2

    asyncio.run(main())


def test_an_expired_session_is_replaced_and_the_write_resent_unrun() -> None:
    expired_once: list[str] = []

    def handle(node: str, request: Request) -> Response:
        assert isinstance(request, WriteRequest)
        if not expired_once:
            expired_once.append(request.client)
            return Response(request.request_id, ResponseStatus.EXPIRED)
        return Response(request.request_id, ResponseStatus.OK, OK_WRITE)

    cluster = FakeCluster(handle)

    async def main() -> None:
        async with cluster.client() as kv:
            await kv.put("a", b"1")
            (_, first), (_, second) = writes(cluster.log)
            assert second.client != first.client and second.seq == 1

    asyncio.run(main())


def test_unreachable_nodes_are_skipped() -> None:
    cluster = FakeCluster(leader_is("n2"), down={"n1", "n3"})

    async def main() -> None:
        async with cluster.client() as kv:
            assert await kv.put("a", b"1") == 7

    asyncio.run(main())


def test_a_paused_leader_costs_one_attempt_timeout_then_the_write_goes_elsewhere_unchanged() -> None:
    cluster = FakeCluster(leader_is("n1"))

    async def main() -> None:
        async with cluster.client(timeout_s=1.0) as kv:
            await kv.put("a", b"1")  # n1 is the known leader now
            cluster.paused.add("n1")
            cluster.handler = leader_is("n2")  # a new leader was elected meanwhile
            cluster.log.clear()
            assert await kv.put("b", b"2") == 7
            sent = writes(cluster.log)
            assert sent[0][0] == "n1" and sent[-1][0] == "n2"
            assert len({(r.client, r.seq) for _, r in sent}) == 1

    asyncio.run(main())


def test_no_leader_ends_in_a_timeout_that_is_a_deadline_error() -> None:
    cluster = FakeCluster(lambda node, r: Response(r.request_id, ResponseStatus.REDIRECT, leader_hint=None))

    async def main() -> None:
        async with cluster.client(timeout_s=0.3, backoff_cap_s=0.1) as kv:
            with pytest.raises(KVTimeoutError) as info:
                await kv.put("a", b"1")
            assert isinstance(info.value, DeadlineExceededError)

    asyncio.run(main())


def test_every_node_down_is_unavailable() -> None:
    cluster = FakeCluster(leader_is("n1"), down={"n1", "n2", "n3"})

    async def main() -> None:
        async with cluster.client(timeout_s=60) as kv:
            with pytest.raises(KVUnavailableError, match="gave up"):
                await kv.get("a")

    asyncio.run(main())


def test_giving_up_on_a_sent_write_says_its_outcome_is_unknown() -> None:
    from stalwart.client import KVOutcomeUnknownError
    from stalwart.errors import UnavailableError

    answers: list[ResponseStatus] = []

    def handle(node: str, request: Request) -> Response:
        status = answers[len(cluster.log) - 1] if len(cluster.log) <= len(answers) else answers[-1]
        return Response(request.request_id, status, leader_hint=None)

    cluster = FakeCluster(handle)

    async def main() -> None:
        async with cluster.client(timeout_s=60, backoff_cap_s=0.0005) as kv:
            # Refused every time before it ran (busy, no leader): definitely not applied.
            answers[:] = [ResponseStatus.BUSY, ResponseStatus.REDIRECT]
            with pytest.raises(KVUnavailableError, match="gave up") as info:
                await kv.put("a", b"1")
            assert not isinstance(info.value, KVOutcomeUnknownError)
            # One "unknown" answer among the refusals: the write may have run.
            cluster.log.clear()
            answers[:] = [ResponseStatus.REDIRECT, ResponseStatus.UNKNOWN, ResponseStatus.REDIRECT]
            with pytest.raises(KVOutcomeUnknownError, match="outcome is unknown") as unknown:
                await kv.put("a", b"1")
            assert isinstance(unknown.value, UnavailableError)
            assert not isinstance(unknown.value, KVUnavailableError), "it does not read as 'not run'"
            # A read that got nowhere is simply unavailable.
            cluster.log.clear()
            answers[:] = [ResponseStatus.UNKNOWN]
            with pytest.raises(KVUnavailableError, match="gave up"):
                await kv.get("a")

    asyncio.run(main())


def test_a_write_whose_connection_dropped_after_sending_is_unknown_when_given_up() -> None:
    from stalwart.client import KVOutcomeUnknownError

    cluster = FakeCluster(lambda node, r: ConnectionLostError("reset after the write went out"))

    async def main() -> None:
        async with cluster.client(timeout_s=60, backoff_cap_s=0.0005) as kv:
            with pytest.raises(KVOutcomeUnknownError):
                await kv.put("a", b"1")
            assert writes(cluster.log), "it was sent"
        down = FakeCluster(leader_is("n1"), down={"n1", "n2", "n3"})
        async with down.client(timeout_s=60, backoff_cap_s=0.0005) as kv:
            with pytest.raises(KVUnavailableError) as info:  # never sent: not run
                await kv.put("a", b"1")
            assert not isinstance(info.value, KVOutcomeUnknownError)

    asyncio.run(main())


def test_a_refused_request_is_not_retried() -> None:
    cluster = FakeCluster(lambda node, r: Response(r.request_id, ResponseStatus.ERROR, error="bad key"))

    async def main() -> None:
        async with cluster.client() as kv:
            with pytest.raises(KVRequestError, match="bad key"):
                await kv.put("a", b"1")
            assert len(cluster.log) == 1

    asyncio.run(main())


def test_the_clients_ttl_bound_is_the_codecs() -> None:
    """The longest TTL the codec takes is sent; one millisecond more is refused locally."""
    cluster = FakeCluster(leader_is("n1"))

    async def main() -> None:
        async with cluster.client() as kv:
            with pytest.raises(KVRequestError, match="ttl"):
                await kv.put("a", b"x", ttl_s=(MAX_TTL_MS + 1) / 1000)
            assert cluster.log == []
            await kv.put("a", b"x", ttl_s=MAX_TTL_MS / 1000)
            sent = [r for _, r in cluster.log if isinstance(r, WriteRequest)]
            assert sent, "the longest TTL the codec accepts is sent"
            cmd, _ = decode_command(sent[0].command)
            assert isinstance(cmd, Put) and cmd.ttl_ms == MAX_TTL_MS

    asyncio.run(main())


def test_oversized_values_and_bad_keys_are_refused_before_sending() -> None:
    cluster = FakeCluster(leader_is("n1"))

    async def main() -> None:
        async with cluster.client() as kv:
            with pytest.raises(KVRequestError, match="values are at most"):
                await kv.put("a", b"x" * ((1 << 20) + 1))
            with pytest.raises(KVRequestError, match="key"):
                await kv.put("", b"x")
            with pytest.raises(KVRequestError, match="key"):
                await kv.put("k" * 1025, b"x")
            with pytest.raises(KVRequestError, match="ttl"):
                await kv.put("a", b"x", ttl_s=1e12)
            with pytest.raises(KVRequestError, match="expected of"):
                await kv.cas("a", b"x" * ((1 << 20) + 1), b"y")
            with pytest.raises(KVRequestError, match="consistency"):
                await kv.get("a", consistency="eventual")
            assert cluster.log == []

    asyncio.run(main())


def test_stale_reads_are_answered_by_any_node_and_carry_the_level() -> None:
    def handle(node: str, request: Request) -> Response:
        assert isinstance(request, ReadRequest) and request.consistency is Consistency.STALE
        decode_query(request.query)
        return Response(request.request_id, ResponseStatus.OK, encode_query_result(3, None))

    cluster = FakeCluster(handle)

    async def main() -> None:
        async with cluster.client() as kv:
            assert await kv.get("a", consistency="stale") is None
            assert len(cluster.log) == 1

    asyncio.run(main())


@settings(max_examples=60, deadline=None)
@given(
    failures=st.lists(
        st.sampled_from(
            ["unknown", "busy", "lost", "redirect-none", "redirect-n1", "redirect-n2", "redirect-n3"]
        ),
        max_size=12,
    )
)
def test_any_failure_sequence_resends_one_write_until_it_succeeds(failures: list[str]) -> None:
    pending = list(failures)

    def handle(node: str, request: Request) -> Response | Exception:
        if not pending:
            return Response(request.request_id, ResponseStatus.OK, OK_WRITE)
        step = pending.pop(0)
        if step == "lost":
            return ConnectionLostError("reset")
        if step.startswith("redirect"):
            hint = None if step == "redirect-none" else step.split("-")[1]
            return Response(request.request_id, ResponseStatus.REDIRECT, leader_hint=hint)
        return Response(request.request_id, ResponseStatus(step))

    cluster = FakeCluster(handle)

    async def main() -> None:
        async with cluster.client(timeout_s=30) as kv:
            assert await kv.put("a", b"1") == 7
        sent = writes(cluster.log)
        assert len(sent) == len(failures) + 1
        assert len({(r.client, r.seq, r.command) for _, r in sent}) == 1
        assert decode_command(sent[0][1].command)[0] == Put("a", b"1")

    asyncio.run(main())

"""AsyncKVClient: leader discovery, redirects, bounded jittered retries, exactly-once writes."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from stalwart.client._conn import DEFAULT_MAX_INFLIGHT, Connection
from stalwart.client._errors import (
    ConnectionLostError,
    KVCompactedError,
    KVError,
    KVOutcomeUnknownError,
    KVRequestError,
    KVTimeoutError,
    KVUnavailableError,
)
from stalwart.client._protocol import (
    Consistency,
    ReadRequest,
    Request,
    Response,
    ResponseStatus,
    StatusRequest,
    WriteRequest,
)
from stalwart.errors import ConfigError, DecodeError
from stalwart.kv import (
    MAX_KEY_BYTES,
    MAX_TTL_MS,
    MAX_VALUE_BYTES,
    Append,
    Cas,
    Command,
    Delete,
    Event,
    Get,
    KeyValue,
    Put,
    Query,
    Range,
    Watch,
    WriteResult,
    decode_get_result,
    decode_range_result,
    decode_result,
    decode_watch_result,
    encode_command,
    encode_query,
)

__all__ = ["AsyncKVClient", "ClientConnection", "Connector"]

T = TypeVar("T")

MAX_ATTEMPTS = 64  # per call, across redirects and reconnects; the timeout usually ends it first
BACKOFF_BASE_S = 0.01
BACKOFF_CAP_S = 0.5
WATCH_POLL_S = 0.1
WATCH_BATCH = 1_000
MAX_CLIENT_ID_CHARS = 96  # sessions add ".<instance>.<n>" within the protocol's 128


class _CallTimedOut(KVError):
    """Raised inside a call when its deadline passed; :meth:`AsyncKVClient._call` turns it into
    :class:`KVTimeoutError`."""


@dataclass(slots=True)
class _Slot:
    """One client session with at most one write in flight.

    Raft's session table runs a session's commands in sequence order and refuses one whose seq
    is below the last applied (it may have run). Concurrent writes of one client may reach the
    log in any order, so each in-flight write uses a session of its own: the client is a pool
    of sessions ``<client_id>.<instance>.<n>``, as many as it has writes in flight at once.
    """

    session: str
    seq: int = 0


class ClientConnection(Protocol):
    """What the client needs of a connection (a real :class:`Connection` or a test fake)."""

    @property
    def node_id(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    async def send(self, build: Callable[[int], Request]) -> Response: ...

    async def close(self) -> None: ...


Connector = Callable[[str, str], Awaitable[ClientConnection]]  # (endpoint, connection label)


def _consistency(value: str | Consistency) -> Consistency:
    try:
        return Consistency(value)
    except ValueError:
        raise KVRequestError(f"consistency must be one of {[c.value for c in Consistency]}") from None


class AsyncKVClient:
    """``async with AsyncKVClient(["127.0.0.1:7101", ...], cluster_key=key) as kv: ...``.

    Every call runs inside one timeout scope of ``timeout_s`` (:class:`KVTimeoutError` when it
    ends: a write's outcome is then unknown); one node gets at most ``attempt_timeout_s``
    (default half of it) before the call moves on. Inside it, the call goes to the believed leader,
    follows redirects (``leader_hint``), tries the other endpoints when a node is unreachable,
    and backs off with full jitter when no leader is known, at most ``MAX_ATTEMPTS`` times
    (then :class:`KVUnavailableError`: not run; or, for a write that was sent and may have
    run, :class:`KVOutcomeUnknownError`). A write keeps its (client id, sequence number) across
    every retry, so the cluster applies it at most once however often it is resent.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        cluster_key: bytes,
        client_id: str | None = None,
        timeout_s: float = 5.0,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        connector: Connector | None = None,
        rng: random.Random | None = None,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
        attempt_timeout_s: float | None = None,
    ) -> None:
        if not endpoints:
            raise ConfigError("AsyncKVClient needs at least one endpoint")
        if timeout_s <= 0:
            raise ConfigError("timeout_s must be positive")
        self.endpoints = [e.strip() for e in endpoints]
        self.timeout_s = timeout_s
        self._key = cluster_key
        if client_id is not None and not 0 < len(client_id) <= MAX_CLIENT_ID_CHARS:
            raise ConfigError(f"client_id must be 1 to {MAX_CLIENT_ID_CHARS} characters")
        self._client_id = client_id or f"c-{uuid.uuid4().hex[:12]}"
        # Sessions are named <client_id>.<instance>.<n>: unique even if two clients share an id
        # (sharing a session would answer one client's write with another's cached result).
        self._instance = uuid.uuid4().hex[:12]
        self._label = f"{self._client_id}"
        self._max_inflight = max_inflight
        self._connector = connector or self._connect_real
        self._rng = rng or random.Random()
        self._conns: dict[str, ClientConnection] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._ids: dict[str, str] = {}  # node id -> endpoint
        self._leader: str | None = None  # endpoint
        self._free_slots: list[_Slot] = []  # sessions with no write in flight
        self._sessions_made = 0
        self._backoff_base_s, self._backoff_cap_s = backoff_base_s, backoff_cap_s
        # One node gets at most this long before the call moves on (half the call's budget).
        self._attempt_timeout_s = attempt_timeout_s or timeout_s / 2
        self._closing: set[asyncio.Task[None]] = set()
        self.retries = 0  # how many times a call was re-sent (for tests and metrics)

    @property
    def client_id(self) -> str:
        return self._client_id

    async def _connect_real(self, endpoint: str, label: str) -> ClientConnection:
        return await Connection.open(
            endpoint, key=self._key, client_id=label, max_inflight=self._max_inflight
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            await conn.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # ---- connections and routing -----------------------------------------------------------

    async def _conn(self, endpoint: str) -> ClientConnection:
        conn = self._conns.get(endpoint)
        if conn is not None and not conn.closed:
            return conn
        lock = self._connecting.setdefault(endpoint, asyncio.Lock())
        async with lock:
            conn = self._conns.get(endpoint)
            if conn is None or conn.closed:
                conn = await self._connector(endpoint, self._label)
                self._conns[endpoint] = conn
                self._ids[conn.node_id] = endpoint
            return conn

    def _forget(self, endpoint: str, *, close: bool = False) -> None:
        conn = self._conns.pop(endpoint, None)
        if self._leader == endpoint:
            self._leader = None
        if close and conn is not None:
            task = asyncio.ensure_future(conn.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _next_endpoint(self, after: str | None) -> str:
        if after is None or after not in self.endpoints:
            return self.endpoints[self._rng.randrange(len(self.endpoints))]
        return self.endpoints[(self.endpoints.index(after) + 1) % len(self.endpoints)]

    async def _backoff(self, attempt: int, deadline: float) -> None:
        """A full-jitter pause, cut short by the call's deadline (then the call times out)."""
        self.retries += 1
        delay = self._rng.uniform(0, min(self._backoff_cap_s, self._backoff_base_s * 2**attempt))
        left = deadline - asyncio.get_running_loop().time()
        if delay >= left:
            await asyncio.sleep(max(0.0, left))
            raise _CallTimedOut
        await asyncio.sleep(delay)

    async def _call(self, build: Callable[[int], Request], *, pinned: str | None = None) -> Response:
        """Send until a final answer; redirects and lost connections are handled here.

        One timer per attempt: it fires at the attempt's limit or the call's deadline, whichever
        comes first (two nested timeout scopes cost a loaded client measurably more).
        """
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        try:
            return await self._route(build, pinned, deadline)
        except _CallTimedOut:
            self._leader = None  # whoever we thought led did not answer: ask around next time
            raise KVTimeoutError(
                f"no answer within {self.timeout_s}s (a write's outcome is unknown)"
            ) from None

    async def _route(self, build: Callable[[int], Request], pinned: str | None, deadline: float) -> Response:
        loop = asyncio.get_running_loop()
        endpoint = pinned or self._leader or self._next_endpoint(None)
        last_error = "no attempt"
        # Whether an attempt may have reached a leader and run (a write sent on a connection that
        # then dropped or went silent, or answered "unknown"): giving up then says so.
        maybe_ran = False
        for attempt in range(MAX_ATTEMPTS):
            sent = False
            try:
                async with asyncio.timeout_at(min(deadline, loop.time() + self._attempt_timeout_s)):
                    conn = await self._conn(endpoint)
                    sent = True
                    response = await conn.send(build)
            except (ConnectionLostError, TimeoutError) as exc:
                if isinstance(exc, TimeoutError) and loop.time() >= deadline:
                    raise _CallTimedOut from None
                # A lost connection, or a node that does not answer in time (paused, cut off,
                # overloaded): try the next one. A write is resent unchanged, so it applies once.
                maybe_ran = maybe_ran or sent
                last_error = str(exc) or f"{endpoint} did not answer within {self._attempt_timeout_s}s"
                self._forget(endpoint, close=isinstance(exc, TimeoutError))
                if pinned is not None:
                    raise self._give_up(build, maybe_ran, last_error) from None
                endpoint = self._next_endpoint(endpoint)
                await self._backoff(attempt, deadline)
                continue
            match response.status:
                case ResponseStatus.REDIRECT if pinned is None:
                    hinted = self._ids.get(response.leader_hint or "")
                    last_error = f"{endpoint} is not the leader (hint: {response.leader_hint})"
                    if hinted is not None and hinted != endpoint:
                        self._leader = endpoint = hinted
                        self.retries += 1
                        continue
                    self._leader = None
                    endpoint = self._next_endpoint(endpoint)
                    await self._backoff(attempt, deadline)
                case ResponseStatus.BUSY | ResponseStatus.UNKNOWN:
                    maybe_ran = maybe_ran or response.status is ResponseStatus.UNKNOWN
                    last_error = f"{endpoint} answered {response.status.value}: {response.error}"
                    await self._backoff(
                        attempt, deadline
                    )  # an unknown write is resent as is: it applies once
                case ResponseStatus.ERROR:
                    raise KVRequestError(response.error or "request refused")
                case _:
                    if pinned is None:
                        self._leader = endpoint
                    return response  # OK, EXPIRED (the caller starts a new session), or pinned
        raise self._give_up(build, maybe_ran, f"gave up after {MAX_ATTEMPTS} attempts: {last_error}")

    @staticmethod
    def _give_up(
        build: Callable[[int], Request], maybe_ran: bool, why: str
    ) -> KVUnavailableError | KVOutcomeUnknownError:
        """KVUnavailableError: not run; KVOutcomeUnknownError: a write that may have run."""
        if maybe_ran and isinstance(build(0), WriteRequest):
            return KVOutcomeUnknownError(f"{why} (the write was sent: its outcome is unknown)")
        return KVUnavailableError(why)

    # ---- writes ------------------------------------------------------------------------------

    async def _write(self, command: Command) -> WriteResult:
        _check(command)  # what the node would refuse, refused here with the reason
        payload = encode_command(command, 0)
        slot = self._free_slots.pop() if self._free_slots else self._new_slot()
        try:
            for _ in range(3):  # a new session after an expired one; it cannot expire again at once
                slot.seq += 1
                response = await self._call(self._write_builder(slot.session, slot.seq, payload))
                if response.status is ResponseStatus.EXPIRED:
                    slot.session, slot.seq = self._session_name(), 0
                    continue
                return _decode(decode_result, response)
            raise KVUnavailableError("the session kept expiring")
        finally:
            # Back to the pool even after a timeout: the slot's next seq is higher, so the
            # unanswered write can still apply once, never after a later write of this slot.
            self._free_slots.append(slot)

    def _write_builder(self, session: str, seq: int, payload: bytes) -> Callable[[int], Request]:
        # One write in flight per session: everything below seq has its answer (ack = seq).
        return lambda rid: WriteRequest(rid, session, seq, seq, payload)

    def _session_name(self) -> str:
        self._sessions_made += 1
        return f"{self._client_id}.{self._instance}.{self._sessions_made}"

    def _new_slot(self) -> _Slot:
        return _Slot(self._session_name())

    async def put(self, key: str, value: bytes, ttl_s: float | None = None) -> int:
        """Set ``key``; returns the store revision of this write."""
        ttl_ms = None if ttl_s is None else max(1, round(ttl_s * 1000))
        return (await self._write(Put(key, bytes(value), ttl_ms))).revision

    async def delete(self, key: str) -> bool:
        """Delete ``key``; True if it existed."""
        return (await self._write(Delete(key))).ok

    async def cas(
        self, key: str, expected: bytes | None, value: bytes, ttl_s: float | None = None
    ) -> tuple[bool, int]:
        """Set ``key`` to ``value`` if it currently holds ``expected`` (None: absent).

        Returns (swapped, revision); the revision is the store's at the compare either way.
        """
        ttl_ms = None if ttl_s is None else max(1, round(ttl_s * 1000))
        result = await self._write(Cas(key, expected, bytes(value), ttl_ms))
        return result.ok, result.revision

    async def append(self, key: str, suffix: bytes) -> bytes:
        """Append to ``key`` (created if absent); returns the new value."""
        result = await self._write(Append(key, bytes(suffix)))
        assert result.value is not None, "an append answers with the new value"
        return result.value

    # ---- reads -------------------------------------------------------------------------------

    async def _read(self, query: Query, consistency: str | Consistency, pinned: str | None = None) -> bytes:
        level = _consistency(consistency)
        data = encode_query(query)
        response = await self._call(lambda rid: ReadRequest(rid, data, level), pinned=pinned)
        if response.status is not ResponseStatus.OK or response.result is None:
            raise KVUnavailableError(f"read answered {response.status.value}: {response.error}")
        return response.result

    async def get(self, key: str, consistency: str | Consistency = "linearizable") -> KeyValue | None:
        data = await self._read(Get(key), consistency)
        return _parse(decode_get_result, data)[1]

    async def get_with_revision(
        self, key: str, consistency: str | Consistency = "linearizable"
    ) -> tuple[int, KeyValue | None]:
        """The store revision the read observed, and the key."""
        return _parse(decode_get_result, await self._read(Get(key), consistency))

    async def range(
        self, prefix: str, limit: int = 1000, consistency: str | Consistency = "linearizable"
    ) -> list[KeyValue]:
        """Keys starting with ``prefix`` in key order, at most ``limit`` (<= 10 000)."""
        return _parse(decode_range_result, await self._read(Range(prefix, limit), consistency))[1]

    async def watch(self, prefix: str, since_revision: int = 0) -> AsyncGenerator[Event, None]:
        """Every change to keys under ``prefix`` after ``since_revision``, in revision order.

        Polls the history the store keeps (bounded); raises :class:`KVCompactedError` when the
        asked-for revisions are gone. Runs until the caller stops iterating.
        """
        since = since_revision
        while True:
            data = await self._read(Watch(prefix, since, WATCH_BATCH), Consistency.LINEARIZABLE)
            _, events, compacted = _parse(decode_watch_result, data)
            if events is None:
                raise KVCompactedError(since, compacted)
            if len(events) >= WATCH_BATCH and events[0].revision != events[-1].revision:
                # A full batch may cut one revision's events in two: keep whole revisions only.
                last = events[-1].revision
                events = [e for e in events if e.revision != last]
            for event in events:
                yield event
                since = event.revision
            if not events:
                await asyncio.sleep(WATCH_POLL_S)

    async def status(self, endpoint: str | None = None) -> dict[str, Any]:
        """The status of ``endpoint`` (default: the leader, or any node)."""
        response = await self._call(StatusRequest, pinned=endpoint)
        if response.status is not ResponseStatus.OK or response.result is None:
            raise KVUnavailableError(f"status answered {response.status.value}")
        try:
            status = json.loads(response.result)
        except ValueError as exc:
            raise KVUnavailableError(f"unreadable status: {exc}") from None
        if not isinstance(status, dict):
            raise KVUnavailableError("unreadable status")
        return status


def _check(command: Command) -> None:
    """Refuse what the node's codec would refuse (keys, value sizes, TTL), with the reason."""
    key = getattr(command, "key", "")
    if not isinstance(key, str) or not 0 < len(key.encode()) <= MAX_KEY_BYTES:
        raise KVRequestError(f"a key is a non-empty string of at most {MAX_KEY_BYTES} bytes")
    for name in ("value", "suffix", "expected"):
        value = getattr(command, name, None)
        if isinstance(value, bytes) and len(value) > MAX_VALUE_BYTES:
            raise KVRequestError(f"{name} of {len(value)} bytes: values are at most {MAX_VALUE_BYTES} bytes")
    ttl_ms = getattr(command, "ttl_ms", None)
    if ttl_ms is not None and not 1 <= ttl_ms <= MAX_TTL_MS:
        raise KVRequestError(f"ttl must be between 1 ms and {MAX_TTL_MS // 86_400_000} days")


def _parse(decoder: Callable[[bytes], T], data: bytes) -> T:
    try:
        return decoder(data)
    except DecodeError as exc:
        raise KVUnavailableError(f"a node answered garbage: {exc}") from None


def _decode(decoder: Callable[[bytes], WriteResult], response: Response) -> WriteResult:
    if response.result is None:
        raise KVUnavailableError("a write answer carried no result")
    return _parse(decoder, response.result)

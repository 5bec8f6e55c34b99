"""The HTTP/JSON API (aiohttp): keys, CAS, scans, watch as server-sent events, status, metrics.

Values: a PUT body is the raw value (any bytes, any content type); JSON answers carry values
base64-encoded (``value``), since values are arbitrary bytes. Writes and linearizable or lease
reads at a node that is not the leader are **redirected** (307, same method and body) to the
leader's HTTP address when it is known (``--peer-http``), else answered 503 with
``Retry-After``. See docs/kv.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from stalwart.client._protocol import Consistency, ResponseStatus
from stalwart.errors import DecodeError
from stalwart.kv import (
    MAX_RANGE_LIMIT,
    MAX_VALUE_BYTES,
    Cas,
    Command,
    Delete,
    Event,
    Get,
    KeyValue,
    Put,
    Range,
    Watch,
    decode_get_result,
    decode_range_result,
    decode_result,
    decode_watch_result,
    encode_command,
    encode_query,
)
from stalwart.server._config import Address
from stalwart.server._openapi import OPENAPI
from stalwart.server._server import Answer, KVServer

MAX_BODY_BYTES = MAX_VALUE_BYTES * 2 + (64 << 10)  # a CAS body carries two base64 values
WATCH_POLL_S = 0.1
SSE_KEEPALIVE_S = 15.0


def kv_json(kv: KeyValue) -> dict[str, Any]:
    return {
        "key": kv.key,
        "value": base64.b64encode(kv.value).decode(),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "expires_at_ms": kv.expires_at_ms,
    }


def event_json(event: Event) -> dict[str, Any]:
    return {
        "revision": event.revision,
        "type": event.kind.name.lower(),
        "key": event.key,
        "value": base64.b64encode(event.value).decode(),
    }


def _bad(text: str, status: int = 400) -> web.Response:
    return web.json_response({"error": text}, status=status)


@dataclass(slots=True)
class _Session:
    name: str
    seq: int = 0


class HttpApi:
    def __init__(self, server: KVServer, address: Address) -> None:
        self.server = server
        self._address = address
        self.app = build_app(self)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._instance = uuid.uuid4().hex[:12]
        self._sessions = itertools.count(1)
        self._free: list[_Session] = []  # sessions with no write in flight

    @property
    def address(self) -> Address:
        assert self._site is not None and self._site._server is not None
        sockets = getattr(self._site._server, "sockets", None) or []
        host, port = sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        # Open watch streams must not hold a SIGTERM up for aiohttp's default of 60 s.
        self._site = web.TCPSite(self._runner, self._address[0], self._address[1], shutdown_timeout=1.0)
        await self._site.start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- plumbing ------------------------------------------------------------------------------

    def _not_leader(self, request: web.Request) -> web.Response:
        leader = self.server.leader
        target = self.server.config.peer_http.get(leader) if leader is not None else None
        if target is not None and leader != self.server.config.node_id:
            location = f"http://{target[0]}:{target[1]}{request.rel_url}"
            return web.Response(status=307, headers={"Location": location, "X-Stalwart-Leader": leader or ""})
        return web.json_response(
            {"error": "not the leader and the leader's HTTP address is unknown", "leader": leader},
            status=503, headers={"Retry-After": "1"},
        )  # fmt: skip

    def _observe(self, op: str, started: float, status: int) -> None:
        self.server.metrics.request("http", op, str(status), time.perf_counter() - started)

    async def write(self, command: Command) -> Answer:
        """One write in a session of this node's HTTP pool (one write in flight per session).

        Raft's session table runs a session's commands in order and refuses one below the last
        applied, so concurrent HTTP writes each take a session of their own, as the client does.
        """
        payload = encode_command(command, 0)
        slot = self._free.pop() if self._free else _Session(self._session_name())
        try:
            for _ in range(2):
                slot.seq += 1
                answer = await self.server.write(slot.name, slot.seq, slot.seq, payload)
                if answer.status is not ResponseStatus.EXPIRED:
                    return answer
                slot.name, slot.seq = self._session_name(), 0  # expired: a fresh session, not run
            return answer
        finally:
            self._free.append(slot)

    def _session_name(self) -> str:
        return f"http-{self.server.config.node_id}-{self._instance}.{next(self._sessions)}"

    def _failure(self, request: web.Request, answer: Answer) -> web.Response:
        match answer.status:
            case ResponseStatus.REDIRECT:
                return self._not_leader(request)
            case ResponseStatus.ERROR:
                return _bad(answer.error)
            case ResponseStatus.UNKNOWN:
                return _bad(f"outcome unknown: {answer.error}", 504)
            case _:
                return web.json_response({"error": answer.error or answer.status.value}, status=503,
                                         headers={"Retry-After": "1"})  # fmt: skip


def _consistency(request: web.Request) -> Consistency:
    try:
        return Consistency(request.query.get("consistency", "linearizable"))
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "consistency must be linearizable, lease or stale"}),
            content_type="application/json",
        ) from None


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    try:
        value = default if raw is None else int(raw)
        if not low <= value <= high:
            raise ValueError
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name} must be an integer in [{low}, {high}]"}),
            content_type="application/json",
        ) from None
    return value


def _ttl(request: web.Request) -> int | None:
    raw = request.query.get("ttl_s")
    if raw is None:
        return None
    try:
        ttl_s = float(raw)
        if not 0 < ttl_s <= 10 * 365 * 86400:
            raise ValueError
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "ttl_s must be a positive number of seconds"}),
            content_type="application/json",
        ) from None
    return max(1, round(ttl_s * 1000))


def _b64(raw: object, what: str) -> bytes:
    if not isinstance(raw, str):
        raise ValueError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error:
        raise ValueError(f"{what} is not valid base64") from None


class _Routes:
    """The request handlers; ``build_app`` maps paths to them."""

    def __init__(self, api: HttpApi) -> None:
        self.api = api
        self.server = api.server

    async def _read(self, request: web.Request, query: bytes) -> Answer:
        return await self.server.read(query, _consistency(request))

    async def get_key(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        answer = await self._read(request, encode_query(Get(request.match_info["key"])))
        if answer.status is not ResponseStatus.OK or answer.result is None:
            resp = self.api._failure(request, answer)
        else:
            revision, kv = decode_get_result(answer.result)
            if kv is None:
                resp = _bad("key not found", 404)
            else:
                resp = web.json_response({"revision": revision, **kv_json(kv)})
        self.api._observe("get", started, resp.status)
        return resp

    async def put_key(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        value = await request.read()
        resp = await _write_response(self.api, request, Put(request.match_info["key"], value, _ttl(request)))
        self.api._observe("put", started, resp.status)
        return resp

    async def delete_key(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        resp = await _write_response(self.api, request, Delete(request.match_info["key"]))
        self.api._observe("delete", started, resp.status)
        return resp

    async def cas_key(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            expected = None if body.get("expected") is None else _b64(body["expected"], "expected")
            value = _b64(body.get("value"), "value")
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            return _bad(f"bad CAS body: {exc}")
        command = Cas(request.match_info["key"], expected, value, _ttl(request))
        resp = await _write_response(self.api, request, command)
        self.api._observe("cas", started, resp.status)
        return resp

    async def scan(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        limit = _int_param(request, "limit", 1000, 1, MAX_RANGE_LIMIT)
        answer = await self._read(request, encode_query(Range(request.query.get("prefix", ""), limit)))
        if answer.status is not ResponseStatus.OK or answer.result is None:
            resp = self.api._failure(request, answer)
        else:
            revision, rows = decode_range_result(answer.result)
            resp = web.json_response({"revision": revision, "items": [kv_json(kv) for kv in rows]})
        self.api._observe("scan", started, resp.status)
        return resp

    async def watch(self, request: web.Request) -> web.StreamResponse:
        return await _watch(self.api, request)

    async def status(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.server.status())

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        body = self.server.metrics.render(self.server)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(OPENAPI)


def build_app(api: HttpApi) -> web.Application:
    routes = _Routes(api)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/v1/kv/{key:.+}", routes.get_key)
    app.router.add_put("/v1/kv/{key:.+}", routes.put_key)
    app.router.add_delete("/v1/kv/{key:.+}", routes.delete_key)
    app.router.add_post("/v1/kv/{key:.+}/cas", routes.cas_key)
    app.router.add_get("/v1/kv", routes.scan)
    app.router.add_get("/v1/watch", routes.watch)
    app.router.add_get("/v1/status", routes.status)
    app.router.add_get("/metrics", routes.metrics)
    app.router.add_get("/openapi.json", routes.openapi)
    return app


async def _write_response(api: HttpApi, request: web.Request, command: Command) -> web.Response:
    try:
        answer = await api.write(command)
    except DecodeError as exc:
        return _bad(str(exc))
    if answer.status is not ResponseStatus.OK or answer.result is None:
        return api._failure(request, answer)
    result = decode_result(answer.result)
    match command:
        case Put():
            return web.json_response({"revision": result.revision})
        case Delete():
            return web.json_response({"deleted": result.ok, "revision": result.revision})
        case _:
            current = None if result.value is None else base64.b64encode(result.value).decode()
            return web.json_response({"swapped": result.ok, "revision": result.revision, "current": current})


async def _watch(api: HttpApi, request: web.Request) -> web.StreamResponse:
    """Server-sent events from this node's applied history (any node; in revision order)."""
    prefix = request.query.get("prefix", "")
    since = _int_param(request, "since", 0, 0, 2**62)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    idle_s = 0.0
    while True:
        data = api.server.machine.query(encode_query(Watch(prefix, since, 1000)))
        _, events, compacted = decode_watch_result(data)
        if events is None:
            body = json.dumps({"since": since, "compacted_revision": compacted})
            await resp.write(f"event: compacted\ndata: {body}\n\n".encode())
            return resp
        if len(events) >= 1000 and events[0].revision != events[-1].revision:
            events = [e for e in events if e.revision != events[-1].revision]  # whole revisions only
        for event in events:
            await resp.write(f"id: {event.revision}\nevent: {event.kind.name.lower()}\n"
                             f"data: {json.dumps(event_json(event))}\n\n".encode())  # fmt: skip
            since = event.revision
        if events:
            idle_s = 0.0
            continue
        await asyncio.sleep(WATCH_POLL_S)
        idle_s += WATCH_POLL_S
        if idle_s >= SSE_KEEPALIVE_S:
            idle_s = 0.0
            await resp.write(b": keepalive\n\n")

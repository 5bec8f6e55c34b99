"""A minimal pipelined RESP2 connection for Redlock's fan-out.

Redlock sends the same small script call to N servers and waits for all the replies; the cost
that matters is per server, per request. One persistent connection per server, on an
``asyncio.Protocol``: a request is one ``transport.write`` plus a future, and replies are parsed
in ``data_received`` and matched to their futures in order (RESP is strictly in order per
connection). Because replies stay matched, a request that timed out does not poison the
connection: its late reply resolves a future nobody awaits any more. Only the reply types the
lock scripts return are parsed (integers, arrays, simple and bulk strings, errors); anything
else is garbage and closes the connection with :class:`BackendProtocolError`.

Limits: at most ``MAX_PENDING`` requests in flight per connection (a server that stopped reading
gets its connection closed instead of an unbounded queue), replies at most ``MAX_REPLY_BYTES``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlparse

from stalwart.errors import ConfigError
from stalwart.lock._errors import BackendProtocolError, BackendUnavailable

MAX_PENDING = 1024
MAX_REPLY_BYTES = 1024 * 1024
MAX_ARRAY_ITEMS = 1024
_CRLF = b"\r\n"


class RespError:
    """An error reply (``-ERR ...``): a value, not an exception, so one bad server costs nothing."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"RespError({self.message!r})"


class _Incomplete(Exception):
    """Not enough bytes buffered for a whole reply yet."""


def pack(args: Sequence[str | int | float | bytes]) -> bytes:
    """Encode one command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def parse(buf: bytes | bytearray, pos: int) -> tuple[Any, int]:
    """Parse one reply at ``pos``; returns (reply, next position) or raises _Incomplete."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        if len(buf) - pos > MAX_REPLY_BYTES:
            raise BackendProtocolError("reply header too long")
        raise _Incomplete
    kind, line = buf[pos : pos + 1], bytes(buf[pos + 1 : end])
    nxt = end + 2
    match kind:
        case b":":
            return _int(line), nxt
        case b"+":
            return line, nxt
        case b"-":
            return RespError(line.decode(errors="replace")), nxt
        case b"$":
            size = _int(line)
            if size < 0:
                return None, nxt
            if size > MAX_REPLY_BYTES:
                raise BackendProtocolError(f"bulk reply of {size} bytes is over the limit")
            if len(buf) < nxt + size + 2:
                raise _Incomplete
            if buf[nxt + size : nxt + size + 2] != _CRLF:
                raise BackendProtocolError("bulk reply not terminated by CRLF")
            return bytes(buf[nxt : nxt + size]), nxt + size + 2
        case b"*":
            count = _int(line)
            if count < 0:
                return None, nxt
            if count > MAX_ARRAY_ITEMS:
                raise BackendProtocolError(f"array reply of {count} items is over the limit")
            items = []
            for _ in range(count):
                item, nxt = parse(buf, nxt)
                items.append(item)
            return items, nxt
        case _:
            raise BackendProtocolError(f"not a RESP reply: {bytes(buf[pos : pos + 32])!r}")


def _int(line: bytes) -> int:
    try:
        return int(line)
    except ValueError:
        raise BackendProtocolError(f"bad integer in reply: {line[:32]!r}") from None


PushHandler = Callable[[list[Any]], None]
CloseHandler = Callable[[BaseException], None]


class RedisAddress:
    """Where one server is and how to log in; parsed once from its redis:// URL."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "redis" or not parsed.hostname:
            raise ConfigError(f"expected a redis://host:port[/db] URL, got {url!r}")
        self.url = url
        self.host = parsed.hostname
        self.port = parsed.port or 6379
        path = parsed.path.strip("/")
        if path and not path.isdigit():
            raise ConfigError(f"bad database number in {url!r}")
        self.db = int(path or 0)
        self.username = unquote(parsed.username) if parsed.username else None
        self.password = unquote(parsed.password) if parsed.password else None


class RespConnection(asyncio.Protocol):
    """One pipelined connection: ``request(packed)`` returns a future for its reply.

    With ``on_push`` it is a subscriber connection: ``message`` pushes go to the handler, and the
    confirmations of SUBSCRIBE/UNSUBSCRIBE (one per channel, in order) answer their requests.
    """

    def __init__(
        self, where: str, on_push: PushHandler | None = None, on_close: CloseHandler | None = None
    ) -> None:
        self.where = where
        self._on_push = on_push
        self._on_close = on_close
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.broken: BaseException | None = None

    @classmethod
    async def open(
        cls,
        address: RedisAddress,
        timeout_s: float,
        *,
        select_db: bool = True,
        on_push: PushHandler | None = None,
        on_close: CloseHandler | None = None,
    ) -> RespConnection:
        """Connect, log in and select the database, all within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        where = f"{address.host}:{address.port}"
        try:
            async with asyncio.timeout(timeout_s):
                _, proto = await loop.create_connection(
                    lambda: cls(where, on_push, on_close), address.host, address.port
                )
                try:
                    if address.password is not None:
                        user = (address.username,) if address.username else ()
                        _expect_ok(await proto.request(pack(("AUTH", *user, address.password))), where)
                    if select_db and address.db:
                        _expect_ok(await proto.request(pack(("SELECT", address.db))), where)
                except BaseException:
                    proto.close()
                    raise
        except (OSError, TimeoutError) as exc:
            raise BackendUnavailable(f"{where}: cannot connect: {exc!r}") from exc
        return proto

    @property
    def usable(self) -> bool:
        return self.broken is None and self._transport is not None and not self._transport.is_closing()

    def request(self, packed: bytes) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self.usable:
            fut.set_exception(self.broken or BackendUnavailable(f"{self.where}: connection closed"))
            return fut
        if len(self._pending) >= MAX_PENDING:
            self._break(BackendUnavailable(f"{self.where}: {MAX_PENDING} requests unanswered"))
            fut.set_exception(self.broken or BackendUnavailable(self.where))
            return fut
        assert self._transport is not None, "usable implies a transport"
        self._pending.append(fut)
        self._transport.write(packed)
        return fut

    def close(self) -> None:
        self._break(BackendUnavailable(f"{self.where}: connection closed"))

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport), "a TCP connection has a stream transport"
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        pos = 0
        try:
            while pos < len(self._buf):
                reply, pos = parse(self._buf, pos)
                if self._on_push is not None and type(reply) is list and reply and reply[0] == b"message":
                    self._on_push(reply)
                    continue
                if not self._pending:
                    raise BackendProtocolError(f"{self.where}: a reply nobody asked for")
                fut = self._pending.popleft()
                if not fut.done():  # a request whose caller gave up: its reply is dropped
                    fut.set_result(reply)
        except _Incomplete:
            pass
        except BackendProtocolError as exc:
            self._break(exc)
            return
        del self._buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self._break(BackendUnavailable(f"{self.where}: connection lost: {exc!r}"))

    def _break(self, exc: BaseException) -> None:
        first = self.broken is None
        if first:
            self.broken = exc
        while self._pending:
            fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(exc)
        if self._transport is not None:
            with contextlib.suppress(RuntimeError):
                self._transport.close()
        if first and self._on_close is not None:
            self._on_close(exc)


def _expect_ok(reply: Any, where: str) -> None:
    if reply != b"OK":
        raise BackendProtocolError(f"{where}: login or SELECT refused: {reply!r:.200}")


__all__ = ["MAX_PENDING", "RedisAddress", "RespConnection", "RespError", "pack", "parse"]

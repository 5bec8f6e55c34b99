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
gets its connection closed instead of an unbounded queue), replies at most ``MAX_REPLY_BYTES``
(a partial reply buffered beyond that, headers aside, breaks the connection: an incomplete reply is
re-parsed on each segment, so the cap also bounds that work), arrays nested at most
``MAX_DEPTH`` deep (the lock scripts answer flat arrays; a deeper reply is garbage, never a
RecursionError).
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
MAX_DEPTH = 32
#: Room for the headers of a reply whose payload is MAX_REPLY_BYTES.
_HEADER_SLACK = 4096
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


#: A :class:`Gather` slot that has no answer yet.
MISSING: Any = object()


class _Ack:
    """A pending entry for a reply that only acknowledges: ``MULTI``'s ``+OK`` and a queued
    command's ``+QUEUED`` (``strict``: anything else is garbage), or a fire-and-forget request's
    reply (``SCRIPT LOAD`` on a new connection). It is read and dropped; whatever went wrong inside
    a transaction shows in ``EXEC``'s reply, which answers the request's real entry."""

    __slots__ = ("strict",)

    def __init__(self, strict: bool) -> None:
        self.strict = strict


ACK = _Ack(strict=True)
_IGNORED = _Ack(strict=False)
_Entry = asyncio.Future[Any] | tuple["Gather", int] | _Ack


class Gather:
    """One fan-out's answers: a slot per server and ONE future, resolved when the last arrives.

    A fan-out over N connections queues ``(gather, i)`` on connection ``i`` instead of a future
    per server, so a reply costs a list store and a decrement, and the caller wakes once. A
    connection that breaks answers its slot with the error (a value); :meth:`expire` answers every
    slot still open (the fan-out's single deadline). Answers after the future is done (late
    replies, a caller that gave up) are dropped.
    """

    __slots__ = ("future", "remaining", "results")

    def __init__(self, n: int, future: asyncio.Future[None]) -> None:
        self.future = future
        self.results: list[Any] = [MISSING] * n
        self.remaining = n

    def deliver(self, i: int, answer: Any) -> None:
        if self.future.done() or self.results[i] is not MISSING:
            return
        self.results[i] = answer
        self.remaining -= 1
        if self.remaining == 0:
            self.future.set_result(None)

    def expire(self, answer_for: Callable[[int], Any]) -> None:
        """Answer every open slot with ``answer_for(i)`` and resolve the future."""
        if self.future.done():
            return
        for i, r in enumerate(self.results):
            if r is MISSING:
                self.results[i] = answer_for(i)
        self.remaining = 0
        self.future.set_result(None)


def pack(args: Sequence[str | int | float | bytes]) -> bytes:
    """Encode one command as a RESP array of bulk strings."""
    return b"*%d\r\n" % len(args) + pack_items(args)


def pack_items(args: Sequence[str | int | float | bytes]) -> bytes:
    """Encode arguments as bulk strings, without the array header: a prefix built once by
    :func:`pack_prefix` plus ``pack_items`` of the per-call arguments is the whole command."""
    parts = []
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def pack_prefix(total: int, head: Sequence[str | int | float | bytes]) -> bytes:
    """The encoding of a command of ``total`` arguments up to the end of ``head``."""
    if total < len(head):
        raise ValueError("a prefix cannot be longer than the command")
    return b"*%d\r\n" % total + pack_items(head)


def parse(buf: bytes | bytearray, pos: int, depth: int = 0) -> tuple[Any, int]:
    """Parse one reply at ``pos``; returns (reply, next position) or raises _Incomplete."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        if len(buf) - pos > MAX_REPLY_BYTES:
            raise BackendProtocolError("reply header too long")
        raise _Incomplete
    kind = buf[pos]
    nxt = end + 2
    # int() straight on the lines (a bad one is a ValueError, turned into a protocol error below):
    # no call per integer, the lock scripts answer little else.
    try:
        # Most frequent first: the lock scripts answer integers and arrays of integers.
        if kind == 58:  # ':'
            return int(buf[pos + 1 : end]), nxt
        if kind == 42:  # '*'
            count = int(buf[pos + 1 : end])
            if count < 0:
                return None, nxt
            if count > MAX_ARRAY_ITEMS:
                raise BackendProtocolError(f"array reply of {count} items is over the limit")
            if count and depth >= MAX_DEPTH:
                raise BackendProtocolError(f"array reply nested over {MAX_DEPTH} deep")
            items: list[Any] = []
            for _ in range(count):
                # Integer and status items (the lock scripts and EXEC answer those) inline: no call per item.
                end = buf.find(_CRLF, nxt)
                if end > nxt and buf[nxt] == 58:
                    items.append(int(buf[nxt + 1 : end]))
                    nxt = end + 2
                elif end > nxt and buf[nxt] == 43:  # a status item: EXEC's [+OK, :n]
                    items.append(bytes(buf[nxt + 1 : end]))
                    nxt = end + 2
                else:  # anything else, an incomplete item or garbage: the general case
                    item, nxt = parse(buf, nxt, depth + 1)
                    items.append(item)
            return items, nxt
        if kind == 43:  # '+'
            return bytes(buf[pos + 1 : end]), nxt
        if kind == 45:  # '-'
            return RespError(bytes(buf[pos + 1 : end]).decode(errors="replace")), nxt
        if kind == 36:  # '$'
            size = int(buf[pos + 1 : end])
            if size < 0:
                return None, nxt
            if size > MAX_REPLY_BYTES:
                raise BackendProtocolError(f"bulk reply of {size} bytes is over the limit")
            if len(buf) < nxt + size + 2:
                raise _Incomplete
            if buf[nxt + size : nxt + size + 2] != _CRLF:
                raise BackendProtocolError("bulk reply not terminated by CRLF")
            return bytes(buf[nxt : nxt + size]), nxt + size + 2
    except ValueError:
        raise BackendProtocolError(f"bad integer in reply: {bytes(buf[pos : pos + 32])!r}") from None
    raise BackendProtocolError(f"not a RESP reply: {bytes(buf[pos : pos + 32])!r}")


def request_all(
    conns: Sequence[RespConnection | None], packed: bytes, gather: Gather, first: int = 0, acks: int = 0
) -> list[int] | None:
    """Write the same request to every usable connection; connection ``k``'s reply (or failure)
    answers ``gather``'s slot ``first + k``. Returns the slots of the connections that are not
    usable (None, nothing sent, or closed): nothing was sent to those and nothing answered them.

    ``acks``: the request is a ``MULTI`` ... ``EXEC`` transaction whose first ``acks`` replies
    only acknowledge (``+OK``, ``+QUEUED``); they are dropped, ``EXEC``'s reply fills the slot.

    One call per fan-out, not one per server: this is the sending half of every Redlock call.
    """
    cold: list[int] | None = None
    for k, conn in enumerate(conns, first):
        if conn is not None and conn.broken is None:
            transport = conn._transport
            if transport is not None and not transport.is_closing():
                pending = conn._pending
                if len(pending) + acks < MAX_PENDING:
                    if acks:
                        pending.extend([ACK] * acks)
                    pending.append((gather, k))
                    transport.write(packed)
                else:  # a server that stopped reading: its connection goes, the slot fails
                    conn._break(BackendUnavailable(f"{conn.where}: {MAX_PENDING} requests unanswered"))
                    gather.deliver(k, conn.broken or BackendUnavailable(conn.where))
                continue
        if cold is None:
            cold = []
        cold.append(k)
    return cold


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
        # A future per plain request, or (gather, slot) for a fan-out's request.
        self._pending: collections.deque[_Entry] = collections.deque()
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

    def request(self, packed: bytes, acks: int = 0) -> asyncio.Future[Any]:
        """Send ``packed``; the future gets its reply (``acks``: see :func:`request_all`)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self.usable:
            fut.set_exception(self.broken or BackendUnavailable(f"{self.where}: connection closed"))
            return fut
        if len(self._pending) + acks >= MAX_PENDING:
            self._break(BackendUnavailable(f"{self.where}: {MAX_PENDING} requests unanswered"))
            fut.set_exception(self.broken or BackendUnavailable(self.where))
            return fut
        assert self._transport is not None, "usable implies a transport"
        if acks:
            self._pending.extend([ACK] * acks)
        self._pending.append(fut)
        self._transport.write(packed)
        return fut

    def send_ignoring_replies(self, packed: bytes, replies: int) -> None:
        """Send ``packed`` (``replies`` commands) and drop their replies, whatever they are: for
        requests whose effect matters and whose answer does not (preloading scripts). Nothing is
        sent on a connection that is not usable."""
        if self.usable and len(self._pending) + replies < MAX_PENDING:
            assert self._transport is not None, "usable implies a transport"
            self._pending.extend([_IGNORED] * replies)
            self._transport.write(packed)

    def request_into(self, packed: bytes, gather: Gather, i: int) -> None:
        """Send a request whose reply (or failure) answers ``gather``'s slot ``i``; on a
        connection that is not usable the slot is answered with the error at once."""
        if request_all((self,), packed, gather, i) is not None:
            gather.deliver(i, self.broken or BackendUnavailable(f"{self.where}: connection closed"))

    def close(self) -> None:
        self._break(BackendUnavailable(f"{self.where}: connection closed"))

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport), "a TCP connection has a stream transport"
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._buf or self._on_push is not None or self.broken is not None:
            self._receive(data)
            return
        # The usual case on a fan-out connection: nothing buffered, whole replies in one segment,
        # parsed straight from it (the general path below, minus its per-reply checks). This runs
        # once per reply per server, so integer replies are parsed here and a fan-out's slot is
        # answered here (Gather.deliver, inlined) rather than through two more calls.
        pending = self._pending
        pos = 0
        end = len(data)
        try:
            while pos < end:
                nxt = data.find(_CRLF, pos)
                kind = data[pos]
                if kind == 58 and nxt > pos:  # ':' an integer
                    try:
                        reply: Any = int(data[pos + 1 : nxt])
                    except ValueError:
                        raise BackendProtocolError(
                            f"bad integer in reply: {data[pos : pos + 32]!r}"
                        ) from None
                    pos = nxt + 2
                elif kind == 43 and nxt > pos:  # '+' a status: a transaction's +OK and +QUEUED
                    reply = data[pos + 1 : nxt]
                    pos = nxt + 2
                else:
                    reply, pos = parse(data, pos)
                if not pending:
                    raise BackendProtocolError(f"{self.where}: a reply nobody asked for")
                entry = pending.popleft()
                if isinstance(entry, tuple):
                    gather, i = entry
                    results = gather.results
                    if results[i] is MISSING and not gather.future.done():
                        results[i] = reply
                        gather.remaining -= 1
                        if not gather.remaining:
                            gather.future.set_result(None)
                elif isinstance(entry, _Ack):
                    if entry.strict:
                        _check_ack(reply, self.where)  # EXEC's reply tells what happened
                elif not entry.done():  # a request whose caller gave up: its reply is dropped
                    entry.set_result(reply)
        except _Incomplete:
            self._buf += data[pos:]
            self._check_buffered()
        except BackendProtocolError as exc:
            self._break(exc)

    def _receive(self, data: bytes) -> None:
        if self.broken is not None:  # bytes still arriving after a protocol error are dropped
            return
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data  # the usual case: whole replies in one segment, parsed without a copy
        pos = 0
        try:
            while pos < len(buf):
                reply, pos = parse(buf, pos)
                if self._on_push is not None and type(reply) is list and reply and reply[0] == b"message":
                    self._on_push(reply)
                    continue
                if not self._pending:
                    raise BackendProtocolError(f"{self.where}: a reply nobody asked for")
                entry = self._pending.popleft()
                if isinstance(entry, tuple):
                    entry[0].deliver(entry[1], reply)
                elif isinstance(entry, _Ack):
                    if entry.strict:
                        _check_ack(reply, self.where)  # EXEC's reply tells what happened
                elif not entry.done():  # a request whose caller gave up: its reply is dropped
                    entry.set_result(reply)
        except _Incomplete:
            pass
        except BackendProtocolError as exc:
            self._break(exc)
            return
        if buf is self._buf:
            del self._buf[:pos]
        elif pos < len(data):
            self._buf += data[pos:]
        self._check_buffered()

    def _check_buffered(self) -> None:
        if len(self._buf) > MAX_REPLY_BYTES + _HEADER_SLACK:  # what is left is ONE partial reply
            self._buf.clear()
            self._break(BackendProtocolError(f"{self.where}: a reply over {MAX_REPLY_BYTES} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._break(BackendUnavailable(f"{self.where}: connection lost: {exc!r}"))

    def _break(self, exc: BaseException) -> None:
        first = self.broken is None
        if first:
            self.broken = exc
        while self._pending:
            entry = self._pending.popleft()
            if isinstance(entry, tuple):
                entry[0].deliver(entry[1], exc)
            elif isinstance(entry, _Ack):
                continue
            elif not entry.done():
                entry.set_exception(exc)
        if self._transport is not None:
            with contextlib.suppress(RuntimeError):
                self._transport.close()
        if first and self._on_close is not None:
            self._on_close(exc)


def _check_ack(reply: Any, where: str) -> None:
    """A transaction's acknowledgement: ``+OK``, ``+QUEUED`` or an error (which makes ``EXEC``
    answer with an error too); anything else is garbage."""
    if reply not in (b"QUEUED", b"OK") and type(reply) is not RespError:  # (a list is unhashable)
        raise BackendProtocolError(f"{where}: expected +OK or +QUEUED in a transaction, got {reply!r:.100}")


def _expect_ok(reply: Any, where: str) -> None:
    if reply != b"OK":
        raise BackendProtocolError(f"{where}: login or SELECT refused: {reply!r:.200}")


__all__ = [
    "ACK",
    "MAX_DEPTH",
    "MAX_PENDING",
    "MAX_REPLY_BYTES",
    "MISSING",
    "Gather",
    "RedisAddress",
    "RespConnection",
    "RespError",
    "pack",
    "pack_items",
    "pack_prefix",
    "parse",
    "request_all",
]

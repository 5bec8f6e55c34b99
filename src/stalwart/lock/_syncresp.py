"""A lean synchronous RESP client for the blocking locks' hot path.

The blocking RedisLock acquires and releases from the caller's thread. redis-py's synchronous
client spends about 55 us of CPU per EVALSHA on loopback (command packing, its connection pool,
retry and response-callback machinery); a bare ``sendall`` + ``recv`` of an already packed
command, parsed by ``_resp.parse``, costs about 15 us. With several threads handing a lock to one
another, that CPU is spent under the GIL, on the critical path of every hand-off.

So this is a tiny pool of blocking sockets: ``call(packed)`` checks a socket out, sends the
command (encoded by the caller, mostly from a prefix built once), reads one reply and checks the
socket back in. Bounds: connecting by ``connect_timeout_s`` (login and SELECT included), each send
and read by ``op_timeout_s`` (a reply arriving in pieces by ``op_timeout_s`` in total). A
connection that failed in any way (timeout, reset, garbage, an interrupt mid-call) is closed,
never reused, and every idle one is closed with it (a restarted server leaves them all dead).
At most ``MAX_IDLE`` idle connections are kept; there is one open connection per thread in a call
at most.

Connections belong to one process: in a child made by ``os.fork()`` every pool forgets the idle
sockets it inherited (they are the parent's connections too: the two processes would read each
other's replies) and connects afresh (see ``_after_fork_in_child``).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
import weakref
from typing import Any

from stalwart.lock._errors import BackendProtocolError, BackendUnavailable
from stalwart.lock._resp import MAX_REPLY_BYTES, RedisAddress, RespError, _Incomplete, pack, parse

#: Idle connections kept per pool; more are closed when checked back in.
MAX_IDLE = 64
_RECV_BYTES = 65536
#: What makes an idle connection unusable (see SyncPool._checkout).
_READABLE = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | select.POLLNVAL
#: Room for the headers of a reply whose payload is MAX_REPLY_BYTES (as in _resp).
_HEADER_SLACK = 4096


class NoScript(Exception):
    """The server does not know the script's SHA (restart, SCRIPT FLUSH): load it and retry."""


class SyncPool:
    """Blocking connections to one Redis server; safe to share between threads."""

    def __init__(self, url: str, *, op_timeout_s: float, connect_timeout_s: float) -> None:
        self.address = RedisAddress(url)
        self.where = f"{self.address.host}:{self.address.port}"
        self.op_timeout_s = op_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        _LIVE.add(self)

    def _after_fork_in_child(self) -> None:
        """The only thread of a fresh child: drop what the parent's threads left behind. Closing
        our copies of the inherited descriptors only closes them in this process (no shutdown:
        the parent's connections stay open and untouched). The lock may have been held by a
        parent thread at the fork, so it is replaced, not released."""
        self._lock = threading.Lock()
        idle, self._idle = self._idle, []
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.close()

    def call(self, packed: bytes, *, idempotent: bool = False) -> Any:
        """Send one packed command and return its reply.

        Raises BackendUnavailable (unreachable, reset, silent), BackendProtocolError (garbage,
        or an error reply), NoScript. ``idempotent``: a call that failed with BackendUnavailable
        on a reused connection is sent once more on a fresh one (a restarted server leaves every
        pooled connection dead); never an acquire, which may have taken the lock before the link
        broke.
        """
        sock = self._checkout()
        if sock is None:
            return self._call(self._connect(), packed)
        try:
            return self._call(sock, packed)
        except BackendUnavailable:
            if not idempotent:
                raise
        return self._call(self._connect(), packed)

    def _checkout(self) -> socket.socket | None:
        """An idle connection that still looks alive, or None. The server may have closed one
        while it sat idle (its ``timeout`` setting, a restart): sending on it would fail the
        call (an acquire is never sent twice) although the server is fine. One non-blocking
        poll tells: an idle connection must have nothing to read, so EOF, a reset or bytes nobody
        asked for (all "readable") mean it is dead or out of sync; it is closed and the next one
        checked (at most MAX_IDLE). (Not a recv with MSG_DONTWAIT: on a socket with a timeout,
        Python waits for readability first, up to that timeout.)"""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                sock = self._idle.pop()
            poller = select.poll()  # not select.select: it refuses descriptors over 1023
            try:
                poller.register(sock, _READABLE)
                events = poller.poll(0)
            except (OSError, ValueError):  # ValueError: closed meanwhile (fileno() == -1)
                events = [(0, select.POLLNVAL)]
            if not events:
                return sock  # alive as far as we can know without a round trip
            with contextlib.suppress(OSError):
                sock.close()

    def _call(self, sock: socket.socket, packed: bytes) -> Any:
        healthy = False
        try:
            try:
                sock.sendall(packed)
                reply = self._read(sock)
            except OSError as exc:  # socket.timeout included
                raise BackendUnavailable(f"{self.where}: server unreachable or silent: {exc!r}") from exc
            healthy = True  # an error reply leaves the connection in sync
            if type(reply) is RespError:
                if reply.message.startswith("NOSCRIPT"):
                    raise NoScript(reply.message)
                raise BackendProtocolError(f"{self.where}: error reply: {reply.message[:200]}")
            return reply
        finally:
            self._checkin(sock, healthy)

    def _read(self, sock: socket.socket) -> Any:
        started = time.monotonic()  # the whole reply within the socket's timeout, not per piece
        data = sock.recv(_RECV_BYTES)
        if not data:
            raise BackendUnavailable(f"{self.where}: connection closed by the server")
        try:
            reply, pos = parse(data, 0)
        except _Incomplete:
            timeout_s = sock.gettimeout()
            return self._read_rest(sock, bytearray(data), started + (timeout_s or self.op_timeout_s))
        if pos != len(data):
            raise BackendProtocolError(f"{self.where}: a reply nobody asked for")
        return reply

    def _read_rest(self, sock: socket.socket, buf: bytearray, deadline: float) -> Any:
        """A reply in several segments: keep reading until it is whole, by ``deadline`` (the
        socket's timeout from the first read on: op_timeout_s, or connect_timeout_s at login)."""
        timeout_s = sock.gettimeout()
        try:
            while True:
                if len(buf) > MAX_REPLY_BYTES + _HEADER_SLACK:
                    raise BackendProtocolError(f"{self.where}: a reply over {MAX_REPLY_BYTES} bytes")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BackendUnavailable(f"{self.where}: the reply did not arrive in time")
                sock.settimeout(remaining)
                data = sock.recv(_RECV_BYTES)
                if not data:
                    raise BackendUnavailable(f"{self.where}: connection closed by the server")
                buf += data
                try:
                    reply, pos = parse(buf, 0)
                except _Incomplete:
                    continue
                if pos != len(buf):
                    raise BackendProtocolError(f"{self.where}: a reply nobody asked for")
                return reply
        finally:
            sock.settimeout(timeout_s)

    def _checkin(self, sock: socket.socket, healthy: bool) -> None:
        if healthy:
            with self._lock:
                if not self._closed and len(self._idle) < MAX_IDLE:
                    self._idle.append(sock)
                    return
            sock.close()
            return
        with self._lock:
            dead, self._idle = [sock, *self._idle], []
        for s in dead:
            s.close()

    def _connect(self) -> socket.socket:
        address = self.address
        try:
            sock = socket.create_connection((address.host, address.port), timeout=self.connect_timeout_s)
        except OSError as exc:
            raise BackendUnavailable(f"{self.where}: cannot connect: {exc!r}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            login: list[bytes] = []
            if address.password is not None:
                user = (address.username,) if address.username else ()
                login.append(pack(("AUTH", *user, address.password)))
            if address.db:
                login.append(pack(("SELECT", address.db)))
            for command in login:  # still under the connect timeout
                sock.sendall(command)
                if self._read(sock) != b"OK":
                    raise BackendProtocolError(f"{self.where}: login or SELECT refused")
        except OSError as exc:
            sock.close()
            raise BackendUnavailable(f"{self.where}: cannot connect: {exc!r}") from exc
        except BaseException:
            sock.close()
            raise
        sock.settimeout(self.op_timeout_s)
        return sock

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.close()


_LIVE: weakref.WeakSet[SyncPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_LIVE):
        pool._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = ["MAX_IDLE", "NoScript", "SyncPool"]

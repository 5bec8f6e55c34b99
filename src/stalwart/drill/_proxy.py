"""A fault-injecting TCP proxy for one directed peer link (asyncio).

Node ``a`` dials node ``b`` at the proxy's address; the proxy dials ``b``'s real listen address
and copies bytes both ways. Each direction has its own :class:`Mode`:

* ``PASS``: bytes are copied as they come;
* ``DELAY``: bytes are held ``delay_ms`` before they are copied (order kept);
* ``DROP``: bytes are read and thrown away (a black hole: the connection stays up, nothing
  arrives, as on a real network where packets are lost and TCP only sees silence).

A stream that lost bytes is no longer a valid frame stream, so when a direction that dropped
bytes is healed the proxy closes the connections that lost data: the nodes reconnect and start
clean frames, as they would after a real partition timed their connections out.

Only loopback addresses are accepted: the drill never sends traffic anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from dataclasses import dataclass, field

from stalwart.drill._errors import DrillConfigError

#: Bytes read from a socket at once; also the most a delayed direction holds per read.
_CHUNK_BYTES = 65536
#: The most chunks a delayed direction holds before it stops reading (back-pressure).
_MAX_DELAYED_CHUNKS = 1024
#: The most connections one proxy carries at once; more are refused (closed at once).
MAX_CONNECTIONS = 64


class Mode(enum.Enum):
    """What one direction of a link does with the bytes it carries."""

    PASS = "pass"
    DELAY = "delay"
    DROP = "drop"


class Direction(enum.Enum):
    """``FORWARD`` is dialer -> listener (a -> b); ``BACKWARD`` is the reply path (b -> a)."""

    FORWARD = "forward"
    BACKWARD = "backward"


@dataclass(slots=True)
class _DirState:
    mode: Mode = Mode.PASS
    delay_ms: int = 0


@dataclass(slots=True, eq=False)
class _Conn:
    client_writer: asyncio.StreamWriter
    server_writer: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    lost_bytes: dict[Direction, int] = field(default_factory=lambda: dict.fromkeys(Direction, 0))

    def close(self) -> None:
        for writer in (self.client_writer, self.server_writer):
            with contextlib.suppress(Exception):
                writer.close()
        for task in self.tasks:
            task.cancel()


def _check_loopback(host: str) -> None:
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        raise DrillConfigError(f"the drill proxies loopback only, not {host!r}")


class LinkProxy:
    """One listening proxy in front of ``target``; use under ``async with`` or start()/close()."""

    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1") -> None:
        _check_loopback(target_host)
        _check_loopback(listen_host)
        self.target = (target_host, target_port)
        self._listen_host = listen_host
        self._server: asyncio.Server | None = None
        self._dirs = {d: _DirState() for d in Direction}
        self._conns: set[_Conn] = set()
        self.bytes_copied: dict[Direction, int] = dict.fromkeys(Direction, 0)
        self.bytes_dropped: dict[Direction, int] = dict.fromkeys(Direction, 0)

    @property
    def port(self) -> int:
        if self._server is None:
            raise DrillConfigError("the proxy is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        return f"{self._listen_host}:{self.port}"

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._accept, self._listen_host, port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def __aenter__(self) -> LinkProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def mode(self, direction: Direction) -> Mode:
        return self._dirs[direction].mode

    def set_mode(self, direction: Direction, mode: Mode, delay_ms: int = 0) -> None:
        """Change one direction; healing a direction that dropped bytes resets its connections."""
        if delay_ms < 0:
            raise DrillConfigError(f"delay_ms must be >= 0, got {delay_ms}")
        state = self._dirs[direction]
        state.mode, state.delay_ms = mode, delay_ms if mode is Mode.DELAY else 0
        if mode is not Mode.DROP:
            for conn in [c for c in self._conns if c.lost_bytes[direction] > 0]:
                self._drop_conn(conn)

    def heal(self) -> None:
        for direction in Direction:
            self.set_mode(direction, Mode.PASS)

    def reset_connections(self) -> None:
        """Close every carried connection (the nodes will reconnect through the proxy)."""
        for conn in list(self._conns):
            self._drop_conn(conn)

    def _drop_conn(self, conn: _Conn) -> None:
        conn.close()
        self._conns.discard(conn)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= MAX_CONNECTIONS:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 2.0)
        except (OSError, TimeoutError):
            writer.close()  # the target is down (killed or not started): the dialer sees a reset
            return
        conn = _Conn(client_writer=writer, server_writer=up_writer)
        self._conns.add(conn)
        conn.tasks = [
            asyncio.create_task(self._pump(conn, Direction.FORWARD, reader, up_writer)),
            asyncio.create_task(self._pump(conn, Direction.BACKWARD, up_reader, writer)),
        ]
        try:
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            self._drop_conn(conn)

    async def _pump(
        self, conn: _Conn, direction: Direction, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_MAX_DELAYED_CHUNKS)
        sender = asyncio.create_task(self._send_delayed(conn, queue, writer, direction))
        try:
            while True:
                data = await reader.read(_CHUNK_BYTES)
                if not data:
                    break
                state = self._dirs[direction]
                match state.mode:
                    case Mode.DROP:
                        conn.lost_bytes[direction] += len(data)
                        self.bytes_dropped[direction] += len(data)
                    case Mode.PASS | Mode.DELAY:
                        due = time.monotonic() + state.delay_ms / 1000.0
                        await queue.put((due, data))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # let queued bytes go out before the half-close, unless the connection is gone
            with contextlib.suppress(Exception):
                await asyncio.wait_for(queue.join(), 5.0)
            sender.cancel()
            conn.close()

    async def _send_delayed(
        self,
        conn: _Conn,
        queue: asyncio.Queue[tuple[float, bytes]],
        writer: asyncio.StreamWriter,
        direction: Direction,
    ) -> None:
        while True:
            due, data = await queue.get()
            try:
                wait_s = due - time.monotonic()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                if self._dirs[direction].mode is Mode.DROP:
                    conn.lost_bytes[direction] += len(data)
                    self.bytes_dropped[direction] += len(data)
                    continue
                writer.write(data)
                await writer.drain()
                self.bytes_copied[direction] += len(data)
            finally:
                queue.task_done()

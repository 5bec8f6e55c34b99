"""Client sessions for exactly-once commands in a replicated state machine (dissertation 6.3).

A client names itself with a unique ``client`` id and numbers its commands ``seq = 1, 2, ...``
(any increasing numbers). Each command is proposed to Raft *inside* a session envelope
(:func:`encode_command`) and applied through :class:`Sessions`, which every replica runs
identically on the committed log:

* a command whose ``seq`` was already applied returns the cached response instead of running
  again (a retry after a lost reply, a leader change, or a duplicate proposal);
* a command older than the client's acknowledged prefix (``ack``) is refused as STALE: its
  response was discarded because the client said it no longer needs it;
* sessions expire when the cluster's clock passes ``last_active + session_timeout_ms``. The
  clock is not any replica's: it is the largest leader timestamp seen in the log
  (``time_ms`` in each command, stamped by the proposing leader), so every replica expires the
  same sessions at the same log position, deterministically;
* a command for an expired session is refused as EXPIRED, never run: the client must start a
  new session under a new id (running it would break exactly-once). Expired ids are
  remembered (a bounded tombstone list, ``max_tombstones``) so that a late retry is refused.

Limits (documented in docs/raft.md): exactly-once holds for a client id while its session or
its tombstone is retained; a client must not reuse an id after that. Leader clocks need not be
synchronised: time only moves forward (the maximum is kept), so a slow leader clock delays
expiry, never hastens it.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass, field
from typing import Protocol

import msgpack

from stalwart.errors import DecodeError, StalwartError

__all__ = [
    "Command",
    "SessionConfig",
    "SessionError",
    "SessionResult",
    "SessionStatus",
    "Sessions",
    "StateMachine",
    "decode_command",
    "encode_command",
    "pack_command",
]


class SessionError(StalwartError):
    """A session snapshot or command could not be used."""


class StateMachine(Protocol):
    """The application below the session layer: deterministic, applied in log order."""

    def apply(self, payload: bytes) -> bytes: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class Command:
    client: str
    seq: int
    ack: int  # the client holds every response below this seq: they may be discarded
    time_ms: int  # the proposing leader's clock
    payload: bytes


_HEAD = struct.Struct(">QQQH")
# Opens the binary snapshot format; the older JSON format opens with "{".
SNAPSHOT_MAGIC = b"\x00stalwart-sessions-1\x00"
MAX_CLIENT_ID_BYTES = 256


def encode_command(cmd: Command) -> bytes:
    raw = cmd.client.encode()
    if len(raw) > MAX_CLIENT_ID_BYTES:
        raise SessionError(f"client id longer than {MAX_CLIENT_ID_BYTES} bytes")
    return _HEAD.pack(cmd.seq, cmd.ack, cmd.time_ms, len(raw)) + raw + cmd.payload


def pack_command(client: str, seq: int, ack: int, time_ms: int, payload: bytes) -> bytes:
    """``encode_command(Command(client, seq, ack, time_ms, payload))`` without the object."""
    raw = client.encode()
    if len(raw) > MAX_CLIENT_ID_BYTES:
        raise SessionError(f"client id longer than {MAX_CLIENT_ID_BYTES} bytes")
    return b"".join((_HEAD.pack(seq, ack, time_ms, len(raw)), raw, payload))


def _decode_head(data: bytes) -> tuple[str, int, int, int, int]:
    """``(client, seq, ack, time_ms, payload offset)`` of an encoded session command."""
    try:
        seq, ack, time_ms, size = _HEAD.unpack_from(data)
        start = _HEAD.size
        if start + size > len(data):
            raise DecodeError("session command: client id runs past the end")
        client = data[start : start + size].decode()
    except (struct.error, UnicodeDecodeError) as exc:
        raise DecodeError(f"session command: {exc}") from None
    return client, seq, ack, time_ms, start + size


def decode_command(data: bytes) -> Command:
    client, seq, ack, time_ms, offset = _decode_head(data)
    return Command(client, seq, ack, time_ms, data[offset:])


class SessionStatus(enum.Enum):
    APPLIED = "applied"  # ran now
    DUPLICATE = "duplicate"  # ran before; the cached response is returned
    STALE = "stale"  # older than the client's ack or its cached responses: may have run
    EXPIRED = "expired"  # the session expired: not run; start a new session


@dataclass(frozen=True, slots=True)
class SessionResult:
    client: str
    seq: int
    status: SessionStatus
    response: bytes | None


@dataclass(frozen=True, slots=True)
class SessionConfig:
    session_timeout_ms: int = 60_000
    max_sessions: int = 10_000  # beyond this the least recently active session expires
    max_responses: int = 32  # cached responses per session (above the client's ack)
    max_tombstones: int = 100_000

    def __post_init__(self) -> None:
        if min(self.session_timeout_ms, self.max_sessions, self.max_responses, self.max_tombstones) < 1:
            raise SessionError("session limits must be at least 1")


@dataclass(slots=True)
class _Session:
    last_seq: int = 0
    last_active_ms: int = 0
    responses: dict[int, bytes] = field(default_factory=dict)


class Sessions:
    """The session layer; wrap the application with it and apply every committed command."""

    def __init__(self, app: StateMachine, config: SessionConfig | None = None) -> None:
        self.app = app
        self.cfg = config or SessionConfig()
        self.time_ms = 0
        self._sessions: dict[str, _Session] = {}
        self._tombstones: dict[str, None] = {}  # insertion-ordered: oldest first
        self._next_expiry_ms = 0

    @property
    def clients(self) -> int:
        return len(self._sessions)

    def apply(self, data: bytes) -> SessionResult:
        return SessionResult(*self.apply_raw(data))

    def apply_raw(self, data: bytes) -> tuple[str, int, SessionStatus, bytes | None]:
        """:meth:`apply` as a tuple ``(client, seq, status, response)`` (no object per command)."""
        client, seq, ack, time_ms, offset = _decode_head(data)
        self.time_ms = max(self.time_ms, time_ms)  # cluster time only moves forward
        if self.time_ms >= self._next_expiry_ms:
            self._expire()
        if client in self._tombstones:
            return client, seq, SessionStatus.EXPIRED, None
        session = self._sessions.get(client)
        if session is None:
            if len(self._sessions) >= self.cfg.max_sessions:
                oldest = min(self._sessions, key=lambda c: (self._sessions[c].last_active_ms, c))
                self._bury(oldest)
            session = self._sessions[client] = _Session()
        session.last_active_ms = self.time_ms
        responses = session.responses
        if responses:
            for old in [s for s in responses if s < ack]:
                del responses[old]
            cached = responses.get(seq)
            if cached is not None:
                return client, seq, SessionStatus.DUPLICATE, cached
        if seq <= session.last_seq:
            return client, seq, SessionStatus.STALE, None
        response = self.app.apply(data[offset:])
        session.last_seq = seq
        responses[seq] = response
        while len(responses) > self.cfg.max_responses:
            del responses[min(responses)]
        return client, seq, SessionStatus.APPLIED, response

    def _expire(self) -> None:
        if self.time_ms < self._next_expiry_ms or not self._sessions:
            return
        timeout = self.cfg.session_timeout_ms
        for client in sorted(self._sessions):
            if self._sessions[client].last_active_ms + timeout <= self.time_ms:
                self._bury(client)
        oldest = min((s.last_active_ms for s in self._sessions.values()), default=self.time_ms)
        self._next_expiry_ms = oldest + timeout

    def _bury(self, client: str) -> None:
        del self._sessions[client]
        self._tombstones[client] = None
        while len(self._tombstones) > self.cfg.max_tombstones:
            del self._tombstones[next(iter(self._tombstones))]

    # ---- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """``SNAPSHOT_MAGIC`` then msgpack ``[time_ms, sessions, tombstones, app]``, where
        sessions map a client to ``[last_seq, last_active_ms, {seq: response}]`` and ``app`` is
        the application's snapshot as raw bytes (a JSON envelope with hex cost as much as the
        application's own snapshot, and twice its size; :meth:`restore` still reads it)."""
        sessions = {c: [s.last_seq, s.last_active_ms, s.responses] for c, s in sorted(self._sessions.items())}
        state = [self.time_ms, sessions, list(self._tombstones), self.app.snapshot()]
        data = msgpack.packb(state, use_bin_type=True)
        assert isinstance(data, bytes)
        return SNAPSHOT_MAGIC + data

    def restore(self, data: bytes) -> None:
        if data.startswith(SNAPSHOT_MAGIC):
            sessions, tombstones, app, time_ms = _read_binary(data[len(SNAPSHOT_MAGIC) :])
        else:
            sessions, tombstones, app, time_ms = _read_json(data)
        self.app.restore(app)
        self._sessions, self._tombstones, self.time_ms = sessions, tombstones, time_ms
        self._next_expiry_ms = 0


_Restored = tuple[dict[str, _Session], dict[str, None], bytes, int]


def _read_binary(data: bytes) -> _Restored:
    try:
        time_ms, raw_sessions, raw_tombstones, app = msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=False
        )
        sessions: dict[str, _Session] = {}
        for client, (last_seq, last_active, responses) in raw_sessions.items():
            if type(client) is not str or type(responses) is not dict:
                raise TypeError("bad session")
            if not all(type(k) is int and type(v) is bytes for k, v in responses.items()):
                raise TypeError("bad cached response")
            if type(last_seq) is not int or type(last_active) is not int:
                raise TypeError("bad session position")
            sessions[client] = _Session(last_seq, last_active, responses)
        if type(time_ms) is not int or type(app) is not bytes or type(raw_tombstones) is not list:
            raise TypeError("bad header")
        tombstones = dict.fromkeys(str(c) for c in raw_tombstones)
    except Exception as exc:  # msgpack and unpacking raise several unrelated types
        raise SessionError(f"bad session snapshot: {type(exc).__name__}: {exc}") from None
    return sessions, tombstones, app, time_ms


def _read_json(data: bytes) -> _Restored:
    """The snapshot format before the binary one (nodes upgraded in place may still hold it)."""
    try:
        state = json.loads(data)
        sessions = {
            c: _Session(int(v[0]), int(v[1]), {int(k): bytes.fromhex(r) for k, r in v[2].items()})
            for c, v in state["sessions"].items()
        }
        tombstones = dict.fromkeys(str(c) for c in state["tombstones"])
        app = bytes.fromhex(state["app"])
        time_ms = int(state["time_ms"])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise SessionError(f"bad session snapshot: {exc}") from None
    return sessions, tombstones, app, time_ms

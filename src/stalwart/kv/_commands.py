"""Commands, queries and results of the key-value state machine, and their validated codec.

Everything crosses the log and the wire as msgpack arrays ``[version, op, ...]``. Decoding
checks every field's type and bound and raises ``DecodeError`` on anything else: a replica must
never apply a command it cannot read the same way as the others.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from stalwart.errors import DecodeError

VERSION = 1
MAX_KEY_BYTES = 1_024
MAX_VALUE_BYTES = 1 << 20
MAX_RANGE_LIMIT = 10_000
MAX_TTL_MS = 10 * 365 * 24 * 3600 * 1000


class Op(enum.IntEnum):
    PUT = 1
    DELETE = 2
    CAS = 3
    APPEND = 4
    TICK = 5  # advances the state machine's clock (expires TTL keys) without changing a key
    GET = 10
    RANGE = 11
    WATCH = 12


_PUT, _DELETE, _CAS, _APPEND, _TICK = (int(op) for op in (Op.PUT, Op.DELETE, Op.CAS, Op.APPEND, Op.TICK))


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    ttl_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class Cas:
    """Set ``key`` to ``value`` if its current value is ``expected`` (None: the key is absent)."""

    key: str
    expected: bytes | None
    value: bytes
    ttl_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Append:
    key: str
    suffix: bytes


@dataclass(frozen=True, slots=True)
class Tick:
    pass


@dataclass(frozen=True, slots=True)
class Get:
    key: str


@dataclass(frozen=True, slots=True)
class Range:
    """Keys starting with ``prefix`` (all keys for ""), in key order, at most ``limit``."""

    prefix: str
    limit: int = 1_000
    start_after: str | None = None


@dataclass(frozen=True, slots=True)
class Watch:
    """Changes to keys starting with ``prefix`` at revisions > ``since_revision``."""

    prefix: str
    since_revision: int
    limit: int = 1_000


Command = Put | Delete | Cas | Append | Tick
Query = Get | Range | Watch


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    expires_at_ms: int | None = None


class EventKind(enum.IntEnum):
    PUT = 1
    DELETE = 2  # explicit delete or TTL expiry


@dataclass(frozen=True, slots=True)
class Event:
    revision: int
    kind: EventKind
    key: str
    value: bytes = b""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of a command: ``ok`` is false for a failed compare or a missing key."""

    ok: bool
    revision: int
    value: bytes | None = None  # cas: the current value when the compare failed; append: the new value
    existed: bool = False


def _key(raw: Any) -> str:
    if not isinstance(raw, str) or not raw or len(raw.encode()) > MAX_KEY_BYTES:
        raise DecodeError(f"a key is a non-empty string of at most {MAX_KEY_BYTES} bytes")
    return raw


def _value(raw: Any) -> bytes:
    if not isinstance(raw, bytes) or len(raw) > MAX_VALUE_BYTES:
        raise DecodeError(f"a value is at most {MAX_VALUE_BYTES} bytes")
    return raw


def _opt_value(raw: Any) -> bytes | None:
    return None if raw is None else _value(raw)


def _int(raw: Any, low: int, high: int, what: str) -> int:
    if type(raw) is not int or not low <= raw <= high:
        raise DecodeError(f"{what} must be an integer in [{low}, {high}]")
    return raw


def _ttl(raw: Any) -> int | None:
    return None if raw is None else _int(raw, 1, MAX_TTL_MS, "ttl_ms")


def _pack(obj: list[Any]) -> bytes:
    data = msgpack.packb(obj, use_bin_type=True)
    assert isinstance(data, bytes)
    return data


def _unpack(data: bytes) -> list[Any]:
    try:
        obj = msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True, max_bin_len=MAX_VALUE_BYTES,
            max_str_len=MAX_VALUE_BYTES, max_array_len=MAX_RANGE_LIMIT * 8, max_map_len=16,
        )  # fmt: skip
    except Exception as exc:  # msgpack raises many unrelated types on bad input
        raise DecodeError(f"undecodable kv message: {exc.__class__.__name__}") from None
    if not isinstance(obj, list) or len(obj) < 2 or obj[0] != VERSION or type(obj[1]) is not int:
        raise DecodeError("a kv message is [version, op, ...] with a known version")
    return obj


def encode_command(cmd: Command, time_ms: int) -> bytes:
    """``time_ms`` is the proposing node's clock; the state machine's clock is the largest seen."""
    # Plain ints for the ops: msgpack packs an IntEnum on a slower path (same bytes).
    match cmd:
        case Put(key, value, ttl):
            return _pack([VERSION, _PUT, time_ms, key, value, ttl])
        case Delete(key):
            return _pack([VERSION, _DELETE, time_ms, key])
        case Cas(key, expected, value, ttl):
            return _pack([VERSION, _CAS, time_ms, key, expected, value, ttl])
        case Append(key, suffix):
            return _pack([VERSION, _APPEND, time_ms, key, suffix])
        case Tick():
            return _pack([VERSION, _TICK, time_ms])


_COMMAND_ARITY = {Op.PUT: 6, Op.DELETE: 4, Op.CAS: 7, Op.APPEND: 5, Op.TICK: 3}


def decode_command(data: bytes) -> tuple[Command, int]:
    return command_from(_unpack(data))


def unpack_message(data: bytes) -> list[Any]:
    """The validated envelope ``[version, op, ...]`` of a kv message, not yet checked field by field."""
    return _unpack(data)


def put_fields(obj: list[Any]) -> tuple[str, bytes, int | None, int] | None:
    """``(key, value, ttl_ms, time_ms)`` of a PUT from :func:`unpack_message`, checked exactly as
    :func:`decode_command` checks it (DecodeError); None if ``obj`` is not a PUT."""
    if obj[1] != Op.PUT:
        return None
    if len(obj) != _COMMAND_ARITY[Op.PUT]:
        raise DecodeError("kv command PUT has the wrong number of fields")
    time_ms = _int(obj[2], 0, 2**62, "time_ms")
    return _key(obj[3]), _value(obj[4]), _ttl(obj[5]), time_ms


def restamp(data: bytes, obj: list[Any], time_ms: int) -> bytes:
    """``encode_command(cmd, time_ms)`` for ``data``, an encoded command whose unpacked form is
    ``obj``: the same bytes, built by replacing the time field instead of packing again.

    The splice is taken only for the canonical head: a one-byte array header (at most 15
    items), the version and the op as one-byte positive fixints, and the time 0 (as clients
    send it) as the single byte 0 at offset 3. msgpack also accepts these ints packed wider
    (``0xce 00 00 00 01`` is a valid version 1): such a message, and anything else, is decoded
    and encoded again (splicing at offset 3 would overwrite a byte inside a wide field).
    """
    op = obj[1]
    if (
        len(data) > 3
        and len(obj) < 16
        and data[0] == 0x90 | len(obj)
        and data[1] == VERSION
        and data[2] == op
        and 0 < op < 0x80
        and data[3] == 0
    ):
        return b"".join((data[:3], _pack_int(time_ms), data[4:]))
    command, _ = command_from(obj)
    return encode_command(command, time_ms)


def _pack_int(value: int) -> bytes:
    data = msgpack.packb(value)
    assert isinstance(data, bytes)
    return data


def command_from(obj: list[Any]) -> tuple[Command, int]:
    """:func:`decode_command` of an already unpacked message."""
    try:
        op = Op(obj[1])
    except ValueError:
        raise DecodeError(f"unknown kv op {obj[1]}") from None
    if _COMMAND_ARITY.get(op) != len(obj):
        raise DecodeError(f"kv command {op.name} has the wrong number of fields")
    time_ms = _int(obj[2], 0, 2**62, "time_ms")
    match op:
        case Op.PUT:
            return Put(_key(obj[3]), _value(obj[4]), _ttl(obj[5])), time_ms
        case Op.DELETE:
            return Delete(_key(obj[3])), time_ms
        case Op.CAS:
            return Cas(_key(obj[3]), _opt_value(obj[4]), _value(obj[5]), _ttl(obj[6])), time_ms
        case Op.APPEND:
            return Append(_key(obj[3]), _value(obj[4])), time_ms
        case Op.TICK:
            return Tick(), time_ms
    raise DecodeError(f"{op.name} is a query, not a command")


def encode_query(query: Query) -> bytes:
    match query:
        case Get(key):
            return _pack([VERSION, Op.GET, key])
        case Range(prefix, limit, start_after):
            return _pack([VERSION, Op.RANGE, prefix, limit, start_after])
        case Watch(prefix, since, limit):
            return _pack([VERSION, Op.WATCH, prefix, since, limit])


def _prefix(raw: Any) -> str:
    if not isinstance(raw, str) or len(raw.encode()) > MAX_KEY_BYTES:
        raise DecodeError("a prefix is a string of at most 1 KiB")
    return raw


def decode_query(data: bytes) -> Query:
    obj = _unpack(data)
    match obj:
        case [_, Op.GET, key]:
            return Get(_key(key))
        case [_, Op.RANGE, prefix, limit, start_after]:
            after = None if start_after is None else _key(start_after)
            return Range(_prefix(prefix), _int(limit, 1, MAX_RANGE_LIMIT, "limit"), after)
        case [_, Op.WATCH, prefix, since, limit]:
            return Watch(
                _prefix(prefix),
                _int(since, 0, 2**62, "since_revision"),
                _int(limit, 1, MAX_RANGE_LIMIT, "limit"),
            )
    raise DecodeError("not a kv query")


def encode_result(result: WriteResult) -> bytes:
    return _pack([VERSION, int(result.ok), result.revision, result.value, int(result.existed)])


_OK_HEAD = _pack([VERSION, 1, 0, None, 0])[:3]  # array header, version, ok=1
_NONE_EXISTED = (_pack([None, 0])[1:], _pack([None, 1])[1:])  # value nil, existed 0/1


def pack_result(ok: bool, revision: int, value: bytes | None = None, existed: bool = False) -> bytes:
    """``encode_result(WriteResult(ok, revision, value, existed))`` without the object."""
    if ok and value is None:  # a put's answer: the same bytes, without packing the list
        return b"".join((_OK_HEAD, _pack_int(revision), _NONE_EXISTED[existed]))
    return _pack([VERSION, int(ok), revision, value, int(existed)])


def decode_result(data: bytes) -> WriteResult:
    obj = _unpack(data)
    if len(obj) != 5 or obj[1] not in (0, 1) or obj[4] not in (0, 1):
        raise DecodeError("not a kv write result")
    return WriteResult(bool(obj[1]), _int(obj[2], 0, 2**62, "revision"), _opt_value(obj[3]), bool(obj[4]))


def _kv_row(kv: KeyValue) -> list[Any]:
    return [kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.expires_at_ms]


def kv_from_row(row: Any) -> KeyValue:
    if not isinstance(row, list) or len(row) != 6:
        raise DecodeError("bad key-value row")
    exp = None if row[5] is None else _int(row[5], 0, 2**62, "expires_at_ms")
    ints = [_int(x, 0, 2**62, "revision") for x in row[2:5]]
    return KeyValue(_key(row[0]), _value(row[1]), ints[0], ints[1], ints[2], exp)


def encode_query_result(revision: int, rows: Sequence[KeyValue] | KeyValue | None) -> bytes:
    """A query answer: the state machine's revision and the rows (or one key, or None)."""
    if rows is None:
        return _pack([VERSION, revision, None])
    if isinstance(rows, KeyValue):
        return _pack([VERSION, revision, _kv_row(rows)])
    return _pack([VERSION, revision, [_kv_row(kv) for kv in rows if isinstance(kv, KeyValue)]])


def encode_watch_result(revision: int, events: Sequence[Event] | None, compacted_revision: int) -> bytes:
    """``events`` is None when the asked-for revisions were compacted away (history is bounded)."""
    rows = None if events is None else [[e.revision, int(e.kind), e.key, e.value] for e in events]
    return _pack([VERSION, revision, rows, compacted_revision])


def decode_get_result(data: bytes) -> tuple[int, KeyValue | None]:
    obj = _unpack(data)
    if len(obj) != 3:
        raise DecodeError("not a get result")
    return _int(obj[1], 0, 2**62, "revision"), None if obj[2] is None else kv_from_row(obj[2])


def decode_range_result(data: bytes) -> tuple[int, list[KeyValue]]:
    obj = _unpack(data)
    if len(obj) != 3 or not isinstance(obj[2], list):
        raise DecodeError("not a range result")
    return _int(obj[1], 0, 2**62, "revision"), [kv_from_row(r) for r in obj[2]]


def decode_watch_result(data: bytes) -> tuple[int, list[Event] | None, int]:
    """(revision, events or None if compacted, the compacted revision)."""
    obj = _unpack(data)
    if len(obj) != 4 or not isinstance(obj[2], list | None):
        raise DecodeError("not a watch result")
    compacted = _int(obj[3], 0, 2**62, "compacted_revision")
    if obj[2] is None:
        return _int(obj[1], 0, 2**62, "revision"), None, compacted
    events = []
    for row in obj[2]:
        if not (isinstance(row, list) and len(row) == 4 and row[1] in (1, 2)):
            raise DecodeError("bad watch event")
        events.append(
            Event(_int(row[0], 1, 2**62, "revision"), EventKind(row[1]), _key(row[2]), _value(row[3]))
        )
    return _int(obj[1], 0, 2**62, "revision"), events, compacted


def event_from_row(row: Any) -> Event:
    if not (isinstance(row, list) and len(row) == 4 and row[1] in (1, 2)):
        raise DecodeError("bad watch event")
    return Event(_int(row[0], 1, 2**62, "revision"), EventKind(row[1]), _key(row[2]), _value(row[3]))

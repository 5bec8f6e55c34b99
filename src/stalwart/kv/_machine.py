"""The key-value state machine: deterministic, applied in log order on every replica.

It plugs under any consensus log through the ``apply(payload) -> bytes`` / ``query(q) -> bytes``
/ ``snapshot()`` / ``restore()`` interface (``stalwart.raft.sessions.StateMachine``). Every
command that changes something bumps the store revision, as etcd's does (all changes of one
command, TTL expiries included, share it); each key keeps its create and mod revision and a
version count. A TTL counts from the proposer's timestamp in the command; keys expire against the
state machine's clock, the largest proposer timestamp seen in the log (moving at most
``max_clock_step_ms`` per command, so one wild clock cannot expire everything), so every replica
expires the same keys at the same log position. A bounded history of events serves watches.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

import msgpack

from stalwart.errors import DecodeError
from stalwart.kv._commands import (
    MAX_RANGE_LIMIT,
    MAX_VALUE_BYTES,
    Append,
    Cas,
    Command,
    Delete,
    Event,
    EventKind,
    Get,
    KeyValue,
    Put,
    Range,
    Tick,
    Watch,
    command_from,
    decode_query,
    encode_query_result,
    encode_watch_result,
    event_from_row,
    kv_from_row,
    pack_result,
    put_fields,
    unpack_message,
)
from stalwart.kv._sortedkeys import SortedKeys

SNAPSHOT_VERSION = 2  # 1: rows sorted by key (still read)
MAX_TIME_MS = 2**62
DEFAULT_HISTORY_EVENTS = 10_000


@dataclass(frozen=True, slots=True)
class KVConfig:
    history_events: int = DEFAULT_HISTORY_EVENTS  # events kept for watches; older ones compact away
    max_clock_step_ms: int = 60_000  # how far one command may move the log clock forward


def _expiry(time_ms: int, ttl_ms: int | None) -> int | None:
    return None if ttl_ms is None else min(time_ms + ttl_ms, MAX_TIME_MS)


# A stored key: (value, create_revision, mod_revision, version, expires_at_ms); a KeyValue is
# built only when a reader asks (a frozen dataclass per write cost more than the write).
_Row = tuple[bytes, int, int, int, int | None]
# A history event: (revision, kind, key, value), an Event when a watcher asks.
_EventRow = tuple[int, int, str, bytes]


class KVMachine:
    def __init__(self, config: KVConfig | None = None) -> None:
        self._config = config or KVConfig()
        self.revision = 0
        self.clock_ms = 0
        self._data: dict[str, _Row] = {}
        self._keys = SortedKeys()  # for prefix scans
        self._expiry: list[tuple[int, str]] = []  # heap of (expires_at_ms, key); stale entries skipped
        self._history: deque[_EventRow] = deque()
        self._compacted = 0  # every event at or below this revision has been dropped
        self._last_change_revision = 0

    # -- commands --------------------------------------------------------------------------------

    def apply(self, payload: bytes) -> bytes:
        """Apply one committed command; the same bytes on every replica give the same result.

        A command that cannot be decoded (it passed through a node of another version, say)
        changes nothing and answers an error result, deterministically: a committed entry must
        never make one replica fail where another succeeds.
        """
        try:
            obj = unpack_message(payload)
            put = put_fields(obj)  # the common case, without building a Put
            if put is None:
                command, time_ms = command_from(obj)
            else:
                time_ms = put[3]
        except DecodeError as exc:
            return pack_result(False, self.revision, f"error: {exc}".encode()[:200])
        # One proposer with a wild clock must not expire every key at once: the log clock moves
        # forward by at most max_clock_step_ms per command (like an HLC's max-offset guard).
        # TTLs count from the proposer's own timestamp, so a lagging log clock expires keys late,
        # never early.
        step_ms = self._config.max_clock_step_ms if self.clock_ms else MAX_TIME_MS
        self.clock_ms = max(self.clock_ms, min(time_ms, self.clock_ms + step_ms))
        rev = self.revision + 1  # the revision of every change this command makes
        changed = self._expire(rev) if self._expiry else False
        if put is not None:
            key, value, ttl, _ = put
            result = pack_result(True, rev, None, self._put(key, value, _expiry(time_ms, ttl), rev))
        else:
            result = self._apply_other(command, time_ms, rev, changed)
        if self._last_change_revision == rev:
            self.revision = rev
        self._check()
        return result

    def _apply_other(self, command: Command, time_ms: int, rev: int, changed: bool) -> bytes:
        match command:
            case Put(key, value, ttl):
                return pack_result(True, rev, None, self._put(key, value, _expiry(time_ms, ttl), rev))
            case Delete(key):
                existed = self._delete(key, rev)
                return pack_result(existed, rev if existed else self.revision, None, existed)
            case Cas(key, expected, value, ttl):
                current = self._data.get(key)
                now = None if current is None else current[0]
                if now != expected:
                    return pack_result(False, rev if changed else self.revision, now, current is not None)
                return pack_result(True, rev, None, self._put(key, value, _expiry(time_ms, ttl), rev))
            case Append(key, suffix):
                current = self._data.get(key)
                value = (b"" if current is None else current[0]) + suffix
                if len(value) > MAX_VALUE_BYTES:
                    return pack_result(False, rev if changed else self.revision, None, current is not None)
                self._put(key, value, None if current is None else current[4], rev)
                return pack_result(True, rev, value, current is not None)
            case Tick():
                return pack_result(True, rev if changed else self.revision)

    def _put(self, key: str, value: bytes, expires: int | None, rev: int) -> bool:
        """Store ``key``; True if it existed."""
        current = self._data.get(key)
        if current is None:
            self._keys.add(key)
            self._data[key] = (value, rev, rev, 1, expires)
        else:
            self._data[key] = (value, current[1], rev, current[3] + 1, expires)
        if expires is not None:
            heapq.heappush(self._expiry, (expires, key))
        self._record((rev, EventKind.PUT, key, value))
        return current is not None

    def _delete(self, key: str, revision: int) -> bool:
        if self._data.pop(key, None) is None:
            return False
        self._keys.remove(key)
        self._record((revision, EventKind.DELETE, key, b""))
        return True

    def _expire(self, rev: int) -> bool:
        changed = False
        while self._expiry and self._expiry[0][0] <= self.clock_ms:
            at, key = heapq.heappop(self._expiry)
            row = self._data.get(key)
            if row is not None and row[4] == at:  # not overwritten since
                changed = self._delete(key, rev) or changed
        return changed

    def _record(self, event: _EventRow) -> None:
        self._last_change_revision = event[0]
        history = self._history
        history.append(event)
        while len(history) > self._config.history_events:
            self._compacted = history.popleft()[0]

    # -- queries ---------------------------------------------------------------------------------

    def query(self, query: bytes) -> bytes:
        match decode_query(query):
            case Get(key):
                return encode_query_result(self.revision, self._live(key))
            case Range(prefix, limit, start_after):
                return encode_query_result(self.revision, self.range(prefix, limit, start_after))
            case Watch(prefix, since, limit):
                events = self.events_since(prefix, since, limit)
                return encode_watch_result(self.revision, events, self._compacted)

    def _live(self, key: str) -> KeyValue | None:
        row = self._data.get(key)
        if row is None:
            return None
        # A key past its expiry but not yet expired by a command is already gone for readers.
        if row[4] is not None and row[4] <= self.clock_ms:
            return None
        return KeyValue(key, *row)

    def range(self, prefix: str, limit: int = 1_000, start_after: str | None = None) -> list[KeyValue]:
        limit = min(limit, MAX_RANGE_LIMIT)
        if start_after is not None and start_after >= prefix:
            keys = self._keys.iter_from(start_after, inclusive=False)
        else:
            keys = self._keys.iter_from(prefix)
        out: list[KeyValue] = []
        for key in keys:
            if not key.startswith(prefix) or len(out) >= limit:
                break
            kv = self._live(key)
            if kv is not None:
                out.append(kv)
        return out

    def events_since(self, prefix: str, since_revision: int, limit: int = 1_000) -> list[Event] | None:
        """Events after ``since_revision`` for keys under ``prefix``; None if compacted away."""
        if since_revision < self._compacted:
            return None
        out: list[Event] = []
        for rev, kind, key, value in self._history:
            if rev > since_revision and key.startswith(prefix):
                # Never cut a revision in two: a watcher resumes after the last revision it saw.
                if len(out) >= limit and rev != out[-1].revision:
                    break
                out.append(Event(rev, EventKind(kind), key, value))
        return out

    def get(self, key: str) -> KeyValue | None:
        return self._live(key)

    def has_ttl_keys(self) -> bool:
        """Whether a stored key has a TTL (expired or not yet): then the leader must propose ticks.

        Every key with a TTL has an entry in the expiry heap (stale ones are those overwritten
        since), so only the heap's entries are looked at, not every key.
        """
        data = self._data
        for at, key in self._expiry:
            row = data.get(key)
            if row is not None and row[4] == at:
                return True
        return False

    def __len__(self) -> int:
        return len(self._data)

    # -- snapshots -------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """msgpack ``[2, revision, clock, compacted, {key: [value, create, mod, version,
        expires]}, events]``: the map is packed by one C call (version 1's sorted rows cost a
        Python step per key, most of a snapshot's time); :meth:`restore` reads both."""
        events = [[rev, int(kind), key, value] for rev, kind, key, value in self._history]
        state = [SNAPSHOT_VERSION, self.revision, self.clock_ms, self._compacted, self._data, events]
        data = msgpack.packb(state, use_bin_type=True)
        assert isinstance(data, bytes)
        return data

    def restore(self, data: bytes) -> None:
        try:
            obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
            version, revision, clock, compacted, rows, events = obj
        except Exception as exc:  # msgpack and unpacking raise several unrelated types
            raise DecodeError(f"bad kv snapshot: {exc.__class__.__name__}") from None
        if (
            type(version) is not int  # True == 1 and 2.0 == 2: not versions
            or version not in (1, SNAPSHOT_VERSION)
            or not all(type(x) is int for x in (revision, clock, compacted))
            or not 0 <= compacted <= revision <= MAX_TIME_MS
            or not 0 <= clock <= MAX_TIME_MS
        ):
            raise DecodeError("bad kv snapshot header")
        if version == 1 and isinstance(rows, list):
            pass  # rows [key, value, create, mod, version, expires], sorted by key
        elif version == SNAPSHOT_VERSION and isinstance(rows, dict):
            rows = [[key, *row] if isinstance(row, list) else None for key, row in rows.items()]
        else:
            raise DecodeError("bad kv snapshot body")
        if not isinstance(events, list):
            raise DecodeError("bad kv snapshot body")
        data_map: dict[str, _Row] = {
            kv.key: (kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.expires_at_ms)
            for kv in map(kv_from_row, rows)
        }
        if len(data_map) != len(rows):
            raise DecodeError("bad kv snapshot body: a key twice")
        # Everything is checked before anything is replaced: a refused snapshot changes nothing.
        for row in data_map.values():
            if not (1 <= row[1] <= row[2] <= revision and row[3] >= 1):
                raise DecodeError("bad kv snapshot body: a key's revisions (1 <= create <= mod <= store)")
        history: deque[_EventRow] = deque()
        last = compacted  # events are in revision order, none compacted, none newer than the store
        for e in map(event_from_row, events):
            if not last <= e.revision <= revision:
                raise DecodeError("bad kv snapshot body: an event's revision out of order or range")
            last = e.revision
            history.append((e.revision, e.kind, e.key, e.value))
        self.revision, self.clock_ms, self._compacted = revision, clock, compacted
        self._data = data_map
        self._keys = SortedKeys(data_map)
        self._history = history
        self._expiry = [(row[4], key) for key, row in data_map.items() if row[4] is not None]
        heapq.heapify(self._expiry)
        self._check()

    def _check(self) -> None:
        # The sorted index and the map hold the same keys; no key is newer than the store.
        assert len(self._keys) == len(self._data)
        assert not self._history or self._history[-1][0] <= self.revision

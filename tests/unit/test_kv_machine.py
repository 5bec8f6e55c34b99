"""The key-value state machine: operations, revisions, TTL, scans, watches, snapshots, codec."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.errors import DecodeError
from stalwart.kv import (
    MAX_VALUE_BYTES,
    Append,
    Cas,
    Command,
    Delete,
    EventKind,
    Get,
    KVConfig,
    KVMachine,
    Put,
    Range,
    Tick,
    Watch,
    decode_command,
    decode_get_result,
    decode_query,
    decode_range_result,
    decode_result,
    decode_watch_result,
    encode_command,
    encode_query,
)
from stalwart.kv._commands import MAX_TTL_MS


def run(m: KVMachine, cmd: Command, t: int = 0):  # type: ignore[no-untyped-def]
    return decode_result(m.apply(encode_command(cmd, t)))


def get(m: KVMachine, key: str):  # type: ignore[no-untyped-def]
    return decode_get_result(m.query(encode_query(Get(key))))[1]


def test_put_get_delete_and_revisions() -> None:
    m = KVMachine()
    r1 = run(m, Put("a", b"1"))
    r2 = run(m, Put("a", b"2"))
    assert (r1.revision, r2.revision, r2.existed) == (1, 2, True)
    kv = get(m, "a")
    assert kv is not None and (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"2", 1, 2, 2)
    assert run(m, Delete("a")).ok and get(m, "a") is None
    assert not run(m, Delete("a")).ok


def test_cas_and_append() -> None:
    m = KVMachine()
    assert run(m, Cas("k", None, b"x")).ok, "absent matches None"
    failed = run(m, Cas("k", b"y", b"z"))
    assert not failed.ok and failed.value == b"x"
    assert run(m, Cas("k", b"x", b"z")).ok
    assert run(m, Append("k", b"!")).value == b"z!"
    assert run(m, Append("new", b"a")).value == b"a"


def test_ttl_expires_on_the_log_clock() -> None:
    m = KVMachine()
    run(m, Put("t", b"v", ttl_ms=100), t=1_000)
    run(m, Put("keep", b"v"), t=1_000)
    assert get(m, "t") is not None
    run(m, Tick(), t=1_050)
    assert get(m, "t") is not None
    run(m, Tick(), t=1_100)
    assert get(m, "t") is None and get(m, "keep") is not None
    run(m, Tick(), t=900)  # a slower proposer clock never moves time back
    assert m.clock_ms == 1_100
    events = decode_watch_result(m.query(encode_query(Watch("t", 0))))[1]
    assert events is not None and [e.kind for e in events] == [EventKind.PUT, EventKind.DELETE]


def test_overwrite_clears_an_old_expiry() -> None:
    m = KVMachine()
    run(m, Put("t", b"v", ttl_ms=10), t=0)
    run(m, Put("t", b"w"), t=5)
    run(m, Tick(), t=100)
    kv = get(m, "t")
    assert kv is not None and kv.value == b"w"


def test_prefix_range_with_paging() -> None:
    m = KVMachine()
    for k in ["a/1", "a/2", "a/3", "b/1", "a"]:
        run(m, Put(k, k.encode()))
    _, rows = decode_range_result(m.query(encode_query(Range("a/", limit=2))))
    assert [r.key for r in rows] == ["a/1", "a/2"]
    _, rows = decode_range_result(m.query(encode_query(Range("a/", limit=2, start_after="a/2"))))
    assert [r.key for r in rows] == ["a/3"]
    _, rows = decode_range_result(m.query(encode_query(Range(""))))
    assert len(rows) == 5


def test_watch_history_is_bounded_and_says_so() -> None:
    m = KVMachine(KVConfig(history_events=3))
    for i in range(5):
        run(m, Put(f"k{i}", b"v"))
    rev, events, compacted = decode_watch_result(m.query(encode_query(Watch("", 3))))
    assert rev == 5 and events is not None and [e.revision for e in events] == [4, 5]
    _, events, compacted = decode_watch_result(m.query(encode_query(Watch("", 1))))
    assert events is None and compacted == 2


_keys = st.sampled_from(["a", "b", "c", "a/x", "b/y"])
_vals = st.binary(max_size=4)
_commands = st.one_of(
    st.builds(Put, _keys, _vals, st.none() | st.integers(1, 50)),
    st.builds(Delete, _keys),
    st.builds(Cas, _keys, st.none() | _vals, _vals),
    st.builds(Append, _keys, _vals),
    st.just(Tick()),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_commands, st.integers(0, 30)), max_size=40), st.integers(0, 40))
def test_a_restored_snapshot_behaves_identically(cmds: list[tuple[Command, int]], cut: int) -> None:
    a, b = KVMachine(KVConfig(history_events=8)), KVMachine(KVConfig(history_events=8))
    t = 0
    for i, (cmd, dt) in enumerate(cmds):
        t += dt
        if i == cut:
            b.restore(a.snapshot())
        ra, rb = a.apply(encode_command(cmd, t)), b.apply(encode_command(cmd, t))
        if i >= cut:
            assert ra == rb
    b.restore(a.snapshot())
    assert a.snapshot() == b.snapshot()
    for q in (Range(""), Watch("", 0), Get("a")):
        assert a.query(encode_query(q)) == b.query(encode_query(q))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_never_decodes_into_anything_but_decode_error(data: bytes) -> None:
    m = KVMachine()
    for fn in (m.apply, m.query, decode_result, m.restore):
        with contextlib.suppress(DecodeError):
            fn(data)


@pytest.mark.parametrize(
    "obj",
    [
        [1, 1, 0, "", b"v", None],  # empty key
        [1, 1, 0, "k", "not-bytes", None],
        [1, 1, 0, "k", b"v", 0],  # ttl must be positive
        [1, 1, True, "k", b"v", None],  # bool is not a time
        [2, 1, 0, "k", b"v", None],  # unknown version
        [1, 99, 0],
        [1, 1, 0, "k" * 2000, b"v", None],
    ],
)
def test_malformed_commands_are_refused(obj: list[object]) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    with pytest.raises(DecodeError):
        decode_command(data)
    with pytest.raises(DecodeError):
        decode_query(data)
    m = KVMachine()
    before = m.snapshot()
    result = decode_result(m.apply(data))  # a committed entry never crashes a replica
    assert not result.ok and result.value is not None and result.value.startswith(b"error")
    assert m.snapshot() == before


def test_revision_moves_only_when_something_changes() -> None:
    m = KVMachine()
    assert run(m, Put("a", b"1")).revision == 1
    assert run(m, Cas("a", b"nope", b"2")).revision == 1
    assert run(m, Delete("zzz")).revision == 1
    assert run(m, Tick()).revision == 1
    assert run(m, Append("a", b"2")).revision == 2


def test_append_cannot_grow_a_value_past_the_limit() -> None:
    m = KVMachine()
    run(m, Put("big", b"x" * MAX_VALUE_BYTES))
    result = run(m, Append("big", b"y"))
    assert not result.ok
    KVMachine().restore(m.snapshot())


def test_one_wild_clock_cannot_expire_everything() -> None:
    m = KVMachine(KVConfig(max_clock_step_ms=1_000))
    run(m, Put("t", b"v", ttl_ms=3_600_000), t=10_000)
    run(m, Put("x", b"v"), t=2**60)  # a proposer whose clock is off by decades
    assert get(m, "t") is not None and m.clock_ms == 11_000
    for i in range(5):
        run(m, Tick(), t=12_000 + i)  # time comes back to normal; the key lives on
    assert get(m, "t") is not None
    run(m, Put("huge", b"v", ttl_ms=MAX_TTL_MS), t=2**61)
    KVMachine().restore(m.snapshot())


def test_a_watch_page_never_cuts_a_revision() -> None:
    m = KVMachine()
    for i in range(5):
        run(m, Put(f"t{i}", b"v", ttl_ms=10), t=0)
    run(m, Tick(), t=100)  # all five expire in one revision
    _, events, _ = decode_watch_result(m.query(encode_query(Watch("", 5, limit=2))))
    assert events is not None and len(events) == 5 and {e.revision for e in events} == {6}


def test_has_ttl_keys_sees_only_live_ttl_keys() -> None:
    m = KVMachine()
    run(m, Put("plain", b"v"))
    assert not m.has_ttl_keys()
    run(m, Put("t", b"v", ttl_ms=1_000), t=10)
    assert m.has_ttl_keys()
    run(m, Put("t", b"w"), t=20)  # overwritten without a TTL: its heap entry is stale
    assert not m.has_ttl_keys()
    run(m, Put("u", b"v", ttl_ms=5), t=30)
    assert m.has_ttl_keys()
    run(m, Tick(), t=100)  # expired by the log clock
    assert not m.has_ttl_keys()
    run(m, Put("w", b"v", ttl_ms=1_000), t=200)
    m2 = KVMachine()
    m2.restore(m.snapshot())
    assert m2.has_ttl_keys()


@given(_commands, st.integers(0, 2**62), st.integers(0, 2**62))
def test_restamp_gives_the_bytes_encode_command_gives(cmd: Command, sent: int, stamp: int) -> None:
    from stalwart.kv import restamp, unpack_message

    data = encode_command(cmd, sent)
    assert restamp(data, unpack_message(data), stamp) == encode_command(cmd, stamp)
    zero = encode_command(cmd, 0)  # as clients send it: the fast path
    assert restamp(zero, unpack_message(zero), stamp) == encode_command(cmd, stamp)


# Every msgpack encoding of a small non-negative int: fixint, then uint8..64 and int8..64.
_WIDE_INT = [
    lambda v: bytes([v]),
    lambda v: b"\xcc" + v.to_bytes(1, "big"),
    lambda v: b"\xcd" + v.to_bytes(2, "big"),
    lambda v: b"\xce" + v.to_bytes(4, "big"),
    lambda v: b"\xcf" + v.to_bytes(8, "big"),
    lambda v: b"\xd0" + v.to_bytes(1, "big", signed=True),
    lambda v: b"\xd1" + v.to_bytes(2, "big", signed=True),
    lambda v: b"\xd2" + v.to_bytes(4, "big", signed=True),
    lambda v: b"\xd3" + v.to_bytes(8, "big", signed=True),
]


def _wide_encoding(cmd: Command, widths: tuple[int, int, int], wide_header: bool) -> bytes:
    """``encode_command(cmd, 0)`` with the version, op and time packed in the given (valid,
    non-canonical) int encodings, and optionally a 3-byte array header."""
    canonical = msgpack.unpackb(encode_command(cmd, 0))
    head = [_WIDE_INT[w](v) for w, v in zip(widths, canonical[:3], strict=True)]
    rest = [msgpack.packb(item, use_bin_type=True) for item in canonical[3:]]
    header = b"\xdc" + len(canonical).to_bytes(2, "big") if wide_header else bytes([0x90 | len(canonical)])
    return b"".join([header, *head, *rest])


@given(
    _commands,
    st.tuples(*(st.integers(0, len(_WIDE_INT) - 1) for _ in range(3))),
    st.booleans(),
    st.integers(0, 2**62),
)
def test_restamp_of_a_wide_int_encoding_is_the_canonical_encoding(
    cmd: Command, widths: tuple[int, int, int], wide_header: bool, stamp: int
) -> None:
    """A client may pack the version/op/time wider than one byte (decode_command accepts it):
    restamp must not splice into such a field (it made an undecodable log entry)."""
    from stalwart.kv import restamp, unpack_message

    data = _wide_encoding(cmd, widths, wide_header)
    assert decode_command(data) == (cmd, 0)
    out = restamp(data, unpack_message(data), stamp)
    assert out == encode_command(cmd, stamp)
    assert decode_command(out) == (cmd, stamp)


@pytest.mark.parametrize(
    "data",
    [
        b"\x96\xce\x00\x00\x00\x01\x01\x00\xa1k\xc4\x01v\xc0",  # version as uint32 (its 3rd byte is 0)
        b"\x96\x01\xcd\x00\x01\x00\xa1k\xc4\x01v\xc0",  # op as uint16
        b"\x96\x01\xd1\x00\x01\x00\xa1k\xc4\x01v\xc0",  # op as int16
    ],
)
def test_restamp_of_the_reviewers_wide_cases(data: bytes) -> None:
    from stalwart.kv import restamp, unpack_message

    out = restamp(data, unpack_message(data), 1_764_150_000_000)
    assert decode_command(out) == (Put("k", b"v"), 1_764_150_000_000)
    m = KVMachine()
    assert decode_result(m.apply(out)).ok and m.get("k") is not None


@given(st.builds(Put, _keys, _vals, st.none() | st.integers(1, MAX_TTL_MS)), st.integers(0, 2**62))
def test_put_fields_reads_a_put_as_decode_command_does(put: Put, t: int) -> None:
    from stalwart.kv import put_fields, unpack_message

    assert put_fields(unpack_message(encode_command(put, t))) == (put.key, put.value, put.ttl_ms, t)
    assert put_fields(unpack_message(encode_command(Delete("k"), t))) is None
    bad = msgpack.packb([1, 1, t, "", b"v", None])
    with pytest.raises(DecodeError):
        put_fields(unpack_message(bad))


@given(st.booleans(), st.integers(0, 2**62), st.none() | _vals, st.booleans())
def test_pack_result_gives_the_bytes_encode_result_gives(
    ok: bool, rev: int, value: bytes | None, existed: bool
) -> None:
    from stalwart.kv._commands import WriteResult, encode_result, pack_result

    assert pack_result(ok, rev, value, existed) == encode_result(WriteResult(ok, rev, value, existed))


def test_a_version_1_snapshot_still_restores_and_bad_bodies_are_refused() -> None:
    m = KVMachine()
    run(m, Put("b", b"2", ttl_ms=500), t=10)
    run(m, Put("a", b"1"), t=20)
    rows = [["a", b"1", 2, 2, 1, None], ["b", b"2", 1, 1, 1, 510]]
    events = [[1, 1, "b", b"2"], [2, 1, "a", b"1"]]
    v1 = msgpack.packb([1, m.revision, m.clock_ms, 0, rows, events], use_bin_type=True)
    old = KVMachine()
    old.restore(v1)
    assert (old.revision, old.clock_ms) == (m.revision, m.clock_ms)
    assert [get(old, k) for k in "ab"] == [get(m, k) for k in "ab"] and old.has_ttl_keys()
    for body in ({"a": "not a row"}, {"a": [b"1", 1, 1, 1]}, rows):  # v2 needs a map of rows
        bad = msgpack.packb([2, 2, 20, 0, body, events], use_bin_type=True)
        with pytest.raises(DecodeError):
            KVMachine().restore(bad)


def _restored_base() -> KVMachine:
    m = KVMachine(KVConfig(history_events=3))
    for i in range(5):
        run(m, Put(f"k{i}", b"v", 1000 if i % 2 else None), t=10)
    return m


def _state(m: KVMachine) -> tuple[object, ...]:
    rows = (dict(m._data), list(m._keys), list(m._history), list(m._expiry))
    return (m.revision, m.clock_ms, m._compacted, *rows)


_ROW = [b"v", 1, 1, 1, None]
_EVENT = [1, 1, "a", b"v"]


@pytest.mark.parametrize(
    "snap",
    [
        [2, 0, 0, 0, {}, [[1, 1, "0", b""]]],  # the reviewer's case: an event newer than the store
        [2, 1, 0, 0, {"a": [b"v", 1, 2, 1, None]}, [_EVENT]],  # mod revision newer than the store
        [2, 3, 0, 0, {"a": [b"v", 3, 2, 1, None]}, []],  # created after its last change
        [2, 3, 0, 0, {"a": [b"v", 0, 2, 1, None]}, []],  # create revision 0
        [2, 3, 0, 0, {"a": [b"v", 1, 2, 0, None]}, []],  # version 0
        [2, 1, 0, 2, {"a": _ROW}, [_EVENT]],  # compacted past the store
        [2, 5, 0, 3, {"a": _ROW}, [[2, 1, "a", b"v"]]],  # an event at or below the compaction
        [2, 5, 0, 0, {"a": _ROW}, [[3, 1, "a", b"v"], [2, 1, "a", b"v"]]],  # events out of order
        [2, 1, -1, 0, {"a": _ROW}, [_EVENT]],  # a negative clock
        [2, -1, 0, 0, {}, []],  # a negative revision
        [True, 1, 0, 0, [["a", *_ROW]], [_EVENT]],  # version True is not 1
        [2.0, 1, 0, 0, {"a": _ROW}, [_EVENT]],  # nor is 2.0 a version
    ],
)
def test_a_malformed_snapshot_is_refused_with_decode_error_and_nothing_changes(snap: list[object]) -> None:
    m = _restored_base()
    before = _state(m)
    with pytest.raises(DecodeError):
        m.restore(msgpack.packb(snap, use_bin_type=True))
    assert _state(m) == before


def test_the_edges_of_a_valid_snapshot_are_accepted() -> None:
    m = KVMachine()
    # compacted == an event's revision (another event of that revision was dropped), events of
    # one revision together, mod == create == revision.
    snap = [2, 4, 7, 3, {"a": [b"v", 3, 4, 2, 9], "b": [b"w", 4, 4, 1, None]},
            [[3, 2, "c", b""], [4, 1, "a", b"v"], [4, 1, "b", b"w"]]]  # fmt: skip
    m.restore(msgpack.packb(snap, use_bin_type=True))
    assert m.revision == 4 and m._compacted == 3 and len(m) == 2
    assert m.snapshot() == msgpack.packb(snap, use_bin_type=True)


_SNAP_ANY = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=4) | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.text(max_size=3) | st.integers(0, 3), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip
_SNAP_ROW = st.tuples(
    st.binary(max_size=2), st.integers(-1, 12), st.integers(-1, 12), st.integers(-1, 3),
    st.none() | st.integers(-1, 9),
).map(list)  # fmt: skip
_SNAP_LIKE = st.tuples(
    st.sampled_from([1, 2, True, 2.0]),
    st.integers(-2, 12),
    st.integers(-2, 12),
    st.integers(-2, 12),
    st.dictionaries(st.text(min_size=1, max_size=2), _SNAP_ROW | _SNAP_ANY, max_size=4)
    | st.lists(st.lists(_SNAP_ANY, min_size=6, max_size=6) | _SNAP_ANY, max_size=4),
    st.lists(
        st.tuples(
            st.integers(-1, 14),
            st.sampled_from([1, 2]),
            st.text(min_size=1, max_size=2),
            st.binary(max_size=2),
        ).map(list)
        | _SNAP_ANY,
        max_size=4,
    ),
).map(list)


@settings(max_examples=400, deadline=None)
@given(_SNAP_LIKE | _SNAP_ANY)
def test_a_restore_is_all_or_nothing_and_a_restored_machine_works(obj: object) -> None:
    m = _restored_base()
    before = _state(m)
    try:
        m.restore(msgpack.packb(obj, use_bin_type=True))
    except DecodeError:
        assert _state(m) == before, "refused, and nothing changed"
        return
    assert m._compacted <= m.revision and all(m._compacted <= e[0] <= m.revision for e in m._history)
    assert all(1 <= row[1] <= row[2] <= m.revision and row[3] >= 1 for row in m._data.values())
    run(m, Put("zz", b"x"), t=50)  # usable: it applies, scans, snapshots and restores
    m.range("", 100)
    KVMachine().restore(m.snapshot())

"""Lamport clocks, vector clocks, version vectors, dotted version vectors and DVV sets."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.clocks import (
    ClockError,
    DecodeError,
    DottedVersionVector,
    DVVSet,
    HLCTimestamp,
    LamportClock,
    Ordering,
    VectorClock,
    VersionVector,
)

NODES = st.sampled_from(["a", "b", "c"])
VECTORS = st.dictionaries(NODES, st.integers(0, 4)).map(VectorClock)


def test_lamport_respects_happened_before() -> None:
    a, b = LamportClock("a"), LamportClock("b")
    send = a.tick()
    recv = b.receive(send.time)
    assert send < recv
    assert b.tick() > recv
    with pytest.raises(ClockError):
        b.receive(-1)


def test_lamport_ties_break_on_node() -> None:
    a, b = LamportClock("a"), LamportClock("b")
    assert a.tick() < b.tick()  # same time, "a" < "b": a total order


@given(VECTORS, VECTORS)
def test_vector_compare_matches_pointwise_definition(x: VectorClock, y: VectorClock) -> None:
    le = all(x[n] <= y[n] for n in "abc")
    ge = all(x[n] >= y[n] for n in "abc")
    expected = {
        (True, True): Ordering.EQUAL,
        (True, False): Ordering.BEFORE,
        (False, True): Ordering.AFTER,
        (False, False): Ordering.CONCURRENT,
    }[(le, ge)]
    assert x.compare(y) is expected
    assert y.compare(x) is {Ordering.BEFORE: Ordering.AFTER, Ordering.AFTER: Ordering.BEFORE}.get(
        expected, expected
    )
    assert (x == y) == (expected is Ordering.EQUAL)


@given(VECTORS, VECTORS, VECTORS)
def test_vector_merge_is_a_join(x: VectorClock, y: VectorClock, z: VectorClock) -> None:
    assert x.merge(y) == y.merge(x)
    assert x.merge(y).merge(z) == x.merge(y.merge(z))
    assert x.merge(x) == x
    assert x.merge(y).descends(x) and x.merge(y).descends(y)


def test_vector_clock_send_receive_orders_events() -> None:
    a = VectorClock().tick("a")
    b = VectorClock().tick("b")
    assert a.compare(b) is Ordering.CONCURRENT
    b2 = b.receive("b", a)
    assert a.compare(b2) is Ordering.BEFORE and b2.compare(a) is Ordering.AFTER
    assert a < b2 and a <= b2 and not b2 <= a


def test_version_vector_dots_and_pruning() -> None:
    v = VersionVector({"a": 2})
    assert v.contains(("a", 2)) and not v.contains(("a", 3)) and not v.contains(("b", 1))
    assert v.next_dot("a") == ("a", 3)
    assert v.add_dot(("a", 3)) == VersionVector({"a": 3})
    with pytest.raises(ClockError):
        v.add_dot(("a", 5))  # would leave a gap
    assert v.merge(VersionVector({"b": 1})).prune("b") == v
    with pytest.raises(ClockError):
        VersionVector({"a": -1})


@given(VECTORS)
def test_vectors_round_trip(x: VectorClock) -> None:
    assert VectorClock.from_bytes(x.to_bytes()) == x
    vv = VersionVector(x.as_dict())
    assert VersionVector.from_bytes(vv.to_bytes()) == vv


@settings(max_examples=200)
@given(st.binary(max_size=40))
def test_vector_decoding_raises_only_decode_error(data: bytes) -> None:
    for cls in (VectorClock, VersionVector, DVVSet, HLCTimestamp):
        with contextlib.suppress(DecodeError):
            cls.from_bytes(data)


@settings(max_examples=200)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.text(max_size=4)
        | st.binary(max_size=4),
        lambda inner: st.lists(inner, max_size=4),
        max_leaves=12,
    ),
    st.sampled_from([601, 602, 603, 604]),
)
def test_clock_decoding_of_wrong_shapes_raises_only_decode_error(body: object, tag: int) -> None:
    import msgpack

    data = msgpack.packb([tag, 1, body], use_bin_type=True)
    for cls in (VectorClock, VersionVector, DVVSet, HLCTimestamp):
        with contextlib.suppress(DecodeError):
            cls.from_bytes(data)


def test_dotted_version_vector_compare() -> None:
    first = DottedVersionVector(("a", 1), VersionVector())
    second = DottedVersionVector(("b", 1), VersionVector({"a": 1}))  # its writer saw first
    other = DottedVersionVector(("c", 1), VersionVector())
    assert first.compare(second) is Ordering.BEFORE
    assert second.compare(first) is Ordering.AFTER
    assert first.compare(other) is Ordering.CONCURRENT
    assert first.compare(first) is Ordering.EQUAL


def test_dvvset_keeps_concurrent_siblings_and_drops_seen_ones() -> None:
    s: DVVSet[str] = DVVSet()
    ctx0 = s.context
    s.update("srv1", ctx0, "v1")  # client A, read nothing
    s.update("srv1", ctx0, "v2")  # client B, also read nothing: concurrent
    assert sorted(s.values()) == ["v1", "v2"]
    s.update("srv1", s.context, "v3")  # client read both: resolves
    assert s.values() == ["v3"]
    assert DVVSet.from_bytes(s.to_bytes()) == s


SYNC_OPS = st.lists(st.tuples(st.integers(0, 2), st.booleans(), st.integers(0, 2)), max_size=12)


@given(SYNC_OPS)
def test_dvvset_sync_is_a_join_and_replicas_converge(ops: list[tuple[int, bool, int]]) -> None:
    reps: list[DVVSet[int]] = [DVVSet(), DVVSet(), DVVSet()]
    seen: list = [r.context for r in reps]  # each replica's client read context
    for i, (who, write, other) in enumerate(ops):
        if write:
            reps[who].update(f"s{who}", seen[who], i)
            seen[who] = reps[who].context
        else:
            reps[who].sync(reps[other])
    a, b, c = (r.copy() for r in reps)
    ab, ba = a.copy(), b.copy()
    ab.sync(b)
    ba.sync(a)
    assert ab == ba
    aa = a.copy()
    aa.sync(a)
    assert aa == a
    left = a.copy()
    left.sync(b)
    left.sync(c)
    bc = b.copy()
    bc.sync(c)
    right = a.copy()
    right.sync(bc)
    assert left == right


def test_dvvset_refuses_a_context_from_the_future() -> None:
    s: DVVSet[str] = DVVSet()
    with pytest.raises(ClockError):
        s.update("srv", VersionVector({"srv": 3}), "x")


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 2), st.booleans(), st.integers(0, 2), st.booleans()), max_size=16))
def test_dvvset_siblings_are_exactly_the_writes_no_known_write_has_seen(
    ops: list[tuple[int, bool, int, bool]],
) -> None:
    # Model: a write is identified by its number; it has "seen" the writes its client read.
    # A replica's siblings are the writes it knows that no write it knows has seen.
    reps: list[DVVSet[int]] = [DVVSet(), DVVSet(), DVVSet()]
    known: list[set[int]] = [set(), set(), set()]
    seen: dict[int, set[int]] = {}
    for i, (who, write, other, blind) in enumerate(ops):
        if write:
            # A client that read this replica (or, blind, read nothing) writes through it.
            ctx = VersionVector() if blind else reps[who].context
            seen[i] = set() if blind else set(known[who])
            reps[who].update(f"s{who}", ctx, i)
            known[who].add(i)
        else:
            reps[who].sync(reps[other])
            known[who] |= known[other]
        for r in range(3):
            expected = {w for w in known[r] if not any(w in seen[x] for x in known[r])}
            assert set(reps[r].values()) == expected

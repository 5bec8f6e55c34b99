"""Each type's value honours its specification, checked against causal histories.

Every operation is recorded with the set of operations its replica had seen (its causal past).
A replica's history grows with what it merges: full states in any order, deltas in causal order
(the delta-state guarantee; out-of-order deltas still converge, see test_crdt_laws). The
specification of each type is a function of the history alone, e.g. OR-Set: ``x`` is present
iff some add of ``x`` is maximal (no operation on ``x`` in the history has seen it); remove-wins
set: iff the maximal operations on ``x`` are all adds. After every step, every replica's
``value`` must equal the specification.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stalwart.clocks import HLCTimestamp, HybridLogicalClock
from stalwart.clocks._codec import packed_key
from stalwart.crdt import (
    BoundedCounter,
    CRDTError,
    DWFlag,
    EWFlag,
    GCounter,
    GSet,
    InsufficientRightsError,
    LWWElementSet,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    RWSet,
    TwoPSet,
)

REPLICAS = ("ra", "rb", "rc")
ELEMS = ("x", "y", 7)
KEYS = ("k1", "k2")


@dataclass(frozen=True)
class Op:
    id: int
    replica: str
    kind: str
    key: Any  # the element / map key / (map key, element); None for registers and flags
    arg: Any
    past: frozenset[int]


def maximal(ops: list[Op], touches: Callable[[Op], bool]) -> list[Op]:
    mine = [o for o in ops if touches(o)]
    return [o for o in mine if not any(o.id in p.past for p in mine)]


# Specifications: history (list of ops) -> expected value.
def spec_orset(h: list[Op]) -> frozenset[Any]:
    return frozenset(x for x in ELEMS if any(o.kind == "add" for o in maximal(h, lambda o, x=x: o.key == x)))


def spec_rwset(h: list[Op]) -> frozenset[Any]:
    out = set()
    for x in ELEMS:
        top = maximal(h, lambda o, x=x: o.key == x)
        if top and all(o.kind == "add" for o in top):
            out.add(x)
    return frozenset(out)


def spec_mv(h: list[Op]) -> frozenset[Any]:
    return frozenset(o.arg for o in maximal(h, lambda o: True) if o.kind == "write")


def spec_ew(h: list[Op]) -> bool:
    return any(o.kind == "enable" for o in maximal(h, lambda o: True))


def spec_dw(h: list[Op]) -> bool:
    top = maximal(h, lambda o: True)
    return bool(top) and all(o.kind == "enable" for o in top)


def spec_gset(h: list[Op]) -> frozenset[Any]:
    return frozenset(o.key for o in h)


def spec_2p(h: list[Op]) -> frozenset[Any]:
    return frozenset(o.key for o in h if o.kind == "add") - {o.key for o in h if o.kind == "remove"}


def spec_counter(h: list[Op]) -> int:
    return sum(o.arg for o in h if o.kind == "increment") - sum(o.arg for o in h if o.kind == "decrement")


def spec_lww_register(h: list[Op]) -> Any:
    if not h:
        return None
    return max(h, key=lambda o: (o.arg[1], packed_key(o.arg[0]))).arg[0]


def spec_lww_set(h: list[Op]) -> frozenset[Any]:
    out = set()
    for x in ELEMS:
        mine = [o for o in h if o.key == x]
        if mine and max(mine, key=lambda o: (o.arg, o.kind == "remove")).kind == "add":
            out.add(x)
    return frozenset(out)


def spec_ormap(h: list[Op]) -> dict[Any, frozenset[Any]]:
    # Reset-remove: remove(k) acts on every element under k that its replica had seen.
    out: dict[Any, frozenset[Any]] = {}
    for k in KEYS:
        present = set()
        for x in ELEMS:
            top = maximal(h, lambda o, k=k, x=x: o.key == (k, x) or (o.kind == "remove_key" and o.arg == k))
            if any(o.kind == "add" for o in top):
                present.add(x)
        if present:
            out[k] = frozenset(present)
    return out


@dataclass(frozen=True)
class Case:
    make: Callable[[str], Any]
    ops: list[str]
    spec: Callable[[list[Op]], Any]
    per_replica_delta: bool = False  # counter deltas carry the replica's running total (per kind)


def _apply(crdt: Any, kind: str, key: Any, arg: Any) -> Any:
    match kind:
        case "add" | "remove" if isinstance(crdt, ORMap):
            k, x = key
            return crdt.update(k, lambda s: getattr(s, kind)(x))
        case "remove_key":
            return crdt.remove(arg)
        case "add" | "remove" if isinstance(crdt, LWWElementSet):
            return getattr(crdt, kind)(key, arg)
        case "add" | "remove":
            return getattr(crdt, kind)(key)
        case "write":
            return crdt.write(arg)
        case "set":
            return crdt.set(arg[0], arg[1])
        case "increment" | "decrement":
            return getattr(crdt, kind)(arg)
        case "enable" | "disable":
            return getattr(crdt, kind)()
    raise AssertionError(kind)


CASES: dict[str, Case] = {
    "ORSet": Case(ORSet, ["add", "remove"], spec_orset),
    "RWSet": Case(RWSet, ["add", "remove"], spec_rwset),
    "MVRegister": Case(MVRegister, ["write"], spec_mv),
    "EWFlag": Case(EWFlag, ["enable", "disable"], spec_ew),
    "DWFlag": Case(DWFlag, ["enable", "disable"], spec_dw),
    "GSet": Case(GSet, ["add"], spec_gset),
    "TwoPSet": Case(TwoPSet, ["add", "remove"], spec_2p),
    "GCounter": Case(GCounter, ["increment"], spec_counter, per_replica_delta=True),
    "PNCounter": Case(PNCounter, ["increment", "decrement"], spec_counter, per_replica_delta=True),
    "BoundedCounter": Case(BoundedCounter, ["increment", "decrement"], spec_counter, per_replica_delta=True),
    "LWWRegister": Case(LWWRegister, ["set"], spec_lww_register),
    "LWWElementSet": Case(LWWElementSet, ["add", "remove"], spec_lww_set),
    "ORMap[ORSet]": Case(lambda r: ORMap(r, ORSet), ["add", "remove", "remove_key"], spec_ormap),
}


def _draw_op(
    case: Case, data: st.DataObject, replica: str, clocks: dict[str, HybridLogicalClock]
) -> tuple[str, Any, Any]:
    kind = data.draw(st.sampled_from(case.ops))
    key: Any = data.draw(st.sampled_from(ELEMS))
    arg: Any = data.draw(st.integers(0, 4))
    if kind in ("write", "set"):
        key, arg = None, data.draw(st.sampled_from(ELEMS))
    if kind == "set":
        arg = (arg, clocks[replica].now(data.draw(st.integers(0, 3))))
    if isinstance(case.make("r"), LWWElementSet):
        arg = clocks[replica].now(data.draw(st.integers(0, 3)))
    if kind in ("enable", "disable"):
        key = arg = None
    if kind == "remove_key":
        key, arg = None, data.draw(st.sampled_from(KEYS))
    elif isinstance(case.make("r"), ORMap):
        key = (data.draw(st.sampled_from(KEYS)), key)
    return kind, key, arg


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_value_matches_the_specification_of_the_causal_history(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    replicas = {r: case.make(r) for r in REPLICAS}
    history: dict[str, set[int]] = {r: set() for r in REPLICAS}
    clocks = {r: HybridLogicalClock(r, max_offset_ms=10**9) for r in REPLICAS}
    ops: dict[int, Op] = {}
    deltas: list[tuple[Any, set[int]]] = []
    for _ in range(data.draw(st.integers(1, 16))):
        me = data.draw(st.sampled_from(REPLICAS))
        action = data.draw(st.sampled_from(["op", "op", "merge", "delta"]))
        if action == "op" or (action == "delta" and not deltas):
            kind, key, arg = _draw_op(case, data, me, clocks)
            try:
                delta = _apply(replicas[me], kind, key, arg)
            except CRDTError:
                continue  # refused: nothing happened
            op = Op(len(ops), me, kind, key, arg, frozenset(history[me]))
            ops[op.id] = op
            history[me].add(op.id)
            carried = {op.id}
            if case.per_replica_delta and not delta.is_bottom():
                carried = {o.id for o in ops.values() if o.replica == me and o.kind == kind}
            deltas.append((delta, carried))
        elif action == "merge":
            src = data.draw(st.sampled_from(REPLICAS))
            replicas[me].merge(replicas[src].copy())
            history[me] |= history[src]
            for o in history[src]:  # LWW needs the clock to have seen what it merged
                if isinstance(ops[o].arg, tuple):
                    clocks[me].update(ops[o].arg[1], 0)
        else:
            delta, carried = deltas[data.draw(st.integers(0, len(deltas) - 1))]
            if not all(ops[o].past <= history[me] for o in carried):
                continue  # the guarantee is for causal delta delivery (see docs/crdt.md)
            replicas[me].merge(delta)
            history[me] |= carried
        for r in REPLICAS:
            h = [ops[i] for i in sorted(history[r])]
            assert replicas[r].value == case.spec(h), f"replica {r}, history {h}"


# Readable scenarios for the headline semantics.


def test_orset_remove_removes_only_the_adds_it_has_seen_and_concurrent_add_wins() -> None:
    a, b = ORSet("a"), ORSet("b")
    b.merge(a.add("x"))
    remove = b.remove("x")  # b saw a's add
    concurrent_add = a.add("x")  # a re-adds without seeing the remove
    a.merge(remove)
    b.merge(concurrent_add)
    assert "x" in a.value and "x" in b.value and a == b
    a.merge(a.remove("x"))  # a remove that saw everything removes it everywhere
    b.merge(a)
    assert a.value == b.value == frozenset()


def test_orset_removed_elements_leave_no_tombstones() -> None:
    s = ORSet("a")
    for i in range(1000):
        s.add(i)
    for i in range(1000):
        s.remove(i)
    assert s.value == frozenset()
    assert s.context.state() == ({"a": 1000}, {}, set())  # one integer: the compact causal context
    assert len(s.to_bytes()) < 40


def test_rwset_concurrent_remove_wins() -> None:
    a, b = RWSet("a"), RWSet("b")
    b.merge(a.add("x"))
    add_again, remove = a.add("x"), b.remove("x")
    a.merge(remove)
    b.merge(add_again)
    assert a.value == b.value == frozenset()
    a.merge(a.add("x"))  # an add that has seen the remove wins
    b.merge(a)
    assert a.value == b.value == frozenset({"x"})


def test_flags() -> None:
    ew_a, ew_b = EWFlag("a"), EWFlag("b")
    ew_b.merge(ew_a.enable())
    d1, d2 = ew_a.enable(), ew_b.disable()
    ew_a.merge(d2)
    ew_b.merge(d1)
    assert ew_a.value is True and ew_b.value is True  # enable wins
    dw_a, dw_b = DWFlag("a"), DWFlag("b")
    assert dw_a.value is False
    dw_b.merge(dw_a.enable())
    d1, d2 = dw_a.enable(), dw_b.disable()
    dw_a.merge(d2)
    dw_b.merge(d1)
    assert dw_a.value is False and dw_b.value is False  # disable wins


def test_mvregister_keeps_concurrent_values_until_a_write_sees_them() -> None:
    a, b = MVRegister("a"), MVRegister("b")
    da, db = a.write("left"), b.write("right")
    a.merge(db)
    b.merge(da)
    assert a.value == b.value == frozenset({"left", "right"})
    a.merge(a.write("resolved"))
    b.merge(a)
    assert b.value == frozenset({"resolved"})


def test_lww_register_picks_highest_hlc_with_node_tiebreak() -> None:
    a, b = LWWRegister("a"), LWWRegister("b")
    ta, tb = HLCTimestamp(100, 0, "a"), HLCTimestamp(100, 0, "b")
    da, db = a.set("from-a", ta), b.set("from-b", tb)
    a.merge(db)
    b.merge(da)
    assert a.value == b.value == "from-b"  # same wall and logical: node "b" > "a"
    late = a.set("later", HLCTimestamp(100, 1, "a"))
    b.merge(late)
    assert b.value == "later" and b.timestamp == HLCTimestamp(100, 1, "a")


def test_ormap_reset_remove_keeps_only_concurrent_updates() -> None:
    a, b = ORMap("a", ORSet), ORMap("b", ORSet)
    b.merge(a.update("cart", lambda s: s.add("apple")))
    remove = b.remove("cart")
    concurrent = a.update("cart", lambda s: s.add("pear"))
    a.merge(remove)
    b.merge(concurrent)
    assert a.value == b.value == {"cart": frozenset({"pear"})}


def test_bounded_counter_never_goes_negative_and_transfers_rights() -> None:
    a, b = BoundedCounter("a"), BoundedCounter("b")
    b.merge(a.increment(10))
    with pytest.raises(InsufficientRightsError):
        b.decrement(1)  # b holds no rights
    b.merge(a.transfer(4, "b"))
    assert b.rights() == 4 and a.rights() == 6
    a.merge(b.decrement(4))
    b.merge(a.decrement(6))
    assert a.value == b.value == 0
    with pytest.raises(InsufficientRightsError):
        a.decrement(1)


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(1, 5), st.integers(0, 2)), max_size=40
    )
)
def test_bounded_counter_is_never_negative_under_full_state_exchange(
    steps: list[tuple[int, int, int, int]],
) -> None:
    reps = [BoundedCounter(r) for r in REPLICAS]
    net = 0
    for who, action, n, other in steps:
        me = reps[who]
        try:
            if action == 0:
                me.increment(n)
                net += n
            elif action == 1:
                me.decrement(n)
                net -= n
            elif action == 2:
                me.transfer(n, REPLICAS[other]) if other != who else None
            else:
                me.merge(reps[other].copy())
        except InsufficientRightsError:
            pass  # refused locally, nothing changed
        for r in reps:
            assert r.value >= 0
            assert all(r.rights(x) >= 0 for x in REPLICAS)
    for r in reps:
        for s in reps:
            r.merge(s.copy())
    assert reps[0].value == net >= 0


def test_ormap_update_that_returns_no_delta_is_refused_and_the_map_stays_consistent() -> None:
    from stalwart.crdt import IncompatibleMergeError

    m = ORMap("a", ORSet)
    m.update("k", lambda s: s.add(1))
    with pytest.raises(IncompatibleMergeError):
        m.update("k", lambda s: (s.remove(1), None)[1])
    assert m.value == {}  # the removal happened; the map knows it
    other = ORMap("b", ORSet)
    other.merge(m)
    assert other == m and ORMap.from_bytes(m.to_bytes()) == m

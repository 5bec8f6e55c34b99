"""Lattice laws for every CRDT type, on states built by random programs of operations.

A program runs three replicas through random mutations, delta deliveries and full-state merges.
For the resulting states we check: merge is commutative, associative and idempotent; the join of
every delta ever produced, merged in any order with duplicates, equals the join of the full
states; every state and delta survives a to_bytes/from_bytes round trip.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stalwart.clocks import HLCTimestamp
from stalwart.crdt import (
    CRDT,
    BoundedCounter,
    CRDTError,
    DWFlag,
    EWFlag,
    GCounter,
    GSet,
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
ELEMS = st.sampled_from(["x", "y", "z", 1, 2])
AMOUNTS = st.integers(0, 5)
TIMES = st.builds(
    HLCTimestamp,
    st.integers(0, 4),
    st.integers(0, 2),
    st.sampled_from(REPLICAS),
)


@dataclass(frozen=True)
class Spec:
    make: Callable[[str], CRDT]
    ops: st.SearchStrategy[Callable[[Any], Any]]


def _op(name: str, *args: Any) -> Callable[[Any], Any]:
    def run(crdt: Any) -> Any:
        return getattr(crdt, name)(*args)

    run.__name__ = f"{name}{args!r}"
    return run


def _ops(*choices: st.SearchStrategy[Callable[[Any], Any]]) -> st.SearchStrategy[Callable[[Any], Any]]:
    return st.one_of(*choices)


def _set_ops() -> st.SearchStrategy[Callable[[Any], Any]]:
    return _ops(st.builds(lambda e: _op("add", e), ELEMS), st.builds(lambda e: _op("remove", e), ELEMS))


def _update(key: str, inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def run(m: Any) -> Any:
        return m.update(key, inner)

    return run


KEYS = st.sampled_from(["k1", "k2"])
SPECS: dict[str, Spec] = {
    "GCounter": Spec(GCounter, st.builds(lambda n: _op("increment", n), AMOUNTS)),
    "PNCounter": Spec(
        PNCounter,
        _ops(
            st.builds(lambda n: _op("increment", n), AMOUNTS),
            st.builds(lambda n: _op("decrement", n), AMOUNTS),
        ),
    ),
    "BoundedCounter": Spec(
        BoundedCounter,
        _ops(
            st.builds(lambda n: _op("increment", n), AMOUNTS),
            st.builds(lambda n: _op("decrement", n), AMOUNTS),
            st.builds(lambda n, to: _op("transfer", n, to), AMOUNTS, st.sampled_from(REPLICAS)),
        ),
    ),
    "GSet": Spec(GSet, st.builds(lambda e: _op("add", e), ELEMS)),
    "TwoPSet": Spec(TwoPSet, _set_ops()),
    "LWWElementSet": Spec(
        LWWElementSet,
        _ops(
            st.builds(lambda e, t: _op("add", e, t), ELEMS, TIMES),
            st.builds(lambda e, t: _op("remove", e, t), ELEMS, TIMES),
        ),
    ),
    "ORSet": Spec(ORSet, _set_ops()),
    "RWSet": Spec(RWSet, _set_ops()),
    "LWWRegister": Spec(LWWRegister, st.builds(lambda v, t: _op("set", v, t), ELEMS, TIMES)),
    "MVRegister": Spec(MVRegister, _ops(st.builds(lambda v: _op("write", v), ELEMS), st.just(_op("clear")))),
    "EWFlag": Spec(EWFlag, st.sampled_from([_op("enable"), _op("disable")])),
    "DWFlag": Spec(DWFlag, st.sampled_from([_op("enable"), _op("disable")])),
    "ORMap[ORSet]": Spec(
        lambda r: ORMap(r, ORSet),
        _ops(
            st.builds(lambda k, e: _update(k, _op("add", e)), KEYS, ELEMS),
            st.builds(lambda k, e: _update(k, _op("remove", e)), KEYS, ELEMS),
            st.builds(lambda k: _op("remove", k), KEYS),
        ),
    ),
    "ORMap[ORMap[MVRegister]]": Spec(
        lambda r: ORMap(r, ORMap.of(MVRegister)),
        _ops(
            st.builds(lambda k, j, v: _update(k, _update(j, _op("write", v))), KEYS, KEYS, ELEMS),
            st.builds(lambda k, j: _update(k, _op("remove", j)), KEYS, KEYS),
            st.builds(lambda k: _op("remove", k), KEYS),
        ),
    ),
    "ORMap[DWFlag]": Spec(
        lambda r: ORMap(r, DWFlag),
        _ops(
            st.builds(lambda k, f: _update(k, _op(f)), KEYS, st.sampled_from(["enable", "disable"])),
            st.builds(lambda k: _op("remove", k), KEYS),
        ),
    ),
}

# A step: (replica index, kind, payload). kind 0: mutate; 1: merge another's full state;
# 2: deliver a random earlier delta (maybe again: duplicates are part of the test).
STEP = st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 10_000))


@dataclass
class Run:
    replicas: list[CRDT]
    deltas: list[CRDT]


def run_program(spec: Spec, data: st.DataObject, steps: int) -> Run:
    replicas = [spec.make(r) for r in REPLICAS]
    deltas: list[CRDT] = []
    for _ in range(steps):
        who, kind, pick = data.draw(STEP)
        me = replicas[who]
        if kind == 0 or (kind == 2 and not deltas):
            op = data.draw(spec.ops)
            try:
                delta = op(me)
            except CRDTError:
                continue  # a refused operation (precondition, rights) changes nothing
            deltas.append(delta)
        elif kind == 1:
            me.merge(replicas[pick % 3].copy())
        else:
            me.merge(deltas[pick % len(deltas)])
    return Run(replicas, deltas)


def join(*states: CRDT) -> CRDT:
    out = states[0].copy()
    for s in states[1:]:
        out.merge(s)
    return out


# Pruning is a mutator too: any replica may (mis)prune any other here. The laws must hold
# whatever the order (the safety conditions of docs/crdt.md matter only for the *value*).
PRUNE = st.builds(lambda r: _op("prune", r), st.sampled_from(REPLICAS))
PRUNABLE = {"GCounter", "PNCounter", "ORSet", "RWSet", "MVRegister", "EWFlag", "DWFlag", "ORMap[ORSet]"}
PRUNABLE |= {"ORMap[ORMap[MVRegister]]", "ORMap[DWFlag]"}
for _name in PRUNABLE:
    SPECS[_name] = Spec(SPECS[_name].make, st.one_of(SPECS[_name].ops, PRUNE))

PARAMS = pytest.mark.parametrize("name", sorted(SPECS))
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PARAMS
@SETTINGS
@given(data=st.data())
def test_merge_is_commutative_associative_idempotent(name: str, data: st.DataObject) -> None:
    a, b, c = run_program(SPECS[name], data, data.draw(st.integers(1, 25))).replicas
    assert join(a, b) == join(b, a)
    assert join(join(a, b), c) == join(a, join(b, c))
    assert join(a, a) == a
    ab = join(a, b)
    assert join(ab, b) == ab  # absorbing something already included changes nothing
    assert join(a, b).value == join(b, a).value


@PARAMS
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**32))
def test_deltas_in_any_order_with_duplicates_equal_full_state_join(
    name: str, data: st.DataObject, seed: int
) -> None:
    run = run_program(SPECS[name], data, data.draw(st.integers(1, 25)))
    full = join(*run.replicas)
    rng = random.Random(seed)
    shuffled = run.deltas + rng.sample(run.deltas, k=len(run.deltas) // 2)  # duplicates
    rng.shuffle(shuffled)
    fresh = SPECS[name].make("observer")
    for d in shuffled:
        fresh.merge(d)
    assert fresh == full
    assert fresh.value == full.value


@PARAMS
@SETTINGS
@given(data=st.data())
def test_states_and_deltas_round_trip_through_bytes(name: str, data: st.DataObject) -> None:
    run = run_program(SPECS[name], data, data.draw(st.integers(1, 15)))
    for s in [*run.replicas, *run.deltas]:
        back = type(s).from_bytes(s.to_bytes())
        assert back == s
        assert back.value == s.value
        assert back.replica == s.replica


@PARAMS
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_mutators_return_a_delta_of_the_same_type(name: str, data: st.DataObject) -> None:
    spec = SPECS[name]
    replica = spec.make("ra")
    op = data.draw(spec.ops)
    try:
        delta = op(replica)
    except CRDTError:
        return
    assert type(delta) is type(replica)
    other = spec.make("rb")
    other.merge(delta)
    assert other.value == replica.value


def test_every_public_type_has_a_law_spec() -> None:
    from stalwart.crdt import ALL_TYPES

    covered = {type(spec.make("r")) for spec in SPECS.values()}
    assert covered == set(ALL_TYPES)

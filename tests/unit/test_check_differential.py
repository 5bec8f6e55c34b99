"""The fast checker against a brute-force one, on random small histories (Hypothesis).

The generator builds histories that are linearizable by construction (each operation takes effect
at a point inside its interval; INFO operations take effect or not), then sometimes corrupts one
output. The brute force tries every subset of INFO operations and every order of the rest.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.check import CAS_REGISTER, KV, Model, Operation, Status, Verdict, check_operations
from stalwart.check._models import ILLEGAL

# STALWART_LONG=1 runs ten times as many random histories (about a minute).
EXAMPLES = 3000 if os.environ.get("STALWART_LONG") else 300


def _precedes(a: Operation, b: Operation) -> bool:
    return a.status is not Status.INFO and a.complete_time is not None and a.complete_time < b.invoke_time


def _legal(seq: Sequence[Operation], model: Model) -> bool:
    states: dict[Any, Any] = {}
    for op in seq:
        ok, states[op.key] = model.step(states.get(op.key, model.init()), op)
        if not ok:
            return False
    return True


def _in_real_time_order(seq: Sequence[Operation]) -> bool:
    return not any(_precedes(seq[j], seq[i]) for i in range(len(seq)) for j in range(i + 1, len(seq)))


def brute_force(ops: Sequence[Operation], model: Model) -> bool:
    kept = [op for op in ops if model.happened(op)]
    determinate = [op for op in kept if op.status is not Status.INFO]
    info = [op for op in kept if op.status is Status.INFO]
    for size in range(len(info) + 1):
        for chosen in itertools.combinations(info, size):
            for seq in itertools.permutations(determinate + list(chosen)):
                if _in_real_time_order(seq) and _legal(seq, model):
                    return True
    return False


def _apply(model: Model, state: Any, op: Operation) -> tuple[Operation, Any]:
    """Give ``op`` the outcome it has when it takes effect in ``state``."""
    if op.f in ("read", "get"):
        op = Operation(op.process, op.f, op.key, None, state, op.status, op.invoke_time, op.complete_time)
    elif op.f == "cas" and op.status is not Status.INFO:
        status = Status.OK if state == op.value[0] else Status.FAIL
        op = Operation(op.process, op.f, op.key, op.value, None, status, op.invoke_time, op.complete_time)
    ok, after = model.step(state, op)
    assert ok
    return op, after


def _outcome(op: Operation) -> tuple[Status, int, int | None]:
    return op.status, op.invoke_time, op.complete_time


@st.composite
def histories(draw: st.DrawFn, kv: bool) -> tuple[list[Operation], bool]:
    model = KV if kv else CAS_REGISTER
    values = ["a", "b", ""] if kv else [None, 0, 1, 2]
    kinds = ["get", "put", "append", "cas", "delete"] if kv else ["read", "write", "cas"]
    planned = []
    for process in range(draw(st.integers(1, 6))):
        start = draw(st.integers(0, 12))
        end = start + draw(st.integers(0, 6))
        f = draw(st.sampled_from(kinds))
        value: Any = None
        if f == "cas":
            value = (draw(st.sampled_from(values)), draw(st.sampled_from(values)))
        elif f in ("write", "put", "append"):
            value = draw(st.sampled_from(values[1:] if kv else [0, 1, 2]))
        status = draw(st.sampled_from([Status.OK, Status.OK, Status.OK, Status.INFO, Status.FAIL]))
        key = draw(st.sampled_from(["x", "y"])) if kv else None
        done = None if status is Status.INFO and draw(st.booleans()) else end
        op = Operation(process, f, key, value, None, status, start, done)
        effect = draw(st.booleans()) if status is Status.INFO else status is Status.OK or f == "cas"
        planned.append((draw(st.integers(start, end)), process, op, effect))
    states: dict[Any, Any] = {}
    ops = []
    for _, _, op, effect in sorted(planned, key=lambda p: (p[0], p[1])):
        if effect:
            op, states[op.key] = _apply(model, states.get(op.key, model.init()), op)  # noqa: PLW2901
        ops.append(op)
    corrupt = draw(st.booleans())
    if corrupt:
        i = draw(st.integers(0, len(ops) - 1))
        op = ops[i]
        if op.f in ("read", "get"):
            output = draw(st.sampled_from(values))
            ops[i] = Operation(
                op.process, op.f, op.key, None, output, op.status, op.invoke_time, op.complete_time
            )
        elif op.f == "cas" and op.status is not Status.INFO:
            flipped = Status.FAIL if op.status is Status.OK else Status.OK
            ops[i] = Operation(
                op.process, op.f, op.key, op.value, None, flipped, op.invoke_time, op.complete_time
            )
    return sorted(ops, key=lambda o: o.invoke_time), corrupt


def _check_witness(ops: Sequence[Operation], model: Model, witness: Sequence[Operation]) -> None:
    """A linearizable verdict comes with a witness: a legal order that respects real time."""
    kept = [op for op in ops if model.happened(op)]
    assert {id(op) for op in kept if op.status is not Status.INFO} <= {id(op) for op in witness}
    assert {id(op) for op in witness} <= {id(op) for op in kept}
    assert _in_real_time_order(witness)
    assert _legal(witness, model)


def _agree(ops: list[Operation], corrupt: bool, model: Model) -> None:
    result = check_operations(ops, model)
    expected = brute_force(ops, model)
    assert result.verdict is (Verdict.LINEARIZABLE if expected else Verdict.NOT_LINEARIZABLE)
    if not corrupt:
        assert expected, "the generator built a history that is linearizable by construction"
    if expected:
        for part in result.partitions:  # a witness per partition (per key for kv)
            _check_witness([op for op in ops if op.key == part.key], model, part.linearization)
    else:
        failure = result.failure
        assert failure is not None and failure.blocking is not None
        assert _legal(failure.linearization, model)


@settings(max_examples=EXAMPLES, deadline=None)
@given(histories(kv=False))
def test_cas_register_agrees_with_brute_force(case: tuple[list[Operation], bool]) -> None:
    _agree(*case, CAS_REGISTER)


@settings(max_examples=EXAMPLES, deadline=None)
@given(histories(kv=True))
def test_kv_agrees_with_brute_force(case: tuple[list[Operation], bool]) -> None:
    _agree(*case, KV)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([CAS_REGISTER, KV]),
    st.sampled_from(["read", "get", "write", "put", "append", "delete", "cas"]),
    st.sampled_from([Status.OK, Status.FAIL, Status.INFO]),
    st.sampled_from([None, "", "a", "b"]),
    st.sampled_from([None, "", "a", "b"]),
    st.sampled_from([None, "", "a", "ab"]),
)
def test_built_in_transitions_match_step(
    model: Model, f: str, status: Status, arg: Any, output: Any, state: Any
) -> None:
    # The checker uses Model.transition (fast closures); the brute force uses Model.step.
    if model is CAS_REGISTER and f in ("append", "delete"):
        return
    if model is KV and state is None:
        state = ""
    value = (arg, output) if f == "cas" else arg
    if f == "append" and value is None:
        value = "z"
    o = Operation(0, f, None, value, output, status, 0, None if status is Status.INFO else 1)
    legal, after = model.step(state, o)
    assert model.transition(o)(state) == (after if legal else ILLEGAL)

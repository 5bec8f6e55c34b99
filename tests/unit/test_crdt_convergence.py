"""The convergence checker accepts correct CRDTs and catches broken ones, including user types."""

from __future__ import annotations

from typing import Any

from stalwart.check.convergence import (
    ConvergenceVerdict,
    CrdtOp,
    Sync,
    check_convergence,
    check_operation_log,
    diff_values,
)
from stalwart.crdt import GCounter, ORSet, PNCounter


class SummingCounter(GCounter):
    """Deliberately broken: merge adds the counts instead of taking the max (not idempotent)."""

    __slots__ = ()

    def _merge(self, other: Any) -> None:
        for r, n in other._vecs[0].items():
            self._vecs[0][r] = self._vecs[0].get(r, 0) + n


class LazyDeltaSet(ORSet):
    """Deliberately broken: ``add`` applies locally but returns an empty delta."""

    __slots__ = ()

    def add(self, item: object) -> Any:
        super().add(item)
        return LazyDeltaSet(self.replica)


class MaxRegister:
    """A user's own CRDT, not from stalwart: the max of the integers written."""

    def __init__(self, name: str) -> None:
        self.name, self.n = name, 0

    @property
    def value(self) -> int:
        return self.n

    def write(self, n: int) -> MaxRegister:
        self.n = max(self.n, n)
        out = type(self)(self.name)
        out.n = n
        return out

    def merge(self, other: MaxRegister) -> None:
        self.n = max(self.n, other.n)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MaxRegister) and other.n == self.n

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"MaxRegister({self.n})"


class LastWriterTakesAll(MaxRegister):
    """A broken user type: merge blindly takes the other side's value (not commutative)."""

    def merge(self, other: MaxRegister) -> None:
        self.n = other.n


def _counters(cls: type[GCounter]) -> dict[str, GCounter]:
    reps = {r: cls(r) for r in "abc"}
    for i, r in enumerate(reps.values()):
        r.increment(i + 1)
    return reps


def test_correct_replicas_converge() -> None:
    result = check_convergence(_counters(GCounter), expected=6)
    assert result.ok and result.value == 6
    assert "converged" in result.report()


def test_a_non_idempotent_counter_merge_is_caught() -> None:
    result = check_convergence(_counters(SummingCounter), expected=6)
    assert not result.ok
    assert result.verdict is ConvergenceVerdict.LAW_VIOLATED
    assert any("idempotence" in f.check for f in result.findings)
    assert "x⊔x = 2" in result.report() or "x⊔x" in result.report()


def test_operation_log_with_oracle_catches_the_broken_counter() -> None:
    log = [CrdtOp("a", "increment", (2,)), CrdtOp("b", "increment", (3,)), Sync("a", "b"), Sync("b", "a")]

    def total(ops: Any) -> int:
        return sum(op.args[0] for op in ops)

    good = check_operation_log(GCounter, log, oracle=total)
    assert good.ok and good.value == 5
    bad = check_operation_log(SummingCounter, log, oracle=total)
    assert not bad.ok


def test_user_types_work_and_a_non_commutative_user_merge_is_caught() -> None:
    log = [CrdtOp("a", "write", (3,)), CrdtOp("b", "write", (5,)), Sync("a", "b")]
    good = check_operation_log(MaxRegister, log, oracle=lambda ops: max(op.args[0] for op in ops))
    assert good.ok and good.value == 5
    bad = check_operation_log(LastWriterTakesAll, log)
    assert bad.verdict is ConvergenceVerdict.LAW_VIOLATED
    assert any("commutativity" in f.check for f in bad.findings)


def test_states_that_differ_after_healing_are_reported_with_a_diff() -> None:
    a, b = ORSet("a"), ORSet("b")
    a.add("x")
    b.add("y")
    result = check_convergence({"a": a, "b": b}, require_already_equal=True)
    assert result.verdict is ConvergenceVerdict.DIVERGED
    text = result.report()
    assert "only in a: {'x'}" in text and "only in b: {'y'}" in text
    # Without the requirement the exchange makes them equal.
    assert check_convergence({"a": a, "b": b}).ok


def test_oracle_mismatch_is_reported() -> None:
    a, b = PNCounter("a"), PNCounter("b")
    a.increment(5)
    b.decrement(2)
    result = check_convergence({"a": a, "b": b}, expected=4)
    assert result.verdict is ConvergenceVerdict.ORACLE_MISMATCH
    assert "converged = 3" in result.report() and "oracle = 4" in result.report()


def test_a_mutator_returning_a_wrong_delta_is_caught() -> None:
    log = [CrdtOp("a", "add", ("x",)), CrdtOp("b", "add", ("y",))]
    assert check_operation_log(ORSet, log).ok
    bad = check_operation_log(LazyDeltaSet, log)
    assert bad.verdict is ConvergenceVerdict.DELTA_MISMATCH


def test_diff_values_of_nested_maps() -> None:
    text = diff_values({"k": frozenset({1, 2}), "j": 1}, {"k": frozenset({2})}, "L", "R")
    assert "key 'j': only in L = 1" in text and "only in L: {1}" in text


def test_bad_input_gets_a_typed_error() -> None:
    import pytest

    from stalwart.check.convergence import ConvergenceInputError

    with pytest.raises(ConvergenceInputError):
        check_convergence({})
    with pytest.raises(ConvergenceInputError):
        check_operation_log(GCounter, [CrdtOp("a", "increment", (1,))], replicas=["b"])

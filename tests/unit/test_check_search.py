"""Checker semantics, reports, limits and pluggable models."""

from __future__ import annotations

import time
from typing import Any

import pytest

from stalwart.check import (
    CAS_REGISTER,
    KV,
    MODELS,
    Model,
    ModelError,
    Operation,
    Status,
    UnknownModelError,
    Verdict,
    check_operations,
)

OK, FAIL, INFO = Status.OK, Status.FAIL, Status.INFO


def op(
    p: int, f: str, value: Any, output: Any, status: Status, t0: int, t1: int | None, key: str | None = None
):
    return Operation(p, f, key, value, output, status, t0, t1)


def verdict(ops: list[Operation], model: str | Model = "cas-register") -> Verdict:
    return check_operations(ops, model).verdict


LIN, NOT = Verdict.LINEARIZABLE, Verdict.NOT_LINEARIZABLE


def test_sequential_register() -> None:
    w = op(0, "write", 1, None, OK, 0, 1)
    assert verdict([w, op(1, "read", None, 1, OK, 2, 3)]) is LIN
    assert verdict([w, op(1, "read", None, None, OK, 2, 3)]) is NOT
    assert verdict([op(1, "read", None, None, OK, 0, 1)]) is LIN  # nil = absent, the initial state


def test_concurrent_operations_may_take_effect_in_either_order() -> None:
    ops = [
        op(0, "write", 1, None, OK, 0, 10),
        op(1, "read", None, None, OK, 1, 2),
        op(2, "read", None, 1, OK, 3, 4),
    ]
    assert verdict(ops) is LIN
    # ...but a read cannot go back to the old value once the new one was seen
    assert verdict([*ops, op(3, "read", None, None, OK, 5, 6)]) is NOT


def test_a_failed_cas_happened_as_a_mismatched_compare() -> None:
    w = op(0, "write", 1, None, OK, 0, 1)
    assert verdict([w, op(1, "cas", (2, 3), None, FAIL, 2, 3)]) is LIN
    # the value was 1: a cas 1->3 that failed is a violation
    assert verdict([w, op(1, "cas", (1, 3), None, FAIL, 2, 3)]) is NOT
    assert verdict([w, op(1, "cas", (1, 3), None, OK, 2, 3), op(2, "read", None, 3, OK, 4, 5)]) is LIN


def test_other_failures_did_not_happen() -> None:
    failed = op(0, "write", 5, None, FAIL, 0, 1)
    assert verdict([failed, op(1, "read", None, None, OK, 2, 3)]) is LIN
    assert verdict([failed, op(1, "read", None, 5, OK, 2, 3)]) is NOT


def test_info_operations_may_happen_any_time_later_or_never() -> None:
    info = op(0, "write", 7, None, INFO, 0, None)
    read_nil, read_7 = op(1, "read", None, None, OK, 10, 11), op(2, "read", None, 7, OK, 100, 101)
    assert verdict([info, read_nil]) is LIN  # never
    assert verdict([info, read_7]) is LIN  # long after its client gave up
    assert verdict([info, read_nil, read_7]) is LIN
    assert verdict([info, read_7, op(3, "read", None, None, OK, 200, 201)]) is NOT
    # but never before its invocation
    assert verdict([read_7, op(0, "write", 7, None, INFO, 500, 501)]) is NOT


def test_kv_keys_are_independent_and_start_empty() -> None:
    ops = [
        op(0, "get", None, "", OK, 0, 1, key="a"),
        op(0, "append", "x", None, OK, 2, 3, key="a"),
        op(1, "put", "z", None, OK, 2, 3, key="b"),
        op(1, "get", None, "x", OK, 4, 5, key="a"),
        op(2, "append", "y", None, OK, 6, 7, key="a"),
        op(2, "get", None, "xy", OK, 8, 9, key="a"),
        op(3, "get", None, "z", OK, 8, 9, key="b"),
        op(3, "delete", None, None, OK, 10, 11, key="b"),
        op(3, "get", None, None, OK, 12, 13, key="b"),  # absent reads as "" (nil accepted)
        op(4, "cas", ("xy", "q"), None, OK, 12, 13, key="a"),
        op(4, "get", None, "q", OK, 14, 15, key="a"),
    ]
    result = check_operations(ops, "kv")
    assert result.verdict is LIN and [p.key for p in result.partitions] == ["a", "b"]
    bad = [*ops, op(5, "get", None, "xy", OK, 20, 21, key="a")]
    result = check_operations(bad, KV)
    assert result.verdict is NOT and result.failure is not None and result.failure.key == "a"


def test_touching_intervals_count_as_concurrent() -> None:
    assert verdict([op(0, "write", 1, None, OK, 0, 5), op(1, "read", None, None, OK, 5, 6)]) is LIN


def test_a_violation_is_explained() -> None:
    ops = [
        op(0, "write", 1, None, OK, 0, 1),
        op(1, "write", 2, None, OK, 2, 3),
        op(2, "read", None, 1, OK, 4, 5),
        op(3, "read", None, 2, OK, 4, 6),
    ]
    result = check_operations(ops)
    failure = result.failure
    assert result.verdict is NOT and failure is not None and failure.key is None
    assert failure.linearization == (ops[0], ops[1], ops[3])
    assert failure.final_state == "2"
    assert failure.blocking is ops[2]
    assert failure.unplaced == (ops[2],)
    summary = result.to_json(CAS_REGISTER.describe_op)
    assert summary["failure"]["blocking"] == "p2 read() -> 1"
    assert summary["failure"]["longest_prefix_length"] == 3


def _hard(n: int) -> list[Operation]:
    """n concurrent appends and a read no order explains: every ordered subset gets explored."""
    ops = [op(i, "append", f"<{i}>", None, OK, 0, 100, key="k") for i in range(n)]
    return [*ops, op(n, "get", None, "impossible", OK, 101, 102, key="k")]


def test_timeout_answers_unknown_never_a_wrong_verdict() -> None:
    started = time.monotonic()
    result = check_operations(_hard(12), "kv", timeout_s=0.3)
    assert time.monotonic() - started < 5
    assert result.verdict is Verdict.UNKNOWN
    assert result.partitions[0].reason == "timeout"
    assert check_operations(_hard(4), "kv", timeout_s=30).verdict is NOT


def test_the_state_limit_answers_unknown() -> None:
    result = check_operations(_hard(10), "kv", max_states=1_000)
    assert result.verdict is Verdict.UNKNOWN and result.partitions[0].reason == "state-limit"


def test_a_quick_failure_is_not_hidden_by_a_hard_partition() -> None:
    quick_bad = [op(0, "put", "a", None, OK, 0, 1, key="z"), op(1, "get", None, "b", OK, 2, 3, key="z")]
    result = check_operations(_hard(12) + quick_bad, "kv", timeout_s=20)
    assert result.verdict is NOT and result.failure is not None and result.failure.key == "z"
    assert result.elapsed_s < 5


class Counter(Model):
    """The docs' example: a counter with add and read."""

    name = "counter"

    def init(self) -> int:
        return 0

    def step(self, state: int, op: Operation) -> tuple[bool, int]:
        if op.f == "add":
            return True, state + op.value
        return op.status is Status.INFO or op.output == state, state


def test_a_user_model_plugs_in() -> None:
    ops = [
        op(0, "add", 2, None, OK, 0, 10),
        op(1, "add", 3, None, OK, 0, 10),
        op(2, "read", None, 3, OK, 1, 2),
        op(3, "read", None, 5, OK, 11, 12),
    ]
    assert verdict(ops, Counter()) is LIN
    assert verdict([*ops, op(4, "read", None, 2, OK, 13, 14)], Counter()) is NOT
    MODELS["counter"] = Counter()
    try:
        assert check_operations(ops, "counter").model == "counter"
    finally:
        del MODELS["counter"]


def test_bad_models_and_operations_are_typed_errors() -> None:
    with pytest.raises(UnknownModelError, match="cas-register"):
        check_operations([], "no-such-model")
    with pytest.raises(ModelError, match="increment"):
        check_operations([op(0, "increment", 1, None, OK, 0, 1)])
    with pytest.raises(ModelError, match="from"):
        check_operations([op(0, "cas", 1, None, OK, 0, 1)])
    with pytest.raises(ValueError, match="complete_time"):
        op(0, "read", None, None, OK, 0, None)
    with pytest.raises(ValueError, match="before"):
        op(0, "read", None, None, OK, 5, 4)


def test_worker_processes_give_the_same_answers() -> None:
    quick_bad = [op(0, "put", "a", None, OK, 0, 1, key="z"), op(1, "get", None, "b", OK, 2, 3, key="z")]
    result = check_operations(_hard(12) + quick_bad, "kv", timeout_s=20, jobs=2)
    assert result.verdict is NOT and result.failure is not None and result.failure.key == "z"
    assert result.failure.blocking is not None and result.failure.blocking.output == "b"
    assert result.failure.final_state == "'a'"
    assert result.elapsed_s < 5
    good = [op(0, "put", "a", None, OK, 0, 1, key="z"), op(1, "get", None, "a", OK, 2, 3, key="z")]
    easy = _hard(3)[:-1]
    result = check_operations(easy + good, "kv", jobs=2)
    assert result.verdict is LIN and all(p.verdict is LIN for p in result.partitions)
    assert [op.output for op in result.partitions[1].linearization] == [None, "a"]


def test_worker_processes_honour_the_timeout() -> None:
    other = [op(20 + o.process, o.f, o.value, o.output, o.status, o.invoke_time, o.complete_time, key="j")
             for o in _hard(12)]  # fmt: skip
    started = time.monotonic()
    result = check_operations(_hard(12) + other, "kv", timeout_s=0.3, jobs=2)
    assert time.monotonic() - started < 5
    assert result.verdict is Verdict.UNKNOWN
    assert {p.reason for p in result.partitions} == {"timeout"}


def test_a_model_error_in_a_worker_is_raised_here() -> None:
    ops = [op(0, "put", "a", None, OK, 0, 1, key="a"), op(1, "frobnicate", None, None, OK, 0, 1, key="b")]
    with pytest.raises(ModelError, match="frobnicate"):
        check_operations(ops, "kv", jobs=2)

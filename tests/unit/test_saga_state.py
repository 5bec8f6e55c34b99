"""The pure saga state: what runs next, and what compensates, from the log alone."""

from __future__ import annotations

import pytest

from stalwart.errors import DecodeError
from stalwart.txn.saga import Kind, Record, SagaState, SagaStatus, StepStatus, Work

LAYOUT = (("a",), ("b", "c"), ("d",))


def state(*records: tuple[Kind, str]) -> SagaState:
    s = SagaState("s1", "order", LAYOUT)
    s.apply(Record("s1", Kind.SAGA_STARTED, data='{"x": 1}'))
    for kind, step in records:
        s.apply(Record("s1", kind, step, '"r"'))
    return s


def test_forward_runs_groups_in_order_and_members_in_parallel() -> None:
    s = state()
    assert s.next_work(frozenset()) == [("a", Work.ACTION)]
    s = state((Kind.STEP_STARTED, "a"), (Kind.STEP_DONE, "a"))
    assert s.next_work(frozenset()) == [("b", Work.ACTION), ("c", Work.ACTION)]
    assert s.next_work(frozenset({"b"})) == [("c", Work.ACTION)]
    done = [(k, x) for x in "abcd" for k in (Kind.STEP_STARTED, Kind.STEP_DONE)]
    s = state(*done)
    assert s.status is SagaStatus.COMPLETED and s.next_work(frozenset()) == []


def test_a_started_step_without_an_end_runs_again_after_recovery() -> None:
    s = state((Kind.STEP_STARTED, "a"))
    assert s.steps["a"] is StepStatus.STARTED
    assert s.next_work(frozenset()) == [("a", Work.ACTION)]


def test_failure_compensates_every_started_step_in_reverse_group_order() -> None:
    s = state(
        (Kind.STEP_STARTED, "a"), (Kind.STEP_DONE, "a"),
        (Kind.STEP_STARTED, "b"), (Kind.STEP_STARTED, "c"), (Kind.STEP_DONE, "b"), (Kind.STEP_FAILED, "c"),
    )  # fmt: skip
    assert s.status is SagaStatus.COMPENSATING
    assert sorted(s.next_work(frozenset())) == [("b", Work.COMPENSATION), ("c", Work.COMPENSATION)]
    assert s.next_work(frozenset({"x"})) == [], "forward work in flight finishes first"
    s.apply(Record("s1", Kind.COMP_DONE, "b"))
    s.apply(Record("s1", Kind.COMP_DONE, "c"))
    assert s.next_work(frozenset()) == [("a", Work.COMPENSATION)]
    s.apply(Record("s1", Kind.COMP_STARTED, "a"))
    assert s.next_work(frozenset()) == [("a", Work.COMPENSATION)], "a started compensation reruns"
    s.apply(Record("s1", Kind.COMP_DONE, "a"))
    assert s.status is SagaStatus.COMPENSATED
    assert s.steps["d"] is StepStatus.PENDING, "a step that never started is not compensated"


def test_abort_park_and_resume() -> None:
    s = state((Kind.STEP_STARTED, "a"), (Kind.STEP_DONE, "a"), (Kind.ABORT_REQUESTED, ""))
    assert s.status is SagaStatus.COMPENSATING and s.abort_requested
    s.apply(Record("s1", Kind.COMP_FAILED, "a", '"boom"'))
    assert s.status is SagaStatus.PARKED and s.next_work(frozenset()) == []
    s.apply(Record("s1", Kind.RESUME_REQUESTED))
    assert s.next_work(frozenset()) == [("a", Work.COMPENSATION)]


def test_abort_after_completion_changes_nothing() -> None:
    done = [(k, x) for x in "abcd" for k in (Kind.STEP_STARTED, Kind.STEP_DONE)]
    s = state(*done, (Kind.ABORT_REQUESTED, ""))
    assert s.status is SagaStatus.COMPLETED


def test_records_for_unknown_steps_are_corruption() -> None:
    with pytest.raises(DecodeError):
        state((Kind.STEP_DONE, "zzz"))
    with pytest.raises(ValueError):
        SagaState("s", "n", (("a",), ("a",)))

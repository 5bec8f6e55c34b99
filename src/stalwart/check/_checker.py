"""check_operations: split a history by the model's partitions and search them interleaved.

Every partition gets its own resumable search, and the searches take turns in slices of
``slice_steps`` steps (round robin). A hard partition (one whose search space explodes) therefore
cannot hide a quick failure in another: the first partition found not linearizable decides the
verdict at once. A deadline (``timeout_s``) or the state limit answers ``UNKNOWN``, never a guess.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Generator, Iterable, Sequence

from stalwart.check._errors import ModelError
from stalwart.check._history import Operation
from stalwart.check._models import Model, resolve_model
from stalwart.check._parallel import can_fork, run_forked
from stalwart.check._result import CheckResult, PartitionResult, Verdict
from stalwart.check._search import SearchOutcome, SearchStatus, event_order, search

#: Steps one partition runs before the next takes its turn (and the deadline is checked).
DEFAULT_SLICE_STEPS = 2_000
#: Memoised configurations a single partition may hold before the answer is UNKNOWN (~150 B each).
DEFAULT_MAX_STATES = 4_000_000

_Search = Generator[None, None, SearchOutcome]


def check_operations(
    ops: Iterable[Operation],
    model: str | Model = "cas-register",
    timeout_s: float | None = None,
    *,
    max_states: int = DEFAULT_MAX_STATES,
    slice_steps: int = DEFAULT_SLICE_STEPS,
    jobs: int = 1,
) -> CheckResult:
    """Decide whether ``ops`` is linearizable with respect to ``model``.

    ``model`` is a name in :data:`stalwart.check.MODELS` or a :class:`Model`. ``timeout_s`` bounds
    the search (the history's preparation is not interrupted); when it passes, or a partition
    holds more than ``max_states`` memoised configurations, the verdict is ``UNKNOWN``. With
    ``jobs > 1`` (POSIX only) the partitions are shared among that many forked worker processes,
    each interleaving its own; otherwise all are interleaved in this process.
    """
    if slice_steps < 1 or max_states < 1 or jobs < 1:
        raise ValueError("slice_steps, max_states and jobs must be positive")
    started = time.monotonic()
    deadline = None if timeout_s is None else started + timeout_s
    chosen = resolve_model(model)
    kept = [op for op in ops if chosen.happened(op)]
    parts = chosen.partition(kept)
    indexed = [(i, part_ops) for i, (_, part_ops) in enumerate(parts)]
    texts: dict[int, str] = {}
    if jobs > 1 and len(parts) > 1 and can_fork():
        outcomes, texts, stopped = run_forked(
            indexed,
            chosen,
            jobs,
            deadline,
            lambda some: _interleave(some, chosen, deadline, max_states, slice_steps),
        )
    else:
        outcomes, stopped = _interleave(indexed, chosen, deadline, max_states, slice_steps)
    results = tuple(
        _partition_result(key, part_ops, chosen, outcomes.get(i), stopped, state_text=texts.get(i))
        for i, (key, part_ops) in enumerate(parts)
    )
    return CheckResult(
        verdict=_overall(results),
        model=chosen.name,
        operations=len(kept),
        partitions=results,
        elapsed_s=time.monotonic() - started,
    )


def _interleave(
    parts: list[tuple[int, list[Operation]]],
    model: Model,
    deadline: float | None,
    max_states: int,
    slice_steps: int,
) -> tuple[dict[int, SearchOutcome], str]:
    """Round robin over the partitions' searches; stops at the first failure or the deadline.

    Returns the finished searches' outcomes and why the others stopped (``stopped`` or ``timeout``).
    """
    runs: deque[tuple[int, _Search]] = deque()
    for index, part_ops in parts:
        runs.append((index, search(part_ops, model, slice_steps=slice_steps, max_states=max_states)))
    outcomes: dict[int, SearchOutcome] = {}
    stopped = "stopped"
    try:
        while runs:
            index, run = runs.popleft()
            try:
                next(run)
            except StopIteration as done:
                outcomes[index] = done.value
                if done.value.status is SearchStatus.NOT_LINEARIZABLE:
                    break
                continue
            except (TypeError, ValueError) as exc:
                # A model that returned an unhashable state or choked on an argument.
                raise ModelError(f"model {model.name!r} failed: {exc}") from exc
            runs.append((index, run))
            if deadline is not None and time.monotonic() > deadline:
                stopped = "timeout"
                break
    finally:
        for _, run in runs:
            run.close()
    return outcomes, stopped


def _overall(results: Sequence[PartitionResult]) -> Verdict:
    verdicts = {r.verdict for r in results}
    if Verdict.NOT_LINEARIZABLE in verdicts:
        return Verdict.NOT_LINEARIZABLE
    if Verdict.UNKNOWN in verdicts:
        return Verdict.UNKNOWN
    return Verdict.LINEARIZABLE


def _partition_result(
    key: str | None,
    ops: list[Operation],
    model: Model,
    outcome: SearchOutcome | None,
    stopped: str,
    *,
    state_text: str | None = None,
) -> PartitionResult:
    if outcome is None:
        init = model.describe_state(model.init())
        return PartitionResult(key, Verdict.UNKNOWN, tuple(ops), (), init, (), None, 0, stopped)
    order = tuple(ops[i] for i in outcome.order)
    state = model.describe_state(outcome.state) if state_text is None else state_text
    match outcome.status:
        case SearchStatus.LINEARIZABLE:
            verdict, reason = Verdict.LINEARIZABLE, ""
        case SearchStatus.STATE_LIMIT:
            verdict, reason = Verdict.UNKNOWN, "state-limit"
        case SearchStatus.NOT_LINEARIZABLE:
            verdict, reason = Verdict.NOT_LINEARIZABLE, ""
    unplaced: tuple[Operation, ...] = ()
    blocking = None
    if verdict is Verdict.NOT_LINEARIZABLE:
        unplaced_idx, blocking_idx = _frontier(ops, set(outcome.order))
        unplaced = tuple(ops[i] for i in unplaced_idx)
        blocking = ops[blocking_idx] if blocking_idx is not None else None
    return PartitionResult(
        key, verdict, tuple(ops), order, state, unplaced, blocking, outcome.states_explored, reason
    )


def _frontier(ops: Sequence[Operation], placed: set[int]) -> tuple[list[int], int | None]:
    """The operations that could go next after ``placed``, and the first unplaced return."""
    candidates: list[int] = []
    for i, is_return in event_order(ops):
        if i in placed:
            continue
        if is_return:
            return candidates, i
        candidates.append(i)
    return candidates, None

"""The state of one saga, as a pure function of its log records.

The orchestrator appends a record for every step's start and end; :class:`SagaState` replays
them (at recovery, the same way as live) and says what to run next. Forward: the groups run in
order, the steps of a group in parallel. When a step fails for good (retries exhausted, or an
operator asked to abort), the saga compensates every step that *started*, in reverse group
order (a started step may have taken effect even if its outcome is unknown; compensations must
therefore tolerate "nothing to undo"). A compensation that keeps failing parks the saga for an
operator (or is retried forever, by policy).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from stalwart.errors import DecodeError


class SagaStatus(enum.StrEnum):
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    PARKED = "parked"

    @property
    def finished(self) -> bool:
        return self in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    STARTED = "started"  # the action began; its outcome is not logged yet
    DONE = "done"
    FAILED = "failed"  # the action failed for good
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"


class Kind(enum.StrEnum):
    """Record kinds in the saga log."""

    SAGA_STARTED = "saga-started"
    STEP_STARTED = "step-started"
    STEP_DONE = "step-done"
    STEP_FAILED = "step-failed"
    COMP_STARTED = "comp-started"
    COMP_DONE = "comp-done"
    COMP_FAILED = "comp-failed"  # retries exhausted: the saga parks
    ABORT_REQUESTED = "abort-requested"
    RESUME_REQUESTED = "resume-requested"
    FINISHED = "finished"


class Work(enum.Enum):
    ACTION = "action"
    COMPENSATION = "compensation"


@dataclass(frozen=True, slots=True)
class Record:
    saga_id: str
    kind: Kind
    step: str = ""
    data: str = ""  # JSON text: the saga input, a step result, or an error message


@dataclass(slots=True)
class SagaState:
    saga_id: str
    name: str
    groups: tuple[tuple[str, ...], ...]
    input_json: str = "null"
    status: SagaStatus = SagaStatus.RUNNING
    steps: dict[str, StepStatus] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)  # step -> result JSON
    errors: dict[str, str] = field(default_factory=dict)
    abort_requested: bool = False
    finished_logged: bool = False

    def __post_init__(self) -> None:
        names = [s for g in self.groups for s in g]
        if not names or len(set(names)) != len(names):
            raise ValueError("a saga needs at least one step and unique step names")
        for name in names:
            self.steps.setdefault(name, StepStatus.PENDING)

    def apply(self, record: Record) -> None:
        """Fold one log record in; records for unknown steps are corruption."""
        if record.step and record.step not in self.steps:
            raise DecodeError(f"saga {self.saga_id}: record for unknown step {record.step!r}")
        step = record.step
        match record.kind:
            case Kind.SAGA_STARTED:
                self.input_json = record.data
            case Kind.STEP_STARTED:
                self.steps[step] = StepStatus.STARTED
            case Kind.STEP_DONE:
                self.steps[step] = StepStatus.DONE
                self.results[step] = record.data
            case Kind.STEP_FAILED:
                self.steps[step] = StepStatus.FAILED
                self.errors[step] = record.data
                self.status = SagaStatus.COMPENSATING
            case Kind.COMP_STARTED:
                self.steps[step] = StepStatus.COMPENSATING
            case Kind.COMP_DONE:
                self.steps[step] = StepStatus.COMPENSATED
            case Kind.COMP_FAILED:
                self.errors[step] = record.data
                self.status = SagaStatus.PARKED
            case Kind.ABORT_REQUESTED:
                if not self.status.finished:
                    self.abort_requested = True
                    self.status = SagaStatus.COMPENSATING
            case Kind.RESUME_REQUESTED:
                if self.status is SagaStatus.PARKED:
                    self.status = SagaStatus.COMPENSATING
            case Kind.FINISHED:
                self.finished_logged = True
        self._settle()

    def _settle(self) -> None:
        if self.status is SagaStatus.RUNNING and all(s is StepStatus.DONE for s in self.steps.values()):
            self.status = SagaStatus.COMPLETED
        elif self.status is SagaStatus.COMPENSATING and not self._to_compensate():
            self.status = SagaStatus.COMPENSATED

    def _to_compensate(self) -> list[str]:
        started = (StepStatus.STARTED, StepStatus.DONE, StepStatus.FAILED, StepStatus.COMPENSATING)
        return [s for s, st in self.steps.items() if st in started]

    def next_work(self, running: frozenset[str]) -> list[tuple[str, Work]]:
        """What to start now, given the steps whose work is ``running`` in this process."""
        match self.status:
            case SagaStatus.RUNNING:
                for group in self.groups:
                    if all(self.steps[s] is StepStatus.DONE for s in group):
                        continue
                    return [
                        (s, Work.ACTION)
                        for s in group
                        if self.steps[s] is not StepStatus.DONE and s not in running
                    ]
                return []
            case SagaStatus.COMPENSATING:
                if running:
                    return []  # let forward work in flight finish (and be logged) first
                todo = set(self._to_compensate())
                for group in reversed(self.groups):
                    mine = [s for s in group if s in todo]
                    if mine:
                        return [(s, Work.COMPENSATION) for s in mine]
                return []
            case SagaStatus.COMPLETED | SagaStatus.COMPENSATED | SagaStatus.PARKED:
                return []

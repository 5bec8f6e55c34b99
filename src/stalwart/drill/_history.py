"""The history recorder: client operations and nemesis events, on the monotonic clock.

Times are ``time.monotonic_ns()`` relative to the recorder's start, so the history, the fault
windows and the plots share one clock. An operation whose outcome is unknown (a timeout) is
recorded as ``INFO`` and its process id is retired: in the checker's model a process runs one
operation at a time, and an ``INFO`` operation may still be in flight until the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from stalwart.check import Operation, Status

#: The most operations one recorder keeps; a drill that reaches it stops issuing operations.
MAX_OPERATIONS = 2_000_000


@dataclass(frozen=True, slots=True)
class Pending:
    """An invoked operation waiting for its completion."""

    process: int
    f: str
    key: str | None
    value: Any
    invoke_time: int


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """A fault as it really happened: when it began and was healed, on the history's clock."""

    kind: str
    description: str
    start_ns: int
    end_ns: int | None
    nodes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Event:
    """Something seen during the run (a leader observed, a node restarted), for the report."""

    time_ns: int
    kind: str
    detail: str


class Recorder:
    """Collects operations, fault windows and events; not thread-safe (one event loop)."""

    def __init__(self) -> None:
        self._origin_ns = time.monotonic_ns()
        self.operations: list[Operation] = []
        # refused cas calls: the checker's models read every failed cas as a compare that
        # happened, so a cas that errored out before it ran is kept out of the checked history
        self.refused: list[Operation] = []
        self.faults: list[FaultWindow] = []
        self.events: list[Event] = []
        self._next_process = 0

    def restart_clock(self) -> None:
        """Make "now" zero (before the first operation: the workload's start is the plots' 0)."""
        # moving the origin after operations were recorded would reorder them against new ones
        assert not self.operations and not self.refused and not self.faults
        self._origin_ns = time.monotonic_ns()
        self.events.clear()

    def now(self) -> int:
        """Nanoseconds since the recorder started (monotonic)."""
        return time.monotonic_ns() - self._origin_ns

    @property
    def full(self) -> bool:
        return len(self.operations) + len(self.refused) >= MAX_OPERATIONS

    def all_operations(self) -> list[Operation]:
        """Checked and refused operations together, in invocation order (for counts and plots)."""
        return sorted([*self.operations, *self.refused], key=lambda op: op.invoke_time)

    def new_process(self) -> int:
        self._next_process += 1
        return self._next_process - 1

    def invoke(self, process: int, f: str, key: str | None, value: Any) -> Pending:
        return Pending(process, f, key, value, self.now())

    def complete(
        self, pending: Pending, status: Status, output: Any = None, *, refused: bool = False
    ) -> Operation:
        end = None if status is Status.INFO else self.now()
        op = Operation(
            process=pending.process,
            f=pending.f,
            key=pending.key,
            value=pending.value,
            output=output if status is Status.OK else None,
            status=status,
            invoke_time=pending.invoke_time,
            complete_time=end,
        )
        (self.refused if refused else self.operations).append(op)
        return op

    def fault_started(self, kind: str, description: str, nodes: tuple[int, ...]) -> int:
        self.faults.append(FaultWindow(kind, description, self.now(), None, nodes))
        return len(self.faults) - 1

    def fault_ended(self, index: int) -> None:
        w = self.faults[index]
        self.faults[index] = FaultWindow(w.kind, w.description, w.start_ns, self.now(), w.nodes)

    def event(self, kind: str, detail: str) -> None:
        self.events.append(Event(self.now(), kind, detail))

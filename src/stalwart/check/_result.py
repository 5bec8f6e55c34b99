"""The verdict of a check and the evidence behind it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from stalwart.check._history import Operation


class Verdict(enum.Enum):
    """The answer of a check. ``UNKNOWN`` is honest: the checker ran out of time or memory."""

    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not-linearizable"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class PartitionResult:
    """The verdict on one partition (one key for the ``kv`` model; the whole history otherwise).

    * ``operations``: the partition's operations that had to be linearized (failed operations
      that did not happen are left out), in invocation order.
    * ``linearization``: a witness order if linearizable; otherwise the longest linearizable
      prefix that the search found (``INFO`` operations appear only where they took effect).
    * ``final_state``: the model state after ``linearization``, described for humans.
    * ``unplaced``: when not linearizable, the operations that were candidates to go next after
      that prefix and none of which could be placed; ``blocking`` is the one among them whose
      completion came first (it had to be linearized before any later event).
    * ``reason``: for ``UNKNOWN``, why (``timeout``, ``state-limit``, ``stopped``).
    """

    key: str | None
    verdict: Verdict
    operations: tuple[Operation, ...]
    linearization: tuple[Operation, ...]
    final_state: str
    unplaced: tuple[Operation, ...]
    blocking: Operation | None
    states_explored: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict on a whole history, with one :class:`PartitionResult` per partition."""

    verdict: Verdict
    model: str
    operations: int
    partitions: tuple[PartitionResult, ...]
    elapsed_s: float

    @property
    def failure(self) -> PartitionResult | None:
        """The first partition found not linearizable, if any."""
        for part in self.partitions:
            if part.verdict is Verdict.NOT_LINEARIZABLE:
                return part
        return None

    def to_json(self, describe: Any = None) -> dict[str, Any]:
        """A JSON-ready summary; ``describe(op) -> str`` renders operations (default: repr)."""
        show = describe if describe is not None else repr
        failure = self.failure
        out: dict[str, Any] = {
            "verdict": self.verdict.value,
            "model": self.model,
            "operations": self.operations,
            "partitions": len(self.partitions),
            "elapsed_s": round(self.elapsed_s, 6),
            "states_explored": sum(p.states_explored for p in self.partitions),
            "unknown_partitions": [
                {"key": p.key, "reason": p.reason} for p in self.partitions if p.verdict is Verdict.UNKNOWN
            ],
        }
        if failure is not None:
            out["failure"] = {
                "key": failure.key,
                "operations": len(failure.operations),
                "longest_prefix_length": len(failure.linearization),
                "longest_prefix": [show(op) for op in failure.linearization],
                "state_after_prefix": failure.final_state,
                "unplaced": [show(op) for op in failure.unplaced],
                "blocking": show(failure.blocking) if failure.blocking is not None else None,
            }
        return out

"""The history types: one :class:`Operation` per client operation, with its interval and outcome.

An operation is *complete*: it carries both its invocation (``invoke_time``, ``f``, ``key``,
``value``) and its completion (``status``, ``output``, ``complete_time``). Times are integers in
any unit that a single real-time clock provides (nanoseconds, ticks, line numbers): only their
order matters. The meaning of each status (see docs/history-format.md):

* ``OK``: the operation took effect once, between ``invoke_time`` and ``complete_time``, and
  returned ``output``.
* ``FAIL``: the operation definitely did not take effect. One exception, as in Jepsen and
  Porcupine: a failed ``cas`` happened as a compare that did not match (a read with no effect).
* ``INFO``: the outcome is unknown; the operation may take effect at any point after
  ``invoke_time`` (open to the end of the history) or never. ``complete_time`` is ignored.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from stalwart.check._errors import HistoryFormatError

#: First line written by :func:`write_jsonl`; readers accept files with or without it.
JSONL_HEADER: dict[str, Any] = {"format": "stalwart-history", "version": 1}


class Status(enum.Enum):
    """How an operation completed."""

    OK = "ok"
    FAIL = "fail"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation, invocation and completion together.

    ``value`` holds the arguments (a write's value, a cas's ``(from, to)`` pair, ``None`` for a
    read); ``output`` holds what the operation returned (a read's value, ``None`` = absent).
    ``complete_time`` is ``None`` only for ``INFO`` operations that never completed.
    """

    process: int
    f: str
    key: str | None
    value: Any
    output: Any
    status: Status
    invoke_time: int
    complete_time: int | None

    def __post_init__(self) -> None:
        # The checker relies on these: a determinate operation has a real interval.
        if self.status is not Status.INFO:
            if self.complete_time is None:
                raise ValueError(f"a {self.status.value} operation needs a complete_time: {self}")
            if self.complete_time < self.invoke_time:
                raise ValueError(f"complete_time before invoke_time: {self}")

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this operation, as one line of the JSONL format."""
        return {
            "process": self.process,
            "f": self.f,
            "key": self.key,
            "value": _to_json_value(self.value),
            "output": _to_json_value(self.output),
            "status": self.status.value,
            "invoke_time": self.invoke_time,
            "complete_time": self.complete_time,
        }


@dataclass(frozen=True, slots=True)
class History:
    """The operations read from one file, in invocation order, and where they came from."""

    operations: tuple[Operation, ...]
    source: str
    format: str

    def __len__(self) -> int:
        return len(self.operations)


def _to_json_value(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_to_json_value(v) for v in value]
    if isinstance(value, frozenset):
        return sorted((_to_json_value(v) for v in value), key=repr)
    return value


def from_json_value(value: Any) -> Any:
    """JSON arrays become tuples, so values are hashable and compare like EDN vectors."""
    if isinstance(value, list):
        return tuple(from_json_value(v) for v in value)
    if isinstance(value, dict):
        raise TypeError("objects are not allowed as operation values")
    return value


def dump_jsonl(ops: Iterable[Operation], out: TextIO) -> int:
    """Write ``ops`` as JSON lines (header first) to ``out``; returns the number of operations."""
    out.write(json.dumps(JSONL_HEADER) + "\n")
    count = 0
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    for op in ops:
        out.write(dumps(op.to_json()) + "\n")
        count += 1
    return count


def write_jsonl(ops: Iterable[Operation], path: str) -> int:
    """Write ``ops`` to the file ``path`` in the JSONL history format; returns the count."""
    with open(path, "w", encoding="utf-8") as out:
        return dump_jsonl(ops, out)


_STATUSES = {s.value: s for s in Status}
_FIELDS = ("process", "f", "key", "value", "output", "status", "invoke_time", "complete_time")


def operation_from_json(obj: Any, path: str, line: int) -> Operation:
    """Build one operation from a decoded JSON object, or raise :class:`HistoryFormatError`."""
    if not isinstance(obj, dict):
        raise HistoryFormatError(path, line, "expected a JSON object")
    try:
        process, f, key = obj["process"], obj["f"], obj.get("key")
        raw_status, invoke, complete = obj["status"], obj["invoke_time"], obj.get("complete_time")
    except KeyError as exc:
        raise HistoryFormatError(path, line, f"missing field {exc}") from None
    status = _STATUSES.get(raw_status) if isinstance(raw_status, str) else None
    if status is None:
        raise HistoryFormatError(path, line, f"status must be ok, fail or info, got {raw_status!r}")
    unknown = set(obj) - set(_FIELDS)
    if unknown:
        raise HistoryFormatError(path, line, f"unknown fields {sorted(unknown)}")
    if type(process) is not int or not isinstance(f, str) or not (key is None or isinstance(key, str)):
        raise HistoryFormatError(path, line, "process must be an integer, f a string, key a string or null")
    if type(invoke) is not int or not (complete is None or type(complete) is int):
        raise HistoryFormatError(path, line, "invoke_time and complete_time must be integers")
    try:
        return Operation(
            process,
            f,
            key,
            from_json_value(obj.get("value")),
            from_json_value(obj.get("output")),
            status,
            invoke,
            complete,
        )
    except (ValueError, TypeError) as exc:
        raise HistoryFormatError(path, line, str(exc)) from None

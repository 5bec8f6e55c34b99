"""check: histories and the linearizability checker.

Record a history as :class:`Operation` values (or read one with :func:`read_history`), then::

    result = check_operations(ops, model="cas-register", timeout_s=10)
    if result.verdict is Verdict.NOT_LINEARIZABLE:
        print(result.failure)

See docs/checker.md for the algorithm and its guarantees and docs/history-format.md for the file
formats.
"""

from stalwart.check._checker import check_operations
from stalwart.check._errors import HistoryFormatError, ModelError, UnknownModelError
from stalwart.check._history import History, Operation, Status, write_jsonl
from stalwart.check._models import CAS_REGISTER, ILLEGAL, KV, MODELS, CasRegister, KeyValue, Model, Transition
from stalwart.check._readers import FORMATS, parse_history, read_history
from stalwart.check._result import CheckResult, PartitionResult, Verdict

__all__ = [
    "CAS_REGISTER",
    "FORMATS",
    "ILLEGAL",
    "KV",
    "MODELS",
    "CasRegister",
    "CheckResult",
    "History",
    "HistoryFormatError",
    "KeyValue",
    "Model",
    "ModelError",
    "Operation",
    "PartitionResult",
    "Status",
    "Transition",
    "UnknownModelError",
    "Verdict",
    "check_operations",
    "parse_history",
    "read_history",
    "write_jsonl",
]

"""The closed set of storage operations a protocol may ask its host for.

Both hosts implement exactly these: ``runtime/`` on real files through ``storage/`` (write-ahead
log, atomic metadata, snapshot store), ``sim/`` on a simulated disk with a page cache.
:func:`apply_storage_ops` is the reference meaning of each operation; the hosts' tests compare
their recovered state against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

MAX_META_KEYS = 64
"""A protocol's stable metadata is small (term, vote, configuration); a bound keeps it so."""


@dataclass(frozen=True, slots=True)
class PutMeta:
    """Replace the stable value under ``key`` atomically (term, vote, ...)."""

    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class AppendLog:
    """Append one log entry at ``index``, which must be exactly one past the last index."""

    index: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class TruncateLog:
    """Drop every log entry with index >= ``from_index`` (a conflicting suffix)."""

    from_index: int


@dataclass(frozen=True, slots=True)
class CompactLog:
    """Drop every log entry with index <= ``through_index`` (covered by a snapshot)."""

    through_index: int


@dataclass(frozen=True, slots=True)
class PutSnapshot:
    """Install a snapshot covering the log through ``index`` atomically.

    Entries at or below ``index`` may be compacted afterwards; entries above it are kept.
    """

    index: int
    data: bytes


StorageOp = PutMeta | AppendLog | TruncateLog | CompactLog | PutSnapshot


@dataclass(frozen=True, slots=True)
class DurableState:
    """What a node's disk kept; a restarted protocol is built from this alone.

    ``log`` holds the entries with indexes ``first_index .. first_index + len(log) - 1``.
    """

    meta: Mapping[str, bytes] = field(default_factory=dict)
    first_index: int = 1
    log: tuple[bytes, ...] = ()
    snapshot: tuple[int, bytes] | None = None

    @property
    def last_index(self) -> int:
        """Index of the last entry; ``first_index - 1`` when the log is empty."""
        return self.first_index + len(self.log) - 1


def apply_storage_ops(state: DurableState, ops: Iterable[StorageOp]) -> DurableState:
    """The reference semantics of storage operations: ``state`` after ``ops``, in order.

    Raises ``ValueError`` for an operation that a correct protocol never asks for (an append
    that leaves a gap, a truncation below the compacted prefix): that is a protocol bug.
    """
    meta = dict(state.meta)
    first, log, snap = state.first_index, list(state.log), state.snapshot
    for op in ops:
        match op:
            case PutMeta(key=key, value=value):
                meta[key] = value
                if len(meta) > MAX_META_KEYS:
                    raise ValueError(f"more than {MAX_META_KEYS} metadata keys")
            case AppendLog(index=index, payload=payload):
                if index != first + len(log):
                    raise ValueError(f"append at {index}, expected {first + len(log)}")
                log.append(payload)
            case TruncateLog(from_index=from_index):
                if from_index < first:
                    raise ValueError(f"truncate from {from_index} below first index {first}")
                del log[from_index - first :]
            case CompactLog(through_index=through):
                if through >= first:
                    drop = min(through - first + 1, len(log))
                    del log[:drop]
                    first = through + 1
            case PutSnapshot(index=index, data=data):
                snap = (index, data)
                if index >= first + len(log):
                    # The snapshot is ahead of the whole log: the log restarts after it.
                    log, first = [], index + 1
    result = replace(state, meta=meta, first_index=first, log=tuple(log), snapshot=snap)
    assert result.last_index >= result.first_index - 1
    return result

"""A simulated disk: storage operations sit in a page cache until a sync.

A crash keeps what was synced plus a *prefix* of the unsynced operations (the order the kernel
wrote them back), and may tear the next log append: the write-ahead log's recovery discards a
torn tail record, so a torn append is lost exactly like an unwritten one. Everything the disk
keeps is interpreted with :func:`stalwart.sansio.apply_storage_ops`, the reference semantics.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from stalwart.errors import StorageError
from stalwart.sansio import AppendLog, DurableState, StorageOp, apply_storage_ops

MAX_CACHED_OPS = 100_000
"""A page cache this full means a protocol that never syncs; refuse rather than grow forever."""


class SimStorageError(StorageError):
    """A protocol asked the simulated disk for an impossible operation (a protocol bug)."""


@dataclass(frozen=True, slots=True)
class CrashLoss:
    """What a crash did to the page cache: ops kept and lost, and whether an append tore."""

    kept: int
    lost: int
    torn: bool


class SimDisk:
    """One node's disk: ``durable`` survives crashes, ``cache`` does not (except a prefix)."""

    __slots__ = ("_cache", "_durable", "syncs")

    def __init__(self, durable: DurableState | None = None) -> None:
        self._durable = durable if durable is not None else DurableState()
        self._cache: list[StorageOp] = []
        self.syncs = 0

    @property
    def durable(self) -> DurableState:
        """What a crash right now is guaranteed to keep."""
        return self._durable

    @property
    def unsynced(self) -> int:
        return len(self._cache)

    def write(self, ops: tuple[StorageOp, ...]) -> None:
        """Buffer ``ops`` in the page cache (nothing is durable yet)."""
        if len(self._cache) + len(ops) > MAX_CACHED_OPS:
            raise SimStorageError(f"more than {MAX_CACHED_OPS} unsynced storage operations")
        self._cache.extend(ops)

    def sync(self) -> None:
        """fsync: everything in the page cache becomes durable, in order."""
        if self._cache:
            self._durable = self._apply(self._cache)
            self._cache.clear()
        self.syncs += 1

    def crash(self, rng: random.Random, torn_writes: bool) -> CrashLoss:
        """Lose the page cache except a random prefix; maybe tear the next append."""
        total = len(self._cache)
        kept = rng.randrange(total + 1) if total else 0
        torn = (
            torn_writes and kept < total and isinstance(self._cache[kept], AppendLog) and rng.random() < 0.5
        )
        if kept:
            self._durable = self._apply(self._cache[:kept])
        # A torn append reaches the disk half-written; recovery finds its checksum wrong at the
        # tail and truncates it, so the recovered state is exactly the kept prefix.
        self._cache.clear()
        return CrashLoss(kept, total - kept, torn)

    def load(self) -> DurableState:
        """What a restarting node reads back (only valid with an empty page cache)."""
        assert not self._cache, "load() with unsynced writes: crash() or sync() first"
        return self._durable

    def _apply(self, ops: list[StorageOp]) -> DurableState:
        try:
            return apply_storage_ops(self._durable, ops)
        except ValueError as exc:
            raise SimStorageError(f"impossible storage operation: {exc}") from None

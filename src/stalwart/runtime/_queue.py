"""The bounded outbound queue of one peer, and its overflow policy.

Overflow policy: **drop the oldest**. When a new message would take the queue past
``max_messages`` or ``max_bytes``, the oldest queued messages are dropped (and counted) until
it fits. Why the oldest: consensus and gossip protocols tolerate message loss by design (they
retransmit on ticks), and the newest message carries the freshest state (a higher term, a later
commit index, a newer vector), which supersedes what an old one said. A peer that was away for
long then receives recent messages first instead of a backlog of stale ones. Dropping the
newest instead would keep the stale backlog and lose the news.
"""

from __future__ import annotations

from dataclasses import dataclass

from stalwart.runtime._errors import RuntimeConfigError


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """Bounds of one peer's outbound queue and of one batch (one socket write)."""

    max_messages: int = 10_000
    max_bytes: int = 16 * 1024 * 1024
    batch_max_messages: int = 1_024
    batch_max_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        if min(self.max_messages, self.max_bytes, self.batch_max_messages, self.batch_max_bytes) < 1:
            raise RuntimeConfigError("every queue and batch limit must be >= 1")


class OutboundQueue:
    """Encoded messages waiting for one peer, oldest first, bounded in count and bytes.

    A plain list: appends are O(1) and a batch leaves as one slice, which is what the hot path
    needs (per message: one append; per batch: one slice and one C-level size sum).
    """

    def __init__(self, limits: QueueLimits) -> None:
        self._limits = limits
        self._max_messages = limits.max_messages
        self._max_bytes = limits.max_bytes
        self._items: list[bytes] = []
        self._nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def push(self, item: bytes) -> int:
        """Queue ``item``; return how many messages were dropped to make room (oldest first).

        An item larger than ``max_bytes`` on its own is dropped itself (counted in the result).
        """
        size = len(item)
        if len(self._items) < self._max_messages and self._nbytes + size <= self._max_bytes:
            self._items.append(item)  # the fast path: room for it, the bounds hold by the test
            self._nbytes += size
            return 0
        return self._push_full(item)

    def _push_full(self, item: bytes) -> int:
        limits, items = self._limits, self._items
        if len(item) > limits.max_bytes:
            return 1
        dropped, freed = 0, 0
        while dropped < len(items) and (
            len(items) - dropped + 1 > limits.max_messages
            or self._nbytes - freed + len(item) > limits.max_bytes
        ):
            freed += len(items[dropped])
            dropped += 1
        del items[:dropped]
        items.append(item)
        self._nbytes += len(item) - freed
        # The bounds hold after every push: this is what makes the queue a bounded one.
        assert len(items) <= limits.max_messages and self._nbytes <= limits.max_bytes
        return dropped

    def pop_batch(self) -> list[bytes]:
        """Take the oldest messages that fit one batch (at least one if any is queued)."""
        limits, items = self._limits, self._items
        batch = items[: limits.batch_max_messages]
        size = sum(map(len, batch))
        if size > limits.batch_max_bytes and len(batch) > 1:
            size, count = 0, 0
            for item in batch:
                if count and size + len(item) > limits.batch_max_bytes:
                    break
                size += len(item)
                count += 1
            batch = batch[:count]
        del items[: len(batch)]
        self._nbytes -= size
        assert self._nbytes >= 0 and (len(batch) <= 1 or size <= limits.batch_max_bytes)
        return batch

    def clear(self) -> int:
        """Drop everything; return how many messages were dropped."""
        count = len(self._items)
        self._items.clear()
        self._nbytes = 0
        return count


__all__ = ["OutboundQueue", "QueueLimits"]

"""The in-memory Raft log: entries after a snapshot point, with their storage operations.

Every mutating method returns the storage operations that make the same change durable; the
node queues them into the next Ready, so memory and disk can never disagree on what to write.
"""

from __future__ import annotations

from collections.abc import Iterable

from stalwart.raft._types import Entry, encode_entry
from stalwart.sansio import AppendLog, CompactLog, StorageOp, TruncateLog


class RaftLog:
    __slots__ = ("_entries", "snap_index", "snap_term")

    def __init__(self, snap_index: int = 0, snap_term: int = 0, entries: Iterable[Entry] = ()) -> None:
        self.snap_index = snap_index
        self.snap_term = snap_term
        self._entries: list[Entry] = list(entries)
        for offset, entry in enumerate(self._entries):
            # Positions are implied by the storage layout; a mismatch is a corrupt restart.
            assert entry.index == snap_index + 1 + offset, "log entries are not contiguous"

    @property
    def first_index(self) -> int:
        return self.snap_index + 1

    @property
    def last_index(self) -> int:
        return self.snap_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snap_term

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index``; None when compacted away or beyond the end."""
        if index == self.snap_index:
            return self.snap_term
        if index < self.snap_index or index > self.last_index:
            return None
        return self._entries[index - self.snap_index - 1].term

    def entry(self, index: int) -> Entry:
        assert self.snap_index < index <= self.last_index, f"entry {index} not in the log"
        return self._entries[index - self.snap_index - 1]

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries lo..hi-1, stopping once ``max_bytes`` is passed (always at least one)."""
        assert self.snap_index < lo <= hi <= self.last_index + 1
        out: list[Entry] = []
        size = 0
        for entry in self._entries[lo - self.snap_index - 1 : hi - self.snap_index - 1]:
            size += len(entry.data) + 16
            if out and size > max_bytes:
                break
            out.append(entry)
        return out

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft 5.4.1: a candidate's log is at least as up to date as ours."""
        return last_term > self.last_term or (last_term == self.last_term and last_index >= self.last_index)

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries sharing the term at ``index``."""
        term = self.term_at(index)
        assert term is not None
        while index - 1 > self.snap_index and self.term_at(index - 1) == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int) -> int | None:
        """The last index holding ``term``, if the log has any entry of it."""
        for entry in reversed(self._entries):
            if entry.term == term:
                return entry.index
            if entry.term < term:
                return None
        return None

    def append(self, entries: Iterable[Entry]) -> list[StorageOp]:
        entries = list(entries)
        expected = self.last_index + 1
        for offset, entry in enumerate(entries):
            assert entry.index == expected + offset, "append must extend the log by one"
        self._entries.extend(entries)
        return [AppendLog(entry.index, encode_entry(entry)) for entry in entries]

    def between(self, lo: int, hi: int) -> list[Entry]:
        """Entries lo..hi (inclusive), all in the log."""
        assert self.snap_index < lo and hi <= self.last_index
        return self._entries[lo - self.snap_index - 1 : hi - self.snap_index]

    def truncate(self, from_index: int) -> list[StorageOp]:
        assert self.snap_index < from_index <= self.last_index
        del self._entries[from_index - self.snap_index - 1 :]
        return [TruncateLog(from_index)]

    def compact(self, index: int, term: int) -> list[StorageOp]:
        """Drop entries through ``index`` (covered by a snapshot taken at it)."""
        assert self.snap_index <= index <= self.last_index
        assert self.term_at(index) == term
        del self._entries[: index - self.snap_index]
        self.snap_index, self.snap_term = index, term
        return [CompactLog(index)]

    def reset(self, index: int, term: int) -> list[StorageOp]:
        """Discard the whole log: a snapshot at ``index`` replaces it (caller adds PutSnapshot)."""
        ops: list[StorageOp] = [TruncateLog(self.first_index)] if self._entries else []
        self._entries.clear()
        self.snap_index, self.snap_term = index, term
        return ops

    def entries_from(self, index: int) -> list[Entry]:
        return self._entries[max(0, index - self.snap_index - 1) :]

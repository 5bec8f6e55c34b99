"""SortedKeys: the store's keys in order, with O(log n + chunk) inserts and removals.

A sorted Python list costs O(n) per insert (the tail moves): at hundreds of thousands of keys
that dominated a put. Here the keys sit in sorted chunks of at most ``2 * LOAD`` (a chunk that
grows past it splits in two), found by bisecting the chunks' last keys, as in the
``sortedcontainers`` package. Pure and deterministic.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator

LOAD = 512


class SortedKeys:
    def __init__(self, keys: Iterable[str] = ()) -> None:
        ordered = sorted(keys)
        self._chunks: list[list[str]] = [ordered[i : i + LOAD] for i in range(0, len(ordered), LOAD)]
        self._maxes: list[str] = [chunk[-1] for chunk in self._chunks]
        self._len = len(ordered)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[str]:
        for chunk in self._chunks:
            yield from chunk

    def add(self, key: str) -> None:
        """Insert ``key``, which must not be present."""
        maxes, chunks = self._maxes, self._chunks
        self._len += 1
        if not chunks:
            chunks.append([key])
            maxes.append(key)
            return
        i = bisect_left(maxes, key)
        if i == len(maxes):
            i -= 1
            chunk = chunks[i]
            chunk.append(key)
            maxes[i] = key
        else:
            chunk = chunks[i]
            insort(chunk, key)
        if len(chunk) > 2 * LOAD:
            chunks[i : i + 1] = [chunk[:LOAD], chunk[LOAD:]]
            maxes[i : i + 1] = [chunk[LOAD - 1], chunk[-1]]

    def remove(self, key: str) -> None:
        """Remove ``key``, which must be present."""
        maxes, chunks = self._maxes, self._chunks
        i = bisect_left(maxes, key)
        chunk = chunks[i]
        j = bisect_left(chunk, key)
        assert chunk[j] == key, "remove() of a key that is not there"
        del chunk[j]
        self._len -= 1
        if not chunk:
            del chunks[i]
            del maxes[i]
        elif j == len(chunk):
            maxes[i] = chunk[-1]

    def iter_from(self, low: str, *, inclusive: bool = True) -> Iterator[str]:
        """The keys ``>= low`` (``> low`` if not inclusive), in order."""
        find = bisect_left if inclusive else bisect_right
        i = find(self._maxes, low)
        if i == len(self._maxes):
            return
        j = find(self._chunks[i], low)
        for chunk in self._chunks[i:]:
            yield from chunk[j:] if j else chunk
            j = 0


__all__ = ["SortedKeys"]

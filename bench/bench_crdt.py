"""CRDT benchmark: delta size vs full-state size, and merge cost, for OR-Sets and OR-Maps.

Run: ``.venv/bin/python -m bench.bench_crdt`` (``--quick`` for a smoke run up to 10k elements).

What is measured (every timing is the median of RUNS runs, on fresh objects):

* build: time to add N elements one by one at one replica (mutator throughput);
* full merge: merging a replica's full N-element state into an empty replica, and into a
  replica that already holds it (the idempotent no-op), in elements per second;
* delta merge: the cost of merging one one-element delta (an add made elsewhere) into a replica
  of N elements: the mean over MERGES_PER_RUN distinct deltas; median and min over DELTA_ROUNDS
  rounds (the min is the least disturbed by other load on a shared machine);
* sizes: encoded bytes of the delta of one add, and of the full state, at N elements
  (elements and keys are fixed-width strings, so only the dot counter's width varies).

The goal (docs/crdt.md): the delta of one add is a constant number of bytes whatever N (up to
the width of msgpack's integer encoding of the dot counter), and merging it costs O(delta),
not O(state): the per-delta merge time at 100k elements matches the one at 1k.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from stalwart.crdt import CRDT, MVRegister, ORMap, ORSet

RUNS = 5
MERGES_PER_RUN = 2_000
DELTA_ROUNDS = 9


def _median_s(fn: Callable[[], float], runs: int = RUNS) -> float:
    return statistics.median(_samples(fn, runs))


def _samples(fn: Callable[[], float], runs: int) -> list[float]:
    # Like timeit, time with the cyclic GC off: its full passes scan the whole heap, which
    # would charge O(state) to whichever operation happened to trigger one.
    results = []
    for _ in range(runs):
        gc.collect()
        gc.disable()
        try:
            results.append(fn())
        finally:
            gc.enable()
    return results


class Kind:
    def __init__(self, name: str, make: Callable[[str], CRDT], add: Callable[[Any, int], CRDT]) -> None:
        self.name, self.make, self.add = name, make, add

    def build(self, replica: str, n: int, offset: int = 0) -> CRDT:
        s = self.make(replica)
        for i in range(n):
            self.add(s, offset + i)
        return s


KINDS = [
    Kind("ORSet", ORSet, lambda s, i: s.add(f"element-{i:07d}")),
    Kind(
        "ORMap[MVRegister]",
        lambda r: ORMap(r, MVRegister),
        lambda m, i: m.update(f"key-{i:07d}", lambda reg: reg.write(f"value-{i:07d}")),
    ),
]


def bench_build(kind: Kind, n: int) -> float:
    def once() -> float:
        t0 = time.perf_counter()
        kind.build("a", n)
        return time.perf_counter() - t0

    return n / _median_s(once, runs=3)


def bench_full_merge(kind: Kind, n: int) -> tuple[float, float]:
    src = kind.build("a", n)

    def into_empty() -> float:
        dst = kind.make("b")
        t0 = time.perf_counter()
        dst.merge(src)
        return time.perf_counter() - t0

    same = src.copy()

    def into_same() -> float:
        t0 = time.perf_counter()
        same.merge(src)
        return time.perf_counter() - t0

    return n / _median_s(into_empty), n / _median_s(into_same)


def bench_delta_merge_us(kind: Kind, n: int) -> tuple[float, float]:
    """(median, min) over DELTA_ROUNDS rounds of the mean µs to merge one one-add delta from replica a
    into replica b holding about n elements (each round adds MERGES_PER_RUN new elements, so
    the state grows by a few percent at most over the rounds)."""
    a = kind.build("a", n)
    b = a.copy()
    fresh = iter(range(n, 2**62))

    def once() -> float:
        deltas = [kind.add(a, next(fresh)) for _ in range(MERGES_PER_RUN)]
        t0 = time.perf_counter()
        for d in deltas:
            b.merge(d)
        return (time.perf_counter() - t0) / MERGES_PER_RUN * 1e6

    rounds = _samples(once, DELTA_ROUNDS)
    assert b == a  # the deltas carried everything (and the benchmark measured real merges)
    return statistics.median(rounds), min(rounds)


def sizes(kind: Kind, n: int) -> tuple[int, int]:
    s = kind.build("a", n)
    full = len(s.to_bytes())
    delta = len(kind.add(s, n).to_bytes())
    return delta, full


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    size_ns = [10, 1_000, 10_000] if quick else [10, 1_000, 100_000]
    big = size_ns[-1]
    print(f"stalwart CRDT benchmark ({'quick' if quick else 'full'}); medians of {RUNS} runs")
    print()
    print(f"{'type':<20} {'N':>8} {'delta of one add (B)':>21} {'full state (B)':>15} {'ratio':>9}")
    for kind in KINDS:
        for n in size_ns:
            delta, full = sizes(kind, n)
            print(f"{kind.name:<20} {n:>8,} {delta:>21,} {full:>15,} {full / delta:>9,.0f}")
    print()
    print(f"{'type':<20} {'N':>8} {'merge 1-add delta, median (µs)':>31} {'min (µs)':>9}")
    for kind in KINDS:
        for n in (size_ns[1], big):
            median, least = bench_delta_merge_us(kind, n)
            print(f"{kind.name:<20} {n:>8,} {median:>31.2f} {least:>9.2f}")
    print()
    header = (
        f"{'type':<20} {'N':>8} {'adds/s':>12} {'full merge into empty (el/s)':>29} {'into same (el/s)':>17}"
    )
    print(header)
    for kind in KINDS:
        adds = bench_build(kind, big)
        empty, same = bench_full_merge(kind, big)
        print(f"{kind.name:<20} {big:>8,} {adds:>12,.0f} {empty:>29,.0f} {same:>17,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""SortedKeys against a sorted list: same keys, same order, same scans, across chunk splits."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.kv import Delete, KVMachine, Put, encode_command
from stalwart.kv._sortedkeys import LOAD, SortedKeys

KEYS = st.text(alphabet="abc", min_size=1, max_size=6)


def _step(model: list[str], keys: SortedKeys, add: bool, key: str) -> None:
    """Add or remove ``key`` in both the plain sorted list and the SortedKeys (only when it
    changes something, as the machine calls them)."""
    present = key in model
    if add and not present:
        bisect.insort(model, key)
        keys.add(key)
    elif not add and present:
        model.remove(key)
        keys.remove(key)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), KEYS), max_size=300), st.lists(KEYS, max_size=5))
def test_behaves_as_a_sorted_list(ops: list[tuple[bool, str]], probes: list[str]) -> None:
    model: list[str] = []
    keys = SortedKeys()
    for add, key in ops:
        _step(model, keys, add, key)
    assert list(keys) == model and len(keys) == len(model)
    for low in probes:
        assert list(keys.iter_from(low)) == model[bisect.bisect_left(model, low) :]
        assert list(keys.iter_from(low, inclusive=False)) == model[bisect.bisect_right(model, low) :]


def test_many_keys_split_into_chunks_and_merge_back() -> None:
    n = 5 * LOAD + 7
    keys = SortedKeys()
    for i in reversed(range(n)):  # inserts at the front: the first chunk keeps splitting
        keys.add(f"k{i:06d}")
    assert list(keys) == [f"k{i:06d}" for i in range(n)]
    assert len(keys._chunks) > 2 and all(len(c) <= 2 * LOAD for c in keys._chunks)
    for i in range(0, n, 2):
        keys.remove(f"k{i:06d}")
    assert list(keys) == [f"k{i:06d}" for i in range(1, n, 2)]
    assert list(keys.iter_from("k000100"))[:2] == ["k000101", "k000103"]
    for i in range(1, n, 2):
        keys.remove(f"k{i:06d}")
    assert len(keys) == 0 and list(keys.iter_from("")) == [] and keys._chunks == []
    rebuilt = SortedKeys(["b", "a", "c"])
    assert list(rebuilt) == ["a", "b", "c"]


# With the production LOAD (512) the property above never crosses a chunk boundary; with chunks
# of 1-3 keys (split past 2-6) every few operations split or empty a chunk.
SMALL_KEYS = st.text(alphabet="ab\u00e9\U0001f600", min_size=1, max_size=4)


@contextmanager
def _load(load: int) -> Iterator[None]:
    import stalwart.kv._sortedkeys as sk

    old = sk.LOAD
    sk.LOAD = load
    try:
        yield
    finally:
        sk.LOAD = old


@settings(max_examples=400, deadline=None)
@given(
    st.integers(1, 3),
    st.lists(SMALL_KEYS, max_size=40),
    st.lists(st.tuples(st.booleans(), SMALL_KEYS), max_size=150),
    st.lists(st.text(alphabet="ab\u00e9\U0001f600", max_size=3), max_size=6),
)
def test_small_chunks_behave_as_a_sorted_list(
    load: int, initial: list[str], ops: list[tuple[bool, str]], probes: list[str]
) -> None:
    with _load(load):
        model = sorted(set(initial))
        keys = SortedKeys(set(initial))
        for add, key in ops:
            _step(model, keys, add, key)
            assert list(keys) == model and len(keys) == len(model)
            assert all(keys._chunks) and keys._maxes == [c[-1] for c in keys._chunks]
            assert all(len(c) <= 2 * load for c in keys._chunks)
        for low in probes:
            assert list(keys.iter_from(low)) == model[bisect.bisect_left(model, low) :]
            assert list(keys.iter_from(low, inclusive=False)) == model[bisect.bisect_right(model, low) :]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 3),
    st.lists(st.tuples(st.booleans(), SMALL_KEYS), max_size=100),
    st.text(alphabet="ab\u00e9", max_size=2),
    st.integers(1, 10),
    st.none() | SMALL_KEYS,
)
def test_range_over_small_chunks_is_a_filtered_sorted_list(
    load: int, ops: list[tuple[bool, str]], prefix: str, limit: int, after: str | None
) -> None:
    with _load(load):
        m = KVMachine()
        model: set[str] = set()
        for add, key in ops:
            m.apply(encode_command(Put(key, b"v") if add else Delete(key), 1))
            (model.add if add else model.discard)(key)
        got = [kv.key for kv in m.range(prefix, limit, after)]
        wanted = [k for k in sorted(model) if k.startswith(prefix) and (after is None or k > after)]
        assert got == wanted[:limit]
        restored = KVMachine()
        restored.restore(m.snapshot())
        assert [kv.key for kv in restored.range("", 10_000)] == sorted(model)

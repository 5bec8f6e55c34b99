"""SortedKeys against a sorted list: same keys, same order, same scans, across chunk splits."""

from __future__ import annotations

import bisect

from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.kv._sortedkeys import LOAD, SortedKeys

KEYS = st.text(alphabet="abc", min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), KEYS), max_size=300), st.lists(KEYS, max_size=5))
def test_behaves_as_a_sorted_list(ops: list[tuple[bool, str]], probes: list[str]) -> None:
    model: list[str] = []
    keys = SortedKeys()
    for add, key in ops:
        present = key in model
        if add and not present:
            bisect.insort(model, key)
            keys.add(key)
        elif not add and present:
            model.remove(key)
            keys.remove(key)
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

"""The simulated disk: the page cache, sync, and what a crash keeps."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.sansio import AppendLog, DurableState, PutMeta, StorageOp, TruncateLog, apply_storage_ops
from stalwart.sim._disk import SimDisk, SimStorageError


def test_unsynced_writes_are_lost_when_the_crash_keeps_no_prefix() -> None:
    disk = SimDisk()
    disk.write((AppendLog(1, b"a"), PutMeta("term", b"1")))
    disk.sync()
    disk.write((AppendLog(2, b"b"), AppendLog(3, b"c")))

    class KeepNothing(random.Random):
        def randrange(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
            return 0

    loss = disk.crash(KeepNothing(0), torn_writes=False)
    assert (loss.kept, loss.lost) == (0, 2)
    state = disk.load()
    assert state.log == (b"a",) and state.meta == {"term": b"1"}


def test_synced_writes_survive_every_crash() -> None:
    for seed in range(50):
        disk = SimDisk()
        disk.write((AppendLog(1, b"a"), AppendLog(2, b"b")))
        disk.sync()
        disk.write((AppendLog(3, b"c"),))
        disk.crash(random.Random(seed), torn_writes=True)
        assert disk.load().log[:2] == (b"a", b"b")


def test_a_crash_keeps_a_prefix_and_sometimes_tears_the_next_append() -> None:
    kept_counts, torn = set(), 0
    for seed in range(200):
        disk = SimDisk()
        ops = tuple(AppendLog(i, bytes([i])) for i in range(1, 6))
        disk.write(ops)
        loss = disk.crash(random.Random(seed), torn_writes=True)
        kept_counts.add(loss.kept)
        torn += loss.torn
        # What survived is exactly the first `kept` appends: a torn one is discarded on recovery.
        assert disk.load().log == tuple(bytes([i]) for i in range(1, loss.kept + 1))
        assert not (loss.torn and loss.kept == 5)
    assert kept_counts == {0, 1, 2, 3, 4, 5}
    assert torn > 0


def test_no_torn_writes_unless_enabled() -> None:
    for seed in range(100):
        disk = SimDisk()
        disk.write((AppendLog(1, b"x"), AppendLog(2, b"y")))
        assert not disk.crash(random.Random(seed), torn_writes=False).torn


def test_an_impossible_operation_is_a_typed_error_at_sync() -> None:
    disk = SimDisk()
    disk.write((AppendLog(2, b"gap"),))
    with pytest.raises(SimStorageError, match="append at 2"):
        disk.sync()


def test_load_with_unsynced_writes_is_a_host_bug() -> None:
    disk = SimDisk()
    disk.write((AppendLog(1, b"a"),))
    with pytest.raises(AssertionError):
        disk.load()


def _ops_strategy() -> st.SearchStrategy[list[list[str]]]:
    batch = st.lists(st.sampled_from(["append", "meta", "truncate"]), min_size=0, max_size=4)
    return st.lists(batch, min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(batches=_ops_strategy(), seed=st.integers(0, 2**32), torn=st.booleans())
def test_recovered_state_is_synced_batches_plus_a_prefix_of_the_rest(
    batches: list[list[str]], seed: int, torn: bool
) -> None:
    # Build valid operations batch by batch; sync all batches but the last, then crash.
    disk, reference = SimDisk(), DurableState()
    synced, pending = DurableState(), []
    last = 0
    for n, kinds in enumerate(batches):
        ops: list[StorageOp] = []
        for kind in kinds:
            if kind == "append":
                last += 1
                ops.append(AppendLog(last, f"{last}".encode()))
            elif kind == "meta":
                ops.append(PutMeta("k", f"{n}".encode()))
            elif last > 0:
                ops.append(TruncateLog(last))
                last -= 1
        disk.write(tuple(ops))
        reference = apply_storage_ops(reference, ops)
        if n < len(batches) - 1:
            disk.sync()
            synced = reference
        else:
            pending = ops
    loss = disk.crash(random.Random(seed), torn_writes=torn)
    assert loss.kept + loss.lost == len(pending)
    assert disk.load() == apply_storage_ops(synced, pending[: loss.kept])

"""Real processes: a child appends and syncs in a loop and is SIGKILLed at random moments.

After every kill the parent reopens the log and checks: every record the child reported synced
is present and intact (unless an operation in flight at the kill legitimately replaced it), no
record is garbage, a truncation in flight is all-or-nothing, and the tail segment ends exactly
at its last valid record. The child then restarts from whatever the disk kept.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import crc32c
import pytest

from stalwart.storage import WriteAheadLog

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("STALWART_CRASH_KILLS", "60"))
MAX_SEGMENT_BYTES = 16 * 1024  # small, so kills also land on segment rollovers
MAX_RECORD_BYTES = 4096

CHILD = r"""
import random, sys
from stalwart.storage import WriteAheadLog

directory, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)

def payload(i, gen):
    head = b"%d:%d:" % (i, gen)
    return (head * 60)[: len(head) + (i * 7919 + gen) % 300]

def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

wal = WriteAheadLog(directory, max_record_bytes=4096, max_segment_bytes=16 * 1024)
say(f"R {wal.first_index} {wal.last_index}")
gen = rng.getrandbits(40)
while True:
    first, last = wal.first_index, wal.last_index
    r = rng.random()
    if r < 0.08 and last - first > 5:
        x, n, gen = rng.randint(max(first, last - 60), last), rng.randint(1, 120), rng.getrandbits(40)
        say(f"I T {x} {x + n - 1} {gen}")
        wal.truncate_suffix(x)
        wal.append_many(x, [payload(i, gen) for i in range(x, x + n)])
    elif r < 0.12 and last - first > 400:
        y = rng.randint(first, last - 300)
        say(f"I C {y}")
        wal.compact_prefix(y)
    else:
        n = rng.choice([1, 1, 3, 10, 50, 200])
        say(f"I A {last + 1} {last + n} {gen}")
        wal.append_many(last + 1, [payload(i, gen) for i in range(last + 1, last + n + 1)])
    wal.sync()
    say("D")
"""


def payload(i: int, gen: int) -> bytes:
    head = b"%d:%d:" % (i, gen)
    return (head * 60)[: len(head) + (i * 7919 + gen) % 300]


@dataclass
class LogState:
    first: int = 1
    gens: dict[int, int] = field(default_factory=dict)  # index -> generation, first..last

    @property
    def last(self) -> int:
        return self.first + len(self.gens) - 1


def apply_intent(state: LogState, intent: list[str]) -> LogState:
    """The state after one operation of the child completed."""
    gens = dict(state.gens)
    first = state.first
    match intent:
        case ["A", lo, hi, gen] | ["T", lo, hi, gen]:
            for i in range(int(lo), state.last + 1):
                del gens[i]
            gens.update({i: int(gen) for i in range(int(lo), int(hi) + 1)})
        case ["C", through]:
            first = int(through) + 1
            gens = {i: g for i, g in gens.items() if i >= first}
        case _:
            raise AssertionError(f"unknown intent {intent}")
    return LogState(first, gens)


def observe(directory: Path) -> LogState:
    """Reopen the log; every record must be exactly what the child wrote for its index."""
    with WriteAheadLog(
        directory, max_record_bytes=MAX_RECORD_BYTES, max_segment_bytes=MAX_SEGMENT_BYTES
    ) as wal:
        records = wal.read(wal.first_index, wal.last_index + 1)
        first = wal.first_index
    gens = {}
    for i, data in enumerate(records, start=first):
        index, gen = (int(x) for x in data.split(b":")[:2])
        assert index == i, f"record {i} holds index {index}"
        assert data == payload(i, gen), f"record {i} is garbage"
        gens[i] = gen
    check_tail_is_clean(directory)
    return LogState(first, gens)


def check_tail_is_clean(directory: Path) -> None:
    """Parse the last segment independently: valid records from the header to exactly the end."""
    segments = sorted(directory.glob("*.wal"))
    if not segments:
        return
    data = segments[-1].read_bytes()
    pos = 16
    while pos < len(data):
        length, crc = struct.unpack_from("<II", data, pos)
        end = pos + 8 + length
        assert end <= len(data), f"{segments[-1]}: record at {pos} runs past the end"
        assert crc == crc32c.crc32c(data[pos + 8 : end], crc32c.crc32c(data[pos : pos + 4])), pos
        pos = end
    assert pos == len(data)


def allowed(before: LogState, after_done: LogState, inflight: list[str] | None, seen: LogState) -> None:
    """``seen`` must be the state after the completed ops, or a legal crash state of the one in flight."""
    if inflight is None or seen == after_done:
        assert seen == after_done, "a synced record is missing or changed"
        return
    full = apply_intent(after_done, inflight)
    match inflight:
        case ["A", _lo, _hi, _gen]:
            # A prefix of the batch may have reached the disk.
            assert seen.first == after_done.first
            assert after_done.last <= seen.last <= full.last
            assert all(seen.gens[i] == full.gens[i] for i in seen.gens)
        case ["T", lo, _hi, _gen]:
            # Either the old log cut somewhere in the truncated range (segments go newest first),
            # or the truncation done and a prefix of the new records: never old and new mixed.
            assert seen.first == after_done.first
            old_prefix = seen.last <= after_done.last and all(
                seen.gens[i] == after_done.gens[i] for i in seen.gens
            )
            new_prefix = seen.last <= full.last and all(seen.gens[i] == full.gens[i] for i in seen.gens)
            assert seen.last >= int(lo) - 1, "a record below the truncation point was lost"
            assert old_prefix or new_prefix, "truncated records reappeared among new ones"
        case ["C", _through]:
            assert seen == full
        case _:
            raise AssertionError(inflight)


def test_sigkill_at_random_moments_loses_no_synced_record(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("STALWART_CRASH_SEED", "20261126")))
    directory = tmp_path / "wal"
    state = LogState()
    inflight_kills = torn_or_partial = 0
    kinds_seen: set[str] = set()
    started = time.monotonic()
    for kill in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(directory), str(rng.getrandbits(32))],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        ready = child.stdout.readline().split()
        assert ready and ready[0] == b"R", f"child did not start (kill {kill})"
        assert (int(ready[1]), int(ready[2])) == (state.first, state.last)
        time.sleep(rng.uniform(0.0, 0.12))
        child.send_signal(signal.SIGKILL)
        lines = [line.decode().split() for line in child.stdout.read().splitlines()]
        child.stdout.close()
        assert child.wait() == -signal.SIGKILL
        after_done, inflight = state, None
        for line in lines:
            if line == ["D"]:
                assert inflight is not None
                after_done, inflight = apply_intent(after_done, inflight), None
            else:
                assert line[0] == "I"
                inflight = line[1:]
                kinds_seen.add(inflight[0])
        seen = observe(directory)
        allowed(state, after_done, inflight, seen)
        inflight_kills += inflight is not None
        torn_or_partial += inflight is not None and seen not in (
            after_done,
            apply_intent(after_done, inflight),
        )
        state = seen
    elapsed = time.monotonic() - started
    print(f"{KILLS} kills in {elapsed:.1f}s; {inflight_kills} mid-operation; {torn_or_partial} partial;"
          f" final log {state.first}..{state.last}")  # fmt: skip
    assert kinds_seen == {"A", "T", "C"}, kinds_seen  # the workload exercised every operation
    assert inflight_kills > KILLS // 2  # kills really landed inside operations
    assert state.last > 1000

"""The asyncio 2PC host with in-memory participants: its timers, retries and call bookkeeping."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from stalwart.errors import ConfigError, StorageError
from stalwart.sansio import AppendLog, StorageOp
from stalwart.txn import (
    CoordinatorSettings,
    OutcomeUnknownError,
    SQLiteDecisionLog,
    TransactionAbortedError,
    TwoPhaseCoordinator,
)
from stalwart.txn._decision_log import PROBE_EVERY
from stalwart.txn.twopc import LogRecord, RecordKind


class FakeResource:
    """A participant whose branches live in a dict; knobs make it hang, refuse or go slow."""

    def __init__(self, name: str, *, batch: bool = False) -> None:
        self.name = name
        self.state: dict[str, str] = {}  # gid -> open | prepared | committed | rolled back
        self.prepare_hangs = False
        self.vote_no = False
        self.commit_hangs_once = False
        self.rollback_s = 0.0
        self.commit_calls = 0
        self.running: dict[str, int] = {}  # gid -> calls running on it now
        self.most_at_once = 0
        self.bad_gids: set[str] = set()  # never commit (the batch path returns them)
        self.first_branch_is_bad = False
        if batch:
            self.commit_prepared_many = self._many

    def _enter(self, gid: str) -> None:
        self.running[gid] = self.running.get(gid, 0) + 1
        self.most_at_once = max(self.most_at_once, self.running[gid])

    async def preflight(self) -> None:
        return None

    async def begin(self, gid: str) -> None:
        if self.first_branch_is_bad and not self.state:
            self.bad_gids.add(gid)
        self.state[gid] = "open"

    async def execute(self, gid: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        assert self.state[gid] == "open"
        return []

    async def prepare(self, gid: str) -> tuple[bool, str]:
        if self.prepare_hangs:
            await asyncio.Event().wait()
        if self.vote_no:
            self.state[gid] = "rolled back"
            return False, "refused"
        self.state[gid] = "prepared"
        return True, ""

    async def commit_prepared(self, gid: str) -> None:
        self.commit_calls += 1
        if self.commit_hangs_once:
            self.commit_hangs_once = False
            await asyncio.Event().wait()
        if gid in self.bad_gids:
            raise RuntimeError("this branch cannot commit")
        if self.state.get(gid) == "prepared":
            self.state[gid] = "committed"

    async def _many(self, gids: Sequence[str]) -> list[str]:
        failed = []
        for gid in gids:
            try:
                await self.commit_prepared(gid)
            except RuntimeError:
                failed.append(gid)
        return failed

    async def rollback(self, gid: str) -> None:
        self._enter(gid)
        try:
            await asyncio.sleep(self.rollback_s)
            if self.state.get(gid) != "committed":
                self.state[gid] = "rolled back"
        finally:
            self.running[gid] -= 1

    async def recover(self, prefix: str) -> list[str]:
        return [g for g, s in self.state.items() if s == "prepared" and g.startswith(prefix)]

    async def close(self) -> None:
        return None


def fast(**kw: float) -> CoordinatorSettings:
    base: dict[str, Any] = {
        "vote_timeout_s": 0.5, "retry_interval_s": 0.05, "tick_ms": 10, "recovery_grace_s": 60,
        "recovery_interval_s": 60, "outcome_timeout_s": 5, "shutdown_timeout_s": 3,
    }  # fmt: skip
    base.update(kw)
    return CoordinatorSettings(**base)


async def one(coord: TwoPhaseCoordinator, *names: str) -> None:
    async with coord.transaction() as tx:
        for name in names:
            await tx.execute(name, "work")


async def until_idle(coord: TwoPhaseCoordinator, limit_s: float = 5.0) -> None:
    async with asyncio.timeout(limit_s):
        while coord._coord is not None and coord._coord.inflight:
            await asyncio.sleep(0.01)


def test_twopc_host_hung_prepare_aborts_at_the_vote_timeout(tmp_path: Path) -> None:
    a, b = FakeResource("a"), FakeResource("b")
    b.prepare_hangs = True

    async def main() -> None:
        async with TwoPhaseCoordinator([a, b], log_path=tmp_path / "log.db", settings=fast()) as coord:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(TransactionAbortedError):
                await one(coord, "a", "b")
            assert loop.time() - t0 < 3.0  # the vote timeout (0.5 s), not a hang
            await until_idle(coord)

    asyncio.run(main())
    assert set(a.state.values()) == {"rolled back"}


@pytest.mark.parametrize("batch", [False, True])
def test_twopc_host_hung_commit_is_cancelled_and_retried(tmp_path: Path, batch: bool) -> None:
    a, b = FakeResource("a"), FakeResource("b", batch=batch)
    b.commit_hangs_once = True

    async def main() -> None:
        async with TwoPhaseCoordinator([a, b], log_path=tmp_path / "log.db", settings=fast()) as coord:
            await one(coord, "a", "b")  # returns once the decision is durable
            await until_idle(coord)

    asyncio.run(main())
    assert set(a.state.values()) == set(b.state.values()) == {"committed"}
    assert b.commit_calls >= 2


class SlowLog(SQLiteDecisionLog):
    slow = False

    async def write(self, ops: Sequence[StorageOp]) -> None:
        if self.slow:
            await asyncio.sleep(1.0)
        await super().write(ops)


def test_twopc_host_outcome_timeout_is_unknown_and_the_transaction_still_finishes(tmp_path: Path) -> None:
    a, b = FakeResource("a"), FakeResource("b")
    log = SlowLog(tmp_path / "log.db")

    async def main() -> None:
        async with TwoPhaseCoordinator([a, b], log=log, settings=fast(outcome_timeout_s=0.3)) as coord:
            log.slow = True
            with pytest.raises(OutcomeUnknownError):
                await one(coord, "a", "b")
            await until_idle(coord)

    asyncio.run(main())
    assert set(a.state.values()) == set(b.state.values()) == {"committed"}


def test_twopc_host_never_runs_two_calls_for_one_branch_at_once(tmp_path: Path) -> None:
    """b votes no and its rollback is slower than the retry interval: the finished Prepare call
    must not release the key the running rollback owns (which let a resend run a second one)."""
    a, b = FakeResource("a"), FakeResource("b")
    b.vote_no = True
    a.rollback_s = b.rollback_s = 0.3

    async def main() -> None:
        async with TwoPhaseCoordinator([a, b], log_path=tmp_path / "log.db", settings=fast()) as coord:
            with pytest.raises(TransactionAbortedError):
                await one(coord, "a", "b")
            await until_idle(coord)

    asyncio.run(main())
    assert a.most_at_once == 1
    assert b.most_at_once == 1


def test_twopc_host_one_bad_branch_does_not_hold_back_its_batch(tmp_path: Path) -> None:
    a, b = FakeResource("a"), FakeResource("b", batch=True)
    b.first_branch_is_bad = True

    async def main() -> int:
        async with TwoPhaseCoordinator([a, b], log_path=tmp_path / "log.db", settings=fast()) as coord:
            await asyncio.gather(*(one(coord, "a", "b") for _ in range(4)))
            await asyncio.sleep(0.5)  # ten retry intervals: the bad branch failed again and again
            assert coord._coord is not None
            return coord._coord.inflight

    assert asyncio.run(main()) == 1  # only the transaction with the bad branch is unfinished
    assert list(b.state.values()).count("committed") == 3
    assert [b.state[g] for g in b.bad_gids] == ["prepared"]


class RecordingLog(SQLiteDecisionLog):
    """Writes take ``delay_s``; every write and participant call lands in one shared timeline."""

    def __init__(self, path: Path, events: list[tuple[str, str]], delay_s: float) -> None:
        super().__init__(path)
        self.events = events
        self.delay_s = delay_s

    async def write(self, ops: Sequence[StorageOp]) -> None:
        commits = [r.txid for op in ops if isinstance(op, AppendLog) for r in [LogRecord.decode(op.payload)]
                   if r.kind is RecordKind.COMMIT]  # fmt: skip
        await asyncio.sleep(self.delay_s)
        await super().write(ops)
        self.events.extend(("durable", t) for t in commits)


class TimelineResource(FakeResource):
    def __init__(self, name: str, events: list[tuple[str, str]]) -> None:
        super().__init__(name)
        self.events = events

    async def prepare(self, gid: str) -> tuple[bool, str]:
        self.events.append(("prepare", gid.split(":")[-2]))
        return await super().prepare(gid)

    async def commit_prepared(self, gid: str) -> None:
        self.events.append(("commit", gid.split(":")[-2]))
        await super().commit_prepared(gid)


def test_twopc_host_sends_prepares_during_a_log_write_and_commits_only_after_it(tmp_path: Path) -> None:
    """A new transaction's Prepare does not wait for another transaction's log write, and no
    commit decision (to a participant, or to the caller) leaves before its COMMIT record is
    durable."""
    events: list[tuple[str, str]] = []
    a, b = TimelineResource("a", events), TimelineResource("b", events)
    log = RecordingLog(tmp_path / "log.db", events, delay_s=0.3)

    async def main() -> None:
        async with TwoPhaseCoordinator([a, b], log=log, settings=fast()) as coord:
            first = asyncio.ensure_future(one(coord, "a", "b"))
            async with asyncio.timeout(2):
                while len([e for e in events if e[0] == "prepare"]) < 2:
                    await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)  # the first transaction's COMMIT record is being written
            assert not first.done()
            second = asyncio.ensure_future(one(coord, "a", "b"))
            await asyncio.sleep(0.1)
            assert [e[0] for e in events].count("prepare") == 4, events  # not held by the write
            assert "durable" not in [e[0] for e in events]
            await first
            assert ("durable", events[0][1]) in events  # the caller heard after the write
            await second
            await until_idle(coord)

    asyncio.run(main())
    txids = {t for _, t in events}
    assert len(txids) == 2
    for txid in txids:
        durable_at = events.index(("durable", txid))
        commits = [i for i, e in enumerate(events) if e == ("commit", txid)]
        assert len(commits) == 2 and min(commits) > durable_at, events


def test_twopc_sqlite_log_writes_inline_while_fast_and_in_a_thread_when_slow(tmp_path: Path) -> None:
    """Fast writes run on the loop thread; one far over the limit sends the next ones to the
    thread, and a probe every PROBE_EVERY thread writes brings them back once the device is fast.
    The limit (20 ms) and the slow device (100 ms) are far from this machine's 0.2 ms fsync."""
    slow = {"on": False}

    class Log(SQLiteDecisionLog):
        def _write(self, ops: Sequence[StorageOp]) -> None:
            if slow["on"]:
                time.sleep(0.1)
            super()._write(ops)

    log = Log(tmp_path / "log.db", inline_write_max_ms=20.0)
    never = Log(tmp_path / "never.db", inline_write_max_ms=0)

    async def main() -> None:
        index = 0

        async def write(target: SQLiteDecisionLog = log) -> None:
            nonlocal index
            index += 1
            await target.write([AppendLog(index, b"x")])

        await log.load()
        for _ in range(3):
            await write()
        assert (log.inline_writes, log.thread_writes) == (3, 0)
        slow["on"] = True
        await write()  # inline (the log could not know), but 4x over the limit:
        for _ in range(3):
            await write()  # so these go to the thread
        assert (log.inline_writes, log.thread_writes) == (4, 3)
        slow["on"] = False
        for _ in range(PROBE_EVERY - 3 - 1):
            await write()  # fast again, but a thread write cannot tell
        assert (log.inline_writes, log.thread_writes) == (4, PROBE_EVERY - 1)
        await write()  # the probe, on the loop thread: fast, so inline from now on
        for _ in range(5):
            await write()
        assert (log.inline_writes, log.thread_writes) == (10, PROBE_EVERY - 1)
        assert len((await log.load()).log) == index
        await log.close()

        await never.load()
        index = 0
        for _ in range(PROBE_EVERY + 2):
            await write(never)
        assert (never.inline_writes, never.thread_writes) == (0, PROBE_EVERY + 2)  # 0: never inline
        await never.close()

    asyncio.run(main())
    with pytest.raises(ConfigError):
        SQLiteDecisionLog(tmp_path / "x.db", inline_write_max_ms=-1)
    with pytest.raises(ConfigError):
        SQLiteDecisionLog(tmp_path / "x.db", inline_write_max_ms=1e9)


def test_twopc_sqlite_log_append_is_idempotent_but_never_overwrites(tmp_path: Path) -> None:
    async def main() -> None:
        log = SQLiteDecisionLog(tmp_path / "log.db")
        await log.load()
        ops: list[StorageOp] = [AppendLog(1, b"a"), AppendLog(2, b"b")]
        await log.write(ops)
        await log.write(ops)  # a retry of a write that reached the disk: accepted
        with pytest.raises(StorageError, match="index 2 holds another record"):
            await log.write([AppendLog(2, b"other"), AppendLog(3, b"c")])
        assert (await log.load()).log == (b"a", b"b")  # the failed write left nothing behind
        await log.close()

    asyncio.run(main())


def test_twopc_host_commits_when_a_log_write_reached_the_disk_but_reported_failure(tmp_path: Path) -> None:
    """The first write is applied, then reported as failed (a connection lost after COMMIT):
    its retry finds the records there, so the transaction commits instead of jamming the log."""

    class AmbiguousLog(SQLiteDecisionLog):
        fail_after_write = 0

        def _write(self, ops: Sequence[StorageOp]) -> None:
            super()._write(ops)
            if self.fail_after_write > 0:
                self.fail_after_write -= 1
                raise sqlite3.OperationalError("disk I/O error (reported after the commit)")

    a, b = FakeResource("a"), FakeResource("b")
    log = AmbiguousLog(tmp_path / "log.db")

    async def main() -> None:
        async with TwoPhaseCoordinator([a, b], log=log, settings=fast()) as coord:
            log.fail_after_write = 1
            await one(coord, "a", "b")
            await one(coord, "a", "b")
            await until_idle(coord)

    asyncio.run(main())
    assert list(a.state.values()) == list(b.state.values()) == ["committed", "committed"]


def test_twopc_host_stops_after_log_write_attempts_and_says_the_outcome_is_unknown(tmp_path: Path) -> None:
    class BrokenLog(SQLiteDecisionLog):
        broken = False

        async def write(self, ops: Sequence[StorageOp]) -> None:
            if self.broken:
                raise StorageError("disk gone")
            await super().write(ops)

    a, b = FakeResource("a"), FakeResource("b")
    log = BrokenLog(tmp_path / "log.db")

    async def main() -> None:
        async with TwoPhaseCoordinator([a, b], log=log, settings=fast(log_write_attempts=3)) as coord:
            log.broken = True
            with pytest.raises(OutcomeUnknownError, match="disk gone"):
                await one(coord, "a", "b")  # three attempts, 0.15 s of backoff, then it stops
            with pytest.raises(OutcomeUnknownError, match="restart"):
                coord.transaction()

    asyncio.run(main())
    assert set(a.state.values()) == set(b.state.values()) == {"prepared"}  # recovery's to finish
    with pytest.raises(ConfigError):
        fast(log_write_attempts=0)


def test_twopc_host_starts_no_participant_call_after_shutdown(tmp_path: Path) -> None:
    """A COMMIT record still being written when the coordinator shuts down: the decision it
    releases must not start calls on resources that are closing (they would reopen connections
    and outlive the ``async with``); recovery after a restart finishes the commit instead."""
    events: list[str] = []

    class Resource(FakeResource):
        async def commit_prepared(self, gid: str) -> None:
            await asyncio.sleep(0.05)
            events.append(f"{self.name}: commit")
            await super().commit_prepared(gid)

        async def close(self) -> None:
            events.append(f"{self.name}: close")

    class SlowLog(SQLiteDecisionLog):
        async def write(self, ops: Sequence[StorageOp]) -> None:
            await asyncio.sleep(0.3)
            await super().write(ops)

    a, b = Resource("a"), Resource("b")

    async def main() -> None:
        # The write (0.3 s) outlasts the wait for in-flight transactions (0.15 s) but not the
        # wait for the writer (0.15 s more): its decision is released during the shutdown.
        log = SlowLog(tmp_path / "log.db")
        coord = TwoPhaseCoordinator([a, b], log=log, settings=fast(shutdown_timeout_s=0.15))
        async with coord:
            caller = asyncio.ensure_future(one(coord, "a", "b"))
            await asyncio.sleep(0.1)  # both voted; the COMMIT record is being written
        assert not coord._tasks
        await caller  # the decision was durable before the shutdown ended: committed
        await asyncio.sleep(0.2)  # a call started during the shutdown would commit by now
        events.append("end")

    asyncio.run(main())
    assert events == ["a: close", "b: close", "end"]
    assert set(a.state.values()) == set(b.state.values()) == {"prepared"}  # for recovery to finish


def test_twopc_host_holds_one_decision_per_branch_while_the_log_cannot_be_written(tmp_path: Path) -> None:
    """Writes fail for a while (retried with backoff) while the coordinator resends its decision
    every 50 ms: what is held back stays one message per branch, and all commits in the end."""

    class FailingLog(SQLiteDecisionLog):
        failures = 0

        async def write(self, ops: Sequence[StorageOp]) -> None:
            if self.failures > 0:
                self.failures -= 1
                raise StorageError("disk full")
            await super().write(ops)

    a, b = FakeResource("a"), FakeResource("b")
    log = FailingLog(tmp_path / "log.db")

    async def main() -> None:
        async with TwoPhaseCoordinator([a, b], log=log, settings=fast()) as coord:
            log.failures = 4  # about 0.75 s of backoff: 15 retry intervals
            commit = asyncio.ensure_future(one(coord, "a", "b"))
            most = 0
            while not commit.done():
                most = max(most, sum(len(m) + len(o) for _, m, o in coord._held))
                await asyncio.sleep(0.01)
            await commit
            assert 0 < most <= 3  # the two Decides and the outcome, never the resends
            await until_idle(coord)

    asyncio.run(main())
    assert set(a.state.values()) == set(b.state.values()) == {"committed"}
    assert a.commit_calls == b.commit_calls == 1

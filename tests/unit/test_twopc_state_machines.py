"""Two-phase commit coordinator and participant, stepped by hand (no simulator)."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from stalwart.errors import DecodeError
from stalwart.sansio import DurableState, NodeId, apply_storage_ops
from stalwart.txn.twopc import (
    AbortRequest,
    Ack,
    CommitRequest,
    Coordinator,
    CoordinatorConfig,
    LedgerParticipant,
    LogRecord,
    Outcome,
    ParticipantConfig,
    Phase,
    Stage,
    TxDecided,
    TxFinished,
    TxId,
    TxRefusedError,
    Vote,
    depends_on_log,
)

C, P1, P2 = NodeId("coord"), NodeId("p1"), NodeId("p2")


class Cluster:
    """A coordinator and two ledger participants on a lossless in-memory network."""

    def __init__(self, config: CoordinatorConfig | None = None) -> None:
        self.config = config or CoordinatorConfig(vote_timeout_ticks=5, retry_interval_ticks=3)
        self.disks: dict[NodeId, DurableState] = {n: DurableState() for n in (C, P1, P2)}
        self.unsynced: dict[NodeId, list[Any]] = {n: [] for n in (C, P1, P2)}
        self.coord = Coordinator(C, self.disks[C], self.config)
        pcfg = ParticipantConfig(inquire_after_ticks=4, initial_balances={"a": 100, "b": 100})
        self.pcfg = pcfg
        self.parts = {p: LedgerParticipant(p, DurableState(), pcfg) for p in (P1, P2)}
        self.queue: deque[tuple[NodeId, NodeId, Any]] = deque()
        self.outputs: list[Any] = []
        self.down: set[NodeId] = set()

    def node(self, n: NodeId) -> Any:
        return self.coord if n == C else self.parts[n]

    def pump(self, n: NodeId) -> None:
        node = self.node(n)
        ready = node.ready()
        if ready.must_sync:
            self.disks[n] = apply_storage_ops(self.disks[n], [*self.unsynced[n], *ready.persist])
            self.unsynced[n] = []
        else:
            self.unsynced[n].extend(ready.persist)
        # Replies to the client (Staged) leave the cluster; only node-to-node traffic is queued.
        self.queue.extend((n, env.to, env.payload) for env in ready.messages if env.to in (C, P1, P2))
        self.outputs.extend(ready.outputs)
        node.advance(ready)

    def deliver_all(self, drop_to: set[NodeId] | None = None) -> None:
        for n in (C, P1, P2):
            self.pump(n)
        while self.queue:
            src, dst, msg = self.queue.popleft()
            if dst in self.down or (drop_to and dst in drop_to) or dst not in (C, P1, P2):
                continue
            self.node(dst).step(src, msg)
            self.pump(dst)

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            for n in (C, P1, P2):
                if n not in self.down:
                    self.node(n).tick()
            self.deliver_all()

    def crash(self, n: NodeId) -> None:
        self.unsynced[n] = []  # the page cache is gone
        self.down.add(n)

    def restart(self, n: NodeId) -> None:
        self.down.discard(n)
        if n == C:
            self.coord = Coordinator(C, self.disks[C], self.config)
        else:
            self.parts[n] = LedgerParticipant(n, self.disks[n], self.pcfg)

    def transfer(self, txid: str, amount: int) -> None:
        t = TxId(txid)
        self.parts[P1].step(NodeId("client"), Stage(t, "a", -amount))
        self.parts[P2].step(NodeId("client"), Stage(t, "b", amount))
        self.coord.step(NodeId("client"), CommitRequest(t, (P1, P2)))

    def decided(self, txid: str) -> Outcome | None:
        found = [o.outcome for o in self.outputs if isinstance(o, TxDecided) and o.txid == txid]
        return found[-1] if found else None

    def total(self) -> int:
        return self.parts[P1].balances["a"] + self.parts[P2].balances["b"]


def test_commit_applies_on_every_participant() -> None:
    c = Cluster()
    c.transfer("t1", 30)
    c.deliver_all()
    assert c.decided("t1") is Outcome.COMMITTED
    assert (c.parts[P1].balances["a"], c.parts[P2].balances["b"]) == (70, 130)
    assert any(isinstance(o, TxFinished) and o.txid == "t1" for o in c.outputs)
    assert c.coord.inflight == 0


def test_a_no_vote_aborts_everywhere() -> None:
    c = Cluster()
    c.transfer("t1", 500)  # would overdraw a
    c.deliver_all()
    assert c.decided("t1") is Outcome.ABORTED
    assert c.total() == 200 and c.parts[P2].in_doubt == frozenset()


def test_a_silent_participant_makes_the_transaction_abort() -> None:
    c = Cluster()
    c.crash(P2)
    c.transfer("t1", 10)
    c.tick(6)
    assert c.decided("t1") is Outcome.ABORTED
    c.tick(10)
    assert c.parts[P1].in_doubt == frozenset() and c.parts[P1].balances["a"] == 100


def test_coordinator_crash_after_decision_resumes_phase_two() -> None:
    c = Cluster()
    c.transfer("t1", 25)
    c.pump(C)
    for _ in (P1, P2):
        src, dst, msg = c.queue.popleft()
        c.node(dst).step(src, msg)
        c.pump(dst)
    # both votes are queued for the coordinator; deliver them, then crash before Decides leave
    while c.queue:
        src, dst, msg = c.queue.popleft()
        c.coord.step(src, msg)
    c.pump(C)
    assert c.coord.phase_of(TxId("t1")) is Phase.COMMITTING
    c.queue.clear()
    c.crash(C)
    c.restart(C)
    assert c.coord.phase_of(TxId("t1")) is Phase.COMMITTING, "the COMMIT record was synced"
    c.tick(5)
    assert (c.parts[P1].balances["a"], c.parts[P2].balances["b"]) == (75, 125)
    assert c.coord.inflight == 0


def test_coordinator_crash_before_decision_presumes_abort() -> None:
    c = Cluster()
    c.transfer("t1", 25)
    c.pump(C)
    for _ in range(2):
        src, dst, msg = c.queue.popleft()
        c.node(dst).step(src, msg)
        c.pump(dst)
    c.queue.clear()  # the votes die with the coordinator
    c.crash(C)
    c.restart(C)
    assert c.parts[P1].in_doubt == {"t1"}
    c.tick(10)  # the participants inquire and hear "abort"
    assert c.parts[P1].in_doubt == frozenset() and c.parts[P2].in_doubt == frozenset()
    assert c.total() == 200 and c.parts[P1].balances["a"] == 100


def test_participant_crash_after_prepare_keeps_its_promise() -> None:
    c = Cluster()
    c.transfer("t1", 40)
    c.pump(C)
    src, dst, msg = c.queue.popleft()  # Prepare to p1
    c.node(dst).step(src, msg)
    c.pump(dst)
    c.crash(P1)
    c.restart(P1)
    assert c.parts[P1].in_doubt == {"t1"}, "PREPARED was synced before the vote left"
    c.deliver_all()
    c.tick(5)
    assert c.decided("t1") is Outcome.COMMITTED
    assert (c.parts[P1].balances["a"], c.parts[P2].balances["b"]) == (60, 140)


def test_participant_crash_before_prepare_votes_no() -> None:
    c = Cluster()
    c.transfer("t1", 40)
    c.crash(P1)
    c.restart(P1)  # the staged work was volatile
    c.deliver_all()
    assert c.decided("t1") is Outcome.ABORTED
    c.tick(5)
    assert c.total() == 200


def test_refusals_change_nothing() -> None:
    c = Cluster(CoordinatorConfig(max_inflight=1))
    c.transfer("t1", 1)
    with pytest.raises(TxRefusedError):
        c.coord.step(NodeId("client"), CommitRequest(TxId("t1"), (P1,)))
    with pytest.raises(TxRefusedError):
        c.coord.step(NodeId("client"), CommitRequest(TxId("t2"), (P1,)))
    with pytest.raises(TxRefusedError):
        c.coord.step(NodeId("client"), CommitRequest(TxId("t3"), ()))
    c.deliver_all()
    assert c.decided("t1") is Outcome.COMMITTED
    with pytest.raises(TxRefusedError):
        c.coord.step(NodeId("client"), CommitRequest(TxId("t4"), (P1, P1)))


def test_client_abort() -> None:
    c = Cluster()
    c.parts[P1].step(NodeId("client"), Stage(TxId("t1"), "a", -5))
    c.coord.step(NodeId("client"), AbortRequest(TxId("t1"), (P1, P2)))
    c.deliver_all()
    assert c.decided("t1") is Outcome.ABORTED and c.total() == 200


def test_decision_log_compacts_finished_transactions() -> None:
    c = Cluster(CoordinatorConfig(compact_every_entries=10, vote_timeout_ticks=5, retry_interval_ticks=3))
    for i in range(30):
        c.transfer(f"t{i}", 1)
        c.deliver_all()
    c.tick(1)
    # Sync the tail too and check the durable log holds only a short suffix.
    c.disks[C] = apply_storage_ops(c.disks[C], c.unsynced[C])
    assert len(c.disks[C].log) < 20 and c.disks[C].first_index > 1
    c.restart(C)
    assert c.coord.inflight == 0


def test_mutation_decide_before_log_loses_the_decision() -> None:
    config = CoordinatorConfig(
        vote_timeout_ticks=5, retry_interval_ticks=3, mutations=frozenset({"decide-before-log"})
    )
    c = Cluster(config)
    c.transfer("t1", 25)
    c.pump(C)
    for _ in range(2):
        src, dst, msg = c.queue.popleft()
        c.node(dst).step(src, msg)
        c.pump(dst)
    while c.queue:
        src, dst, msg = c.queue.popleft()
        c.coord.step(src, msg)
    c.pump(C)
    src, dst, msg = c.queue.popleft()  # Decide(commit) to p1 got out...
    c.node(dst).step(src, msg)
    c.pump(dst)
    c.queue.clear()
    c.crash(C)  # ...but the unsynced COMMIT record is lost
    c.restart(C)
    c.tick(10)
    assert c.total() != 200, "the broken coordinator really breaks atomicity"


def test_unknown_mutation_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown mutations"):
        CoordinatorConfig(mutations=frozenset({"nope"}))


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x94\x02\x01\xa1x\x90", b"\x94\x01\x07\xa1x\x90"])
def test_bad_log_records_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        LogRecord.decode(data)


def test_twopc_only_commit_decisions_depend_on_the_log() -> None:
    """What a host may send before a write is durable: everything but the commit decisions, and
    those only ever come in a Ready that syncs the COMMIT record they rest on (or after it)."""
    coord = Coordinator(C, DurableState())
    for txid, yes in ((TxId("t-commit"), True), (TxId("t-abort"), False)):
        coord.step(NodeId("client"), CommitRequest(txid, ("p1", "p2")))
        ready = coord.ready()
        coord.advance(ready)
        assert ready.messages and not any(depends_on_log(e.payload) for e in ready.messages)  # Prepares
        coord.step(P1, Vote(txid, True))
        coord.step(P2, Vote(txid, yes))
        ready = coord.ready()
        coord.advance(ready)
        decisions = [depends_on_log(e.payload) for e in ready.messages] + [
            depends_on_log(o) for o in ready.outputs
        ]
        assert decisions == [yes, yes, yes]  # two Decides and the TxDecided
        assert ready.must_sync is yes
        for p in (P1, P2):
            coord.step(p, Ack(txid))
        ready = coord.ready()
        coord.advance(ready)
        assert [type(o) for o in ready.outputs] == [TxFinished]
        assert not depends_on_log(ready.outputs[0])
        assert not ready.must_sync  # END records ride along with a later write

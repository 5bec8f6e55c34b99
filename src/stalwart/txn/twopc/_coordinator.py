"""The two-phase commit coordinator as a pure state machine (presumed abort).

Guarantees, given a decision log that keeps what it synced:

- Atomicity: a COMMIT record is made durable (``must_sync``) before any ``Decide(commit)`` is
  sent, and it is only written once every participant voted yes. A transaction without a
  COMMIT record is aborted: that is what a participant is told when it inquires.
- Termination while the coordinator lives: a participant that does not vote within
  ``vote_timeout_ticks`` makes the transaction abort; phase 2 is resent every
  ``retry_interval_ticks`` until every participant acknowledged.
- Recovery: a coordinator rebuilt from its :class:`~stalwart.sansio.DurableState` resumes phase 2
  of every committed transaction that was not END-ed.

Limits: blocking when the coordinator is lost (participants that prepared wait for it, as in
every 2PC); at most ``max_inflight`` transactions and ``max_participants`` per transaction.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import assert_never

from stalwart.errors import ProtocolError
from stalwart.sansio import AppendLog, CompactLog, DurableState, Envelope, NodeId, Ready, StorageOp
from stalwart.txn.twopc._messages import (
    AbortRequest,
    Ack,
    CommitRequest,
    CoordinatorInput,
    CoordinatorMessage,
    CoordinatorOutput,
    Decide,
    Inquire,
    Outcome,
    Prepare,
    TxDecided,
    TxFinished,
    TxId,
    Vote,
)
from stalwart.txn.twopc._records import MAX_PARTICIPANTS, LogRecord, RecordKind

MUTATIONS = frozenset({"decide-before-log", "commit-on-partial-votes"})
"""Deliberately broken variants, for proving that the simulator's atomicity check bites."""


class TxRefusedError(ProtocolError):
    """The coordinator refused a request; nothing changed."""


def depends_on_log(item: CoordinatorMessage | CoordinatorOutput) -> bool:
    """Whether ``item`` may only leave once every must-sync record handed out so far is durable.

    Presumed abort makes this a short list: only a commit decision (``Decide(commit)``, a
    committed ``TxDecided``) relies on the log. A ``Prepare`` relies on nothing, and an abort is
    what a lost log presumes anyway. So a host may send everything else of a :class:`Ready` at
    once, before its records are durable, and hold back only the commit decisions until every
    must-sync record it was given up to then is durable. (The generic contract, holding back the
    whole Ready, is just as correct, only slower: a new transaction's Prepare would wait for
    another transaction's fsync.)
    """
    match item:
        case Decide(commit=commit):
            return commit
        case TxDecided(outcome=outcome):
            return outcome is Outcome.COMMITTED
        case Prepare() | TxFinished():
            return False
        case _ as unreachable:
            assert_never(unreachable)


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    vote_timeout_ticks: int = 50
    retry_interval_ticks: int = 10
    max_inflight: int = 10_000
    max_participants: int = MAX_PARTICIPANTS
    max_abort_retries: int = 20
    """An unacknowledged abort is dropped after this many resends: presumed abort covers it."""
    compact_every_entries: int = 256
    mutations: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = self.mutations - MUTATIONS
        if unknown:
            raise ValueError(f"unknown mutations {sorted(unknown)}; known: {sorted(MUTATIONS)}")
        if min(self.vote_timeout_ticks, self.retry_interval_ticks, self.max_inflight) < 1:
            raise ValueError("timeouts and limits must be positive")


class Phase(enum.Enum):
    PREPARING = "preparing"
    COMMITTING = "committing"
    ABORTING = "aborting"


@dataclass(slots=True)
class _Tx:
    txid: TxId
    participants: tuple[str, ...]
    phase: Phase
    deadline_tick: int
    yes_votes: set[str] = field(default_factory=set)
    pending_acks: set[str] = field(default_factory=set)
    log_index: int | None = None
    retries: int = 0


class Coordinator:
    """Drives many transactions at once; see the module docstring for what it guarantees."""

    def __init__(
        self, node_id: NodeId, durable: DurableState, config: CoordinatorConfig | None = None
    ) -> None:
        self._id = node_id
        self._config = config or CoordinatorConfig()
        self._now_tick = 0
        self._txs: dict[TxId, _Tx] = {}
        self._open_commits: dict[int, TxId] = {}  # log index of a COMMIT record -> its tx
        self._first_index = durable.first_index
        self._next_index = durable.last_index + 1
        self._persist: list[StorageOp] = []
        self._must_sync = False
        self._messages: list[Envelope[CoordinatorMessage]] = []
        self._outputs: list[CoordinatorOutput] = []
        self._recover(durable)

    @property
    def node_id(self) -> NodeId:
        return self._id

    def _recover(self, durable: DurableState) -> None:
        for offset, payload in enumerate(durable.log):
            record = LogRecord.decode(payload)
            index = durable.first_index + offset
            match record.kind:
                case RecordKind.COMMIT:
                    tx = _Tx(record.txid, record.participants, Phase.COMMITTING, 0, log_index=index)
                    tx.pending_acks = set(record.participants)
                    self._txs[record.txid] = tx
                    self._open_commits[index] = record.txid
                case RecordKind.END:
                    done = self._txs.pop(record.txid, None)
                    if done is not None and done.log_index is not None:
                        del self._open_commits[done.log_index]
                case _ as unreachable:
                    assert_never(unreachable)
        # Outputs do not survive a crash: announce every decision that recovery resumes, so the
        # host (and whoever waits on it) learns the outcome again. Outputs are at-least-once.
        self._outputs.extend(TxDecided(txid, Outcome.COMMITTED) for txid in self._txs)

    # -- inputs ----------------------------------------------------------------------------------

    def step(self, source: NodeId, message: CoordinatorInput) -> None:
        match message:
            case CommitRequest():
                self._on_commit_request(message)
            case AbortRequest():
                self._on_abort_request(message)
            case Vote():
                self._on_vote(source, message)
            case Ack():
                self._on_ack(source, message)
            case Inquire():
                self._on_inquire(source, message)
            case _ as unreachable:
                assert_never(unreachable)
        # A step touches one transaction: check it now (cheap); tick() sweeps all of them.
        tx = self._txs.get(message.txid)
        if tx is not None:
            self._check_tx(tx)

    def _on_commit_request(self, req: CommitRequest) -> None:
        parts = req.participants
        if req.txid in self._txs:
            raise TxRefusedError(f"transaction {req.txid} is already known")
        if not parts or len(set(parts)) != len(parts):
            raise TxRefusedError("participants must be a non-empty list without duplicates")
        if len(parts) > self._config.max_participants:
            raise TxRefusedError(f"more than {self._config.max_participants} participants")
        if len(self._txs) >= self._config.max_inflight:
            raise TxRefusedError(f"{self._config.max_inflight} transactions in flight; try again later")
        deadline = self._now_tick + self._config.vote_timeout_ticks
        self._txs[req.txid] = _Tx(req.txid, parts, Phase.PREPARING, deadline)
        self._messages.extend(Envelope(NodeId(p), Prepare(req.txid)) for p in parts)

    def _on_abort_request(self, req: AbortRequest) -> None:
        tx = self._txs.get(req.txid)
        if tx is not None and tx.phase is Phase.COMMITTING:
            raise TxRefusedError(f"transaction {req.txid} is already committed")
        if tx is None:
            if not req.participants or len(req.participants) > self._config.max_participants:
                raise TxRefusedError("abort needs between 1 and max_participants participants")
            if len(self._txs) >= self._config.max_inflight:
                raise TxRefusedError(f"{self._config.max_inflight} transactions in flight; try again later")
            tx = _Tx(req.txid, req.participants, Phase.PREPARING, self._now_tick)
            self._txs[req.txid] = tx
        if tx.phase is Phase.PREPARING:
            self._abort(tx, "aborted by the client")

    def _on_vote(self, source: NodeId, vote: Vote) -> None:
        tx = self._txs.get(vote.txid)
        if tx is None or tx.phase is not Phase.PREPARING or source not in tx.participants:
            return  # late or duplicate: a prepared participant without a decision will inquire
        if not vote.yes:
            self._abort(tx, f"{source} voted no: {vote.reason}" if vote.reason else f"{source} voted no")
            return
        tx.yes_votes.add(source)
        partial = "commit-on-partial-votes" in self._config.mutations
        if len(tx.yes_votes) == len(tx.participants) or partial:
            self._commit(tx)

    def _on_ack(self, source: NodeId, ack: Ack) -> None:
        tx = self._txs.get(ack.txid)
        if tx is None or tx.phase is Phase.PREPARING:
            return
        tx.pending_acks.discard(source)
        if not tx.pending_acks:
            self._finish(tx)

    def _on_inquire(self, source: NodeId, inquire: Inquire) -> None:
        tx = self._txs.get(inquire.txid)
        if tx is not None and tx.phase is Phase.PREPARING:
            return  # still collecting votes; the decision will be sent when it is made
        commit = tx is not None and tx.phase is Phase.COMMITTING
        # Unknown transaction: no COMMIT record survives, so it is aborted (presumed abort).
        self._messages.append(Envelope(source, Decide(inquire.txid, commit=commit)))

    def tick(self) -> None:
        self._now_tick += 1
        expired: list[TxId] = []
        for tx in list(self._txs.values()):  # a resend may finish (remove) a transaction
            if tx.phase is Phase.PREPARING:
                if self._now_tick >= tx.deadline_tick:
                    expired.append(tx.txid)
            elif self._now_tick >= tx.deadline_tick:
                self._resend_decision(tx)
        for txid in expired:
            self._abort(self._txs[txid], "a participant did not vote in time")
        self._check_invariants()

    # -- transitions -----------------------------------------------------------------------------

    def _commit(self, tx: _Tx) -> None:
        index = self._next_index
        self._next_index += 1
        record = LogRecord(RecordKind.COMMIT, tx.txid, tx.participants)
        self._persist.append(AppendLog(index, record.encode()))
        # The decision must be durable before anyone hears it: a crash after a Decide(commit)
        # went out but before the record was synced would let recovery presume abort.
        if "decide-before-log" not in self._config.mutations:
            self._must_sync = True
        tx.phase, tx.log_index = Phase.COMMITTING, index
        tx.pending_acks = set(tx.participants)
        tx.deadline_tick = self._now_tick + self._config.retry_interval_ticks
        self._open_commits[index] = tx.txid
        self._send_decision(tx, tx.participants)
        self._outputs.append(TxDecided(tx.txid, Outcome.COMMITTED))

    def _abort(self, tx: _Tx, reason: str) -> None:
        assert tx.phase is Phase.PREPARING, "only an undecided transaction can abort"
        tx.phase = Phase.ABORTING
        tx.pending_acks = set(tx.participants)
        tx.deadline_tick = self._now_tick + self._config.retry_interval_ticks
        self._send_decision(tx, tx.participants)
        self._outputs.append(TxDecided(tx.txid, Outcome.ABORTED, reason))

    def _send_decision(self, tx: _Tx, to: tuple[str, ...] | set[str]) -> None:
        commit = tx.phase is Phase.COMMITTING
        self._messages.extend(Envelope(NodeId(p), Decide(tx.txid, commit)) for p in sorted(to))

    def _resend_decision(self, tx: _Tx) -> None:
        tx.retries += 1
        if tx.phase is Phase.ABORTING and tx.retries > self._config.max_abort_retries:
            # Presumed abort: a participant still prepared will inquire and hear "abort".
            self._finish(tx)
            return
        tx.deadline_tick = self._now_tick + self._config.retry_interval_ticks
        self._send_decision(tx, tx.pending_acks)

    def _finish(self, tx: _Tx) -> None:
        del self._txs[tx.txid]
        outcome = Outcome.COMMITTED if tx.phase is Phase.COMMITTING else Outcome.ABORTED
        if tx.log_index is not None:
            # END needs no sync: if it is lost, recovery resends the decision and the
            # participants, which remember their outcome, acknowledge it again.
            self._persist.append(AppendLog(self._next_index, LogRecord(RecordKind.END, tx.txid).encode()))
            self._next_index += 1
            del self._open_commits[tx.log_index]
            self._maybe_compact()
        self._outputs.append(TxFinished(tx.txid, outcome))

    def _maybe_compact(self) -> None:
        oldest_open = min(self._open_commits, default=self._next_index)
        through = oldest_open - 1
        if through - self._first_index + 1 >= self._config.compact_every_entries:
            self._persist.append(CompactLog(through))
            self._first_index = through + 1

    # -- the contract ----------------------------------------------------------------------------

    def ready(self) -> Ready[CoordinatorMessage, CoordinatorOutput]:
        return Ready(
            persist=tuple(self._persist),
            must_sync=self._must_sync and bool(self._persist),
            messages=tuple(self._messages),
            outputs=tuple(self._outputs),
        )

    def advance(self, ready: Ready[CoordinatorMessage, CoordinatorOutput]) -> None:
        assert len(ready.persist) <= len(self._persist), "advance() with a Ready this node did not make"
        del self._persist[: len(ready.persist)]
        del self._messages[: len(ready.messages)]
        del self._outputs[: len(ready.outputs)]
        self._must_sync = self._must_sync and bool(self._persist)

    # -- introspection ---------------------------------------------------------------------------

    def phase_of(self, txid: TxId) -> Phase | None:
        tx = self._txs.get(txid)
        return None if tx is None else tx.phase

    @property
    def inflight(self) -> int:
        return len(self._txs)

    def _check_invariants(self) -> None:
        for tx in self._txs.values():
            self._check_tx(tx)
        assert len(self._open_commits) <= len(self._txs)

    def _check_tx(self, tx: _Tx) -> None:
        # Every committing transaction is backed by a COMMIT record the log still holds; a
        # transaction never has more votes or pending acks than participants.
        assert tx.yes_votes <= set(tx.participants)
        assert tx.pending_acks <= set(tx.participants)
        if tx.phase is Phase.COMMITTING:
            assert tx.log_index is not None and self._open_commits.get(tx.log_index) == tx.txid
            assert tx.log_index >= self._first_index

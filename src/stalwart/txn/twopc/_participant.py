"""A pure two-phase-commit participant over a ledger of integer balances.

It is what the simulator runs to prove atomicity (the bank: transfers across participants) and
the reference for a user-defined participant. Work staged for a transaction is volatile, like
an open database transaction: it is lost on a crash, and a participant without it votes no.
A yes vote is sent only after the PREPARED record (with the writes) is durable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import msgpack

from stalwart.errors import DecodeError
from stalwart.sansio import AppendLog, DurableState, Envelope, NodeId, Ready, StorageOp
from stalwart.txn.twopc._messages import Ack, Decide, Inquire, Outcome, Prepare, TxId, Vote

MAX_STAGED_TXS = 10_000
MAX_WRITES_PER_TX = 64
_PREPARED, _COMMITTED, _ABORTED = 1, 2, 3


@dataclass(frozen=True, slots=True)
class Stage:
    """Request: add ``delta`` to ``account`` as part of ``txid`` (not yet visible).

    Idempotent: staging the same (txid, account) again replaces the delta, so a duplicated or
    retried message is harmless. One transaction has one delta per account.
    """

    txid: TxId
    account: str
    delta: int


@dataclass(frozen=True, slots=True)
class Staged:
    """Reply to :class:`Stage`, sent back to whoever staged: staged, or refused with a reason."""

    txid: TxId
    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Applied:
    """Output: ``txid`` reached its outcome on this participant (durably)."""

    txid: TxId
    outcome: Outcome


ParticipantInput = Stage | Prepare | Decide
ParticipantMessage = Vote | Ack | Inquire | Staged
ParticipantOutput = Applied
MUTATIONS = frozenset({"vote-before-durable"})


@dataclass(frozen=True, slots=True)
class ParticipantConfig:
    inquire_after_ticks: int = 30
    stage_timeout_ticks: int = 200
    """Staged work not prepared within this long is dropped (an idle transaction timeout)."""
    initial_balances: Mapping[str, int] | None = None
    allow_negative: bool = False
    mutations: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.mutations - MUTATIONS:
            raise ValueError(f"unknown mutations {sorted(self.mutations - MUTATIONS)}")


def _encode(kind: int, txid: str, coordinator: str, writes: dict[str, int]) -> bytes:
    data = msgpack.packb([1, kind, txid, coordinator, writes])
    assert isinstance(data, bytes)
    return data


def _decode(data: bytes) -> tuple[int, TxId, NodeId, dict[str, int]]:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, max_str_len=4096, max_map_len=256)
        version, kind, txid, coordinator, writes = obj
    except Exception as exc:  # msgpack and unpacking raise several unrelated types
        raise DecodeError(f"bad participant record: {exc}") from None
    ok = version == 1 and kind in (_PREPARED, _COMMITTED, _ABORTED) and isinstance(txid, str)
    if not (ok and isinstance(coordinator, str) and isinstance(writes, dict)):
        raise DecodeError("bad participant record: shape")
    if not all(isinstance(k, str) and type(v) is int for k, v in writes.items()):
        raise DecodeError("bad participant record: writes")
    return kind, TxId(txid), NodeId(coordinator), writes


class LedgerParticipant:
    def __init__(
        self, node_id: NodeId, durable: DurableState, config: ParticipantConfig | None = None
    ) -> None:
        self._id = node_id
        self._config = config or ParticipantConfig()
        self.balances: dict[str, int] = dict(self._config.initial_balances or {})
        self._staged: dict[TxId, dict[str, int]] = {}
        self._staged_at: dict[TxId, int] = {}
        self._prepared: dict[TxId, tuple[NodeId, dict[str, int], int]] = {}  # writes, inquire tick
        self.outcomes: dict[TxId, Outcome] = {}
        self._now_tick = 0
        self._next_index = durable.last_index + 1
        self._persist: list[StorageOp] = []
        self._must_sync = False
        self._messages: list[Envelope[ParticipantMessage]] = []
        self._outputs: list[ParticipantOutput] = []
        for payload in durable.log:
            self._replay(*_decode(payload))

    @property
    def node_id(self) -> NodeId:
        return self._id

    @property
    def in_doubt(self) -> frozenset[TxId]:
        """Prepared transactions still waiting for a decision."""
        return frozenset(self._prepared)

    def _replay(self, kind: int, txid: TxId, coordinator: NodeId, writes: dict[str, int]) -> None:
        if kind == _PREPARED:
            self._prepared[txid] = (coordinator, writes, self._config.inquire_after_ticks)
        elif kind == _COMMITTED:
            self._apply(txid)
        else:
            self._prepared.pop(txid, None)
            self.outcomes[txid] = Outcome.ABORTED

    def _apply(self, txid: TxId) -> None:
        entry = self._prepared.pop(txid, None)
        if entry is not None:
            for account, delta in entry[1].items():
                self.balances[account] = self.balances.get(account, 0) + delta
        self.outcomes[txid] = Outcome.COMMITTED

    def _log(self, kind: int, txid: TxId, coordinator: NodeId, writes: dict[str, int], sync: bool) -> None:
        self._persist.append(AppendLog(self._next_index, _encode(kind, txid, coordinator, writes)))
        self._next_index += 1
        self._must_sync = self._must_sync or sync

    def step(self, source: NodeId, message: ParticipantInput) -> None:
        match message:
            case Stage():
                self._messages.append(Envelope(source, self._on_stage(message)))
            case Prepare(txid=txid):
                self._on_prepare(source, txid)
            case Decide(txid=txid, commit=commit):
                self._on_decide(source, txid, commit)

    def _on_stage(self, req: Stage) -> Staged:
        writes = self._staged.get(req.txid)
        if req.txid in self.outcomes or req.txid in self._prepared:
            return Staged(req.txid, False, "transaction already prepared or finished")
        if writes is None and len(self._staged) >= MAX_STAGED_TXS:
            return Staged(req.txid, False, "too many open transactions")
        if writes is not None and req.account not in writes and len(writes) >= MAX_WRITES_PER_TX:
            return Staged(req.txid, False, "too many writes in one transaction")
        writes = self._staged.setdefault(req.txid, {})
        self._staged_at.setdefault(req.txid, self._now_tick)
        writes[req.account] = req.delta
        return Staged(req.txid, True)

    def _on_prepare(self, coordinator: NodeId, txid: TxId) -> None:
        if txid in self._prepared or self.outcomes.get(txid) is Outcome.COMMITTED:
            self._messages.append(Envelope(coordinator, Vote(txid, True)))
            return
        writes = self._staged.pop(txid, None)
        self._staged_at.pop(txid, None)
        if writes is None:
            self.outcomes.setdefault(txid, Outcome.ABORTED)
            self._messages.append(Envelope(coordinator, Vote(txid, False, "no work (lost in a crash?)")))
            return
        # Debits already promised to other prepared transactions count: they may all commit.
        pending: dict[str, int] = {}
        for _, prepared_writes, _ in self._prepared.values():
            for account, delta in prepared_writes.items():
                pending[account] = pending.get(account, 0) + min(delta, 0)
        overdrawn = [a for a, d in writes.items() if self.balances.get(a, 0) + pending.get(a, 0) + d < 0]
        if overdrawn and not self._config.allow_negative:
            self.outcomes[txid] = Outcome.ABORTED
            self._messages.append(Envelope(coordinator, Vote(txid, False, f"would overdraw {overdrawn[0]}")))
            return
        # The writes must be durable before the yes vote leaves: must_sync orders them.
        self._prepared[txid] = (coordinator, writes, self._now_tick + self._config.inquire_after_ticks)
        self._log(
            _PREPARED, txid, coordinator, writes, sync="vote-before-durable" not in self._config.mutations
        )
        self._messages.append(Envelope(coordinator, Vote(txid, True)))

    def _on_decide(self, coordinator: NodeId, txid: TxId, commit: bool) -> None:
        if txid in self._prepared:
            if commit:
                self._apply(txid)
                self._log(_COMMITTED, txid, coordinator, {}, sync=True)
            else:
                self._prepared.pop(txid)
                self.outcomes[txid] = Outcome.ABORTED
                self._log(_ABORTED, txid, coordinator, {}, sync=False)
            self._outputs.append(Applied(txid, self.outcomes[txid]))
        elif not commit:
            self._staged.pop(txid, None)
            self._staged_at.pop(txid, None)
            self.outcomes.setdefault(txid, Outcome.ABORTED)
        # Acknowledge in every case: the decision is durable here or there was nothing to do.
        self._messages.append(Envelope(coordinator, Ack(txid)))

    def tick(self) -> None:
        self._now_tick += 1
        expired = [
            t for t, at in self._staged_at.items() if self._now_tick - at > self._config.stage_timeout_ticks
        ]
        for txid in expired:
            del self._staged[txid], self._staged_at[txid]
        for txid, (coordinator, writes, inquire_at) in list(self._prepared.items()):
            if self._now_tick >= inquire_at:
                self._messages.append(Envelope(coordinator, Inquire(txid)))
                next_at = self._now_tick + self._config.inquire_after_ticks
                self._prepared[txid] = (coordinator, writes, next_at)

    def ready(self) -> Ready[ParticipantMessage, ParticipantOutput]:
        return Ready(
            persist=tuple(self._persist),
            must_sync=self._must_sync and bool(self._persist),
            messages=tuple(self._messages),
            outputs=tuple(self._outputs),
        )

    def advance(self, ready: Ready[ParticipantMessage, ParticipantOutput]) -> None:
        del self._persist[: len(ready.persist)]
        del self._messages[: len(ready.messages)]
        del self._outputs[: len(ready.outputs)]
        self._must_sync = self._must_sync and bool(self._persist)

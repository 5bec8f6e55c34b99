"""The bank: transfers between accounts held by different participants, as one pure protocol.

:class:`BankCoordinator` wraps the pure :class:`Coordinator` with the work phase a real client
does before asking to commit: it stages a debit on one participant and a credit on another,
then runs two-phase commit. The simulator drives it (target ``twopc``) to prove atomicity under
message loss, reordering, partitions and crashes: the total of all balances never changes and
no participant applies an outcome the coordinator did not decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from stalwart.errors import ProtocolError
from stalwart.sansio import DurableState, Envelope, NodeId, Ready
from stalwart.txn.twopc._coordinator import Coordinator, CoordinatorConfig
from stalwart.txn.twopc._messages import (
    AbortRequest,
    Ack,
    CommitRequest,
    Decide,
    Inquire,
    Outcome,
    Prepare,
    TxDecided,
    TxFinished,
    TxId,
    Vote,
)
from stalwart.txn.twopc._participant import Stage, Staged

MAX_PENDING_TRANSFERS = 1_000


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """Client request: move ``amount`` from ``src_account`` on ``src`` to ``dst_account`` on ``dst``."""

    request_id: int
    src: str
    src_account: str
    dst: str
    dst_account: str
    amount: int


@dataclass(frozen=True, slots=True)
class TransferReply:
    """The transfer committed everywhere (``committed``) or aborted everywhere."""

    request_id: int
    committed: bool
    reason: str = ""


BankInput = TransferRequest | Staged | Vote | Ack | Inquire
BankMessage = Stage | Prepare | Decide
BankOutput = TransferReply | TxDecided | TxFinished


@dataclass(slots=True)
class _Pending:
    client: NodeId
    request_id: int
    participants: tuple[str, ...]
    started_tick: int
    staged: set[str]
    submitted: bool = False


class BankCoordinator:
    def __init__(
        self,
        node_id: NodeId,
        durable: DurableState,
        config: CoordinatorConfig | None = None,
        stage_timeout_ticks: int = 50,
    ) -> None:
        self._inner = Coordinator(node_id, durable, config)
        self._stage_timeout_ticks = stage_timeout_ticks
        self._pending: dict[TxId, _Pending] = {}
        self._messages: list[Envelope[BankMessage]] = []
        self._now_tick = 0
        self._inner_ready: Ready[Prepare | Decide, TxDecided | TxFinished] | None = None

    @property
    def node_id(self) -> NodeId:
        return self._inner.node_id

    @property
    def coordinator(self) -> Coordinator:
        return self._inner

    def step(self, source: NodeId, message: BankInput) -> None:
        match message:
            case TransferRequest():
                self._on_transfer(source, message)
            case Staged(txid=txid, ok=ok):
                pending = self._pending.get(txid)
                if pending is None or pending.submitted or source not in pending.participants:
                    return
                if not ok:
                    self._submit(txid, pending, commit=False)
                    return
                pending.staged.add(source)
                if len(pending.staged) == len(pending.participants):
                    self._submit(txid, pending, commit=True)
            case Vote() | Ack() | Inquire():
                self._inner.step(source, message)

    def _on_transfer(self, client: NodeId, req: TransferRequest) -> None:
        txid = TxId(f"t{req.request_id}")
        if txid in self._pending or self._inner.phase_of(txid) is not None:
            raise ProtocolError(f"transfer {req.request_id} is already in progress")
        if req.src == req.dst or req.amount <= 0:
            raise ProtocolError("a transfer needs two different participants and a positive amount")
        if len(self._pending) >= MAX_PENDING_TRANSFERS:
            raise ProtocolError("too many transfers in progress")
        parts = (req.src, req.dst)
        self._pending[txid] = _Pending(client, req.request_id, parts, self._now_tick, set())
        self._messages.append(Envelope(NodeId(req.src), Stage(txid, req.src_account, -req.amount)))
        self._messages.append(Envelope(NodeId(req.dst), Stage(txid, req.dst_account, req.amount)))

    def _submit(self, txid: TxId, pending: _Pending, commit: bool) -> None:
        pending.submitted = True
        if commit:
            self._inner.step(pending.client, CommitRequest(txid, pending.participants))
        else:
            self._inner.step(pending.client, AbortRequest(txid, pending.participants))

    def tick(self) -> None:
        self._now_tick += 1
        self._inner.tick()
        for txid, pending in list(self._pending.items()):
            if not pending.submitted and self._now_tick - pending.started_tick > self._stage_timeout_ticks:
                self._submit(txid, pending, commit=False)

    def ready(self) -> Ready[BankMessage, BankOutput]:
        inner = self._inner.ready()
        self._inner_ready = inner
        replies = [
            TransferReply(p.request_id, out.outcome is Outcome.COMMITTED, out.reason)
            for out in inner.outputs
            if isinstance(out, TxDecided) and (p := self._pending.get(out.txid)) is not None
        ]
        return Ready(
            persist=inner.persist,
            must_sync=inner.must_sync,
            messages=(*self._messages, *cast(tuple[Envelope[BankMessage], ...], inner.messages)),
            outputs=(*inner.outputs, *replies),
        )

    def advance(self, ready: Ready[BankMessage, BankOutput]) -> None:
        inner = self._inner_ready
        assert inner is not None, "advance() without ready()"
        for out in inner.outputs:
            if isinstance(out, TxDecided):
                self._pending.pop(out.txid, None)
        own = len(ready.messages) - len(inner.messages)
        del self._messages[:own]
        self._inner.advance(inner)
        self._inner_ready = None

"""The simulation target for two-phase commit (``stalwart sim twopc``): the bank.

Node ``n1`` is the coordinator (:class:`stalwart.txn.twopc.BankCoordinator`), the others are
ledger participants, each holding a few accounts. Clients ask the coordinator to transfer an
amount between accounts on two different participants. Linearizability does not apply; the
invariants are atomicity: no participant applies an outcome the coordinator did not decide, a
decision never changes, and once healed no participant is left prepared and the total of all
balances is what it was at the start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stalwart.sansio import DurableState, NodeId, Rng
from stalwart.sim._target import ALL_FAULTS, Call, Invariants, Outcome, Reply, SimTarget
from stalwart.txn.twopc import (
    MUTATIONS,
    PARTICIPANT_MUTATIONS,
    Applied,
    BankCoordinator,
    CoordinatorConfig,
    LedgerParticipant,
    ParticipantConfig,
    TransferReply,
    TransferRequest,
    TxDecided,
)
from stalwart.txn.twopc import Outcome as TxOutcome

COORDINATOR = NodeId("n1")
ACCOUNTS_PER_PARTICIPANT = 2
INITIAL_BALANCE = 1_000


def _accounts(node: str) -> dict[str, int]:
    return {f"{node}.a{i}": INITIAL_BALANCE for i in range(ACCOUNTS_PER_PARTICIPANT)}


class Atomicity(Invariants):
    def __init__(self, cluster: tuple[NodeId, ...]) -> None:
        self._participants = [n for n in cluster if n != COORDINATOR]
        self._decided: dict[str, TxOutcome] = {}

    def on_output(self, node: NodeId, output: object, now_us: int) -> str | None:
        if isinstance(output, TxDecided):
            before = self._decided.setdefault(output.txid, output.outcome)
            if before is not output.outcome:
                return f"{output.txid} decided {before.value} and then {output.outcome.value}"
        elif isinstance(output, Applied):
            decided = self._decided.get(output.txid)
            if output.outcome is TxOutcome.COMMITTED and decided is not TxOutcome.COMMITTED:
                return f"{node} committed {output.txid}, which the coordinator did not commit"
            if output.outcome is TxOutcome.ABORTED and decided is TxOutcome.COMMITTED:
                return f"{node} aborted {output.txid}, which the coordinator committed"
        return None

    def at_end(self, nodes: Mapping[NodeId, Any]) -> list[str]:
        problems: list[str] = []
        ledgers = [n for n in nodes.values() if isinstance(n, LedgerParticipant)]
        for ledger in ledgers:
            if ledger.in_doubt:
                problems.append(f"{ledger.node_id} is still prepared for {sorted(ledger.in_doubt)}")
            for txid, outcome in ledger.outcomes.items():
                if outcome is TxOutcome.COMMITTED and self._decided.get(txid) is not TxOutcome.COMMITTED:
                    problems.append(f"{ledger.node_id} holds {txid} committed without a commit decision")
        for ledger in ledgers:
            negative = {a: b for a, b in ledger.balances.items() if b < 0}
            if negative:
                problems.append(f"{ledger.node_id} overdrew {negative}")
        if len(ledgers) == len(self._participants) and not problems:
            total = sum(sum(ledger.balances.values()) for ledger in ledgers)
            expected = len(ledgers) * ACCOUNTS_PER_PARTICIPANT * INITIAL_BALANCE
            if total != expected:
                problems.append(
                    f"the balances add up to {total}, not {expected}: a transfer was half applied"
                )
        return problems


class TwoPCTarget(SimTarget):
    name = "twopc"
    summary = "two-phase commit (presumed abort): bank transfers across ledger participants"
    node_counts = (3, 4)
    clients = 3
    tick_ms = 10
    op_timeout_ms = 2_000
    liveness_ops = 4
    liveness_bound_ms = 20_000
    settle_ms = 3_000
    model = None
    faults = ALL_FAULTS
    _participants: tuple[NodeId, ...]
    mutations = {
        "decide-before-log": "the coordinator sends its commit decision before the COMMIT record is durable",
        "commit-on-partial-votes": "the coordinator commits on the first yes vote",
        "vote-before-durable": "participants vote yes before their PREPARED record is durable",
    }

    def build(
        self,
        node_id: NodeId,
        cluster: tuple[NodeId, ...],
        durable: DurableState,
        rng: Rng,
        mutation: str | None,
    ) -> BankCoordinator | LedgerParticipant:
        del rng  # 2PC draws no random numbers
        if node_id == COORDINATOR:
            muts = frozenset({mutation}) & MUTATIONS if mutation else frozenset()
            config = CoordinatorConfig(vote_timeout_ticks=40, retry_interval_ticks=15, mutations=muts)
            return BankCoordinator(node_id, durable, config, stage_timeout_ticks=40)
        pmuts = frozenset({mutation}) & PARTICIPANT_MUTATIONS if mutation else frozenset()
        pconfig = ParticipantConfig(
            inquire_after_ticks=30,
            stage_timeout_ticks=100,
            initial_balances=_accounts(node_id),
            mutations=pmuts,
        )
        return LedgerParticipant(node_id, durable, pconfig)

    def new_call(self, rng: Rng, process: int) -> Call:
        del process
        # Participants are n2..nN; the cluster size is not known here, so draw from the largest
        # and let request() fold the choice onto the real cluster.
        return Call("transfer", None, (rng.randrange(1 << 16), rng.randrange(1 << 16), 1 + rng.randrange(20)))

    def request(self, request_id: int, call: Call) -> object:
        a, b, amount = call.value
        n = self._participants
        src = n[a % len(n)]
        dst = n[(a % len(n) + 1 + b % (len(n) - 1)) % len(n)]
        return TransferRequest(
            request_id,
            src,
            f"{src}.a{a % ACCOUNTS_PER_PARTICIPANT}",
            dst,
            f"{dst}.a{b % ACCOUNTS_PER_PARTICIPANT}",
            amount,
        )

    def reply(self, output: object) -> Reply | None:
        if not isinstance(output, TransferReply):
            return None
        return Reply(output.request_id, Outcome.OK if output.committed else Outcome.FAIL)

    def route(self, call: Call, cluster: tuple[NodeId, ...], rng: Rng) -> NodeId:
        del call, cluster, rng
        return COORDINATOR

    def invariants(self, cluster: tuple[NodeId, ...], mutation: str | None) -> Invariants:
        del mutation
        # The simulator asks for the invariants once per run, before any request: the cluster
        # is learned here, and request() folds the drawn call onto its participants.
        self._participants = tuple(n for n in cluster if n != COORDINATOR)
        return Atomicity(cluster)

    def __init__(self) -> None:
        self._participants = ()


TARGET = TwoPCTarget()

"""Distributed transactions: two-phase commit over real databases, and Sagas.

Two-phase commit (presumed abort)::

    from stalwart.txn import TwoPhaseCoordinator, PostgresResource, MariaDBResource

    async with TwoPhaseCoordinator([PostgresResource("pg", dsn), MariaDBResource("maria", **kw)]) as coord:
        async with coord.transaction() as tx:
            await tx.execute("pg", "UPDATE accounts SET balance = balance - %s WHERE id = %s", (10, 1))
            await tx.execute("maria", "UPDATE accounts SET balance = balance + %s WHERE id = %s", (10, 2))
        # committed on both, or TransactionAbortedError and on neither

The pure state machines live in :mod:`stalwart.txn.twopc`. See docs/transactions.md for the
guarantees and their limits.
"""

from stalwart.txn._blocking import BlockingCoordinator, BlockingTransaction
from stalwart.txn._coordinator_host import CoordinatorSettings, FaultHook, Transaction, TwoPhaseCoordinator
from stalwart.txn._decision_log import DecisionLog, PostgresDecisionLog, SQLiteDecisionLog
from stalwart.txn._errors import (
    OutcomeUnknownError,
    ParticipantError,
    PreparedTransactionsDisabledError,
    TransactionAbortedError,
    TransactionError,
    TransactionRefusedError,
)
from stalwart.txn._resources import BatchCommitter, MariaDBResource, PostgresResource, ResourceManager

__all__ = [
    "BatchCommitter",
    "BlockingCoordinator",
    "BlockingTransaction",
    "CoordinatorSettings",
    "DecisionLog",
    "FaultHook",
    "MariaDBResource",
    "OutcomeUnknownError",
    "ParticipantError",
    "PostgresDecisionLog",
    "PostgresResource",
    "PreparedTransactionsDisabledError",
    "ResourceManager",
    "SQLiteDecisionLog",
    "Transaction",
    "TransactionAbortedError",
    "TransactionError",
    "TransactionRefusedError",
    "TwoPhaseCoordinator",
]

"""Errors of the transaction package."""

from __future__ import annotations

from stalwart.errors import ConfigError, StalwartError


class TransactionError(StalwartError):
    """Base of the transaction errors."""


class TransactionAbortedError(TransactionError):
    """The transaction aborted everywhere; ``reason`` says why. Nothing of it was applied."""

    def __init__(self, txid: str, reason: str) -> None:
        super().__init__(f"transaction {txid} aborted: {reason}")
        self.txid = txid
        self.reason = reason


class TransactionRefusedError(TransactionAbortedError):
    """The coordinator refused to start the commit (too busy, stopped); every branch was
    rolled back and nothing was applied."""


class OutcomeUnknownError(TransactionError):
    """The outcome could not be learned in time (the coordinator may be shutting down).

    The transaction is atomic regardless: a restarted coordinator finishes it either way.
    """

    def __init__(self, txid: str, reason: str) -> None:
        super().__init__(f"transaction {txid}: outcome unknown: {reason}")
        self.txid = txid


class ParticipantError(TransactionError):
    """A participant (database) failed in a way the coordinator cannot hide."""


class PreparedTransactionsDisabledError(ConfigError):
    """PostgreSQL refuses PREPARE TRANSACTION because max_prepared_transactions is 0."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"participant {name!r}: PostgreSQL has max_prepared_transactions = 0, so it cannot take part "
            "in two-phase commit. Set max_prepared_transactions to at least max_connections in "
            "postgresql.conf (or `ALTER SYSTEM SET max_prepared_transactions = 100`) and restart PostgreSQL."
        )

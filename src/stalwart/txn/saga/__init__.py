"""Durable orchestrated Sagas: steps with compensations, a log that survives crashes.

See :mod:`stalwart.txn.saga._orchestrator` for an example and docs/transactions.md for what a
saga guarantees (and that it is not ACID: other readers may see its intermediate states).
"""

from stalwart.txn.saga._log import LoggedRecord, SagaLog
from stalwart.txn.saga._orchestrator import (
    CompensationPolicy,
    Parallel,
    RetryPolicy,
    Saga,
    SagaOrchestrator,
    SagaParkedError,
    SagaResult,
    SagaStoppedError,
    Step,
    StepContext,
)
from stalwart.txn.saga._state import Kind, Record, SagaState, SagaStatus, StepStatus, Work

__all__ = [
    "CompensationPolicy",
    "Kind",
    "LoggedRecord",
    "Parallel",
    "Record",
    "RetryPolicy",
    "Saga",
    "SagaLog",
    "SagaOrchestrator",
    "SagaParkedError",
    "SagaResult",
    "SagaState",
    "SagaStatus",
    "SagaStoppedError",
    "Step",
    "StepContext",
    "StepStatus",
    "Work",
]

"""Two-phase commit as pure state machines (presumed abort); see docs/transactions.md."""

from stalwart.txn.twopc._bank import BankCoordinator, TransferReply, TransferRequest
from stalwart.txn.twopc._coordinator import (
    MUTATIONS,
    Coordinator,
    CoordinatorConfig,
    Phase,
    TxRefusedError,
    depends_on_log,
)
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
from stalwart.txn.twopc._participant import (
    MUTATIONS as PARTICIPANT_MUTATIONS,
)
from stalwart.txn.twopc._participant import (
    Applied,
    LedgerParticipant,
    ParticipantConfig,
    ParticipantInput,
    ParticipantMessage,
    ParticipantOutput,
    Stage,
    Staged,
)
from stalwart.txn.twopc._records import LogRecord, RecordKind

__all__ = [
    "MUTATIONS",
    "PARTICIPANT_MUTATIONS",
    "AbortRequest",
    "Ack",
    "Applied",
    "BankCoordinator",
    "CommitRequest",
    "Coordinator",
    "CoordinatorConfig",
    "CoordinatorInput",
    "CoordinatorMessage",
    "CoordinatorOutput",
    "Decide",
    "Inquire",
    "LedgerParticipant",
    "LogRecord",
    "Outcome",
    "ParticipantConfig",
    "ParticipantInput",
    "ParticipantMessage",
    "ParticipantOutput",
    "Phase",
    "Prepare",
    "RecordKind",
    "Stage",
    "Staged",
    "TransferReply",
    "TransferRequest",
    "TxDecided",
    "TxFinished",
    "TxId",
    "TxRefusedError",
    "Vote",
    "depends_on_log",
]

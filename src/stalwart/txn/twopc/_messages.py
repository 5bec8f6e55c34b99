"""Two-phase commit messages, outputs and log records (presumed abort)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType

TxId = NewType("TxId", str)
"""A transaction id, unique for the coordinator's lifetime; never reused after an outcome."""


class Outcome(enum.StrEnum):
    COMMITTED = "committed"
    ABORTED = "aborted"


# -- coordinator <-> participant -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prepare:
    """Phase 1: make your part durable and vote."""

    txid: TxId


@dataclass(frozen=True, slots=True)
class Vote:
    """A participant's vote; ``yes`` only once its part is durable (prepared)."""

    txid: TxId
    yes: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Decide:
    """Phase 2: the outcome. Resent until acknowledged."""

    txid: TxId
    commit: bool


@dataclass(frozen=True, slots=True)
class Ack:
    """The participant has made the decision durable."""

    txid: TxId


@dataclass(frozen=True, slots=True)
class Inquire:
    """A participant prepared long ago without hearing a decision asks for it."""

    txid: TxId


# -- client -> coordinator -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommitRequest:
    """Commit ``txid`` atomically across ``participants`` (whose work is already done)."""

    txid: TxId
    participants: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AbortRequest:
    """Abort ``txid`` on ``participants`` (the client gave up before asking to commit)."""

    txid: TxId
    participants: tuple[str, ...]


# -- coordinator outputs -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TxDecided:
    """The outcome is final (a commit is durable in the decision log); phase 2 may go on."""

    txid: TxId
    outcome: Outcome
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TxFinished:
    """Every participant acknowledged the outcome; nothing is left prepared for ``txid``."""

    txid: TxId
    outcome: Outcome


CoordinatorInput = Vote | Ack | Inquire | CommitRequest | AbortRequest
CoordinatorMessage = Prepare | Decide
CoordinatorOutput = TxDecided | TxFinished

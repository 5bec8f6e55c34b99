"""Envelope, Ready and the protocol interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, NewType, Protocol, TypeVar

from stalwart.sansio._storage_ops import StorageOp

NodeId = NewType("NodeId", str)
"""Names a node (or a client) everywhere: in envelopes, configurations and histories."""

M = TypeVar("M")
O = TypeVar("O")  # noqa: E741  (O for "output", as in the contract)
I_contra = TypeVar("I_contra", contravariant=True)  # what it accepts: peer messages, requests


class Rng(Protocol):
    """The randomness a protocol may use; ``random.Random(seed)`` satisfies it."""

    def random(self) -> float: ...

    def randrange(self, start: int, stop: int | None = ..., step: int = ...) -> int: ...


@dataclass(frozen=True, slots=True)
class Envelope(Generic[M]):
    """One message addressed to one node."""

    to: NodeId
    payload: M


@dataclass(frozen=True, slots=True)
class Ready(Generic[M, O]):
    """What the host must do now, in field order; see the package docstring.

    Invariant: when ``must_sync`` is false, nothing in ``messages`` or ``outputs`` depends on
    ``persist`` being durable (the protocol chose to accept losing it on a crash).
    """

    persist: tuple[StorageOp, ...] = ()
    must_sync: bool = False
    messages: tuple[Envelope[M], ...] = ()
    outputs: tuple[O, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.persist or self.messages or self.outputs)

    def __post_init__(self) -> None:
        # A sync with nothing to persist is a host bug waiting to happen: say it at once.
        assert not (self.must_sync and not self.persist), "must_sync without records to persist"


class SansIOProtocol(Protocol[I_contra, M, O]):
    """What a host needs of a protocol: it accepts ``I_contra``, sends ``M`` and outputs ``O``."""

    @property
    def node_id(self) -> NodeId: ...

    def step(self, source: NodeId, message: I_contra) -> None:
        """Take one message from a peer or one request from a client named ``source``."""

    def tick(self) -> None:
        """One unit of logical time has passed (the host decides its length in ms)."""

    def ready(self) -> Ready[M, O]:
        """What must be done now; an empty :class:`Ready` when nothing is pending."""

    def advance(self, ready: Ready[M, O]) -> None:
        """The host has persisted, sent and delivered everything in ``ready``."""

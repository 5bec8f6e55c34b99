"""Errors raised by the crdt package."""

from __future__ import annotations

from stalwart.errors import StalwartError


class CRDTError(StalwartError):
    """A CRDT refused an operation; its state did not change."""


class InvalidElementError(CRDTError, TypeError):
    """An element, key or value is not an atom (None, bool, int, float, str, bytes, tuple)."""


class InvalidOperationError(CRDTError, ValueError):
    """A mutator got an argument outside its domain (a negative count, pruning oneself...)."""


class IncompatibleMergeError(CRDTError, TypeError):
    """Merging two states of different types (or OR-Maps with different value types)."""


class PreconditionError(CRDTError):
    """An operation's precondition does not hold locally (2P-Set: removing an absent element)."""


class InsufficientRightsError(CRDTError):
    """A bounded counter replica lacks the rights to decrement (or transfer) that much."""

    def __init__(self, replica: str, wanted: int, rights: int) -> None:
        super().__init__(f"replica {replica!r} holds {rights} rights, needs {wanted}: ask a peer to transfer")
        self.replica = replica
        self.wanted = wanted
        self.rights = rights

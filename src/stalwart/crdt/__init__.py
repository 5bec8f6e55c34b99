"""Conflict-free replicated data types with delta mutators (pure).

One contract for every type::

    a, b = ORSet("replica-a"), ORSet("replica-b")
    delta = a.add("x")          # every mutator returns a delta of the same type
    b.merge(delta)              # merge takes a delta or a full state, in place
    "x" in b.value              # value is a plain Python value
    b == ORSet.from_bytes(b.to_bytes())   # versioned, validated; bad bytes raise DecodeError

See docs/crdt.md for what each type guarantees and costs, pruning, and delta anti-entropy.
"""

from stalwart.clocks._errors import InvalidReplicaError
from stalwart.crdt._base import CRDT
from stalwart.crdt._causal import CausalCRDT
from stalwart.crdt._context import CausalContext
from stalwart.crdt._counters import BoundedCounter, GCounter, PNCounter
from stalwart.crdt._dotfun import DWFlag, EWFlag, MVRegister, ORSet, RWSet
from stalwart.crdt._errors import (
    CRDTError,
    IncompatibleMergeError,
    InsufficientRightsError,
    InvalidElementError,
    InvalidOperationError,
    PreconditionError,
)
from stalwart.crdt._lww import GSet, LWWElementSet, LWWRegister, TwoPSet
from stalwart.crdt._ormap import MapOf, ORMap
from stalwart.crdt._replica import ClientOp, ClientResult, CRDTReplicaNode, Gossip, GossipAck
from stalwart.crdt._sync import DeltaAck, DeltaGroup, DeltaSync, SyncKind
from stalwart.errors import DecodeError

ALL_TYPES: tuple[type[CRDT], ...] = (
    GCounter,
    PNCounter,
    BoundedCounter,
    GSet,
    TwoPSet,
    LWWElementSet,
    ORSet,
    RWSet,
    LWWRegister,
    MVRegister,
    EWFlag,
    DWFlag,
    ORMap,
)

__all__ = [
    "ALL_TYPES",
    "CRDT",
    "BoundedCounter",
    "CRDTError",
    "CRDTReplicaNode",
    "CausalCRDT",
    "CausalContext",
    "ClientOp",
    "ClientResult",
    "DWFlag",
    "DecodeError",
    "DeltaAck",
    "DeltaGroup",
    "DeltaSync",
    "EWFlag",
    "GCounter",
    "GSet",
    "Gossip",
    "GossipAck",
    "IncompatibleMergeError",
    "InsufficientRightsError",
    "InvalidElementError",
    "InvalidOperationError",
    "InvalidReplicaError",
    "LWWElementSet",
    "LWWRegister",
    "MVRegister",
    "MapOf",
    "ORMap",
    "ORSet",
    "PNCounter",
    "PreconditionError",
    "RWSet",
    "SyncKind",
    "TwoPSet",
]

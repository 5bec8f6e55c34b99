"""Logical clocks: Lamport, vector clocks, version vectors, dotted version vectors, HLC.

Pure: no wall clock is read here. Hybrid logical clocks take physical time as an argument
(``hlc.now(physical_time_ms)``). See docs/clocks.md for guarantees and costs.
"""

from stalwart.clocks._dvv import DottedVersionVector, DVVSet
from stalwart.clocks._errors import ClockError, ClockOffsetError, InvalidReplicaError
from stalwart.clocks._hlc import HLCTimestamp, HybridLogicalClock
from stalwart.clocks._lamport import LamportClock, LamportTimestamp
from stalwart.clocks._vectors import Dot, Ordering, VectorClock, VersionVector
from stalwart.errors import DecodeError

__all__ = [
    "ClockError",
    "ClockOffsetError",
    "DVVSet",
    "DecodeError",
    "Dot",
    "DottedVersionVector",
    "HLCTimestamp",
    "HybridLogicalClock",
    "InvalidReplicaError",
    "LamportClock",
    "LamportTimestamp",
    "Ordering",
    "VectorClock",
    "VersionVector",
]

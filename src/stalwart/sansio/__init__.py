"""The sans-IO protocol contract (DESIGN.md section 2), shared by every protocol and both hosts.

A protocol is an object that is *stepped* and then asked what to do::

    node.step(source, message)  # a message from a peer, or a client request
    node.tick()                 # one unit of logical time passed
    ready = node.ready()        # what the host must now do, in this order:
    #  1. ready.persist   storage operations; if ready.must_sync, fsync them before step 2
    #  2. ready.messages  envelopes to send
    #  3. ready.outputs   committed entries, client replies, notifications
    node.advance(ready)         # the host confirms it did all of that

The host never calls ``step`` or ``tick`` between ``ready()`` and ``advance()``. A restarted node
is built from the :class:`DurableState` that its disk kept, and nothing else.

This package is pure: no clocks, sockets, files or global randomness. Randomness enters as an
:class:`Rng` passed in at construction (a seeded ``random.Random`` satisfies it).
"""

from stalwart.sansio._contract import (
    Envelope,
    NodeId,
    Ready,
    Rng,
    SansIOProtocol,
)
from stalwart.sansio._storage_ops import (
    AppendLog,
    CompactLog,
    DurableState,
    PutMeta,
    PutSnapshot,
    StorageOp,
    TruncateLog,
    apply_storage_ops,
)

__all__ = [
    "AppendLog",
    "CompactLog",
    "DurableState",
    "Envelope",
    "NodeId",
    "PutMeta",
    "PutSnapshot",
    "Ready",
    "Rng",
    "SansIOProtocol",
    "StorageOp",
    "TruncateLog",
    "apply_storage_ops",
]

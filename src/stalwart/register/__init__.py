"""A deliberately simple replicated register: the simulator's demo protocol (pure, sans-IO).

Design: a fixed primary (the first node of the sorted cluster) orders every write and cas in a
log. It appends an entry, fsyncs it, then replicates it; a backup fsyncs before it acknowledges.
An entry is committed once it is durable on a majority (the primary included); the primary then
applies it and answers the client (a cas whose compare fails is answered ``fail``). A read is
answered by the primary once everything logged before the read arrived is committed, so a read
never misses an acknowledged write, even one from before a crash. Backups refuse client requests
with ``NotLeaderError(primary)``.

Guarantees: linearizable reads, writes and cas under message loss, duplication, reordering and
delay, partitions of any shape, pauses, clock drift (it uses no clock), and crash-restart of any
node whose disk keeps what it fsynced (torn unsynced tails included). It is available only while
the primary is up and can reach a majority: there is no failover (that is Raft's job), and losing
the primary's disk loses data that only it held. The log is never compacted.

Mutations (``Mutation``): ``read-from-backup`` answers reads on backups from their possibly stale
copy; ``ack-before-fsync`` lets the primary acknowledge from its page cache without replicating.
"""

from stalwart.register._messages import (
    Ack,
    ClientReply,
    ClientRequest,
    Committed,
    Entry,
    RegisterInput,
    RegisterMessage,
    RegisterOutput,
    Replicate,
    RequestError,
)
from stalwart.register._node import MAX_PENDING, RETRY_TICKS, Mutation, RegisterNode

__all__ = [
    "MAX_PENDING",
    "RETRY_TICKS",
    "Ack",
    "ClientReply",
    "ClientRequest",
    "Committed",
    "Entry",
    "Mutation",
    "RegisterInput",
    "RegisterMessage",
    "RegisterNode",
    "RegisterOutput",
    "Replicate",
    "RequestError",
]

"""The linearizable key-value store's state machine (pure); see docs/kv.md.

It runs under any consensus log that offers ``apply`` / ``query`` / ``snapshot`` / ``restore``
(Raft now, through :class:`stalwart.raft.replica.RaftReplica`).
"""

from stalwart.kv._commands import (
    MAX_KEY_BYTES,
    MAX_RANGE_LIMIT,
    MAX_VALUE_BYTES,
    Append,
    Cas,
    Command,
    Delete,
    Event,
    EventKind,
    Get,
    KeyValue,
    Put,
    Query,
    Range,
    Tick,
    Watch,
    WriteResult,
    decode_command,
    decode_get_result,
    decode_query,
    decode_range_result,
    decode_result,
    decode_watch_result,
    encode_command,
    encode_query,
)
from stalwart.kv._machine import KVConfig, KVMachine

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_RANGE_LIMIT",
    "MAX_VALUE_BYTES",
    "Append",
    "Cas",
    "Command",
    "Delete",
    "Event",
    "EventKind",
    "Get",
    "KVConfig",
    "KVMachine",
    "KeyValue",
    "Put",
    "Query",
    "Range",
    "Tick",
    "Watch",
    "WriteResult",
    "decode_command",
    "decode_get_result",
    "decode_query",
    "decode_range_result",
    "decode_result",
    "decode_watch_result",
    "encode_command",
    "encode_query",
]

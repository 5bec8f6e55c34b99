"""The key-value store's client: asyncio (:class:`AsyncKVClient`) and blocking (:class:`KVClient`).

See docs/kv.md. Leader discovery and redirects, bounded jittered retries, exactly-once writes
(a retried write keeps its client id and sequence number), timeouts as scopes, many requests
in flight per connection, and per-call read consistency (linearizable, lease, stale).
"""

from stalwart.client._blocking import KVClient
from stalwart.client._client import AsyncKVClient, ClientConnection, Connector
from stalwart.client._conn import Connection
from stalwart.client._endpoints import Endpoints
from stalwart.client._errors import (
    KVCompactedError,
    KVError,
    KVOutcomeUnknownError,
    KVRequestError,
    KVTimeoutError,
    KVUnavailableError,
)
from stalwart.client._protocol import Consistency, ResponseStatus
from stalwart.kv import Event, EventKind, KeyValue

__all__ = [
    "AsyncKVClient",
    "ClientConnection",
    "Connection",
    "Connector",
    "Consistency",
    "Endpoints",
    "Event",
    "EventKind",
    "KVClient",
    "KVCompactedError",
    "KVError",
    "KVOutcomeUnknownError",
    "KVRequestError",
    "KVTimeoutError",
    "KVUnavailableError",
    "KeyValue",
    "ResponseStatus",
]

"""The asyncio host: drives any sans-IO protocol over TCP, real disk and the loop clock.

``Node`` runs one protocol (built from ``NodeStorage.load()``) with its storage and a TCP
``Transport`` under ``async with``; ``ProtocolHost`` is the loop that enforces the contract's
order (persist, one fsync, send, outputs, advance); ``Client`` talks to nodes like a peer.
See docs/runtime.md.
"""

from stalwart.runtime._backoff import Backoff, BackoffPolicy
from stalwart.runtime._batch import pack_batch, unpack_batch
from stalwart.runtime._client import Client
from stalwart.runtime._errors import PeerProtocolError, RuntimeConfigError
from stalwart.runtime._host import HostConfig, ProtocolHost, Sender, Storage
from stalwart.runtime._node import Node, RuntimeConfig
from stalwart.runtime._queue import OutboundQueue, QueueLimits
from stalwart.runtime._stats import RuntimeStats
from stalwart.runtime._transport import Address, LinkState, PeerStatus, Transport, TransportConfig

__all__ = [
    "Address",
    "Backoff",
    "BackoffPolicy",
    "Client",
    "HostConfig",
    "LinkState",
    "Node",
    "OutboundQueue",
    "PeerProtocolError",
    "PeerStatus",
    "ProtocolHost",
    "QueueLimits",
    "RuntimeConfig",
    "RuntimeConfigError",
    "RuntimeStats",
    "Sender",
    "Storage",
    "Transport",
    "TransportConfig",
    "pack_batch",
    "unpack_batch",
]

"""The asyncio host: drives any sans-IO protocol over TCP, real disk and the loop clock."""

from stalwart.runtime._backoff import Backoff, BackoffPolicy
from stalwart.runtime._errors import MessageTooLargeError, PeerProtocolError, RuntimeConfigError
from stalwart.runtime._host import HostConfig, ProtocolHost, Sender, Storage
from stalwart.runtime._queue import OutboundQueue, QueueLimits
from stalwart.runtime._stats import RuntimeStats

__all__ = [
    "Backoff",
    "BackoffPolicy",
    "HostConfig",
    "MessageTooLargeError",
    "OutboundQueue",
    "PeerProtocolError",
    "ProtocolHost",
    "QueueLimits",
    "RuntimeConfigError",
    "RuntimeStats",
    "Sender",
    "Storage",
]

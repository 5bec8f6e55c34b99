"""Distributed locks with fencing tokens: Redis, Redlock and ZooKeeper behind one API.

``async with RedisLock(url, "orders", ttl=10.0) as held:`` then use ``held.token`` (fencing),
``held.lost`` (an asyncio.Event) and ``held.ensure()``. See docs/locks.md for the guarantees and
their limits.
"""

from stalwart.lock._backend import RedisBackend
from stalwart.lock._errors import (
    BackendError,
    BackendProtocolError,
    BackendUnavailable,
    LockError,
    LockLost,
    LockTimeout,
    NotAcquired,
    StaleToken,
)
from stalwart.lock._held import Held, LostCallback
from stalwart.lock._redis import RedisLock, close_shared

__all__ = [
    "BackendError",
    "BackendProtocolError",
    "BackendUnavailable",
    "Held",
    "LockError",
    "LockLost",
    "LockTimeout",
    "LostCallback",
    "NotAcquired",
    "RedisBackend",
    "RedisLock",
    "StaleToken",
    "close_shared",
]

"""Distributed locks with fencing tokens: Redis, Redlock and ZooKeeper behind one API.

::

    from stalwart.lock import RedisLock
    async with RedisLock("redis://127.0.0.1:6379/0", "orders", ttl=10.0) as held:
        held.token     # fencing token: an int, strictly increasing per lock name
        held.lost      # asyncio.Event, set if the lease could not be kept
        held.ensure()  # raises LockLost once the safe deadline has passed

Also: :class:`Redlock` (N independent Redis servers; its tokens are NOT safe, see
``held.token_is_safe``), :class:`ZooKeeperLock` (kazoo, bridged to asyncio),
:class:`RedisRWLock`, :class:`RedisSemaphore`, :class:`FencedResource` and
:class:`FencedRow` (the resource side of fencing, on a Redis key or a PostgreSQL row) and
:class:`BlockingLock` (the same shape for threads). docs/locks.md states the
guarantees and their limits.
"""

from stalwart.lock._backend import RedisBackend
from stalwart.lock._blocking import BlockingHeld, BlockingLock, run_blocking
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
from stalwart.lock._fence import FencedResource
from stalwart.lock._fence_pg import FencedRow
from stalwart.lock._held import Held, LostCallback
from stalwart.lock._kvtokens import KVTokenSource, TokenSource
from stalwart.lock._redis import RedisLock, close_shared
from stalwart.lock._redlock import Redlock, RedlockClient
from stalwart.lock._redlock_client import close_shared_redlock
from stalwart.lock._rwsem import RedisRWLock, RedisSemaphore
from stalwart.lock._zookeeper import ZooKeeperClient, ZooKeeperLock, close_shared_zk

__all__ = [
    "BackendError",
    "BackendProtocolError",
    "BackendUnavailable",
    "BlockingHeld",
    "BlockingLock",
    "FencedResource",
    "FencedRow",
    "Held",
    "KVTokenSource",
    "LockError",
    "LockLost",
    "LockTimeout",
    "LostCallback",
    "NotAcquired",
    "RedisBackend",
    "RedisLock",
    "RedisRWLock",
    "RedisSemaphore",
    "Redlock",
    "RedlockClient",
    "StaleToken",
    "TokenSource",
    "ZooKeeperClient",
    "ZooKeeperLock",
    "close_shared",
    "close_shared_redlock",
    "close_shared_zk",
    "run_blocking",
]

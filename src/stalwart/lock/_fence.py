"""FencedResource: the resource side of fencing, guarding one Redis key.

A lock alone cannot stop a paused holder (GC, SIGSTOP, swap, a slow network) from writing after
its lease expired and someone else took the lock. Fencing can: every write carries the writer's
token, and the resource atomically rejects any token lower than the highest it has already
accepted. Here the check-and-write is one Lua script on a Redis hash ``{token, value}``, so it is
atomic against every other writer.
"""

from __future__ import annotations

import redis.exceptions

from stalwart.errors import ConfigError
from stalwart.lock._backend import RedisBackend, map_error
from stalwart.lock._errors import BackendProtocolError, StaleToken
from stalwart.lock._redis import shared_backend
from stalwart.lock._scripts import FENCED_WRITE

MAX_VALUE_BYTES = 512 * 1024 * 1024
#: Tokens are 64-bit, like every counter that issues them (Redis INCR, ZooKeeper czxid, store
#: revisions); a bound also keeps the server-side comparison to at most 20 digits.
MAX_TOKEN = 2**64 - 1


class FencedResource:
    """A Redis key that accepts a write only with a token >= the highest token it has seen."""

    def __init__(self, target: str | RedisBackend, key: str) -> None:
        if not isinstance(key, str) or not key:
            raise ConfigError("a fenced resource needs a non-empty key")
        self._target = target
        self.key = key

    def _backend(self) -> RedisBackend:
        return self._target if isinstance(self._target, RedisBackend) else shared_backend(self._target)

    async def write(self, token: int, value: bytes | str) -> None:
        """Write ``value`` under ``token``; :class:`StaleToken` if a higher token already wrote."""
        if type(token) is not int or not 0 <= token <= MAX_TOKEN:
            raise ConfigError(f"a fencing token is an int in [0, 2**64), got {token!r}")
        size = len(value) if isinstance(value, bytes) else len(value.encode())
        if size > MAX_VALUE_BYTES:
            raise ConfigError(f"value of {size} bytes is too large for a Redis string")
        reply = await self._backend().run(FENCED_WRITE, (self.key,), (token, value))
        # {ok, highest}: highest as a decimal string (exact at any size; see FENCED_WRITE).
        if type(reply) is not list or len(reply) != 2 or type(reply[0]) is not int:
            raise BackendProtocolError(f"fenced write: expected [int, decimal], got {reply!r:.200}")
        ok, highest = reply
        try:
            highest = int(highest)
        except (TypeError, ValueError):
            raise BackendProtocolError(f"fenced write: bad highest token {highest!r:.100}") from None
        if ok != 1:
            raise StaleToken(self.key, token, highest)

    async def read(self) -> tuple[int, bytes] | None:
        """The highest accepted token and its value, or None if never written."""
        backend = self._backend()
        try:
            reply = await backend.pool.execute(("HMGET", self.key, "token", "value"))
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise map_error(exc, f"fenced read of {self.key!r}") from exc
        if not isinstance(reply, list) or len(reply) != 2:
            raise BackendProtocolError(f"fenced read: unexpected reply {reply!r:.200}")
        token, value = reply
        if token is None:
            return None
        if not isinstance(value, bytes):
            raise BackendProtocolError(f"fenced read: unexpected value {value!r:.200}")
        return int(token), value


__all__ = ["MAX_TOKEN", "FencedResource"]

"""Safe fencing tokens for Redlock, from the stalwart CP store.

Redlock has no consensus, so its own per-server counters are not a safe fencing token (see
``docs/locks.md``). :class:`KVTokenSource` takes the token from the stalwart key-value store
instead: the token is the store revision of a write to ``<prefix><lock name>``. The store is
linearizable (Raft) and its revision grows with every write, so a token issued later in real
time is strictly larger, whatever happens to the Redis servers (one that restarts empty, one
whose clock jumps). With ``Redlock(..., tokens=KVTokenSource(client))`` the token is issued after
the quorum is won and before the lock's validity is checked, so an acquire that returns was
issued its token while it held the lock; ``held.token_is_safe`` is then True.
"""

from __future__ import annotations

import re
from typing import Protocol

from stalwart.client import AsyncKVClient, KVError, KVRequestError
from stalwart.errors import ConfigError
from stalwart.lock._errors import BackendError, BackendUnavailable

DEFAULT_PREFIX = "stalwart/fence/"
_PREFIX_RE = re.compile(r"^[\x21-\x7e]{0,200}$")


class TokenSource(Protocol):
    """Where a lock takes its fencing tokens from."""

    async def next_token(self, name: str) -> int:
        """A token strictly greater than every token issued for ``name`` before this call began."""


class KVTokenSource:
    """Fencing tokens from the stalwart CP store (one linearizable write per token).

    ``client`` is used from the event loop the lock runs on (with :class:`BlockingLock`, its
    private loop thread): create it there, or dedicate one client to the locks.
    """

    def __init__(self, client: AsyncKVClient, *, prefix: str = DEFAULT_PREFIX) -> None:
        if not _PREFIX_RE.fullmatch(prefix):
            raise ConfigError(f"token key prefix {prefix!r}: at most 200 printable ASCII characters")
        self._client = client
        self._prefix = prefix

    async def next_token(self, name: str) -> int:
        try:
            revision = await self._client.put(self._prefix + name, b"")
        except KVRequestError as exc:  # refused as malformed: retrying cannot help
            raise BackendError(f"fencing token for {name!r}: the CP store refused the write: {exc}") from exc
        except KVError as exc:  # the store is down, or the write's outcome is unknown
            raise BackendUnavailable(f"fencing token for {name!r} from the CP store: {exc}") from exc
        if type(revision) is not int or revision < 1:
            raise BackendUnavailable(f"the CP store answered revision {revision!r} for a write")
        return revision

"""Redlock: one lock over N independent Redis servers (quorum N/2+1), with an honest token.

Acquire: one MULTI/EXEC transaction (SET NX PX and INCR of the fencing counter, atomically) is
sent to every server at once; the client waits for EVERY reply, each bounded by
``server_timeout_s`` (a silent server counts as a no), and holds the lock if a quorum said yes
and ``validity = ttl - elapsed - drift`` is still positive, elapsed measured from the moment the
requests were sent. Otherwise it releases on every server at
once (including servers that did not answer: their SET may have landed) and retries after a
jittered delay. Release also goes to every server, so no key is left behind.

Fencing tokens: each server keeps its own counter. The Redlock token is the maximum of the quorum's
counters, and every server of the quorum is raised to that maximum before the lock is returned
(and again at release), so in the absence of server data loss any two quorums intersect in a server
whose counter already passed the earlier token, and tokens increase. This is NOT a safe fencing
token: a server that restarts without its data (no fsync) or a partition that isolates an old
holder can break it, and Redlock itself rests on timing assumptions. ``held.token_is_safe`` is
therefore False, unless the tokens come from a consensus-backed counter: pass
``tokens=KVTokenSource(client)`` (the stalwart CP store). The token is then issued after the
quorum is won and before the validity is computed, so an acquire that returns got it while it held
the lock; see docs/locks.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from stalwart.errors import ConfigError
from stalwart.lock._backend import expect_int
from stalwart.lock._errors import (
    BackendError,
    BackendProtocolError,
    BackendUnavailable,
    LockTimeout,
    NotAcquired,
)
from stalwart.lock._held import Held, LostCallback, drift_allowance_s
from stalwart.lock._kvtokens import TokenSource
from stalwart.lock._redis import _LockBase, check_ttl, lock_keys, new_owner
from stalwart.lock._redlock_client import MAX_SERVERS, RedlockClient, shared_redlock_client
from stalwart.lock._resp import RespError, pack, pack_items, pack_prefix
from stalwart.lock._scripts import BUMP, RELEASE_BUMP

#: Replies of the acquire transaction that only acknowledge: MULTI's +OK, SET's and INCR's +QUEUED.
ACQUIRE_ACKS = 3


class Redlock(_LockBase):
    """A mutex over N independent Redis servers (Redlock). See the module doc for its limits.

    ``held.token_is_safe`` is False by default: Redlock tokens are per-server, max-based
    counters, monotonic only while no server loses its data. With ``tokens`` (a
    :class:`~stalwart.lock.KVTokenSource`) each token comes from the stalwart CP store instead and
    is safe; if the store cannot issue one, the acquire releases the quorum and raises
    :class:`BackendUnavailable`.
    """

    def __init__(
        self,
        target: Sequence[str] | RedlockClient,
        name: str,
        *,
        ttl: float = 10.0,
        on_lost: LostCallback | None = None,
        auto_renew: bool = True,
        retry_delay_s: float = 0.05,
        max_retries: int | None = None,
        tokens: TokenSource | None = None,
    ) -> None:
        super().__init__("", on_lost, auto_renew)
        self._redlock_target = target
        self._tokens = tokens
        base = lock_keys("lock", name)
        self.name = name
        self.ttl_s = float(ttl)
        self._ttl_ms = check_ttl(ttl)
        if retry_delay_s <= 0 or (max_retries is not None and max_retries < 0):
            raise ConfigError("retry_delay_s must be positive and max_retries >= 0")
        self.retry_delay_s = retry_delay_s
        self.max_retries = max_retries
        self.key = base
        self._fence_key = f"{base}:fence"
        # Encoded once: per call only the owner (and the release's token) is encoded, then the
        # same bytes are written to every server. The acquire is a transaction, not a script:
        # MULTI / SET key owner NX PX ttl / INCR fence / EXEC runs both atomically, as the
        # script did, for less server CPU than EVALSHA (Lua's per-call cost; bench_locks' two
        # 5-server floor rows compare them), which counts when 5 servers share the client's cores.
        # The INCR runs on a refused SET too: counters may skip values, which tokens allow
        # (they need only increase), and every server counts every attempt that reaches it.
        self._acquire_head = pack(("MULTI",)) + pack_prefix(6, ("SET", base))  # + owner
        self._acquire_tail = (
            pack_items(("NX", "PX", self._ttl_ms)) + pack(("INCR", self._fence_key)) + pack(("EXEC",))
        )
        head = ("EVALSHA", RELEASE_BUMP.sha, 2, base, self._fence_key)
        self._release_prefix = pack_prefix(len(head) + 2, head)  # + owner, token
        self._release_fns: tuple[RedlockClient, Callable[[Held], Awaitable[None]]] | None = None

    def client(self) -> RedlockClient:
        t = self._redlock_target
        return t if isinstance(t, RedlockClient) else shared_redlock_client(t)

    async def acquire(self, timeout: float | None = None, *, blocking: bool = True) -> Held:
        client = self.client()
        if not blocking:
            held = await self._attempt(client)
            if isinstance(held, BackendError):
                raise held
            if held is None:
                raise NotAcquired(self.name, "no quorum")
            return held
        if timeout is None:
            # The first attempt straight from here (one coroutine less on the uncontended path).
            held = await self._attempt(client)
            if isinstance(held, Held):
                return held
            return await self._retry_loop(client, held)
        try:
            async with asyncio.timeout(timeout):
                return await self._retry_loop(client, await self._attempt(client))
        except TimeoutError:
            raise LockTimeout(self.name, f"no quorum within {timeout} s") from None

    async def _retry_loop(self, client: RedlockClient, held: Held | BackendError | None) -> Held:
        """Retry after a first attempt's outcome ``held`` until one wins or retries run out."""
        attempts = 0
        while not isinstance(held, Held):
            attempts += 1
            if self.max_retries is not None and attempts > self.max_retries:
                if held is not None:
                    raise held  # too many servers failed for a quorum to be possible
                raise NotAcquired(self.name, f"no quorum after {attempts} attempts")
            # Jitter desynchronises competing clients so one of them can win a majority.
            await asyncio.sleep(client.rng.uniform(0.5, 1.5) * self.retry_delay_s)
            held = await self._attempt(client)
        return held

    async def _attempt(self, client: RedlockClient) -> Held | BackendError | None:
        owner = new_owner()
        try:
            packed = self._acquire_head + pack_items((owner,)) + self._acquire_tail
            sent_at = time.monotonic()
            # EXEC's reply: [b"OK", counter] if the SET took the lock, [None, counter] if not.
            replies = await client.fanout_packed(None, packed, ACQUIRE_ACKS)
            tokens: list[int] = []  # the fencing counters of the servers that said yes
            winners: list[int] = []  # and their indexes
            errors: list[BaseException] = []
            for i, reply in enumerate(replies):
                if type(reply) is list and len(reply) == 2:
                    got, value = reply
                    if type(value) is int:
                        if got == b"OK":
                            tokens.append(value)
                            winners.append(i)
                            continue
                        if got is None:
                            continue
                    if type(got) is RespError or type(value) is RespError:  # failed inside EXEC
                        bad = got if type(got) is RespError else value
                        errors.append(BackendProtocolError(f"{client.urls[i]}: acquire: {bad.message}"))
                        continue
                if isinstance(reply, BaseException):
                    errors.append(reply)
                    continue
                raise BackendProtocolError(
                    f"{client.urls[i]}: acquire: expected EXEC's [OK or nil, integer], got {reply!r:.200}"
                )
            quorum = client.quorum
            token = max(tokens) if tokens else 0
            if len(tokens) >= quorum and tokens.count(token) != len(tokens):
                # Raise every lagging counter of the quorum to the token before handing it out.
                bumped = await client.fanout(BUMP, (self._fence_key,), (token,))
                ok = {
                    i
                    for i, r in enumerate(bumped)
                    if not isinstance(r, BaseException) and expect_int(r, "bump") >= token
                }
                tokens = [t for i, t in zip(winners, tokens, strict=True) if i in ok]
            issued = token  # the per-server counters' token, unless the store issues one
            if self._tokens is not None and len(tokens) >= quorum:
                # The safe token, while the quorum is held; the store's round trip counts against
                # the validity below, so a holder whose lock expired meanwhile never returns it.
                # If the store fails, the except clause below releases the quorum and re-raises.
                issued = await self._tokens.next_token(self.name)
            drift_s = drift_allowance_s(self.ttl_s, client.drift_factor)
            validity_s = self.ttl_s - (time.monotonic() - sent_at) - drift_s
            if len(tokens) < quorum or validity_s <= 0:
                await self._release_everywhere(client, owner, token)
                if len(errors) > len(replies) - quorum:
                    what = f"{len(errors)} of {len(replies)} Redlock servers failed, no quorum possible"
                    failure = BackendUnavailable(f"{what}: {errors[0]}")
                    failure.__cause__ = errors[0]
                    return failure
                return None
            held = Held(
                name=self.name,
                owner=owner,
                token=issued,
                ttl_s=self.ttl_s,
                sent_at=sent_at,
                drift_s=drift_s,
                releaser=self._releaser(client),  # one closure per client, not per acquisition
                on_lost=self._on_lost,
                token_is_safe=self._tokens is not None,
                kind="redlock",
                renew_data=self.key,
            )
            if self._auto_renew:
                client.watchdog.add(held)
            return held
        except BaseException:
            await asyncio.shield(self._release_everywhere(client, owner, 0))
            raise

    def _releaser(self, client: RedlockClient) -> Callable[[Held], Awaitable[None]]:
        cached = self._release_fns
        if cached is not None and cached[0] is client:
            return cached[1]
        prefix = self._release_prefix

        async def release(held: Held) -> None:
            client.watchdog.remove(held)
            # (_release_everywhere inlined: one coroutine less per release.)
            # A store token is not a server counter: nothing to raise the counters to (0 is a no-op).
            counter = 0 if held.token_is_safe else held.token
            packed = prefix + pack_items((held.owner, counter))
            released = (await client.fanout_packed(RELEASE_BUMP, packed)).count(1)
            if released < client.quorum:
                held._mark_lost(f"only {released} servers still held the lease at release", at_release=True)

        self._release_fns = (client, release)
        return release

    async def _release_everywhere(self, client: RedlockClient, owner: str, token: int) -> int:
        packed = self._release_prefix + pack_items((owner, token))
        return (await client.fanout_packed(RELEASE_BUMP, packed)).count(1)


__all__ = ["MAX_SERVERS", "Redlock", "RedlockClient", "shared_redlock_client"]

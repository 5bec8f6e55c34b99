"""The Lua scripts behind the Redis locks. Each runs atomically on the server.

They are loaded once per server and called by SHA (EVALSHA); a server that lost its script cache
(restart, SCRIPT FLUSH) answers NOSCRIPT and the backend reloads the script and retries once.

Key layout for a lock called N (the ``{N}`` hash tag keeps one lock's keys in one cluster slot):

- ``stalwart:lock:{N}``        owner value (random per acquisition), with a PX TTL
- ``stalwart:lock:{N}:fence``  fencing counter; never deleted (deleting it would reset tokens)
- ``stalwart:lock:{N}:q``      FIFO queue of waiting tickets (zset, score = arrival number)
- ``stalwart:lock:{N}:qx``     waiter expiry (zset, score = server ms); dead waiters are purged
- ``stalwart:lock:{N}:qn``     arrival counter of the queue; deleted when the queue empties
- ``stalwart:lock:{N}:qw``     tickets withdrawn by waiters that gave up (zset, score = expiry
  ms); a late try with one is refused. Expires ``waiter_ttl`` after the last withdrawal
- channel ``stalwart:lock:{N}:wake``  a release publishes ``1`` (wake one waiter per client) or,
  with FIFO fairness, ``<ticket> <token>``: the lock was handed over to the head of the queue
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# Shared Lua helpers: server time in ms, and purging waiters whose expiry has passed.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
_PURGE = """
local function purge(q, qx, now)
  local dead = redis.call('ZRANGEBYSCORE', qx, '-inf', now)
  for _, d in ipairs(dead) do redis.call('ZREM', q, d) end
  if #dead > 0 then redis.call('ZREMRANGEBYSCORE', qx, '-inf', now) end
end
"""
# Scripts are CPU on the server's single thread, on the critical path of every hand-off: each
# redis.call counts (about 1 us), so the common paths below make as few as they can. The queue's
# arrival counter (qn) is deleted whenever the queue is found empty.

# KEYS: lock, fence   ARGV: owner, ttl_ms     The unfair mutex's acquire: as short as a bare SET NX.
# Returns {1, token} when acquired, else {0, holder_pttl_ms}.
ACQUIRE_FAST = Script(
    "acquire_fast",
    """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('INCR', KEYS[2])}
end
return {0, redis.call('PTTL', KEYS[1])}
""",
)

# FIFO-fair acquire. KEYS: lock, fence, q, qx, qn, qw   ARGV: owner, ttl_ms, waiter_ttl_ms (0: no queue)
# The owner of a fair waiter ends in ".<handover_ms>": the lease a release hands over to it.
# Returns {1, token} when acquired now; {2, token} when a release already handed it over to us;
# else {0, holder_pttl_ms} (-2: free, but others are ahead in the queue). A ticket its waiter has
# withdrawn (in qw, see ABANDON_FAIR) is refused with {0, -1}: a try sent before the waiter gave
# up but arriving after its clean-up (on another connection) neither takes the lock nor queues.
ACQUIRE_FAIR = Script(
    "acquire_fair",
    _PURGE
    + """
if redis.call('ZSCORE', KEYS[6], ARGV[1]) then return {0, -1} end
local mine = redis.call('GET', KEYS[1])
if mine == ARGV[1] then return {2, tonumber(redis.call('GET', KEYS[2]))} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not mine then
  -- Free: the live head of the queue takes it, or anyone if nobody queues. (While the lock is
  -- held, who heads the queue does not matter: the release purges and picks.)
  purge(KEYS[3], KEYS[4], now)
  local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  if not head or head == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    if head then
      redis.call('ZREM', KEYS[3], ARGV[1])
      redis.call('ZREM', KEYS[4], ARGV[1])
      if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('DEL', KEYS[5]) end
    else
      redis.call('DEL', KEYS[5])
    end
    return {1, redis.call('INCR', KEYS[2])}
  end
end
if tonumber(ARGV[3]) > 0 then
  -- NX: a waiter that refreshes its ticket keeps its place (the counter just moves on).
  redis.call('ZADD', KEYS[3], 'NX', redis.call('INCR', KEYS[5]), ARGV[1])
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[3]), ARGV[1])
  for i = 3, 5 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
return {0, redis.call('PTTL', KEYS[1])}
""",
)

# KEYS: lock   ARGV: owner, channel[, message]
# Compare-and-delete; wakes one waiter per client. Returns 1 if it was ours. The message is "1",
# or from a blocking thread "1:<its thread group's prefix>": that group's own subscriber skips it
# (the releasing thread woke one of the group's threads itself), everyone else reads "1".
RELEASE = Script(
    "release",
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3] or '1')
return 1
""",
)


# FIFO-fair release. KEYS: lock, fence, q, qx, qn   ARGV: owner, channel
# Compare-and-delete, then hand the lock straight to the live waiter at the head of the queue: set
# it as owner with its handover lease, issue its token, and publish "<ticket> <token>" so it can
# go ahead without another round trip. Returns 1 if the lock was ours.
def _release_fair(local: bool) -> str:
    """The release body; ``local``: ARGV[3] is the releaser's thread-group prefix, and a head
    whose ticket starts with it is not published but returned ({1, token, ticket}): the releasing
    thread wakes that waiter itself, in the same process (see _fastsync). {1, 0, ''} when the lock
    went to anyone else (published) or nobody, {0, 0, ''} when it was not ours."""
    nope, done = ("{0, 0, ''}", "{1, 0, ''}") if local else ("0", "1")
    mine = (
        "  if #ARGV[3] > 0 and string.sub(head, 1, #ARGV[3]) == ARGV[3] then return {1, token, head} end\n"
        if local
        else ""
    )
    return f"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {nope} end
purge(KEYS[3], KEYS[4], now)
local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
local lease = head and tonumber(string.match(head, '%.(%d+)$'))
if lease then
  redis.call('SET', KEYS[1], head, 'PX', lease)  -- replaces our owner value: no DEL needed
  redis.call('ZREM', KEYS[3], head)
  redis.call('ZREM', KEYS[4], head)
  if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('DEL', KEYS[5]) end
  local token = redis.call('INCR', KEYS[2])
{mine}  redis.call('PUBLISH', ARGV[2], head .. ' ' .. token)
  return {done}
end
redis.call('DEL', KEYS[1])
if head then
  redis.call('PUBLISH', ARGV[2], head)
else
  redis.call('DEL', KEYS[5])
end
return {done}
"""


_RELEASE_FAIR = _release_fair(False)
RELEASE_FAIR = Script("release_fair", _PURGE + _NOW + _RELEASE_FAIR)
# The blocking wrapper's release. KEYS: as RELEASE_FAIR   ARGV: owner, channel, thread-group prefix
RELEASE_FAIR_LOCAL = Script("release_fair_local", _PURGE + _NOW + _release_fair(True))

# A fair waiter gives up (timeout, cancellation).
# KEYS: lock, fence, q, qx, qn, qw   ARGV: owner, channel, withdrawn_ms
# Leaves the queue AND gives the lock up if a release handed it over to us meanwhile, atomically:
# as two calls, a holder's release landing between "give up" and "leave the queue" would hand the
# lock to the departed waiter, stalling it for the handover lease. The ticket is also recorded as
# withdrawn for withdrawn_ms (zset qw, score = expiry), so that a try of ours still in flight is
# refused when it arrives. Returns 1 if the lock was ours.
ABANDON_FAIR = Script(
    "abandon_fair",
    _PURGE
    + _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
redis.call('ZADD', KEYS[6], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[6], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('DEL', KEYS[5]) end
"""
    + _RELEASE_FAIR,
)

# KEYS: lock   ARGV: owner, ttl_ms     Compare-and-pexpire. Returns 1 if still ours.
RENEW = Script(
    "renew",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
""",
)

# Redlock per-server release. KEYS: lock, fence   ARGV: owner, token
# Raises the server's fencing counter to at least the Redlock token (max-based; 0 when the tokens
# come from the CP store: nothing to raise), then compare-and-delete. Sent to every server,
# including those that did not answer the acquire. Nothing is published: Redlock waiters retry on a
# jittered timer (a wake-up would have to reach a quorum of subscriptions to mean anything).
RELEASE_BUMP = Script(
    "release_bump",
    """
local token = tonumber(ARGV[2])
if token > 0 and token > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], ARGV[2])
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
""",
)

# Redlock: raise one server's fencing counter to at least ARGV[1]. KEYS: fence. Returns the value.
BUMP = Script(
    "bump",
    """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]); return tonumber(ARGV[1]) end
return cur
""",
)

# FencedResource write. KEYS: resource hash   ARGV: token, value
# Rejects a token lower than the highest seen; returns {1, previous_highest} or {0, highest}, the
# highest as a decimal string ('-1': none yet). Tokens are canonical non-negative decimals (the
# client sends str(int): no sign, no leading zero), compared exactly as digit strings: Lua numbers
# are doubles, so tonumber() would make 2^53 + 1 equal to 2^53 and let the lower token through.
# (Byte by byte rather than with '<': Lua's string '<' goes through the server's locale.)
FENCED_WRITE = Script(
    "fenced_write",
    """
local cur = redis.call('HGET', KEYS[1], 'token')
local tok = ARGV[1]
if cur then
  local lower = #tok < #cur
  if #tok == #cur then
    for i = 1, #tok do
      local a, b = string.byte(tok, i), string.byte(cur, i)
      if a ~= b then lower = a < b; break end
    end
  end
  if lower then return {0, cur} end
end
redis.call('HSET', KEYS[1], 'token', tok, 'value', ARGV[2])
return {1, cur or '-1'}
""",
)

SCRIPTS: tuple[Script, ...] = (
    ACQUIRE_FAIR,
    ACQUIRE_FAST,
    RELEASE,
    RELEASE_FAIR,
    RELEASE_FAIR_LOCAL,
    ABANDON_FAIR,
    RENEW,
    RELEASE_BUMP,
    BUMP,
    FENCED_WRITE,
)

__all__ = [
    "ABANDON_FAIR",
    "ACQUIRE_FAIR",
    "ACQUIRE_FAST",
    "BUMP",
    "FENCED_WRITE",
    "RELEASE",
    "RELEASE_BUMP",
    "RELEASE_FAIR",
    "RELEASE_FAIR_LOCAL",
    "RENEW",
    "SCRIPTS",
    "Script",
]

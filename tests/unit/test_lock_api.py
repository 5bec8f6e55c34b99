"""Error types, reply validation, configuration errors, scripts and wake-up routing (no server)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
import redis.exceptions
from hypothesis import given
from hypothesis import strategies as st

from stalwart.errors import (
    ConfigError,
    DeadlineExceededError,
    RemoteProtocolError,
    StalwartError,
    UnavailableError,
)
from stalwart.lock import (
    BackendError,
    BackendProtocolError,
    BackendUnavailable,
    LockError,
    LockLost,
    LockTimeout,
    NotAcquired,
    RedisBackend,
    RedisLock,
    RedisSemaphore,
    Redlock,
    RedlockClient,
    StaleToken,
    ZooKeeperLock,
)
from stalwart.lock._backend import expect_int, expect_pair, map_error
from stalwart.lock._scripts import SCRIPTS
from stalwart.lock._waker import Waker


def test_error_hierarchy() -> None:
    for cls in (LockError, LockLost, NotAcquired, LockTimeout, StaleToken, BackendError):
        assert issubclass(cls, StalwartError)
    assert issubclass(LockTimeout, NotAcquired) and issubclass(LockTimeout, DeadlineExceededError)
    assert issubclass(BackendUnavailable, UnavailableError) and issubclass(BackendUnavailable, BackendError)
    assert issubclass(BackendProtocolError, RemoteProtocolError)
    assert "token 3 < highest seen 9" in str(StaleToken("k", 3, 9))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (redis.exceptions.ConnectionError("reset"), BackendUnavailable),
        (redis.exceptions.TimeoutError("slow"), BackendUnavailable),
        (TimeoutError(), BackendUnavailable),
        (ConnectionResetError(), BackendUnavailable),
        (redis.exceptions.InvalidResponse("garbage"), BackendProtocolError),
        (redis.exceptions.ResponseError("WRONGTYPE"), BackendProtocolError),
        (redis.exceptions.RedisError("other"), BackendError),
    ],
)
def test_map_error(exc: BaseException, expected: type[BackendError]) -> None:
    mapped = map_error(exc, "op")
    assert type(mapped) is expected and "op" in str(mapped)


@given(st.one_of(st.none(), st.binary(), st.text(), st.floats(), st.lists(st.integers(), max_size=4)))
def test_reply_validation_rejects_anything_but_the_shape(reply: Any) -> None:
    if isinstance(reply, list) and len(reply) == 2:
        assert expect_pair(reply, "x") == (reply[0], reply[1])
    else:
        with pytest.raises(BackendProtocolError):
            expect_pair(reply, "x")
    with pytest.raises(BackendProtocolError):
        expect_int(reply, "x")


def test_bad_configuration_is_a_config_error() -> None:
    for bad in (dict(ttl=0), dict(ttl=float("nan")), dict(ttl=-1.0), dict(poll_max_s=0)):
        with pytest.raises(ConfigError):
            RedisLock("redis://127.0.0.1:1/0", "n", **bad)  # type: ignore[arg-type]
    for name in ("", "x" * 600):
        with pytest.raises(ConfigError):
            RedisLock("redis://127.0.0.1:1/0", name)
    with pytest.raises(ConfigError):
        RedisSemaphore("redis://127.0.0.1:1/0", "s", 0)
    with pytest.raises(ConfigError):
        RedlockClient([])
    with pytest.raises(ConfigError):
        RedlockClient(["redis://a", "redis://a"])
    with pytest.raises(ConfigError):
        Redlock(["redis://a"], "n", retry_delay_s=0)
    with pytest.raises(ConfigError):
        ZooKeeperLock("127.0.0.1:1", "a/b")
    # A drift allowance of the whole TTL or more (or NaN) would hand out leases with no validity:
    # refused up front, never an AssertionError after the server granted the lock.
    for drift in (1.0, 1.5, -0.01, float("nan")):
        with pytest.raises(ConfigError, match="drift_factor"):
            RedisBackend("redis://127.0.0.1:1/0", drift_factor=drift)
        with pytest.raises(ConfigError, match="drift_factor"):
            RedlockClient(["redis://127.0.0.1:1/0"], drift_factor=drift)
    assert RedlockClient(["redis://127.0.0.1:1/0"], drift_factor=0.9).drift_factor == 0.9
    with pytest.raises(ConfigError):
        RedisBackend("redis://127.0.0.1:1/0", op_timeout_s=0)


def test_scripts_are_addressed_by_their_sha1() -> None:
    assert len({s.sha for s in SCRIPTS}) == len(SCRIPTS)
    for script in SCRIPTS:
        assert script.sha == hashlib.sha1(script.source.encode()).hexdigest()


def test_wakeups_route_to_one_anyone_or_the_ticket() -> None:
    async def body() -> None:
        waker = Waker(None, 1.0)  # _deliver never touches the connection
        channel = b"stalwart:lock:{n}:wake"
        from stalwart.lock._waker import Waiter

        a, b, c = Waiter(channel, b"ta"), Waiter(channel, b"tb"), Waiter(channel, None)
        waker._waiters[channel] = {a: None, b: None, c: None}
        waker._deliver(channel, b"1")
        assert [w.event.is_set() for w in (a, b, c)] == [True, False, False]  # the oldest one
        waker._deliver(channel, b"1")
        assert [w.event.is_set() for w in (a, b, c)] == [True, True, False]  # the next idle one
        for w in (a, b, c):
            w.event.clear()
        waker._deliver(channel, b"tb")
        assert [w.event.is_set() for w in (a, b, c)] == [False, True, False]
        waker._deliver(channel, b"*")
        assert all(w.event.is_set() for w in (a, b, c))
        waker._deliver(b"other", b"*")  # unknown: ignored

    asyncio.run(body())

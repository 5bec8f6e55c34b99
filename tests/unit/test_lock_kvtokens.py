"""KVTokenSource: fencing tokens are store revisions; store failures are typed lock errors."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from stalwart.client import AsyncKVClient, KVOutcomeUnknownError, KVRequestError, KVUnavailableError
from stalwart.errors import ConfigError
from stalwart.lock import BackendError, BackendUnavailable, KVTokenSource


class FakeStore:
    def __init__(self) -> None:
        self.revision = 41
        self.keys: list[str] = []
        self.fail: Exception | None = None
        self.answer: Any = None

    async def put(self, key: str, value: bytes, ttl_s: float | None = None) -> Any:
        if self.fail is not None:
            raise self.fail
        self.keys.append(key)
        self.revision += 1
        return self.revision if self.answer is None else self.answer


def test_lock_kv_tokens_are_store_revisions_and_failures_are_typed() -> None:
    store = FakeStore()
    tokens = KVTokenSource(cast(AsyncKVClient, store), prefix="fence/")

    async def main() -> None:
        assert [await tokens.next_token("orders") for _ in range(3)] == [42, 43, 44]
        assert store.keys == ["fence/orders"] * 3
        store.fail = KVOutcomeUnknownError("the leader died mid-write")
        with pytest.raises(BackendUnavailable, match="leader died"):
            await tokens.next_token("orders")
        store.fail = None
        for bad in (0, -5, "7", True):
            store.answer = bad
            with pytest.raises(BackendUnavailable, match="revision"):
                await tokens.next_token("orders")

    asyncio.run(main())
    with pytest.raises(ConfigError):
        KVTokenSource(cast(AsyncKVClient, store), prefix="has space/")


def test_lock_kv_tokens_a_refused_request_is_not_reported_as_retryable() -> None:
    """A store that refuses the write as malformed will refuse it again: BackendError, not
    BackendUnavailable (which callers treat as "retry later")."""
    store = FakeStore()
    tokens = KVTokenSource(cast(AsyncKVClient, store))

    async def main() -> None:
        store.fail = KVRequestError("key too long")
        with pytest.raises(BackendError, match="refused") as info:
            await tokens.next_token("orders")
        assert not isinstance(info.value, BackendUnavailable)
        store.fail = KVUnavailableError("no leader")
        with pytest.raises(BackendUnavailable, match="no leader"):
            await tokens.next_token("orders")

    asyncio.run(main())

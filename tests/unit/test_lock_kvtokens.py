"""KVTokenSource: fencing tokens are store revisions; store failures are typed lock errors."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from stalwart.client import AsyncKVClient, KVOutcomeUnknownError
from stalwart.errors import ConfigError
from stalwart.lock import BackendUnavailable, KVTokenSource


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

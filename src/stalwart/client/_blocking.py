"""KVClient: the blocking wrapper; one event loop in a background thread runs AsyncKVClient."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from stalwart.client._client import AsyncKVClient
from stalwart.client._protocol import Consistency
from stalwart.kv import Event, KeyValue

T = TypeVar("T")

__all__ = ["KVClient"]


class KVClient:
    """``with KVClient(endpoints, cluster_key=key) as kv: kv.put("a", b"1")``: same methods as
    :class:`AsyncKVClient`, blocking. Safe to call from several threads (calls run on one loop).
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        cluster_key: bytes,
        client_id: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stalwart-kv", daemon=True)
        self._thread.start()
        self._client = self._run(self._make(endpoints, cluster_key, client_id, timeout_s))

    @staticmethod
    async def _make(
        endpoints: Sequence[str], key: bytes, client_id: str | None, timeout_s: float
    ) -> AsyncKVClient:
        return AsyncKVClient(endpoints, cluster_key=key, client_id=client_id, timeout_s=timeout_s)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @property
    def client_id(self) -> str:
        return self._client.client_id

    def get(self, key: str, consistency: str | Consistency = "linearizable") -> KeyValue | None:
        return self._run(self._client.get(key, consistency))

    def put(self, key: str, value: bytes, ttl_s: float | None = None) -> int:
        return self._run(self._client.put(key, value, ttl_s))

    def delete(self, key: str) -> bool:
        return self._run(self._client.delete(key))

    def cas(
        self, key: str, expected: bytes | None, value: bytes, ttl_s: float | None = None
    ) -> tuple[bool, int]:
        return self._run(self._client.cas(key, expected, value, ttl_s))

    def append(self, key: str, suffix: bytes) -> bytes:
        return self._run(self._client.append(key, suffix))

    def range(
        self, prefix: str, limit: int = 1000, consistency: str | Consistency = "linearizable"
    ) -> list[KeyValue]:
        return self._run(self._client.range(prefix, limit, consistency))

    def status(self, endpoint: str | None = None) -> dict[str, Any]:
        return self._run(self._client.status(endpoint))

    def watch(self, prefix: str, since_revision: int = 0) -> Iterator[Event]:
        """Blocks between events; stop by breaking out of the loop."""
        agen = self._client.watch(prefix, since_revision)

        async def next_event() -> Event:
            return await anext(agen)

        async def close() -> None:
            await agen.aclose()

        try:
            while True:
                yield self._run(next_event())
        finally:
            self._run(close())

"""A blocking face for the asyncio 2PC coordinator, for code that does not use asyncio.

::

    with BlockingCoordinator([PostgresResource("pg", dsn), MariaDBResource("maria", **kw)]) as coord:
        with coord.transaction() as tx:
            tx.execute("pg", "UPDATE ...", (1,))
            tx.execute("maria", "UPDATE ...", (1,))

The coordinator runs on its own event loop in a background thread; every call blocks the
calling thread until that loop has done the work, and re-raises its errors unchanged.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from stalwart.txn._coordinator_host import Transaction, TwoPhaseCoordinator

T = TypeVar("T")


class BlockingTransaction:
    def __init__(self, owner: BlockingCoordinator, tx: Transaction) -> None:
        self._owner = owner
        self._tx = tx

    @property
    def txid(self) -> str:
        return self._tx.txid

    def execute(self, participant: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._owner._call(self._tx.execute(participant, statement, params))


class BlockingCoordinator:
    """Takes the same arguments as :class:`TwoPhaseCoordinator`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args, self._kwargs = args, kwargs
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stalwart-2pc", daemon=True)
        self._coord: TwoPhaseCoordinator | None = None

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> BlockingCoordinator:
        self._thread.start()

        async def enter() -> TwoPhaseCoordinator:
            coord = TwoPhaseCoordinator(*self._args, **self._kwargs)
            return await coord.__aenter__()

        try:
            self._coord = self._call(enter())
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self._coord is not None:
                self._call(self._coord.__aexit__(None, None, None))
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    @contextmanager
    def transaction(self) -> Iterator[BlockingTransaction]:
        """Commit atomically when the block exits; roll back if it raises."""
        coord = self._coord
        if coord is None:
            raise RuntimeError("use the coordinator inside `with`")
        scope = coord.transaction()
        tx = self._call(scope.__aenter__())
        try:
            yield BlockingTransaction(self, tx)
        except BaseException as exc:
            self._call(scope.__aexit__(type(exc), exc, exc.__traceback__))
            raise
        self._call(scope.__aexit__(None, None, None))

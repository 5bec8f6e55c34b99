"""The drill's workload: concurrent clients doing get/put/cas on a few keys, recorded.

Each worker is one logical process of the history: it runs one operation at a time, records
the invocation before sending and the completion when the answer comes. Values are unique
decimal strings (``"<worker>-<n>"``), so the checker can tell every write apart; a ``cas``
expects the last value this worker saw on that key (or absence), which makes many of them
succeed and some fail, both informative.

Outcomes, following the client's contract (docs/kv.md):

* an answer -> ``OK`` (a ``cas`` that did not match -> ``FAIL``, which the model reads as a
  compare that happened);
* ``KVTimeoutError``, ``KVUnavailableError`` (the client gives up after retries, and an earlier
  attempt of the same write may have been applied: it resends "unknown" writes as they are) or
  any error outside the client's contract, on a write -> ``INFO``: it may have happened. The
  worker then takes a fresh process id, since the old one may still be "running" that operation
  as far as the checker knows;
* any other ``StalwartError`` (a request refused as malformed) -> ``FAIL``: it did not happen.
  A refused ``cas`` is kept apart (``Recorder.refused``): in the checker's models a failed
  ``cas`` is a compare that happened and did not match, which a refused one is not.

A read that fails in any way is ``FAIL`` (a read that did not return has no effect to account for).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stalwart.check import Status
from stalwart.drill._history import Recorder
from stalwart.errors import StalwartError, UnavailableError


class KVLike(Protocol):
    """The part of ``stalwart.client.AsyncKVClient`` the workload uses."""

    async def get(self, key: str, *, consistency: Any = ...) -> Any: ...

    async def put(self, key: str, value: bytes) -> int: ...

    async def cas(self, key: str, expected: bytes | None, value: bytes) -> tuple[bool, int]: ...


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    keys: tuple[str, ...] = ("r0", "r1", "r2", "r3", "r4")
    read_share: float = 0.4
    cas_share: float = 0.3  # the rest are puts
    think_s: float = 0.0  # pause between a worker's operations
    read_consistency: Any = None  # None: the client's default (linearizable)


def _value_of(kv: Any) -> str | None:
    """A get's result as the model's value: None when absent, else the decoded string."""
    if kv is None:
        return None
    raw = kv.value if hasattr(kv, "value") else kv
    return bytes(raw).decode() if isinstance(raw, bytes | bytearray | memoryview) else str(raw)


class Worker:
    """One client worker; :meth:`run` loops until ``stop`` is set."""

    def __init__(
        self, index: int, client: KVLike, recorder: Recorder, cfg: WorkloadConfig, rng: random.Random
    ) -> None:
        self.index = index
        self._client = client
        self._rec = recorder
        self._cfg = cfg
        self._rng = rng
        self._process = recorder.new_process()
        self._seen: dict[str, str | None] = {}
        self._counter = 0

    def _fresh_value(self) -> str:
        self._counter += 1
        return f"{self.index}-{self._counter}"

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and not self._rec.full:
            key = self._rng.choice(self._cfg.keys)
            roll = self._rng.random()
            if roll < self._cfg.read_share:
                await self.get(key)
            elif roll < self._cfg.read_share + self._cfg.cas_share:
                await self.cas(key)
            else:
                await self.put(key)
            if self._cfg.think_s > 0:
                await asyncio.sleep(self._cfg.think_s)

    async def get(self, key: str) -> None:
        pending = self._rec.invoke(self._process, "get", key, None)
        try:
            if self._cfg.read_consistency is None:
                result = await self._client.get(key)
            else:
                result = await self._client.get(key, consistency=self._cfg.read_consistency)
        except Exception:
            # a read that did not return had no effect: it is left out of the check
            self._rec.complete(pending, Status.FAIL)
            return
        value = _value_of(result)
        self._seen[key] = value
        self._rec.complete(pending, Status.OK, value)

    async def put(self, key: str) -> None:
        value = self._fresh_value()
        pending = self._rec.invoke(self._process, "put", key, value)
        status = await self._write(self._client.put(key, value.encode()))
        self._rec.complete(pending, status)
        if status is Status.OK:
            self._seen[key] = value
        self._after(status)

    async def cas(self, key: str) -> None:
        expected = self._seen.get(key)
        new = self._fresh_value()
        # the kv model reads an absent key as "": a cas from absence is a cas from ""
        pending = self._rec.invoke(self._process, "cas", key, ("" if expected is None else expected, new))
        outcome: list[bool] = []

        async def call() -> None:
            ok, _rev = await self._client.cas(
                key, None if expected is None else expected.encode(), new.encode()
            )
            outcome.append(ok)

        status = await self._write(call())
        if status is Status.FAIL:
            # refused before it ran; kept out of the checked history, where a failed cas means
            # "compared and did not match"
            self._rec.complete(pending, status, refused=True)
            return
        if status is Status.OK and not outcome[0]:
            status = Status.FAIL  # a compare that did not match: it happened, and changed nothing
        elif status is Status.OK:
            self._seen[key] = new
        self._rec.complete(pending, status)
        self._after(status)

    async def _write(self, call: Any) -> Status:
        try:
            await call
        except UnavailableError:
            # a timeout (KVTimeoutError), a sent write given up (KVOutcomeUnknownError) or
            # retries exhausted (KVUnavailableError, counted unknown to be safe): indeterminate
            return Status.INFO
        except StalwartError:
            return Status.FAIL
        except Exception:
            return Status.INFO  # outside the client's contract: assume nothing
        return Status.OK

    def _after(self, status: Status) -> None:
        if status is Status.INFO:
            self._process = self._rec.new_process()


async def run_workers(
    clients: Sequence[KVLike], recorder: Recorder, cfg: WorkloadConfig, seed: int, stop: asyncio.Event
) -> list[Worker]:
    """Run one worker per client until ``stop``; returns the workers (for their counters)."""
    workers = [
        Worker(i, c, recorder, cfg, random.Random(seed * 1_000_003 + i)) for i, c in enumerate(clients)
    ]
    async with asyncio.TaskGroup() as tg:
        for w in workers:
            tg.create_task(w.run(stop))
    return workers

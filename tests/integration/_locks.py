"""Helpers shared by the lock integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def contend(
    make_lock: Callable[[int], Any], workers: int = 8, rounds: int = 25
) -> tuple[int, list[int]]:
    """Workers do a non-atomic read-modify-write under the lock; returns (count, tokens in order)."""
    shared = {"value": 0}
    order: list[int] = []

    async def worker(i: int) -> None:
        lock = make_lock(i)
        for _ in range(rounds):
            async with lock as held:
                held.ensure()
                order.append(held.token)
                value = shared["value"]
                await asyncio.sleep(0)  # let every other worker run between the read and the write
                await asyncio.sleep(0.0005)
                shared["value"] = value + 1

    await asyncio.gather(*(worker(i) for i in range(workers)))
    return shared["value"], order

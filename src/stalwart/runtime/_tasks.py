"""Leaving a TaskGroup that an object entered in its own ``__aenter__``."""

from __future__ import annotations

import asyncio
from types import TracebackType


async def exit_task_group(
    tg: asyncio.TaskGroup,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """Leave ``tg`` once its tasks are done or cancelled, keeping the body's own error unwrapped.

    ``TaskGroup.__aexit__`` would wrap an error raised in the ``async with`` body into an
    ``ExceptionGroup``; the caller wants that error as it was. A ``CancelledError`` is passed
    through, because that is how a failing child task stops the body, and the group then
    raises the child's error.
    """
    if exc_type is not None and not issubclass(exc_type, asyncio.CancelledError):
        await tg.__aexit__(None, None, None)  # children's own errors still surface
    else:
        await tg.__aexit__(exc_type, exc, tb)


__all__ = ["exit_task_group"]

"""The few fixed statements of two-phase commit, sent through libpq directly.

``PREPARE TRANSACTION``, ``COMMIT PREPARED`` and ``ROLLBACK PREPARED`` take no parameters and
return no rows worth adapting, yet they run on every transaction. psycopg's ``execute()`` spends
about 85 us of CPU per round trip on cursors, adaptation and its generator machinery; sending the
query with psycopg's own libpq wrapper (``psycopg.pq``, public API) and waiting on the socket
with one event-loop reader costs about 50 us. Errors come back as the same psycopg exception
classes ``execute()`` raises (``exc.sqlstate`` set), so callers handle both paths alike.

The connection must be idle and owned by the caller (no psycopg call may run on it meanwhile).
When a call is interrupted (cancelled, or the connection fails) the connection's state is
unknown: the caller must close it, as it would after an interrupted ``execute()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import pq

MAX_RESULTS = 16  # a simple query of ours has at most a few statements; more is a bug
MAX_PIPELINE = 256  # statements in one pipeline (the host sends at most 64)

_Conn = psycopg.AsyncConnection[Any]
_FATAL = pq.ExecStatus.FATAL_ERROR
_ABORTED = pq.ExecStatus.PIPELINE_ABORTED
_SYNC = pq.ExecStatus.PIPELINE_SYNC


_READABLE, _WRITABLE = 1, 2


def _wake(fut: asyncio.Future[int], ready: int) -> None:
    # Level-triggered: a callback may fire again before the waiting task runs.
    if not fut.done():
        fut.set_result(ready)


async def _wait(pg: pq.abc.PGconn) -> None:
    """Until the socket is readable."""
    loop = asyncio.get_running_loop()
    fd = pg.socket
    fut: asyncio.Future[int] = loop.create_future()
    loop.add_reader(fd, _wake, fut, _READABLE)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


async def _flush(pg: pq.abc.PGconn) -> None:
    """Send what libpq still holds. While our send buffer is full, the server may itself be
    blocked sending us results: wait for either direction and read when readable (libpq's rule
    for nonblocking connections), or both sides would wait forever."""
    while pg.flush():  # 1 while part of the query is still to be written
        loop = asyncio.get_running_loop()
        fd = pg.socket
        fut: asyncio.Future[int] = loop.create_future()
        loop.add_reader(fd, _wake, fut, _READABLE)
        loop.add_writer(fd, _wake, fut, _WRITABLE)
        try:
            ready = await fut
        finally:
            loop.remove_reader(fd)
            loop.remove_writer(fd)
        if ready == _READABLE:
            pg.consume_input()


async def _next_result(pg: pq.abc.PGconn) -> pq.abc.PGresult | None:
    while pg.is_busy():
        await _wait(pg)
        pg.consume_input()
    while pg.notifies() is not None:  # never LISTENed for here: drop, do not accumulate
        continue
    return pg.get_result()


def error_of(result: pq.abc.PGresult) -> psycopg.Error:
    """The psycopg exception ``execute()`` would raise for this failed result."""
    message = (result.error_message or b"").decode("utf-8", "replace").strip() or "query failed"
    state = result.error_field(pq.DiagnosticField.SQLSTATE)
    if state:
        try:
            return psycopg.errors.lookup(state.decode("ascii"))(message)
        except KeyError:  # an sqlstate this psycopg does not know
            pass
    return psycopg.DatabaseError(message)


async def simple_query(conn: _Conn, query: bytes) -> list[pq.abc.PGresult]:
    """Run ``query`` (one or more statements, no parameters); raise the first error."""
    pg = conn.pgconn
    pg.send_query(query)
    await _flush(pg)
    results: list[pq.abc.PGresult] = []
    while (result := await _next_result(pg)) is not None:
        if len(results) >= MAX_RESULTS:
            raise psycopg.InterfaceError(f"more than {MAX_RESULTS} results for {query[:60]!r}")
        results.append(result)
    for result in results:
        if result.status == _FATAL:
            raise error_of(result)
    return results


async def pipeline(conn: _Conn, queries: Sequence[bytes]) -> list[pq.abc.PGresult]:
    """Send every query at once (libpq pipeline mode, one Sync) and return one result per query.

    PostgreSQL skips the statements after a failed one: those come back with status
    ``PIPELINE_ABORTED``. Nothing is raised for a failed statement; the caller reads the results.
    """
    if not 0 < len(queries) <= MAX_PIPELINE:
        raise ValueError(f"a pipeline takes 1 to {MAX_PIPELINE} statements, not {len(queries)}")
    pg = conn.pgconn
    pg.enter_pipeline_mode()
    for query in queries:
        pg.send_query_params(query, None)
    pg.pipeline_sync()
    await _flush(pg)
    out: list[pq.abc.PGresult] = []
    while len(out) < len(queries):
        result = await _next_result(pg)
        if result is None:
            raise psycopg.InterfaceError("pipeline: a statement returned no result")
        if result.status == _SYNC:
            raise psycopg.InterfaceError("pipeline: sync before every statement answered")
        out.append(result)
        if await _next_result(pg) is not None:  # each statement's results end with a NULL
            raise psycopg.InterfaceError("pipeline: a statement returned several results")
    sync = await _next_result(pg)
    if sync is None or sync.status != _SYNC:
        raise psycopg.InterfaceError("pipeline: no sync after the statements")
    pg.exit_pipeline_mode()
    return out


def aborted(result: pq.abc.PGresult) -> bool:
    """True for a statement PostgreSQL skipped because an earlier one in its pipeline failed."""
    return result.status == _ABORTED

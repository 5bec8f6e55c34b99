"""The saga log: SQLite (embedded, default) or PostgreSQL, with group commit.

Every record is durable before the orchestrator goes on. Concurrent sagas' records are written
together: appends queue up while one write is in flight and the next write takes them all, in
one transaction (one fsync). The same tables let ``stalwart saga`` list and inspect sagas and
ask a running orchestrator to resume or abort one (it polls for those requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from stalwart.errors import ConfigError, StorageError
from stalwart.txn.saga._state import Kind, Record

log = logging.getLogger("stalwart.saga")
MAX_BATCH_RECORDS = 4_096
MAX_RETRY_DELAY_S = 5.0
MAX_FIELD_CHARS = 1 << 20  # a step result or input larger than 1 MiB of JSON is refused

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS saga_records (seq {serial} PRIMARY KEY, saga_id TEXT NOT NULL,"
    " name TEXT NOT NULL, kind TEXT NOT NULL, step TEXT NOT NULL, data TEXT NOT NULL,"
    " at DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS saga_records_by_id ON saga_records (saga_id, seq)",
    "CREATE TABLE IF NOT EXISTS saga_index (saga_id TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " status TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL,"
    " owner TEXT NOT NULL)",
]
_STATUS_OF = {
    Kind.SAGA_STARTED: "running",
    Kind.STEP_FAILED: "compensating",
    Kind.ABORT_REQUESTED: "compensating",
    Kind.COMP_FAILED: "parked",
    Kind.RESUME_REQUESTED: "compensating",
}


@dataclass(frozen=True, slots=True)
class LoggedRecord:
    seq: int
    name: str
    at: float
    record: Record


class _Backend:
    """One database connection used from one worker thread at a time."""

    placeholder = "?"
    serial = "INTEGER"
    reconnect_on_error = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def begin(self) -> None:
        self.execute("BEGIN")

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        self.execute("ROLLBACK")

    def close(self) -> None:
        raise NotImplementedError

    def q(self, sql: str) -> str:
        return sql.replace("?", self.placeholder)


class _SQLite(_Backend):
    reconnect_on_error = False

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=5000")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.db.execute(sql, tuple(params)).fetchall()

    def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def close(self) -> None:
        self.db.close()


class _Postgres(_Backend):
    placeholder = "%s"
    serial = "BIGSERIAL"
    reconnect_on_error = True  # a dropped connection is replaced at the next call

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(sql.replace("?", "%s"), tuple(params))
        return list(cur.fetchall()) if cur.description else []

    def close(self) -> None:
        self.conn.close()


class SagaLog:
    """Open with :meth:`sqlite` or :meth:`postgres`; use from one event loop."""

    def __init__(self, backend_factory: Any, where: str, lock: Any = None) -> None:
        self._factory = backend_factory
        self._lock_factory = lock
        self._lock_handle: Any = None
        self.owner = "default"
        self.where = where
        self._backend: _Backend | None = None
        self._queue: list[tuple[str, Record, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def sqlite(cls, path: str | Path) -> SagaLog:
        return cls(lambda: _SQLite(str(path)), str(path), lambda owner: _flock(f"{path}.{owner}.lock"))

    @classmethod
    def postgres(cls, dsn: str) -> SagaLog:
        return cls(lambda: _Postgres(dsn), "postgresql", lambda owner: _advisory_lock(dsn, owner))

    async def acquire(self, owner: str) -> None:
        """Own the sagas started under ``owner``: only one live orchestrator may (else ConfigError)."""
        self._lock_handle = await asyncio.to_thread(self._lock_factory, owner)
        self.owner = owner

    def _db(self) -> _Backend:
        if self._backend is None:
            backend = self._factory()
            for statement in _SCHEMA:
                backend.execute(statement.format(serial=backend.serial))
            self._backend = backend
        return self._backend

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._lock:
            try:
                return await asyncio.to_thread(fn, *args)
            except (sqlite3.Error, psycopg.Error) as exc:
                backend = self._backend
                if backend is not None and backend.reconnect_on_error:
                    self._backend = None
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(backend.close)
                raise StorageError(f"saga log {self.where}: {exc}") from exc

    # -- appends, group-committed ----------------------------------------------------------------

    async def append(self, name: str, record: Record) -> None:
        """Return once ``record`` is durable."""
        if len(record.data) > MAX_FIELD_CHARS:
            raise StorageError(f"saga {record.saga_id}: {record.kind} data over {MAX_FIELD_CHARS} characters")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((name, record, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        await fut

    async def _write_loop(self) -> None:
        delay_s = 0.05
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH_RECORDS], self._queue[MAX_BATCH_RECORDS:]
            try:
                await self._run(self._write_sync, [(n, r) for n, r, _ in batch])
            except StorageError as exc:
                # Transient (a busy SQLite, a dropped PostgreSQL connection): the sagas wait for
                # durability, so the batch is retried, with backoff, until it is written.
                log.error("saga log write failed, retrying in %.2f s: %s", delay_s, exc)
                self._queue = batch + self._queue
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, MAX_RETRY_DELAY_S)
                continue
            delay_s = 0.05
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    def _write_sync(self, batch: list[tuple[str, Record]]) -> None:
        db = self._db()
        now = time.time()
        db.begin()
        try:
            for name, r in batch:
                db.execute(
                    db.q(
                        "INSERT INTO saga_records (saga_id, name, kind, step, data, at)"
                        " VALUES (?, ?, ?, ?, ?, ?)"
                    ),
                    (r.saga_id, name, r.kind.value, r.step, r.data, now),
                )
                self._index_sync(db, name, r, now)
            db.commit()
        except BaseException:
            db.rollback()
            raise

    def _index_sync(self, db: _Backend, name: str, r: Record, now: float) -> None:
        if r.kind is Kind.SAGA_STARTED:
            db.execute(
                db.q("INSERT INTO saga_index VALUES (?, ?, ?, ?, ?, ?)"),
                (r.saga_id, name, "running", now, now, self.owner),
            )
            return
        if r.kind is Kind.FINISHED:
            db.execute(
                db.q("UPDATE saga_index SET status = ?, updated = ? WHERE saga_id = ?"),
                (r.data.strip('"'), now, r.saga_id),
            )
            return
        status = _STATUS_OF.get(r.kind)
        if status is not None:  # a late request never reopens a finished saga
            db.execute(
                db.q(
                    "UPDATE saga_index SET status = ?, updated = ? WHERE saga_id = ?"
                    " AND status NOT IN ('completed', 'compensated')"
                ),
                (status, now, r.saga_id),
            )

    # -- reads -----------------------------------------------------------------------------------

    async def unfinished(self) -> dict[str, list[LoggedRecord]]:
        """Every saga of this log's owner that has not finished, with its records in order."""
        return await self._run(self._unfinished_sync)  # type: ignore[no-any-return]

    def _unfinished_sync(self) -> dict[str, list[LoggedRecord]]:
        db = self._db()
        rows = db.execute(
            db.q(
                "SELECT r.seq, r.saga_id, r.name, r.kind, r.step, r.data, r.at FROM saga_records r"
                " JOIN saga_index i ON i.saga_id = r.saga_id"
                " WHERE i.status NOT IN ('completed', 'compensated') AND i.owner = ? ORDER BY r.seq"
            ),
            (self.owner,),
        )
        out: dict[str, list[LoggedRecord]] = {}
        for row in rows:
            out.setdefault(row[1], []).append(_logged(row))
        return out

    async def records(self, saga_id: str) -> list[LoggedRecord]:
        return await self._run(self._records_sync, saga_id)  # type: ignore[no-any-return]

    def _records_sync(self, saga_id: str) -> list[LoggedRecord]:
        db = self._db()
        rows = db.execute(
            db.q(
                "SELECT seq, saga_id, name, kind, step, data, at FROM saga_records"
                " WHERE saga_id = ? ORDER BY seq"
            ),
            (saga_id,),
        )
        return [_logged(row) for row in rows]

    async def requests_since(self, seq: int) -> list[LoggedRecord]:
        """Operator requests (abort, resume) logged after ``seq``."""
        return await self._run(self._requests_sync, seq)  # type: ignore[no-any-return]

    def _requests_sync(self, seq: int) -> list[LoggedRecord]:
        db = self._db()
        rows = db.execute(
            db.q(
                "SELECT seq, saga_id, name, kind, step, data, at FROM saga_records"
                " WHERE seq > ? AND kind IN ('abort-requested', 'resume-requested') ORDER BY seq"
            ),
            (seq,),
        )
        return [_logged(row) for row in rows]

    async def last_seq(self) -> int:
        rows = await self._run(lambda: self._db().execute("SELECT COALESCE(MAX(seq), 0) FROM saga_records"))
        return int(rows[0][0])

    async def list(
        self, status: str | None = None, limit: int = 100
    ) -> list[tuple[str, str, str, float, float]]:
        """(saga_id, name, status, created, updated), newest first."""

        def run() -> list[tuple[str, str, str, float, float]]:
            db = self._db()
            where, params = ("WHERE status = ?", (status,)) if status else ("", ())
            rows = db.execute(
                db.q(
                    f"SELECT saga_id, name, status, created, updated FROM saga_index {where}"
                    " ORDER BY created DESC LIMIT ?"
                ),
                (*params, limit),
            )
            return [(str(a), str(b), str(c), float(d), float(e)) for a, b, c, d, e in rows]

        return await self._run(run)  # type: ignore[no-any-return]

    async def exists(self, saga_id: str) -> bool:
        def run() -> list[tuple[Any, ...]]:
            db = self._db()
            return db.execute(db.q("SELECT 1 FROM saga_index WHERE saga_id = ?"), (saga_id,))

        return bool(await self._run(run))

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._backend is not None:
            backend, self._backend = self._backend, None
            await asyncio.to_thread(backend.close)
        if self._lock_handle is not None:
            handle, self._lock_handle = self._lock_handle, None
            await asyncio.to_thread(handle.close)


class _FileLock:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        os.close(self.fd)  # releases the flock


def _flock(path: str) -> _FileLock:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"another live orchestrator owns the sagas of {path}") from None
    return _FileLock(fd)


def _advisory_lock(dsn: str, owner: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True)
    key = "stalwart-saga:" + owner
    row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()
    if row is None or not row[0]:
        conn.close()
        raise ConfigError(f"another live orchestrator owns the sagas of {owner!r}")
    return conn


def _logged(row: tuple[Any, ...]) -> LoggedRecord:
    seq, saga_id, name, kind, step, data, at = row
    try:
        record = Record(str(saga_id), Kind(kind), str(step), str(data))
    except ValueError:
        raise StorageError(f"saga log: record {seq} has an unknown kind {kind!r}") from None
    return LoggedRecord(int(seq), str(name), float(at), record)

"""Durable decision logs for the coordinator: SQLite (embedded, default) and PostgreSQL (shared).

Both apply the sans-IO storage operations (``stalwart.sansio``) with the same meaning as
``apply_storage_ops``: a log of records indexed from 1, compacted from the front. ``write(ops,
sync=True)`` returns only once the operations are durable (SQLite ``synchronous=FULL``;
PostgreSQL's commit). Many transactions' records share one write: group commit.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import psycopg

from stalwart.errors import ConfigError, StorageError
from stalwart.sansio import AppendLog, CompactLog, DurableState, PutMeta, PutSnapshot, StorageOp, TruncateLog

log = logging.getLogger("stalwart.txn")
MAX_INLINE_WRITE_MS = 50.0
SLOW_WRITE_FACTOR = 4  # one write this many times over the inline limit goes to the thread next
PROBE_EVERY = 32  # thread writes between two tries on the loop thread
CLOSE_WAIT_S = 30.0  # how long close() waits for a thread write still running


class DecisionLog(Protocol):
    """Where a coordinator keeps its decisions."""

    async def acquire(self) -> None:
        """Become the only live coordinator on this log (ConfigError if another one is)."""

    async def load(self) -> DurableState: ...

    async def write(self, ops: Sequence[StorageOp]) -> None:
        """Apply ``ops`` atomically and durably, in order."""

    async def close(self) -> None: ...


def _check_op(op: StorageOp) -> None:
    if isinstance(op, PutSnapshot):
        raise StorageError("a decision log does not store snapshots")


class SQLiteDecisionLog:
    """An embedded decision log in one SQLite file (WAL journal, synchronous=FULL).

    Where a write runs: a write to a slow device (a disk whose fsync takes milliseconds) runs in
    a worker thread, so the event loop goes on meanwhile. But a worker thread must take the GIL
    back after each SQLite call, and while the loop thread is busy it can wait several of the
    interpreter's 5 ms switch intervals for it (measured here: 2-3 ms per write under load
    for 0.2 ms of work). So while writes are fast, i.e. the moving average of the writes made on
    the loop thread stays at or below ``inline_write_max_ms``, they run on the loop thread, which
    they block for that long. One write four times over the limit sends the next ones to the
    thread; every ``PROBE_EVERY``-th of those is tried on the loop thread again (a thread write's
    own duration includes its waits for the GIL, so it cannot tell whether the device got fast
    again). ``inline_write_max_ms=0`` always uses the thread.

    Appends are idempotent: a write that reached the disk but reported a failure (so the caller
    retries it) finds its records there and succeeds, as long as they are the same records.
    """

    def __init__(
        self, path: str | Path, coordinator: str = "default", *, inline_write_max_ms: float = 1.0
    ) -> None:
        if not 0 <= inline_write_max_ms <= MAX_INLINE_WRITE_MS:
            raise ConfigError(f"inline_write_max_ms must be within 0..{MAX_INLINE_WRITE_MS}")
        self._path = str(path)
        self._name = coordinator
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._lock_fd: int | None = None
        self._inline_max_s = inline_write_max_ms / 1000
        self._inline_avg_s = 0.0  # moving average of the writes made on the loop thread
        self._slow = inline_write_max_ms == 0  # writes go to the thread
        self._since_probe = 0
        self._job: asyncio.Future[None] | None = None  # the thread write running, if any
        self.inline_writes = 0  # counters, for tests and the curious
        self.thread_writes = 0

    async def acquire(self) -> None:
        fd = os.open(self._path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"{self._path} is in use by another live coordinator") from None
        self._lock_fd = fd

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS txn_log (coordinator TEXT NOT NULL, idx INTEGER NOT NULL,"
                " payload BLOB NOT NULL, PRIMARY KEY (coordinator, idx))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS txn_meta (coordinator TEXT NOT NULL, key TEXT NOT NULL,"
                " value BLOB NOT NULL, PRIMARY KEY (coordinator, key))"
            )
            self._db = db
        return self._db

    def _load(self) -> DurableState:
        db = self._conn()
        rows = db.execute(
            "SELECT idx, payload FROM txn_log WHERE coordinator = ? ORDER BY idx", (self._name,)
        ).fetchall()
        meta = dict(db.execute("SELECT key, value FROM txn_meta WHERE coordinator = ?", (self._name,)))
        first = int.from_bytes(meta.pop("__first_index", b"\x01"), "big")
        if rows and rows[0][0] < first:
            raise StorageError(f"{self._path}: log starts at {rows[0][0]} below first index {first}")
        for expected, (idx, _) in enumerate(rows, start=rows[0][0] if rows else first):
            if idx != expected:
                raise StorageError(f"{self._path}: gap in the decision log at index {expected}")
        if rows:
            first = rows[0][0]
        return DurableState(meta=meta, first_index=first, log=tuple(bytes(p) for _, p in rows))

    def _write(self, ops: Sequence[StorageOp]) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            rows: list[tuple[str, int, bytes]] = []  # consecutive appends go in one executemany
            for op in ops:
                _check_op(op)
                if isinstance(op, AppendLog):
                    rows.append((self._name, op.index, op.payload))
                    continue
                if rows:
                    self._append(db, rows)
                    rows = []
                match op:
                    case TruncateLog(from_index=i):
                        db.execute("DELETE FROM txn_log WHERE coordinator = ? AND idx >= ?", (self._name, i))
                    case CompactLog(through_index=i):
                        db.execute("DELETE FROM txn_log WHERE coordinator = ? AND idx <= ?", (self._name, i))
                        self._put_meta(db, "__first_index", (i + 1).to_bytes(8, "big"))
                    case PutMeta(key=k, value=v):
                        self._put_meta(db, k, v)
            if rows:
                self._append(db, rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _put_meta(self, db: sqlite3.Connection, key: str, value: bytes) -> None:
        db.execute("INSERT OR REPLACE INTO txn_meta VALUES (?, ?, ?)", (self._name, key, value))

    async def load(self) -> DurableState:
        async with self._lock:
            return await asyncio.to_thread(self._load)

    async def write(self, ops: Sequence[StorageOp]) -> None:
        if not ops:
            return
        inline = not self._lock.locked() and self._inline_max_s > 0
        if inline and self._slow:
            self._since_probe += 1
            inline = self._since_probe >= PROBE_EVERY
        async with self._lock:
            try:
                if inline:
                    self._inline_write(ops)
                else:
                    self._job = asyncio.get_running_loop().run_in_executor(None, self._write, ops)
                    await asyncio.shield(self._job)  # cancelled or not, the thread goes on
                    self.thread_writes += 1
            except sqlite3.Error as exc:
                raise StorageError(f"{self._path}: decision log write failed: {exc}") from exc

    def _inline_write(self, ops: Sequence[StorageOp]) -> None:
        start = time.perf_counter()
        try:
            self._write(ops)
        finally:
            took_s = time.perf_counter() - start
            self.inline_writes += 1
            if self._slow:  # a probe: its one measure decides, the old average is stale
                self._inline_avg_s = took_s
                self._since_probe = 0
            else:
                self._inline_avg_s += (took_s - self._inline_avg_s) / 8
            self._slow = (
                took_s > SLOW_WRITE_FACTOR * self._inline_max_s or self._inline_avg_s > self._inline_max_s
            )

    def _append(self, db: sqlite3.Connection, rows: list[tuple[str, int, bytes]]) -> None:
        """Insert log records; a record already there (an earlier attempt of this write reached
        the disk) is accepted when it is the same record, and is an error otherwise."""
        cur = db.executemany("INSERT OR IGNORE INTO txn_log VALUES (?, ?, ?)", rows)
        if cur.rowcount == len(rows):
            return
        for name, index, payload in rows:
            found = db.execute(
                "SELECT payload FROM txn_log WHERE coordinator = ? AND idx = ?", (name, index)
            ).fetchone()
            if found is None or bytes(found[0]) != payload:
                raise StorageError(f"{self._path}: log index {index} holds another record")

    async def close(self) -> None:
        job = self._job
        if job is not None and not job.done():
            # A write cancelled while its thread still runs (a shutdown that timed out): the
            # connection must not be closed under it. Wait for it, bounded; if it never ends,
            # leave the connection open (the process is going away) rather than race it.
            done, _ = await asyncio.wait([job], timeout=CLOSE_WAIT_S)
            if not done:
                log.error("%s: a decision-log write is still running; not closing the log", self._path)
                return
        async with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None


class PostgresDecisionLog:
    """A decision log in PostgreSQL, shared by several coordinators (each under its own name)."""

    def __init__(self, dsn: str, coordinator: str) -> None:
        self._dsn = dsn
        self._name = coordinator
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._lock = asyncio.Lock()
        self._owner: psycopg.AsyncConnection[tuple[object, ...]] | None = None

    async def acquire(self) -> None:
        """A session advisory lock per coordinator name, held on a connection of its own for
        as long as the coordinator lives (if that connection drops, the lock goes with it)."""
        conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        cur = await conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", ("stalwart-2pc:" + self._name,)
        )
        row = await cur.fetchone()
        if row is None or not row[0]:
            await conn.close()
            raise ConfigError(f"coordinator {self._name!r} is already running on this PostgreSQL log")
        self._owner = conn

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=False)
            async with conn.transaction():
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS stalwart_txn_log (coordinator TEXT NOT NULL,"
                    " idx BIGINT NOT NULL, payload BYTEA NOT NULL, PRIMARY KEY (coordinator, idx))"
                )
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS stalwart_txn_meta (coordinator TEXT NOT NULL,"
                    " key TEXT NOT NULL, value BYTEA NOT NULL, PRIMARY KEY (coordinator, key))"
                )
            self._conn = conn
        return self._conn

    async def load(self) -> DurableState:
        async with self._lock:
            conn = await self._connection()
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT idx, payload FROM stalwart_txn_log WHERE coordinator = %s ORDER BY idx",
                    (self._name,),
                )
                rows = await cur.fetchall()
                cur = await conn.execute(
                    "SELECT key, value FROM stalwart_txn_meta WHERE coordinator = %s", (self._name,)
                )
                meta = {str(k): bytes(v) for k, v in await cur.fetchall()}  # type: ignore[call-overload]
        first = int.from_bytes(meta.pop("__first_index", b"\x01"), "big")
        indexes = [int(i) for i, _ in rows]  # type: ignore[call-overload]
        if indexes:
            first = indexes[0]
            if indexes != list(range(first, first + len(indexes))):
                raise StorageError(f"coordinator {self._name}: gap in the PostgreSQL decision log")
        log = tuple(bytes(p) for _, p in rows)  # type: ignore[call-overload]
        return DurableState(meta=meta, first_index=first, log=log)

    async def write(self, ops: Sequence[StorageOp]) -> None:
        if not ops:
            return
        async with self._lock:
            try:
                conn = await self._connection()
            except psycopg.Error as exc:
                raise StorageError(f"coordinator {self._name}: decision log unreachable: {exc}") from exc
            try:
                async with conn.transaction():
                    for op in ops:
                        await self._apply(conn, op)
            except psycopg.Error as exc:
                await conn.close()  # reconnect on the next write
                raise StorageError(f"coordinator {self._name}: decision log write failed: {exc}") from exc

    async def _apply(self, conn: psycopg.AsyncConnection[tuple[object, ...]], op: StorageOp) -> None:
        _check_op(op)
        name = self._name
        match op:
            case AppendLog(index=i, payload=p):
                # Idempotent: an earlier attempt of this write may have committed without us
                # hearing it (a connection lost after COMMIT); the same record is then accepted.
                cur = await conn.execute(
                    "INSERT INTO stalwart_txn_log VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", (name, i, p)
                )
                if cur.rowcount != 1:
                    cur = await conn.execute(
                        "SELECT payload FROM stalwart_txn_log WHERE coordinator = %s AND idx = %s", (name, i)
                    )
                    row = await cur.fetchone()
                    if row is None or bytes(row[0]) != p:  # type: ignore[call-overload]
                        raise StorageError(f"coordinator {name}: log index {i} holds another record")
            case TruncateLog(from_index=i):
                await conn.execute(
                    "DELETE FROM stalwart_txn_log WHERE coordinator = %s AND idx >= %s", (name, i)
                )
            case CompactLog(through_index=i):
                await conn.execute(
                    "DELETE FROM stalwart_txn_log WHERE coordinator = %s AND idx <= %s", (name, i)
                )
                await self._put_meta(conn, "__first_index", (i + 1).to_bytes(8, "big"))
            case PutMeta(key=k, value=v):
                await self._put_meta(conn, k, v)

    async def _put_meta(
        self, conn: psycopg.AsyncConnection[tuple[object, ...]], key: str, value: bytes
    ) -> None:
        await conn.execute(
            "INSERT INTO stalwart_txn_meta VALUES (%s, %s, %s)"
            " ON CONFLICT (coordinator, key) DO UPDATE SET value = EXCLUDED.value",
            (self._name, key, value),
        )

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
            if self._owner is not None:
                await self._owner.close()
                self._owner = None

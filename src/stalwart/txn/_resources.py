"""Participants of two-phase commit: PostgreSQL, MariaDB, and the protocol for your own.

A resource manager is what the coordinator host calls when the pure coordinator sends a
``Prepare`` or a ``Decide``. Every call is idempotent on the global transaction id (gid), so
phase 2 can be retried after a crash or a cut connection until it succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import psycopg
import pymysql
from psycopg import pq, sql
from psycopg.pq import TransactionStatus

from stalwart.errors import ConfigError
from stalwart.txn import _pq
from stalwart.txn._errors import ParticipantError, PreparedTransactionsDisabledError

log = logging.getLogger("stalwart.txn")

MAX_IDLE_CONNECTIONS = 64
PG_UNDEFINED_OBJECT = "42704"  # COMMIT/ROLLBACK PREPARED of a gid that is not there
MARIADB_XAER_NOTA = 1397  # XA COMMIT/ROLLBACK of an xid that is not there
MAX_REMEMBERED_XIDS = 100_000
MARIADB_MIN_VERSION = (10, 5)  # prepared XA branches survive their connection from 10.5 on


class ResourceManager(Protocol):
    """What a participant must offer; implement it for your own resource."""

    name: str

    async def preflight(self) -> None:
        """Raise a clear ConfigError when the resource cannot take part in 2PC."""

    async def begin(self, gid: str) -> None:
        """Open the local transaction branch ``gid`` (work follows through ``execute``)."""

    async def execute(self, gid: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement inside branch ``gid`` and return its rows (empty for none)."""

    async def prepare(self, gid: str) -> tuple[bool, str]:
        """Phase 1: make the branch durable. (True, "") is a yes vote; (False, why) a no."""

    async def commit_prepared(self, gid: str) -> None:
        """Phase 2 commit; succeeds when ``gid`` is already committed (or gone)."""

    async def rollback(self, gid: str) -> None:
        """Abort the branch whether prepared or not; succeeds when ``gid`` is already gone."""

    async def recover(self, prefix: str) -> list[str]:
        """Prepared branches whose gid starts with ``prefix`` (left behind by a crash)."""

    async def close(self) -> None: ...


class BatchCommitter(Protocol):
    """Optional: a resource that can commit several prepared branches in one call.

    The coordinator then sends phase 2 of every transaction decided in one cycle to such a
    resource at once. It must be idempotent like ``commit_prepared``, try every branch even
    when one fails (a branch that cannot commit must not hold back the others), and return the
    gids it could not commit; only those are retried.
    """

    async def commit_prepared_many(self, gids: Sequence[str]) -> list[str]:
        """Commit every prepared branch in ``gids``; return those it could not (empty: all done)."""


_PLAIN_GID = re.compile(r"^[A-Za-z0-9_:.-]{1,200}$")
_Conn = psycopg.AsyncConnection[tuple[Any, ...]]


def _gid_statement(verb: str, gid: str, conn: _Conn) -> bytes:
    """``verb 'gid'``: gids this coordinator makes (letters, digits, ``_:.-``) are quoted by hand,
    which costs a fraction of psycopg's literal adaptation; anything else (a gid found on the
    server by a recovery scan) goes through ``sql.Literal``."""
    if _PLAIN_GID.fullmatch(gid):
        return f"{verb} '{gid}'".encode()
    return sql.SQL(verb + " {}").format(sql.Literal(gid)).as_bytes(conn)


class PostgresResource:
    """A PostgreSQL database as a participant, through psycopg 3 and PREPARE TRANSACTION.

    Two small pools: branch connections are not in autocommit mode, so a branch's first statement
    opens its transaction (psycopg sends the BEGIN itself, a round trip of its own but no Python
    call of ours); phase-2 connections are in autocommit mode, as COMMIT PREPARED must run
    outside a transaction block.
    """

    def __init__(
        self, name: str, dsn: str, *, connect_timeout_s: float = 5.0, max_idle: int = MAX_IDLE_CONNECTIONS
    ) -> None:
        self.name = name
        self._dsn = dsn
        self._max_idle = max_idle
        self._timeout_s = connect_timeout_s
        self._branches: dict[str, _Conn] = {}
        self._idle: list[_Conn] = []  # autocommit: phase 2, scans, preflight
        self._idle_branch: list[_Conn] = []  # not autocommit: branches
        self._xids: OrderedDict[str, str] = OrderedDict()  # gid -> xid of prepared branches
        self.lost_branches: list[str] = []  # prepared branches someone else rolled back
        self.batch_fallbacks = 0  # phase-2 pipelines that failed part-way and went one by one

    async def _connect(self, *, branch: bool = False) -> _Conn:
        """A pooled connection: autocommit for phase 2 and scans, or one for branches."""
        idle = self._idle_branch if branch else self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=not branch, connect_timeout=max(1, int(self._timeout_s))
            )
        except psycopg.Error as exc:
            raise ParticipantError(f"participant {self.name!r}: cannot connect: {exc}") from exc
        if not branch:
            # Phase-2 statements are all different (each names its gid): skip psycopg's
            # bookkeeping of statements to prepare server-side.
            conn.prepare_threshold = None
        return conn

    def _release(self, conn: _Conn) -> None:
        idle = self._idle if conn.autocommit else self._idle_branch
        if not conn.closed and len(idle) < self._max_idle:
            idle.append(conn)
        else:
            asyncio.get_running_loop().create_task(conn.close())

    async def preflight(self) -> None:
        conn = await self._connect()
        try:
            cur = await conn.execute("SHOW max_prepared_transactions")
            row = await cur.fetchone()
        finally:
            self._release(conn)
        if row is None or int(row[0]) == 0:
            raise PreparedTransactionsDisabledError(self.name)

    async def begin(self, gid: str) -> None:
        if gid in self._branches:
            raise ParticipantError(f"participant {self.name!r}: branch {gid} already open")
        conn = await self._connect(branch=True)
        if conn.pgconn.transaction_status != TransactionStatus.IDLE:
            await conn.close()  # pooled branch connections are idle between branches
            raise ParticipantError(f"participant {self.name!r}: a pooled connection was not idle")
        self._branches[gid] = conn  # the branch's first statement opens the transaction

    async def execute(self, gid: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self._branches.get(gid)
        if conn is None:
            raise ParticipantError(f"participant {self.name!r}: no open branch {gid}")
        cur = await conn.execute(statement, params)
        return list(await cur.fetchall()) if cur.description else []

    async def prepare(self, gid: str) -> tuple[bool, str]:
        conn = self._branches.pop(gid, None)
        if conn is None:
            return False, "no open branch (lost with a crash or a cut connection)"
        try:
            status = conn.pgconn.transaction_status
            if status == TransactionStatus.IDLE:
                await conn.execute("SELECT 1")  # no statement ran: psycopg's BEGIN opens the branch
                status = conn.pgconn.transaction_status
            if status != TransactionStatus.INTRANS:
                # INERROR: a statement failed (perhaps caught by the application); PostgreSQL
                # would answer PREPARE with a silent ROLLBACK. Never vote yes for that.
                await conn.close()
                return False, f"the branch is {TransactionStatus(status).name}, not an open transaction"
            # One round trip: the branch's xid (to tell later whether it committed), then PREPARE.
            query = _gid_statement("SELECT pg_current_xact_id()::text; PREPARE TRANSACTION", gid, conn)
            results = await _pq.simple_query(conn, query)
            done = results[-1].command_status if len(results) == 2 else None
            xid = results[0].get_value(0, 0) if results[0].ntuples == 1 else None
            if done != b"PREPARE TRANSACTION" or xid is None:
                # ROLLBACK: PostgreSQL could not prepare (the branch had failed) and rolled back.
                await conn.close()
                return False, f"PREPARE TRANSACTION answered {done!r}"
        except psycopg.Error as exc:
            await conn.close()
            return False, f"PREPARE TRANSACTION failed: {exc}"
        except BaseException:  # cancelled (vote timeout): the connection's state is unknown
            await conn.close()
            raise
        self._remember_xid(gid, xid.decode())
        self._release(conn)
        return True, ""

    def _remember_xid(self, gid: str, xid: str) -> None:
        self._xids[gid] = xid
        while len(self._xids) > MAX_REMEMBERED_XIDS:
            self._xids.popitem(last=False)

    async def _finish(self, verb: str, gid: str) -> bool:
        """Run COMMIT/ROLLBACK PREPARED; False when the gid was not there (42704)."""
        conn = await self._connect()
        try:
            await _pq.simple_query(conn, _gid_statement(verb, gid, conn))
        except psycopg.Error as exc:
            if exc.sqlstate != PG_UNDEFINED_OBJECT:
                await conn.close()
                raise ParticipantError(f"participant {self.name!r}: {verb} {gid}: {exc}") from exc
            self._release(conn)
            return False
        except BaseException:
            await conn.close()
            raise
        self._release(conn)
        return True

    async def commit_prepared(self, gid: str) -> None:
        if await self._finish("COMMIT PREPARED", gid):
            self._xids.pop(gid, None)
            return
        xid = self._xids.pop(gid, None)
        if xid is None:
            return  # committed by an earlier attempt (or before a restart): nothing left to do
        conn = await self._connect()
        try:
            cur = await conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,))
            row = await cur.fetchone()
        finally:
            self._release(conn)
        if row is not None and row[0] == "aborted":
            # Someone outside this coordinator rolled the prepared branch back: the transaction
            # is no longer atomic. Say so loudly; retrying cannot bring the branch back.
            self.lost_branches.append(gid)
            log.error(
                "participant %s: prepared branch %s was rolled back outside the coordinator", self.name, gid
            )

    async def commit_prepared_many(self, gids: Sequence[str]) -> list[str]:
        """Phase 2 for several branches in one round trip (a pipeline of COMMIT PREPARED).

        When one of them fails (most often: committed already by an earlier attempt), PostgreSQL
        skips the rest of the pipeline; the failed and the skipped ones are then finished one by
        one, idempotently, and those that still fail are returned.
        """
        rest = list(gids)
        if len(rest) > 1:
            conn = await self._connect()
            try:
                results = await _pq.pipeline(conn, [_gid_statement("COMMIT PREPARED", g, conn) for g in rest])
            except BaseException:
                await conn.close()  # interrupted part-way: its state is unknown, do not pool it
                raise
            self._release(conn)
            ok = {g for g, r in zip(rest, results, strict=True) if r.status == pq.ExecStatus.COMMAND_OK}
            for gid in ok:
                self._xids.pop(gid, None)
            if len(ok) == len(rest):
                return []
            self.batch_fallbacks += 1
            rest = [g for g in rest if g not in ok]
        failed = []
        for gid in rest:
            try:
                await self.commit_prepared(gid)
            except (ParticipantError, psycopg.Error) as exc:
                log.warning("participant %s: %s", self.name, exc)
                failed.append(gid)
        return failed

    async def rollback(self, gid: str) -> None:
        conn = self._branches.pop(gid, None)
        if conn is not None:  # never prepared: a plain rollback ends it
            await conn.close()
            return
        await self._finish("ROLLBACK PREPARED", gid)
        self._xids.pop(gid, None)

    async def recover(self, prefix: str) -> list[str]:
        conn = await self._connect()
        try:
            cur = await conn.execute(
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE %s",
                (prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
            )
            return [str(r[0]) for r in await cur.fetchall()]
        except psycopg.Error as exc:
            raise ParticipantError(f"participant {self.name!r}: recovery scan failed: {exc}") from exc
        finally:
            self._release(conn)

    def cut_branch(self, gid: str) -> bool:
        """Testing aid: drop the branch's connection under it, as a network cut would."""
        conn = self._branches.get(gid)
        if conn is None:
            return False
        conn.pgconn.finish()
        return True

    async def close(self) -> None:
        for conn in [*self._branches.values(), *self._idle, *self._idle_branch]:
            await conn.close()
        self._branches.clear()
        self._idle.clear()
        self._idle_branch.clear()


class MariaDBResource:
    """A MariaDB (or MySQL) database as a participant, through XA and PyMySQL.

    PyMySQL is blocking; each call runs in a worker thread so the event loop never waits on it.
    """

    def __init__(self, name: str, *, connect_timeout_s: float = 5.0, **connect_kwargs: Any) -> None:
        self.name = name
        self._kwargs = {**connect_kwargs, "connect_timeout": connect_timeout_s, "autocommit": True}
        self._branches: dict[str, pymysql.connections.Connection[Any]] = {}

    def _connect(self) -> pymysql.connections.Connection[Any]:
        try:
            return pymysql.connect(**self._kwargs)
        except pymysql.MySQLError as exc:
            raise ParticipantError(f"participant {self.name!r}: cannot connect: {exc}") from exc

    async def preflight(self) -> None:
        def check() -> None:
            conn = self._connect()
            try:
                with conn.cursor() as cur:
                    cur.execute("XA RECOVER")
                    cur.execute("SELECT VERSION(), @@innodb_flush_log_at_trx_commit")
                    version, flush = cur.fetchone()
            finally:
                conn.close()
            numbers = tuple(int(x) for x in str(version).split("-")[0].split(".")[:2])
            if numbers < MARIADB_MIN_VERSION:
                raise ConfigError(
                    f"participant {self.name!r}: MariaDB {version} loses prepared XA branches with their "
                    "connection; two-phase commit needs MariaDB 10.5 or newer"
                )
            if int(flush) != 1:
                log.warning(
                    "participant %s: innodb_flush_log_at_trx_commit = %s, so a prepared branch may not "
                    "survive a crash of the server; set it to 1",
                    self.name,
                    flush,
                )

        await asyncio.to_thread(check)

    async def begin(self, gid: str) -> None:
        def start() -> pymysql.connections.Connection[Any]:
            conn = self._connect()
            with conn.cursor() as cur:
                cur.execute("XA START %s", (gid,))
            return conn

        self._branches[gid] = await asyncio.to_thread(start)

    async def execute(self, gid: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self._branches.get(gid)
        if conn is None:
            raise ParticipantError(f"participant {self.name!r}: no open branch {gid}")

        def run() -> list[tuple[Any, ...]]:
            with conn.cursor() as cur:
                cur.execute(statement, tuple(params) or None)
                return list(cur.fetchall()) if cur.description else []

        return await asyncio.to_thread(run)

    async def prepare(self, gid: str) -> tuple[bool, str]:
        conn = self._branches.pop(gid, None)
        if conn is None:
            return False, "no open branch (lost with a crash or a cut connection)"

        def run() -> tuple[bool, str]:
            try:
                with conn.cursor() as cur:
                    cur.execute("XA END %s", (gid,))
                    cur.execute("XA PREPARE %s", (gid,))
                return True, ""
            except pymysql.MySQLError as exc:
                return False, f"XA PREPARE failed: {exc}"
            finally:
                conn.close()  # a prepared XA branch outlives its connection (MariaDB >= 10.5)

        return await asyncio.to_thread(run)

    def _finish_sync(self, verb: str, gid: str) -> None:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"XA {verb} %s", (gid,))
        except pymysql.MySQLError as exc:
            if exc.args and exc.args[0] == MARIADB_XAER_NOTA:
                return
            raise ParticipantError(f"participant {self.name!r}: XA {verb} {gid}: {exc}") from exc
        finally:
            conn.close()

    async def commit_prepared(self, gid: str) -> None:
        await asyncio.to_thread(self._finish_sync, "COMMIT", gid)

    async def rollback(self, gid: str) -> None:
        conn = self._branches.pop(gid, None)
        if conn is not None:  # an active branch: end it, then roll back, on its own connection

            def run() -> None:
                try:
                    with conn.cursor() as cur:
                        cur.execute("XA END %s", (gid,))
                        cur.execute("XA ROLLBACK %s", (gid,))
                except pymysql.MySQLError:
                    pass  # the connection's death rolls an active branch back anyway
                finally:
                    conn.close()

            await asyncio.to_thread(run)
            return
        await asyncio.to_thread(self._finish_sync, "ROLLBACK", gid)

    async def recover(self, prefix: str) -> list[str]:
        def run() -> list[str]:
            conn = self._connect()
            try:
                with conn.cursor() as cur:
                    cur.execute("XA RECOVER")
                    rows = cur.fetchall()
            finally:
                conn.close()
            gids = []
            for _format_id, gtrid_len, _bqual_len, data in rows:
                raw = data if isinstance(data, bytes) else str(data).encode()
                gid = raw[: int(gtrid_len)].decode("utf-8", "replace")
                if gid.startswith(prefix):
                    gids.append(gid)
            return gids

        return await asyncio.to_thread(run)

    def cut_branch(self, gid: str) -> bool:
        """Testing aid: drop the branch's connection under it, as a network cut would."""
        conn = self._branches.get(gid)
        if conn is None:
            return False
        conn.close()
        return True

    async def close(self) -> None:
        branches = list(self._branches.values())
        self._branches.clear()
        for conn in branches:
            await asyncio.to_thread(conn.close)

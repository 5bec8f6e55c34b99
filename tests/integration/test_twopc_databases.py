"""Two-phase commit across a real PostgreSQL and a real MariaDB."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stalwart.errors import ConfigError, StorageError
from stalwart.sansio import AppendLog, StorageOp
from stalwart.txn import (
    BlockingCoordinator,
    CoordinatorSettings,
    MariaDBResource,
    PostgresDecisionLog,
    PostgresResource,
    PreparedTransactionsDisabledError,
    TransactionAbortedError,
    TransactionRefusedError,
    TwoPhaseCoordinator,
    _pq,
)
from tests.integration._bank import maria_sum, pg_sum, prepared_left, transfer
from tests.servers.postgres import PostgresServer

FAST = CoordinatorSettings(vote_timeout_s=3, retry_interval_s=0.1, tick_ms=20, recovery_grace_s=0.2,
                           recovery_interval_s=0.2, outcome_timeout_s=10)  # fmt: skip


def test_twopc_commit_and_abort_across_postgres_and_mariadb(
    bank: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    dsn, kw = bank

    async def main() -> None:
        resources = [PostgresResource("pg", dsn), MariaDBResource("maria", **kw)]
        async with TwoPhaseCoordinator(resources, log_path=tmp_path / "log.db", settings=FAST) as coord:
            await transfer(coord, 30)
            with pytest.raises(psycopg.errors.CheckViolation):
                await transfer(coord, 500)  # fails at once on PostgreSQL: both branches roll back
            with pytest.raises(TransactionAbortedError, match="pg voted no"):
                async with coord.transaction() as tx:  # a deferred constraint fails at PREPARE
                    await tx.execute("maria", "UPDATE accounts SET balance = balance + 7 WHERE id = 3")
                    await tx.execute("pg", "INSERT INTO uniq VALUES (1), (1)")
            with pytest.raises(RuntimeError):
                async with coord.transaction() as tx:
                    await tx.execute("maria", "UPDATE accounts SET balance = 0 WHERE id = 2")
                    raise RuntimeError("the application gave up")

    asyncio.run(main())
    assert (pg_sum(dsn), maria_sum(kw)) == (970, 1030)
    assert prepared_left(dsn, kw) == 0


def test_twopc_concurrent_transfers_keep_the_total(bank: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    dsn, kw = bank

    async def main() -> None:
        resources = [PostgresResource("pg", dsn), MariaDBResource("maria", **kw)]
        async with TwoPhaseCoordinator(resources, log_path=tmp_path / "log.db", settings=FAST) as coord:

            async def worker(i: int) -> None:
                for j in range(10):
                    # lock conflicts may abort; atomicity is what is checked
                    with contextlib.suppress(TransactionAbortedError):
                        await transfer(coord, 1 + (i + j) % 5, src=1 + i, dst=1 + (i + j) % 10)

            await asyncio.gather(*(worker(i) for i in range(8)))

    asyncio.run(main())
    assert pg_sum(dsn) + maria_sum(kw) == 2000
    assert prepared_left(dsn, kw) == 0


def test_twopc_shared_postgres_decision_log(bank: tuple[str, dict[str, Any]]) -> None:
    dsn, kw = bank

    async def main() -> None:
        for name in ("coord-a", "coord-b"):
            resources = [PostgresResource("pg", dsn), MariaDBResource("maria", **kw)]
            log = PostgresDecisionLog(dsn, name)
            async with TwoPhaseCoordinator(resources, name=name, log=log, settings=FAST) as coord:
                await transfer(coord, 5)

    asyncio.run(main())
    assert (pg_sum(dsn), maria_sum(kw)) == (990, 1010)


def test_twopc_postgres_log_append_is_idempotent_not_overwriting(bank: tuple[str, dict[str, Any]]) -> None:
    """A write whose COMMIT reached PostgreSQL but whose answer was lost is retried: the retry
    finds the same records and succeeds; a different record at a taken index is refused."""
    dsn, _ = bank

    async def main() -> None:
        log = PostgresDecisionLog(dsn, "idem")
        await log.acquire()
        await log.load()
        ops: list[StorageOp] = [AppendLog(1, b"a"), AppendLog(2, b"b")]
        await log.write(ops)
        await log.write(ops)
        with pytest.raises(StorageError, match="index 2 holds another record"):
            await log.write([AppendLog(2, b"other"), AppendLog(3, b"c")])
        assert (await log.load()).log == (b"a", b"b")
        await log.close()

    asyncio.run(main())


def test_twopc_preflight_explains_max_prepared_transactions(tmp_path: Path) -> None:
    server = PostgresServer(max_prepared_transactions=0).start()
    try:

        async def main() -> None:
            async with TwoPhaseCoordinator(
                [PostgresResource("pg", server.dsn())], log_path=tmp_path / "l.db"
            ):
                pass

        with pytest.raises(PreparedTransactionsDisabledError, match="max_prepared_transactions"):
            asyncio.run(main())
    finally:
        server.stop()


def test_twopc_blocking_wrapper(bank: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    dsn, kw = bank
    resources = [PostgresResource("pg", dsn), MariaDBResource("maria", **kw)]
    with BlockingCoordinator(resources, log_path=tmp_path / "log.db", settings=FAST) as coord:
        with coord.transaction() as tx:
            tx.execute("pg", "UPDATE accounts SET balance = balance - 4 WHERE id = 5")
            tx.execute("maria", "UPDATE accounts SET balance = balance + 4 WHERE id = 5")
        with pytest.raises(ZeroDivisionError), coord.transaction() as tx:
            tx.execute("pg", "UPDATE accounts SET balance = 0 WHERE id = 6")
            _ = 1 / 0
    assert (pg_sum(dsn), maria_sum(kw)) == (996, 1004)
    assert prepared_left(dsn, kw) == 0


def test_twopc_swallowed_postgres_error_votes_no(bank: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    """A statement failed inside the branch and the application caught it: PostgreSQL would
    answer PREPARE with a silent ROLLBACK, so the branch must vote no and nothing apply."""
    dsn, kw = bank

    async def main() -> None:
        resources = [PostgresResource("pg", dsn), MariaDBResource("maria", **kw)]
        async with TwoPhaseCoordinator(resources, log_path=tmp_path / "log.db", settings=FAST) as coord:
            with pytest.raises(TransactionAbortedError, match="INERROR"):
                async with coord.transaction() as tx:
                    await tx.execute("maria", "UPDATE accounts SET balance = balance + 10 WHERE id = 1")
                    with contextlib.suppress(psycopg.errors.UndefinedTable):
                        await tx.execute("pg", "UPDATE no_such_table SET x = 1")

    asyncio.run(main())
    assert (pg_sum(dsn), maria_sum(kw)) == (1000, 1000)
    assert prepared_left(dsn, kw) == 0


def test_twopc_refusal_rolls_back_and_log_is_exclusive(
    bank: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    dsn, kw = bank
    tight = CoordinatorSettings(vote_timeout_s=3, retry_interval_s=0.1, tick_ms=20, max_inflight=1)

    async def main() -> None:
        resources = [PostgresResource("pg", dsn), MariaDBResource("maria", **kw)]
        async with TwoPhaseCoordinator(resources, log_path=tmp_path / "log.db", settings=tight) as coord:
            with pytest.raises(ConfigError, match="another live coordinator"):
                async with TwoPhaseCoordinator([PostgresResource("pg", dsn)], log_path=tmp_path / "log.db"):
                    pass
            results = await asyncio.gather(
                *(transfer(coord, 1, src=i, dst=i) for i in (1, 2, 3)), return_exceptions=True
            )
            refused = [r for r in results if isinstance(r, TransactionRefusedError)]
            assert refused, results
            async with asyncio.timeout(10):
                while prepared_left(dsn, kw) or coord._coord is None or coord._coord.inflight:
                    await asyncio.sleep(0.05)

    asyncio.run(main())
    assert pg_sum(dsn) + maria_sum(kw) == 2000
    with psycopg.connect(dsn) as c:
        idle = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
        ).fetchone()
        assert idle is not None and idle[0] == 0, "a refused transaction left its branch open"


def test_twopc_postgres_batch_commit_falls_back_one_by_one(bank: tuple[str, dict[str, Any]]) -> None:
    """Phase 2 in one pipeline: when one branch was committed already (an earlier attempt), the
    pipeline stops there and every branch is then finished on its own; none is left prepared.
    A gid the coordinator did not make (found by a recovery scan) is quoted safely."""
    dsn, _ = bank

    async def prepare(res: PostgresResource, gid: str, acct: int) -> None:
        await res.begin(gid)
        await res.execute(gid, "UPDATE accounts SET balance = balance + 1 WHERE id = %s", (acct,))
        assert await res.prepare(gid) == (True, "")

    async def main() -> None:
        res = PostgresResource("pg", dsn)
        try:
            gids = ["st:t.abc:b1:pg", "st:t.abc:b2:pg", "st:t.abc:b3:pg", "odd'gid; --"]
            for acct, gid in enumerate(gids, start=1):
                await prepare(res, gid, acct)
            await res.commit_prepared("st:t.abc:b2:pg")  # the middle one is done already
            assert await res.commit_prepared_many(gids) == []
            assert res.batch_fallbacks == 1  # the pipeline stopped at b2; the rest went one by one
            assert await res.commit_prepared_many(gids) == []  # idempotent: all are gone now
            assert res.lost_branches == []
            await prepare(res, "st:t.abc:b5:pg", 5)
            await prepare(res, "st:t.abc:b6:pg", 6)
            assert await res.commit_prepared_many(["st:t.abc:b5:pg", "st:t.abc:b6:pg"]) == []
            assert res.batch_fallbacks == 2  # the last call committed both in its pipeline
        finally:
            await res.close()

    asyncio.run(main())
    assert pg_sum(dsn) == 1006
    assert prepared_left(dsn, bank[1]) == 0


def test_twopc_postgres_batch_commit_one_bad_branch_does_not_hold_back_the_others(
    bank: tuple[str, dict[str, Any]],
) -> None:
    """A branch the coordinator's login may not finish (prepared by another user) fails on every
    attempt; the branches batched with it are committed all the same, and only it is returned."""
    dsn, _ = bank
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP ROLE IF EXISTS st_coord")
        c.execute("CREATE ROLE st_coord LOGIN")
        c.execute("GRANT ALL ON accounts TO st_coord")
        c.execute("BEGIN")
        c.execute("UPDATE accounts SET balance = balance + 100 WHERE id = 2")
        c.execute("PREPARE TRANSACTION 'st:t.abc:x2:pg'")
    coord_dsn = dsn.replace("user=postgres", "user=st_coord")
    assert coord_dsn != dsn

    async def main() -> list[str]:
        res = PostgresResource("pg", coord_dsn)
        try:
            for gid, acct in (("st:t.abc:x1:pg", 1), ("st:t.abc:x3:pg", 3)):
                await res.begin(gid)
                await res.execute(gid, "UPDATE accounts SET balance = balance + 1 WHERE id = %s", (acct,))
                assert await res.prepare(gid) == (True, "")
            return await res.commit_prepared_many(["st:t.abc:x1:pg", "st:t.abc:x2:pg", "st:t.abc:x3:pg"])
        finally:
            await res.close()

    try:
        assert asyncio.run(main()) == ["st:t.abc:x2:pg"]
        with psycopg.connect(dsn, autocommit=True) as c:
            left = [r[0] for r in c.execute("SELECT gid FROM pg_prepared_xacts").fetchall()]
        assert left == ["st:t.abc:x2:pg"]
        assert pg_sum(dsn) == 1002
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("ROLLBACK PREPARED 'st:t.abc:x2:pg'")
            c.execute("DROP OWNED BY st_coord")
            c.execute("DROP ROLE st_coord")


def test_twopc_pq_fast_path_errors_pipelines_and_dead_connections(bank: tuple[str, dict[str, Any]]) -> None:
    """The raw libpq path for 2PC's fixed statements: a failed statement raises the class psycopg
    would (sqlstate kept) and leaves the connection usable; a pipeline reports each statement,
    the ones after a failure as skipped; a connection killed under a call fails it, no hang."""
    dsn, _ = bank

    async def main() -> None:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        killer = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        try:
            with pytest.raises(psycopg.errors.UndefinedObject) as info:
                await _pq.simple_query(conn, b"COMMIT PREPARED 'st:none'")
            assert info.value.sqlstate == "42704"
            rows = await _pq.simple_query(conn, b"SELECT 41 + 1; SELECT 'x'")
            assert [r.get_value(0, 0) for r in rows] == [b"42", b"x"]

            results = await _pq.pipeline(conn, [b"SELECT 1", b"SELECT 1/0", b"SELECT 3"])
            assert [r.status for r in results] == [
                psycopg.pq.ExecStatus.TUPLES_OK,
                psycopg.pq.ExecStatus.FATAL_ERROR,
                psycopg.pq.ExecStatus.PIPELINE_ABORTED,
            ]
            assert _pq.aborted(results[2]) and _pq.error_of(results[1]).sqlstate == "22012"
            cur = await conn.execute("SELECT 7")  # out of pipeline mode: psycopg works on it again
            assert await cur.fetchone() == (7,)
            with pytest.raises(ValueError):
                await _pq.pipeline(conn, [])

            pid = conn.pgconn.backend_pid
            call = asyncio.ensure_future(_pq.simple_query(conn, b"SELECT pg_sleep(30)"))
            await asyncio.sleep(0.2)
            await killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(psycopg.Error):
                await asyncio.wait_for(call, 10)
        finally:
            await conn.close()
            await killer.close()

    asyncio.run(main())

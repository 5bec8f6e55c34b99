"""FencedRow: the resource side of fencing on a PostgreSQL row.

The token check and the write are ONE statement, so no other writer can slip in between::

    UPDATE <table> SET <col> = %s, ..., <fence> = %(token)s
     WHERE <key> = %(key)s AND <fence> <= %(token)s

Under READ COMMITTED a concurrent UPDATE of the same row makes PostgreSQL re-check the WHERE
clause against the newest row version before writing, so a writer whose token is lower than the
one just committed updates 0 rows. Zero rows means a stale token (:class:`StaleToken`, with the
highest token read back for the message) or no such row (:class:`LockError`). Equal tokens pass:
the same holder may write several times.

Under REPEATABLE READ or SERIALIZABLE there is no such re-check: if another transaction updated
the row after this one's snapshot was taken (a newer holder's write, say), the UPDATE fails with
a serialization failure (raised as :class:`BackendUnavailable`), whatever the tokens, and the
caller's transaction is then aborted: roll it back and retry in a new transaction, which reads the
newest fence and gets :class:`StaleToken` if its token is now lower. Only a rejected write under
READ COMMITTED (0 rows) leaves the transaction usable.

The row needs a fencing column, ``bigint NOT NULL DEFAULT 0`` (:meth:`FencedRow.add_column_sql`
gives the statement). The write runs in the caller's transaction on the caller's connection
(psycopg 3, sync or asyncio): commit it with the rest of your work. Identifiers are quoted with
``psycopg.sql`` (the table may be ``schema.table``; a column name is one identifier even with a
dot in it; a ``%`` in any name is refused with ConfigError); values are always parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stalwart.errors import ConfigError
from stalwart.lock._errors import BackendError, BackendUnavailable, LockError, StaleToken

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

#: Columns one fenced UPDATE may set (beyond the fencing column); a bound like every other here.
MAX_COLUMNS = 64


def _identifier(name: str, *, qualified: bool = False) -> sql.Identifier:
    """One quoted identifier; a ``qualified`` one (the table) may be ``schema.table``.

    A column name is always ONE identifier, dots included. A ``%`` is refused: psycopg reads it as
    a placeholder in a statement with parameters (``"a%(token)s"``), and escaping it as ``%%``
    would be wrong in a statement run without any (:meth:`FencedRow.add_column_sql`).
    """
    from psycopg import sql

    if not isinstance(name, str) or not name or "\x00" in name or "%" in name:
        raise ConfigError(f"bad SQL identifier {name!r} (empty, or a NUL or '%' in it)")
    return sql.Identifier(*name.split(".")) if qualified else sql.Identifier(name)


class FencedRow:
    """Rows of one table that accept an UPDATE only with a token >= the highest they have seen.

    ``key_column`` must identify one row (the primary key, typically).

    ``await FencedRow("accounts").update(aconn, key=7, token=held.token, values={"balance": 10})``
    """

    def __init__(self, table: str, *, key_column: str = "id", fence_column: str = "fence") -> None:
        self.table = table
        self.key_column = key_column
        self.fence_column = fence_column
        self._table = _identifier(table, qualified=True)  # "schema.table" is two quoted parts
        self._key = _identifier(key_column)
        self._fence = _identifier(fence_column)

    def add_column_sql(self) -> sql.Composed:
        """``ALTER TABLE ... ADD COLUMN IF NOT EXISTS <fence> bigint NOT NULL DEFAULT 0``."""
        from psycopg import sql

        return sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} bigint NOT NULL DEFAULT 0").format(
            self._table, self._fence
        )

    def _statements(self, values: Mapping[str, Any], token: int) -> tuple[sql.Composed, sql.Composed]:
        from psycopg import sql

        if type(token) is not int or token < 0:
            raise ConfigError(f"a fencing token is a non-negative int, got {token!r}")
        if not values or len(values) > MAX_COLUMNS:
            raise ConfigError(f"a fenced update sets 1..{MAX_COLUMNS} columns, got {len(values)}")
        if self.fence_column in values or self.key_column in values:
            raise ConfigError("the fencing and key columns are not set through values")
        sets = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(_identifier(col), sql.Placeholder(f"v{i}"))
            for i, col in enumerate(values)
        )
        update = sql.SQL(
            "UPDATE {t} SET {sets}, {f} = %(token)s WHERE {k} = %(key)s AND {f} <= %(token)s"
        ).format(t=self._table, sets=sets, f=self._fence, k=self._key)
        highest = sql.SQL("SELECT {f} FROM {t} WHERE {k} = %(key)s").format(
            f=self._fence, t=self._table, k=self._key
        )
        return update, highest

    @staticmethod
    def _params(key: Any, token: int, values: Mapping[str, Any]) -> dict[str, Any]:
        params = {f"v{i}": v for i, v in enumerate(values.values())}
        params.update(key=key, token=token)
        return params

    def _rejected(self, key: Any, token: int, row: tuple[Any, ...] | None) -> LockError:
        where = f"{self.table}[{self.key_column}={key!r}]"
        if row is None:
            return LockError(f"fenced update of {where}: no such row")
        if row[0] is None:  # NULL <= token is never true: every write would be refused
            return LockError(
                f"fenced update of {where}: its fence column is NULL (make it NOT NULL DEFAULT 0)"
            )
        return StaleToken(where, token, int(row[0]))

    async def update(
        self, conn: psycopg.AsyncConnection[Any], key: Any, token: int, values: Mapping[str, Any]
    ) -> None:
        """Set ``values`` on the row ``key`` under ``token`` (asyncio psycopg connection).

        :class:`StaleToken` if a higher token already wrote the row; :class:`LockError` if there
        is no such row; :class:`BackendError` for database failures.
        """
        import psycopg

        update, highest = self._statements(values, token)
        params = self._params(key, token, values)
        try:
            async with conn.cursor() as cur:
                await cur.execute(update, params)
                if cur.rowcount > 0:
                    return
                await cur.execute(highest, {"key": key})
                row = await cur.fetchone()
        except psycopg.OperationalError as exc:
            raise BackendUnavailable(f"fenced update of {self.table!r}: {exc}") from exc
        except psycopg.Error as exc:
            raise BackendError(f"fenced update of {self.table!r}: {exc}") from exc
        raise self._rejected(key, token, row)

    def update_sync(
        self, conn: psycopg.Connection[Any], key: Any, token: int, values: Mapping[str, Any]
    ) -> None:
        """:meth:`update` on a blocking psycopg connection (for :class:`BlockingLock` holders)."""
        import psycopg

        update, highest = self._statements(values, token)
        params = self._params(key, token, values)
        try:
            with conn.cursor() as cur:
                cur.execute(update, params)
                if cur.rowcount > 0:
                    return
                cur.execute(highest, {"key": key})
                row = cur.fetchone()
        except psycopg.OperationalError as exc:
            raise BackendUnavailable(f"fenced update of {self.table!r}: {exc}") from exc
        except psycopg.Error as exc:
            raise BackendError(f"fenced update of {self.table!r}: {exc}") from exc
        raise self._rejected(key, token, row)


__all__ = ["MAX_COLUMNS", "FencedRow"]

"""``stalwart saga list|show|resume|abort``: operate on the sagas recorded in a saga log.

``resume`` and ``abort`` append a request to the log; the orchestrator that runs the saga picks
it up within its poll interval (actions are code in that process, so the CLI never runs them).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from stalwart.errors import ConfigError
from stalwart.txn.saga import Kind, Record, SagaLog


def _open(log_path: str | None, dsn: str | None) -> SagaLog:
    if (log_path is None) == (dsn is None):
        raise ConfigError(
            "name the saga log with exactly one of --log PATH (SQLite) or --dsn DSN (PostgreSQL)"
        )
    return SagaLog.sqlite(log_path) if log_path is not None else SagaLog.postgres(str(dsn))


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


log_option = click.option("--log", "log_path", type=click.Path(dir_okay=False), help="SQLite saga log file.")
dsn_option = click.option("--dsn", help="PostgreSQL DSN of a shared saga log.")


@click.group("saga")
def command() -> None:
    """Inspect and steer sagas recorded in a saga log."""


@command.command("list")
@log_option
@dsn_option
@click.option(
    "--status", type=click.Choice(["running", "compensating", "parked", "completed", "compensated"])
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def list_cmd(log_path: str | None, dsn: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """List sagas, newest first."""

    async def run() -> list[tuple[str, str, str, float, float]]:
        store = _open(log_path, dsn)
        try:
            return await store.list(status, limit)
        finally:
            await store.close()

    rows = asyncio.run(run())
    if as_json:
        for saga_id, name, st, created, updated in rows:
            click.echo(
                json.dumps(
                    {"id": saga_id, "saga": name, "status": st, "created": created, "updated": updated}
                )
            )
        return
    table = Table("id", "saga", "status", "created (UTC)", "updated (UTC)")
    for saga_id, name, st, created, updated in rows:
        table.add_row(saga_id, name, st, _when(created), _when(updated))
    Console().print(table)


@command.command("show")
@click.argument("saga_id")
@log_option
@dsn_option
def show_cmd(saga_id: str, log_path: str | None, dsn: str | None) -> None:
    """Show every record of one saga."""

    async def run() -> list[Any]:
        store = _open(log_path, dsn)
        try:
            return await store.records(saga_id)
        finally:
            await store.close()

    records = asyncio.run(run())
    if not records:
        raise ConfigError(f"no saga {saga_id} in this log")
    table = Table("seq", "at (UTC)", "record", "step", "data", title=f"saga {saga_id} ({records[0].name})")
    for logged in records:
        r = logged.record
        table.add_row(str(logged.seq), _when(logged.at), r.kind.value, r.step, r.data[:80])
    Console().print(table)


def _request(saga_id: str, log_path: str | None, dsn: str | None, kind: Kind) -> None:
    async def run() -> None:
        store = _open(log_path, dsn)
        try:
            records = await store.records(saga_id)
            if not records:
                raise ConfigError(f"no saga {saga_id} in this log")
            if records[-1].record.kind is Kind.FINISHED:
                raise ConfigError(f"saga {saga_id} has already finished ({records[-1].record.data})")
            await store.append(records[0].name, Record(saga_id, kind))
        finally:
            await store.close()

    asyncio.run(run())
    click.echo(f"{kind.value} for saga {saga_id}; its orchestrator acts on it within its poll interval")


@command.command("resume")
@click.argument("saga_id")
@log_option
@dsn_option
def resume_cmd(saga_id: str, log_path: str | None, dsn: str | None) -> None:
    """Retry the compensations of a parked saga."""
    _request(saga_id, log_path, dsn, Kind.RESUME_REQUESTED)


@command.command("abort")
@click.argument("saga_id")
@log_option
@dsn_option
def abort_cmd(saga_id: str, log_path: str | None, dsn: str | None) -> None:
    """Stop a running saga and compensate what it did."""
    _request(saga_id, log_path, dsn, Kind.ABORT_REQUESTED)

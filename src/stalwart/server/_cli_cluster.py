"""``stalwart cluster start|stop|status``: a local cluster of node processes under DIR.

Exit status: 0 success; 1 the cluster could not be started/stopped/reached as asked; 2 bad
options.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from stalwart.errors import StalwartError
from stalwart.server._cluster import ClusterError, ClusterSpec, is_running, start_cluster, stop_cluster

DEFAULT_DIR = ".stalwart"


@click.group(name="cluster")
def command() -> None:
    """Run a local cluster of key-value nodes on loopback (data, logs, ports, key under DIR)."""


@command.command()
@click.option("--nodes", default=3, show_default=True, type=click.Choice(["1", "3", "5"]), help="Members.")
@click.option("--dir", "directory", default=DEFAULT_DIR, show_default=True, type=click.Path(path_type=Path))
@click.option("--tick-ms", default=10, show_default=True, type=int)
@click.option("--election-ms", default=1000, show_default=True, type=int)
@click.option("--snapshot-every", default=100_000, show_default=True, type=int)
@click.option("--unsafe-no-fsync", is_flag=True, help="Experiments only: acknowledged writes may be lost.")
@click.pass_context
def start(  # noqa: PLR0917
    ctx: click.Context, nodes: str, directory: Path, tick_ms: int, election_ms: int, snapshot_every: int,
    unsafe_no_fsync: bool,
) -> None:  # fmt: skip
    """Start the nodes in the background and write DIR/cluster.json (options apply to a new cluster)."""
    try:
        spec = start_cluster(
            directory, int(nodes), tick_ms=tick_ms, election_ms=election_ms,
            snapshot_every=snapshot_every, fsync=not unsafe_no_fsync,
        )  # fmt: skip
    except ClusterError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(1)
    for node in spec.nodes:
        click.echo(f"{node.id}: pid {node.pid} client {node.client} http http://{node.http} log {node.log}")
    leader = asyncio.run(_wait_leader(spec, timeout_s=15.0))
    click.echo(f"cluster started in {spec.dir}; leader: {leader or 'not elected yet'}")
    click.echo(f"try: stalwart kv --dir {directory} put greeting hello")


async def _wait_leader(spec: ClusterSpec, timeout_s: float) -> str | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        for st in (await _statuses(spec)).values():
            if isinstance(st, dict) and st.get("role") == "leader":
                return str(st["node"])
        await asyncio.sleep(0.1)
    return None


@command.command()
@click.option("--dir", "directory", default=DEFAULT_DIR, show_default=True, type=click.Path(path_type=Path))
@click.option("--timeout", "timeout_s", default=10.0, show_default=True, help="Seconds before SIGKILL.")
@click.pass_context
def stop(ctx: click.Context, directory: Path, timeout_s: float) -> None:
    """SIGTERM every node, SIGKILL those still running after --timeout."""
    try:
        outcome = stop_cluster(directory, timeout_s=timeout_s)
    except ClusterError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(1)
    for node_id, what in outcome.items():
        click.echo(f"{node_id}: {what}")


async def _statuses(spec: ClusterSpec) -> dict[str, dict[str, Any] | str]:
    from stalwart.client import AsyncKVClient

    key = Path(spec.key_file).read_bytes().strip()
    out: dict[str, dict[str, Any] | str] = {}
    async with AsyncKVClient([n.client for n in spec.nodes], cluster_key=key, timeout_s=2.0) as kv:
        for node in spec.nodes:
            try:
                out[node.id] = await kv.status(node.client)
            except StalwartError as exc:
                out[node.id] = "down" if not is_running(node.pid, node.data_dir) else f"unreachable: {exc}"
    return out


@command.command()
@click.option("--dir", "directory", default=DEFAULT_DIR, show_default=True, type=click.Path(path_type=Path))
@click.pass_context
def status(ctx: click.Context, directory: Path) -> None:
    """A table of each node's role, term, commit, applied index and lag."""
    from rich.console import Console
    from rich.table import Table

    try:
        spec = ClusterSpec.load(directory)
    except ClusterError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(1)
    statuses = asyncio.run(_statuses(spec))
    lags: dict[str, int] = {}
    for st in statuses.values():
        if isinstance(st, dict) and st.get("role") == "leader":
            lags = {f["node"]: f["lag"] for f in st.get("followers", [])}
    table = Table(title=f"stalwart cluster in {spec.dir}")
    for column in ("node", "pid", "client", "role", "term", "leader", "commit", "applied", "lag", "keys"):
        table.add_column(
            column, justify="right" if column in ("term", "commit", "applied", "lag", "keys") else "left"
        )
    down = 0
    for node in spec.nodes:
        st = statuses[node.id]
        pid = str(node.pid) if node.pid is not None else "-"
        if isinstance(st, str):
            down += 1
            table.add_row(node.id, pid, node.client, f"[red]{st}[/red]", *["-"] * 6)
            continue
        role = st["role"] if st["role"] != "leader" else "[bold green]leader[/bold green]"
        lag = "0" if st["role"] == "leader" else str(lags.get(node.id, "?"))
        table.add_row(node.id, pid, node.client, role, str(st["term"]), str(st["leader"] or "-"),
                      str(st["commit"]), str(st["applied"]), lag, str(st["keys"]))  # fmt: skip
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)  # piped: do not truncate columns to 80
    console.print(table)
    ctx.exit(1 if down == len(spec.nodes) else 0)

"""``stalwart node``: run one node of the key-value store (see docs/kv.md for every flag).

Exit status: 0 stopped by SIGTERM/SIGINT; 2 bad configuration (flags, key); 3 corrupt storage
(the message names the file and offset); 4 storage unusable (locked by another process,
unreadable, out of space); 1 anything else (a bug: the traceback is logged).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import sys
from pathlib import Path

import click

from stalwart.errors import ConfigError, CorruptionError, StalwartError, StorageError
from stalwart.sansio import NodeId
from stalwart.server._config import ServerConfig, load_cluster_key, parse_address, parse_members

EXIT_OK, EXIT_BUG, EXIT_CONFIG, EXIT_CORRUPT, EXIT_STORAGE = 0, 1, 2, 3, 4
# The cyclic GC's thresholds in a node process. With CPython's default (700 net allocations) an
# in-flight request (a few dozen objects living ~100 ms) survives young collections and ends in
# the oldest generation, whose full scans (every stored key, event and log entry) took a third
# of a loaded node's CPU. The node makes few reference cycles; reference counting frees the
# rest, so young collections can be rare. Measured: GC time from ~30% to ~4% of node CPU.
NODE_GC_THRESHOLDS = (50_000, 20, 100)
log = logging.getLogger("stalwart.server")


class _KeyValueFormatter(logging.Formatter):
    """One line per event: ``ts=... level=... logger=... msg="..."`` (key=value pairs in msg)."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"ts={self.formatTime(record, '%Y-%m-%dT%H:%M:%S')}.{int(record.msecs):03d} "
            f"level={record.levelname.lower()} logger={record.name} pid={record.process} "
            f"msg={json.dumps(record.getMessage())}"
        )
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


def _first_typed(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        typed = exc.subgroup(StalwartError)
        exc = (typed or exc).exceptions[0]
    return exc


async def serve(config: ServerConfig, started: asyncio.Event | None = None) -> None:
    """Run the node, its client listener and HTTP API until SIGTERM/SIGINT."""
    from stalwart.server._http import HttpApi
    from stalwart.server._listener import ClientListener
    from stalwart.server._server import KVServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = KVServer(config)
    async with server:
        listener = http = None
        try:
            if config.client_listen is not None:
                listener = ClientListener(server, config.client_listen)
                await listener.start()
            if config.http_listen is not None:
                http = HttpApi(server, config.http_listen)
                await http.start()
            log.info(
                "node started node=%s listen=%s client=%s http=%s members=%s fsync=%s pid=%d",
                config.node_id, _fmt(server.node.address), _fmt(listener.address if listener else None),
                _fmt(http.address if http else None), ",".join(sorted(config.members)), config.fsync,
                os.getpid(),
            )  # fmt: skip
            if started is not None:
                started.set()
            await stop.wait()
            log.info("node stopping node=%s reason=signal", config.node_id)
        finally:
            if http is not None:
                await http.close()
            if listener is not None:
                await listener.close()


def _fmt(address: tuple[str, int] | None) -> str:
    return "-" if address is None else f"{address[0]}:{address[1]}"


@click.command(name="node")
@click.option("--id", "node_id", required=True, help="This node's id (unique in the cluster).")
@click.option(
    "--peers", required=True, help="ALL members including this one: id=host:port,... (peer addresses)."
)
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="This node's storage directory (created if missing).")  # fmt: skip
@click.option("--listen", required=True, help="HOST:PORT for peer (Raft) traffic.")
@click.option("--client-listen", default=None, help="HOST:PORT for the binary client protocol.")
@click.option("--http-listen", default=None, help="HOST:PORT for the HTTP/JSON API and /metrics.")
@click.option("--peer-http", default="", help="id=host:port,... of the members' HTTP APIs (for redirects).")
@click.option(
    "--cluster-key-file", default=None, help="File with the cluster key (else env STALWART_CLUSTER_KEY)."
)
@click.option(
    "--unsafe-no-fsync", is_flag=True, help="Never fsync (experiments only: acknowledged writes may be lost)."
)
@click.option("--tick-ms", default=10, show_default=True, type=int, help="Length of one Raft tick.")
@click.option(
    "--election-ms", default=1000, show_default=True, type=int, help="Election timeout (randomized up to 2x)."
)
@click.option("--heartbeat-ms", default=100, show_default=True, type=int, help="Heartbeat interval.")
@click.option(
    "--snapshot-every", default=100_000, show_default=True, type=int, help="Entries between snapshots."
)
@click.option("--watch-history", default=10_000, show_default=True, type=int, help="Events kept for watches.")
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
@click.pass_context
def command(  # noqa: PLR0917  (click passes options positionally)
    ctx: click.Context, node_id: str, peers: str, data_dir: Path, listen: str, client_listen: str | None,
    http_listen: str | None, peer_http: str, cluster_key_file: str | None, unsafe_no_fsync: bool,
    tick_ms: int, election_ms: int, heartbeat_ms: int, snapshot_every: int, watch_history: int,
    log_level: str,
) -> None:  # fmt: skip
    """Run one node of the replicated key-value store (logs on stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KeyValueFormatter())
    logging.basicConfig(level=log_level.upper(), handlers=[handler], force=True)
    try:
        config = ServerConfig(
            node_id=NodeId(node_id), members=parse_members(peers), listen=parse_address(listen, "--listen"),
            data_dir=data_dir, cluster_key=load_cluster_key(cluster_key_file),
            client_listen=None if client_listen is None else parse_address(client_listen, "--client-listen"),
            http_listen=None if http_listen is None else parse_address(http_listen, "--http-listen"),
            peer_http=parse_members(peer_http, "--peer-http"), fsync=not unsafe_no_fsync, tick_ms=tick_ms,
            election_ms=election_ms, heartbeat_ms=heartbeat_ms, snapshot_every=snapshot_every,
            history_events=watch_history,
        )  # fmt: skip
        data_dir.mkdir(parents=True, exist_ok=True)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(EXIT_CONFIG)
    ctx.exit(_run(config))


def _run(config: ServerConfig) -> int:
    gc.set_threshold(*NODE_GC_THRESHOLDS)
    try:
        asyncio.run(serve(config))
    except BaseException as raw:
        exc = _first_typed(raw)
        if isinstance(exc, KeyboardInterrupt):
            return EXIT_OK
        if isinstance(exc, CorruptionError):
            click.echo(
                f"error: corrupt storage, refusing to start: {exc.path} at offset {exc.offset}: {exc.reason}",
                err=True,
            )
            return EXIT_CORRUPT
        if isinstance(exc, StorageError):
            click.echo(f"error: storage unusable: {exc}", err=True)
            return EXIT_STORAGE
        if isinstance(exc, ConfigError | OSError):
            click.echo(f"error: {exc}", err=True)
            return EXIT_CONFIG
        log.exception("node failed", exc_info=exc)
        click.echo(f"error: node failed: {type(exc).__name__}: {exc}", err=True)
        return EXIT_BUG
    return EXIT_OK

"""``stalwart demo-node``: one node of the gossip-counter demo over the real runtime.

Logs go to stderr; state changes go to stdout as JSON lines (one object per line, flushed), so
tests and scripts can follow a node::

    {"event": "started", "node": "n1", "listen": "127.0.0.1:7001", "count": 0}
    {"event": "link", "node": "n1", "peer": "n2", "state": "connected"}
    {"event": "total", "node": "n1", "total": 6, "counts": {"n1": 3, "n2": 2, "n3": 1}}
    {"event": "stopped", "node": "n1", "stats": {...}}

Clients connect like peers (same handshake and cluster key, any id that is not a node's) and
send ``gossip.Increment`` / ``gossip.ReadTotal``; see ``stalwart.runtime.request``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from stalwart.errors import ConfigError, StalwartError
from stalwart.runtime._host import HostConfig
from stalwart.runtime._node import Node, RuntimeConfig
from stalwart.runtime._transport import Address, LinkState, TransportConfig
from stalwart.sansio import DurableState, NodeId

MIN_KEY_BYTES = 16
KEY_ENV = "STALWART_CLUSTER_KEY"


def parse_address(text: str) -> Address:
    """``HOST:PORT`` -> (host, port); :class:`ConfigError` if it is not one."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"not a HOST:PORT address: {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # an IPv6 literal: [::1]:7001
    return host, int(port)


def parse_peers(text: str) -> dict[NodeId, Address]:
    """``id=host:port,...`` -> {id: (host, port)}."""
    peers: dict[NodeId, Address] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, addr = item.partition("=")
        if not sep or not name or name in peers:
            raise ConfigError(f"not an id=host:port peer (or a duplicate): {item!r}")
        peers[NodeId(name)] = parse_address(addr)
    return peers


def load_cluster_key(key_file: str | None) -> bytes:
    """The cluster key from ``key_file`` (surrounding whitespace stripped) or the environment."""
    if key_file is not None:
        key = Path(key_file).read_bytes().strip()
    else:
        key = os.environ.get(KEY_ENV, "").encode()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"a cluster key of at least {MIN_KEY_BYTES} bytes is required (--cluster-key-file or {KEY_ENV})"
        )
    return key


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    node_id: NodeId
    listen: Address
    peers: dict[NodeId, Address]
    data_dir: Path
    key: bytes
    tick_ms: float
    gossip_every_ticks: int


async def run_node(opts: DemoOptions) -> dict[str, Any]:
    """Run the node until SIGTERM/SIGINT; return its final stats and peer links."""
    from stalwart.gossip import INPUT_TYPES, GossipCounter, TotalChanged
    from stalwart.storage import NodeStorage

    node_id, peers = opts.node_id, opts.peers

    def build(durable: DurableState) -> GossipCounter:
        return GossipCounter(node_id, sorted(peers), durable, gossip_every_ticks=opts.gossip_every_ticks)

    def on_output(change: TotalChanged) -> None:
        emit("total", node=change.node_id, total=change.total, counts=dict(change.counts))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    config = RuntimeConfig(host=HostConfig(tick_ms=opts.tick_ms), transport=TransportConfig())

    def on_link(peer: NodeId, state: LinkState) -> None:
        if peer in peers:  # links to nodes; clients come and go
            emit("link", node=node_id, peer=peer, state=state.value)

    node: Node[Any, Any, TotalChanged] = Node(
        node_id, cluster_key=opts.key, storage=NodeStorage(opts.data_dir), protocol_factory=build,
        accept=INPUT_TYPES, on_output=on_output, listen=opts.listen, peers=peers, config=config,
        on_link=on_link,
    )  # fmt: skip
    async with node:
        protocol = node.host.protocol
        assert isinstance(protocol, GossipCounter)
        address = node.address
        assert address is not None
        emit(
            "started",
            node=node_id,
            listen=f"{address[0]}:{address[1]}",
            count=protocol.count,
            pid=os.getpid(),
        )
        await stop.wait()
        logging.getLogger("stalwart.runtime").info("stopping node=%s reason=signal", node_id)
        links = [
            {
                "peer": st.peer_id,
                "state": st.state.value,
                "queued": st.queued_messages,
                "client": st.is_client,
            }
            for st in node.transport.peer_status()
        ]
    return {"stats": node.stats.snapshot(), "links": links}


@click.command(name="demo-node")
@click.option("--id", "node_id", required=True, help="This node's id (unique in the cluster).")
@click.option("--listen", required=True, help="HOST:PORT to listen on (port 0: any free port).")
@click.option("--peers", default="", help="The other nodes: id=host:port,...")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="This node's storage directory (created if missing; one process at a time).")  # fmt: skip
@click.option("--cluster-key-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help=f"File holding the shared cluster key (else env {KEY_ENV}).")  # fmt: skip
@click.option("--tick-ms", default=50.0, show_default=True, help="Length of one protocol tick.")
@click.option("--gossip-every-ticks", default=2, show_default=True, help="Ticks between two gossip rounds.")
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
@click.pass_context
def command(  # noqa: PLR0917  (click passes options positionally)
    ctx: click.Context, node_id: str, listen: str, peers: str, data_dir: Path, cluster_key_file: str | None,
    tick_ms: float, gossip_every_ticks: int, log_level: str,
) -> None:  # fmt: skip
    """Run one node of the gossip-counter demo (JSON lines on stdout, logs on stderr)."""
    logging.basicConfig(
        stream=sys.stderr, level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    key = load_cluster_key(cluster_key_file)
    peer_map = parse_peers(peers)
    if node_id in peer_map:
        raise ConfigError(f"--peers lists this node ({node_id}) itself")
    data_dir.mkdir(parents=True, exist_ok=True)
    opts = DemoOptions(
        NodeId(node_id), parse_address(listen), peer_map, data_dir, key, tick_ms, gossip_every_ticks
    )
    try:
        stats = asyncio.run(run_node(opts))
    except BaseExceptionGroup as group:
        # A node task failed (storage, a broken invariant): report a typed error as one line.
        typed = group.subgroup(StalwartError)
        if typed is None:
            raise
        first: BaseException = typed
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from group
    emit("stopped", node=node_id, **stats)
    ctx.exit(0)

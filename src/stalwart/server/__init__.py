"""A node of the replicated key-value store: Raft + kv + runtime + storage, client and HTTP APIs.

See docs/kv.md. ``stalwart node`` runs one (:mod:`stalwart.server._cli_node`), ``stalwart
cluster`` runs a local cluster of them (:mod:`stalwart.server._cli_cluster`).
"""

from stalwart.server._config import ServerConfig, load_cluster_key, parse_address, parse_members
from stalwart.server._http import HttpApi
from stalwart.server._listener import ClientListener
from stalwart.server._server import Answer, KVServer

__all__ = [
    "Answer",
    "ClientListener",
    "HttpApi",
    "KVServer",
    "ServerConfig",
    "load_cluster_key",
    "parse_address",
    "parse_members",
]

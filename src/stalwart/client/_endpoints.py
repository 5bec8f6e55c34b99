"""Finding a cluster: ``Endpoints.from_dir`` reads the cluster.json that ``cluster start`` wrote."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from stalwart.errors import ConfigError

CLUSTER_FILE = "cluster.json"
KEY_FILE = "cluster.key"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Client endpoints (HOST:PORT) of a cluster and the key to talk to it."""

    client: tuple[str, ...]
    http: tuple[str, ...]
    cluster_key: bytes | None = None

    @classmethod
    def from_dir(cls, directory: str | Path) -> Endpoints:
        """The local cluster under ``directory`` (default of ``cluster start``: ./.stalwart)."""
        root = Path(directory)
        path = root / CLUSTER_FILE
        try:
            info = json.loads(path.read_text())
            nodes = info["nodes"]
            client = tuple(str(n["client"]) for n in nodes)
            http = tuple(str(n["http"]) for n in nodes if n.get("http"))
            key_file = Path(info.get("key_file") or root / KEY_FILE)
        except FileNotFoundError:
            raise ConfigError(
                f"no cluster at {root} ({path} missing): run `stalwart cluster start`"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is not a cluster description: {exc!r}") from None
        key = key_file.read_bytes().strip() if key_file.exists() else None
        if not client:
            raise ConfigError(f"{path} lists no nodes")
        return cls(client, http, key)

    @classmethod
    def parse(cls, text: str) -> Endpoints:
        """``host:port,host:port``: client endpoints given on a command line."""
        items = tuple(part.strip() for part in text.split(",") if part.strip())
        if not items:
            raise ConfigError("no endpoints given")
        return cls(items, ())


__all__ = ["CLUSTER_FILE", "KEY_FILE", "Endpoints"]

"""``stalwart kv get|put|del|cas|append|scan|watch|status``: the store from the command line.

Exit status: 0 done; 1 not found (get), compare failed (cas), key absent (del); 2 usage or
configuration error; 3 timed out (a write's outcome is unknown); 4 cluster unavailable;
5 request refused (malformed or out of bounds).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from stalwart.client._client import AsyncKVClient
from stalwart.client._endpoints import Endpoints
from stalwart.client._errors import KVRequestError, KVTimeoutError, KVUnavailableError
from stalwart.errors import AuthenticationError, ConfigError, StalwartError
from stalwart.kv import KeyValue

EXIT_OK, EXIT_NO, EXIT_USAGE, EXIT_TIMEOUT, EXIT_UNAVAILABLE, EXIT_REFUSED = 0, 1, 2, 3, 4, 5
KEY_ENV = "STALWART_CLUSTER_KEY"
T = TypeVar("T")


class _Target:
    def __init__(self, endpoints: list[str], key: bytes, timeout_s: float) -> None:
        self.endpoints, self.key, self.timeout_s = endpoints, key, timeout_s

    def run(self, ctx: click.Context, body: Callable[[AsyncKVClient], Awaitable[T]]) -> T:
        async def main() -> T:
            async with AsyncKVClient(self.endpoints, cluster_key=self.key, timeout_s=self.timeout_s) as kv:
                return await body(kv)

        try:
            return asyncio.run(main())
        except KVTimeoutError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_TIMEOUT)
        except KVRequestError as exc:
            click.echo(f"error: refused: {exc}", err=True)
            ctx.exit(EXIT_REFUSED)
        except AuthenticationError as exc:
            click.echo(f"error: the cluster refused our key: {exc}", err=True)
            ctx.exit(EXIT_UNAVAILABLE)
        except KVUnavailableError as exc:
            click.echo(f"error: unavailable: {exc}", err=True)
            ctx.exit(EXIT_UNAVAILABLE)
        except StalwartError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_UNAVAILABLE)
        raise AssertionError("unreachable: ctx.exit raises")


def _kv_json(kv: KeyValue) -> dict[str, Any]:
    try:
        text: str | None = kv.value.decode()
    except UnicodeDecodeError:
        text = None
    return {
        "key": kv.key, "value": text, "value_b64": base64.b64encode(kv.value).decode(),
        "create_revision": kv.create_revision, "mod_revision": kv.mod_revision, "version": kv.version,
        "expires_at_ms": kv.expires_at_ms,
    }  # fmt: skip


def _write_value(value: bytes) -> None:
    sys.stdout.buffer.write(value + b"\n")
    sys.stdout.flush()


@click.group(name="kv")
@click.option("--dir", "directory", default=None, type=click.Path(path_type=Path),
              help="Local cluster dir from `stalwart cluster start` (default ./.stalwart).")  # fmt: skip
@click.option("--endpoints", default=None, help="Client endpoints host:port,... (instead of --dir).")
@click.option(
    "--cluster-key-file", default=None, help=f"Cluster key file (else env {KEY_ENV}, else DIR's key)."
)
@click.option("--timeout", "timeout_s", default=5.0, show_default=True, help="Seconds per command.")
@click.pass_context
def command(
    ctx: click.Context,
    directory: Path | None,
    endpoints: str | None,
    cluster_key_file: str | None,
    timeout_s: float,
) -> None:
    """Read and write the replicated key-value store."""
    try:
        if endpoints is not None and directory is not None:
            raise ConfigError("give either --dir or --endpoints, not both")
        found = (
            Endpoints.parse(endpoints) if endpoints else Endpoints.from_dir(directory or Path(".stalwart"))
        )
        if cluster_key_file is not None:
            key: bytes | None = Path(cluster_key_file).read_bytes().strip()
        elif os.environ.get(KEY_ENV):
            key = os.environ[KEY_ENV].encode().strip()
        else:
            key = found.cluster_key
        if not key:
            raise ConfigError(f"no cluster key: --cluster-key-file, {KEY_ENV}, or --dir of a local cluster")
    except (ConfigError, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(EXIT_USAGE)
    ctx.obj = _Target(list(found.client), key, timeout_s)


_CONSISTENCY = click.option(
    "--consistency", default="linearizable", show_default=True,
    type=click.Choice(["linearizable", "lease", "stale"]), help="Read consistency (docs/kv.md).",
)  # fmt: skip


@command.command()
@click.argument("key")
@_CONSISTENCY
@click.option("--json", "as_json", is_flag=True, help="Print the key's metadata as JSON.")
@click.pass_context
def get(ctx: click.Context, key: str, consistency: str, as_json: bool) -> None:
    """Print KEY's value (exit 1 if absent)."""
    target: _Target = ctx.obj
    kv = target.run(ctx, lambda c: c.get(key, consistency))
    if kv is None:
        click.echo(f"not found: {key}", err=True)
        ctx.exit(EXIT_NO)
    if as_json:
        click.echo(json.dumps(_kv_json(kv)))
    else:
        _write_value(kv.value)


@command.command()
@click.argument("key")
@click.argument("value")
@click.option("--ttl", "ttl_s", type=float, default=None, help="Expire after this many seconds.")
@click.pass_context
def put(ctx: click.Context, key: str, value: str, ttl_s: float | None) -> None:
    """Set KEY to VALUE ('-' reads the value from stdin); prints the revision."""
    data = sys.stdin.buffer.read() if value == "-" else value.encode()
    target: _Target = ctx.obj
    click.echo(target.run(ctx, lambda c: c.put(key, data, ttl_s)))


@command.command(name="del")
@click.argument("key")
@click.pass_context
def delete(ctx: click.Context, key: str) -> None:
    """Delete KEY (exit 1 if it did not exist)."""
    target: _Target = ctx.obj
    if not target.run(ctx, lambda c: c.delete(key)):
        click.echo(f"not found: {key}", err=True)
        ctx.exit(EXIT_NO)


@command.command()
@click.argument("key")
@click.argument("expected")
@click.argument("value")
@click.option("--absent", is_flag=True, help="Expect KEY to be absent (EXPECTED is ignored).")
@click.pass_context
def cas(ctx: click.Context, key: str, expected: str, value: str, absent: bool) -> None:
    """Set KEY to VALUE if it holds EXPECTED; prints the revision (exit 1 if the compare failed)."""
    target: _Target = ctx.obj
    want = None if absent else expected.encode()
    swapped, revision = target.run(ctx, lambda c: c.cas(key, want, value.encode()))
    click.echo(revision)
    if not swapped:
        click.echo("compare failed", err=True)
        ctx.exit(EXIT_NO)


@command.command()
@click.argument("key")
@click.argument("suffix")
@click.pass_context
def append(ctx: click.Context, key: str, suffix: str) -> None:
    """Append SUFFIX to KEY; prints the new value."""
    target: _Target = ctx.obj
    _write_value(target.run(ctx, lambda c: c.append(key, suffix.encode())))


@command.command()
@click.argument("prefix", default="")
@click.option("--limit", default=1000, show_default=True)
@_CONSISTENCY
@click.pass_context
def scan(ctx: click.Context, prefix: str, limit: int, consistency: str) -> None:
    """Keys under PREFIX in key order, one JSON object per line."""
    target: _Target = ctx.obj
    for kv in target.run(ctx, lambda c: c.range(prefix, limit, consistency)):
        click.echo(json.dumps(_kv_json(kv)))


@command.command()
@click.argument("prefix", default="")
@click.option("--since", default=0, show_default=True, help="Only changes after this revision.")
@click.option("--count", default=0, help="Stop after this many events (0: run until interrupted).")
@click.pass_context
def watch(ctx: click.Context, prefix: str, since: int, count: int) -> None:
    """Print changes under PREFIX as JSON lines, as they happen."""
    target: _Target = ctx.obj

    async def body(c: AsyncKVClient) -> None:
        seen = 0
        async for event in c.watch(prefix, since):
            value = base64.b64encode(event.value).decode()
            line = {
                "revision": event.revision,
                "type": event.kind.name.lower(),
                "key": event.key,
                "value_b64": value,
            }
            click.echo(json.dumps(line))
            seen += 1
            if count and seen >= count:
                return

    try:
        target.run(ctx, body)
    except KeyboardInterrupt:
        ctx.exit(EXIT_OK)


@command.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """The leader's (or any node's) status as JSON."""
    target: _Target = ctx.obj
    click.echo(json.dumps(target.run(ctx, lambda c: c.status()), indent=2))

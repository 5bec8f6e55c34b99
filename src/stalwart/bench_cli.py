"""``stalwart bench``: benchmarks from a source checkout (they live in bench/, next to src/).

``stalwart bench kv`` runs ``python -m bench.bench_kv`` (stalwart vs etcd vs PySyncObj) with the
same options; see that module and bench/README.md. The benchmarks are not part of the installed
package: they start peer systems (etcd, PySyncObj) that a user of the library does not need.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from stalwart.errors import ConfigError


def _checkout_root() -> Path:
    """The source checkout that holds bench/ (this file is src/stalwart/bench_cli.py in it)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "bench" / "bench_kv.py").is_file():
        raise ConfigError(f"no bench/ next to {root / 'src'}: `stalwart bench` runs from a source checkout")
    return root


@click.group(name="bench")
def command() -> None:
    """Benchmarks against the peers a user would pick instead (from a source checkout)."""


@command.command(name="kv")
@click.option("--seconds", type=float, default=15.0, show_default=True, help="seconds per system and run")
@click.option("--runs", type=int, default=3, show_default=True, help="runs; the table shows medians")
@click.option("--clients", type=int, default=1000, show_default=True, help="closed-loop writers in all")
@click.option("--gens", type=int, default=4, show_default=True, help="load-generator processes")
@click.option(
    "--systems",
    default="stalwart,etcd,etcd-http,pysyncobj",
    show_default=True,
    help="etcd: its gRPC API; etcd-http: the same cluster through the HTTP/JSON gateway",
)
@click.option("--json", "json_path", default=None, help="write every run's figures to this file")
@click.pass_context
def kv(  # noqa: PLR0917 (click passes options positionally)
    ctx: click.Context,
    seconds: float,
    runs: int,
    clients: int,
    gens: int,
    systems: str,
    json_path: str | None,
) -> None:
    """Replicated KV puts: stalwart vs etcd 3.4 (gRPC and HTTP) vs PySyncObj, 3 members each."""
    if seconds <= 0 or runs < 1 or clients < 1 or not 1 <= gens <= clients:
        raise ConfigError("need --seconds > 0, --runs >= 1, --clients >= 1 and 1 <= --gens <= --clients")
    argv = [sys.executable, "-m", "bench.bench_kv", "--seconds", str(seconds), "--runs", str(runs),
            "--clients", str(clients), "--gens", str(gens), "--systems", systems]  # fmt: skip
    if json_path is not None:
        argv += ["--json", json_path]
    ctx.exit(subprocess.call(argv, cwd=_checkout_root()))

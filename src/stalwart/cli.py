"""The ``stalwart`` command.

Subcommands live next to the code they drive (``stalwart/<package>/_cli.py``, each exposing a
click command named ``command``) and are imported only when invoked, so ``stalwart --version``
and ``--help`` stay fast and a subcommand's heavy imports never slow the others.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from stalwart import __version__
from stalwart.errors import StalwartError

# name -> module that defines ``command``; listed in the help only once the module exists.
_SUBCOMMANDS: dict[str, str] = {
    "check": "stalwart.check._cli",
    "sim": "stalwart.sim._cli",
    "node": "stalwart.server._cli_node",
    "cluster": "stalwart.server._cli_cluster",
    "kv": "stalwart.client._cli",
    "drill": "stalwart.drill._cli",
    "saga": "stalwart.txn._cli",
    "bench": "stalwart.bench_cli",
    "demo-node": "stalwart.runtime._demo_cli",
}


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        found = [name for name, mod in _SUBCOMMANDS.items() if _module_exists(mod)]
        return sorted({*super().list_commands(ctx), *found})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = _SUBCOMMANDS.get(cmd_name)
        if module_name is None or not _module_exists(module_name):
            return super().get_command(ctx, cmd_name)
        command = getattr(importlib.import_module(module_name), "command", None)
        if not isinstance(command, click.Command):
            raise click.ClickException(f"{module_name} defines no click command named 'command'")
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stalwart")
def cli() -> None:
    """stalwart: distributed systems that keep working when machines, disks and networks fail."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point: typed errors become one clear line and exit status 2."""
    try:
        code = cli.main(args=argv, prog_name="stalwart", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if exc.exit_code == 1 else exc.exit_code)
    except StalwartError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

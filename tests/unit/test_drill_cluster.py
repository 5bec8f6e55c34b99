"""The drill cluster's layout (ports, key, node command lines) and status parsing."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from stalwart.drill import ClusterLayout, DrillConfigError, ProxyMesh, leader_from_status


def test_layout_key_ports_and_argv(tmp_path: Path) -> None:
    layout = ClusterLayout.create(tmp_path, 3, ["--tick-ms", "10"])
    ports = [*layout.peer_ports.values(), *layout.client_ports.values()]
    assert len(set(ports)) == 6
    assert len(layout.cluster_key) == 64 and stat.S_IMODE(layout.key_path.stat().st_mode) == 0o600

    async def argv() -> tuple[list[str], list[str]]:
        mesh = ProxyMesh({n: ("127.0.0.1", layout.peer_ports[n]) for n in layout.node_ids})
        await mesh.start()
        try:
            return layout.argv(2, mesh), layout.argv(2, mesh, clock_rate=2.0)
        finally:
            await mesh.close()

    args, slow = asyncio.run(argv())
    assert args[args.index("--id") + 1] == "2"
    assert args[args.index("--listen") + 1] == f"127.0.0.1:{layout.peer_ports[2]}"
    assert args[args.index("--client-listen") + 1] == layout.endpoint(2)
    assert args[args.index("--data-dir") + 1] == str(tmp_path / "node-2")
    peers = dict(p.split("=") for p in args[args.index("--peers") + 1].split(","))
    assert set(peers) == {"1", "2", "3"} and peers["2"] == f"127.0.0.1:{layout.peer_ports[2]}"
    assert peers["1"] != f"127.0.0.1:{layout.peer_ports[1]}"  # other peers go through a proxy
    assert args[-2:] == ["--tick-ms", "10"]
    # a slow clock: ticks twice as long, timeouts the same number of ticks, given last (click keeps it)
    assert slow[: len(args)] == args
    assert slow[len(args) :] == ["--tick-ms", "20", "--election-ms", "2000", "--heartbeat-ms", "200"]


def test_a_used_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "node-1").mkdir()
    with pytest.raises(DrillConfigError, match="empty --dir"):
        ClusterLayout.create(tmp_path, 3)


def test_leader_from_status() -> None:
    assert leader_from_status({"role": "follower", "leader": "2"}) == 2
    assert leader_from_status({"role": "leader", "leader": None, "node": "3"}) == 3
    assert leader_from_status({"role": "candidate", "leader": None, "node": "3"}) is None
    assert leader_from_status({}) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nemesis", "kill,foo"], "unknown nemesis foo"),
        (["--duration", "1"], "--duration must be"),
        (["--clients", "0"], "--clients must be"),
        (["--op-timeout", "0"], "--op-timeout must be"),
    ],
)
def test_bad_options_exit_2_before_anything_starts(tmp_path: Path, args: list[str], message: str) -> None:
    from click.testing import CliRunner

    from stalwart.drill._cli import command

    result = CliRunner().invoke(command, [*args, "--dir", str(tmp_path / "d")])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "d").exists()

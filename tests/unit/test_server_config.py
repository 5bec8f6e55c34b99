"""Parsing of the node's and the CLIs' configuration: clear ConfigErrors, exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from stalwart.client import Endpoints
from stalwart.client._cli import command as kv_command
from stalwart.client._protocol import pack_batch, unpack_batch
from stalwart.errors import ConfigError, DecodeError
from stalwart.sansio import NodeId
from stalwart.server import ServerConfig, load_cluster_key, parse_address, parse_members
from stalwart.server._cli_node import command as node_command

KEY = b"k" * 32


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("n1=127.0.0.1:1,n1=127.0.0.1:2", "twice"),
        ("n1127.0.0.1:1", "id=host:port"),
        ("=127.0.0.1:1", "id=host:port"),
        ("n1=127.0.0.1", "HOST:PORT"),
        ("n1=127.0.0.1:99999", "HOST:PORT"),
        ("n1=:80", "HOST:PORT"),
        ("~x=127.0.0.1:1", "reserved"),
        (",".join(f"n{i}=h:{i + 1}" for i in range(16)), "at most"),
    ],
)
def test_bad_member_lists_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_members(text)


def test_member_lists_and_addresses_parse() -> None:
    assert parse_members(" n1=127.0.0.1:1, n2=[::1]:2 ,") == {"n1": ("127.0.0.1", 1), "n2": ("::1", 2)}
    assert parse_address("localhost:0") == ("localhost", 0)


def test_the_cluster_key_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(b"  " + KEY + b"\n")
    assert load_cluster_key(str(key_file)) == KEY
    monkeypatch.setenv("STALWART_CLUSTER_KEY", "short")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        load_cluster_key(None)
    with pytest.raises(ConfigError, match="cannot read"):
        load_cluster_key(str(tmp_path / "missing"))


def _config(**kw: object) -> ServerConfig:
    base: dict[str, object] = dict(
        node_id=NodeId("n1"), members={NodeId("n1"): ("127.0.0.1", 1)}, listen=("127.0.0.1", 1),
        data_dir=Path("/tmp/x"), cluster_key=KEY,
    )  # fmt: skip
    base.update(kw)
    return ServerConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"node_id": NodeId("n9")}, "including this node"),
        ({"tick_ms": 0}, "tick-ms"),
        ({"election_ms": 20}, "election-ms"),
        ({"heartbeat_ms": 600}, "half"),
        ({"snapshot_every": 0}, "snapshot-every"),
    ],
)
def test_impossible_node_configurations_are_refused(kw: dict[str, object], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        _config(**kw)


def test_times_become_ticks() -> None:
    cfg = _config(tick_ms=10, election_ms=1000, heartbeat_ms=100)
    assert (cfg.election_ticks, cfg.heartbeat_ticks) == (100, 10)


def test_the_node_command_exits_2_on_a_bad_configuration(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--id", "n1", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0"]
    result = runner.invoke(
        node_command, [*base, "--peers", "n2=127.0.0.1:1"], env={"STALWART_CLUSTER_KEY": "k" * 32}
    )
    assert result.exit_code == 2 and "including this node" in result.output
    result = runner.invoke(
        node_command, [*base, "--peers", "n1=127.0.0.1:1"], env={"STALWART_CLUSTER_KEY": ""}
    )
    assert result.exit_code == 2 and "cluster key" in result.output
    result = runner.invoke(
        node_command, [*base, "--peers", "n1=nowhere"], env={"STALWART_CLUSTER_KEY": "k" * 32}
    )
    assert result.exit_code == 2 and "HOST:PORT" in result.output


def test_endpoints_come_from_a_cluster_dir_or_a_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cluster start"):
        Endpoints.from_dir(tmp_path)
    (tmp_path / "cluster.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a cluster description"):
        Endpoints.from_dir(tmp_path)
    (tmp_path / "cluster.key").write_bytes(KEY + b"\n")
    nodes = [{"id": "n1", "client": "127.0.0.1:5", "http": "127.0.0.1:6"}]
    (tmp_path / "cluster.json").write_text(
        json.dumps({"nodes": nodes, "key_file": str(tmp_path / "cluster.key")})
    )
    found = Endpoints.from_dir(tmp_path)
    assert found.client == ("127.0.0.1:5",) and found.http == ("127.0.0.1:6",) and found.cluster_key == KEY
    assert Endpoints.parse("a:1, b:2,").client == ("a:1", "b:2")
    with pytest.raises(ConfigError):
        Endpoints.parse(" , ")


def test_the_kv_command_exits_2_without_a_cluster_or_with_both_targets(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(kv_command, ["--dir", str(tmp_path), "get", "a"])
    assert result.exit_code == 2 and "cluster start" in result.output
    result = runner.invoke(kv_command, ["--dir", str(tmp_path), "--endpoints", "a:1", "get", "a"])
    assert result.exit_code == 2 and "not both" in result.output
    result = runner.invoke(kv_command, ["--endpoints", "a:1", "get", "a"], env={"STALWART_CLUSTER_KEY": ""})
    assert result.exit_code == 2 and "no cluster key" in result.output


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=20))
def test_batches_round_trip(items: list[bytes]) -> None:
    assert unpack_batch(pack_batch(items)) == items


@given(st.binary(max_size=64))
def test_malformed_batches_raise_decode_error_only(data: bytes) -> None:
    try:
        items = unpack_batch(data)
    except DecodeError:
        return
    assert pack_batch(items) == data, "what decodes is exactly a batch"


def test_a_data_dir_in_use_by_another_node_exits_4(tmp_path: Path) -> None:
    from stalwart.storage import NodeStorage

    holder = NodeStorage(tmp_path / "d")
    try:
        result = CliRunner().invoke(
            node_command,
            [
                "--id",
                "n1",
                "--peers",
                "n1=127.0.0.1:1",
                "--data-dir",
                str(tmp_path / "d"),
                "--listen",
                "127.0.0.1:0",
            ],
            env={"STALWART_CLUSTER_KEY": "k" * 32},
        )
    finally:
        holder.close()
    assert result.exit_code == 4 and "storage unusable" in result.output

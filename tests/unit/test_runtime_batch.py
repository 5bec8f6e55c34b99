"""The batch format inside an authenticated frame, and the demo CLI's option parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from stalwart.errors import ConfigError
from stalwart.runtime import PeerProtocolError, TransportConfig, pack_batch, unpack_batch
from stalwart.runtime._demo_cli import command, load_cluster_key, parse_address, parse_peers
from stalwart.runtime._errors import RuntimeConfigError


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=50))
def test_batches_round_trip(items: list[bytes]) -> None:
    assert unpack_batch(pack_batch(items), 50, 300) == items


@given(st.lists(st.binary(max_size=50), min_size=1, max_size=10), st.data())
def test_a_cut_batch_is_refused(items: list[bytes], data: st.DataObject) -> None:
    body = pack_batch(items)
    cut = data.draw(st.integers(1, len(body)))
    with pytest.raises(PeerProtocolError):
        unpack_batch(body[:-cut], 50, 50)


@given(st.binary(max_size=200))
def test_any_bytes_are_a_batch_of_bytes_or_a_protocol_error(body: bytes) -> None:
    try:
        items = unpack_batch(body, 10, 100)
    except PeerProtocolError:
        return
    assert isinstance(items, list) and 1 <= len(items) <= 10
    # Items that are not bytes are possible (ints, nil...): wire.decode refuses those.


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "malformed"),
        (b"\x92\xc4\x01a", "malformed"),  # an array of 2 with one item: truncated
        (pack_batch([b"a"]) + b"\x00", "trailing"),
        (pack_batch([b"x"] * 4), "malformed"),  # more than 3 messages
        (pack_batch([b"x" * 11]), "malformed"),  # an item over 10 bytes
        (pack_batch([]), "non-empty array"),
        (b"\x01", "non-empty array"),
        (b"\x81\x01\x02", "malformed"),  # a map
    ],
)
def test_malformed_batches_are_protocol_errors(body: bytes, reason: str) -> None:
    with pytest.raises(PeerProtocolError, match=reason):
        unpack_batch(body, 3, 10)


def test_transport_config_bounds() -> None:
    with pytest.raises(RuntimeConfigError):
        TransportConfig(max_frame_bytes=200_000)  # the default batch (256 KiB) would not fit
    with pytest.raises(RuntimeConfigError):
        TransportConfig(keepalive_ms=1000, idle_timeout_ms=1500)
    with pytest.raises(RuntimeConfigError):
        TransportConfig(max_frames_per_write=0)


def test_addresses_and_peers_parse() -> None:
    assert parse_address("127.0.0.1:7001") == ("127.0.0.1", 7001)
    assert parse_address("[::1]:7") == ("::1", 7)
    assert parse_peers("n2=127.0.0.1:2, n3=localhost:3") == {"n2": ("127.0.0.1", 2), "n3": ("localhost", 3)}
    assert parse_peers("") == {}
    for bad in ("7001", "host:", ":1", "h:99999", "h:x"):
        with pytest.raises(ConfigError):
            parse_address(bad)
    for bad in ("n2", "=h:1", "n2=h:1,n2=h:2"):
        with pytest.raises(ConfigError):
            parse_peers(bad)


def test_cluster_key_from_file_or_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(b"  file-key-0123456789abcdef\n")
    assert load_cluster_key(str(key_file)) == b"file-key-0123456789abcdef"
    monkeypatch.setenv("STALWART_CLUSTER_KEY", "env-key-0123456789abcdef")
    assert load_cluster_key(None) == b"env-key-0123456789abcdef"
    monkeypatch.setenv("STALWART_CLUSTER_KEY", "short")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        load_cluster_key(None)


def test_demo_node_refuses_to_start_without_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STALWART_CLUSTER_KEY", raising=False)
    args = ["--id", "n1", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d")]
    result = CliRunner().invoke(command, args)
    assert isinstance(result.exception, ConfigError)
    monkeypatch.setenv("STALWART_CLUSTER_KEY", "env-key-0123456789abcdef")
    result = CliRunner().invoke(command, [*args, "--peers", "n1=127.0.0.1:1"])
    assert isinstance(result.exception, ConfigError) and "itself" in str(result.exception)


def test_send_drops_and_counts_what_cannot_be_sent() -> None:
    from stalwart.gossip import TotalReply
    from stalwart.runtime import QueueLimits, Transport
    from stalwart.sansio import NodeId

    peer = NodeId("b")
    limits = QueueLimits(max_messages=2, batch_max_messages=1, batch_max_bytes=8)
    tiny = TransportConfig(max_frame_bytes=64 + 5 + 8, queue=limits)
    assert tiny.max_message_bytes == 8
    transport: Transport[object] = Transport(
        NodeId("a"),
        b"k" * 16,
        lambda s, m: None,
        (),
        listen=None,
        peers={peer: ("127.0.0.1", 1)},
        config=tiny,
    )
    transport.send(NodeId("nobody"), TotalReply(1, 1))
    assert transport.stats.drops_unroutable == 1
    transport.send(peer, TotalReply(1, 2**40))  # encodes to more than the 8 bytes a frame may carry
    assert transport.stats.drops_oversize == 1 and transport.queued(peer) == 0
    for i in range(5):
        transport.send(peer, TotalReply(i, i))
    assert transport.queued(peer) == 2 and transport.stats.drops_overflow == 3


def test_a_short_key_or_a_bad_node_id_is_refused_before_any_socket() -> None:
    from stalwart.runtime import Transport
    from stalwart.sansio import NodeId

    for key, node in ((b"short", "a"), (b"k" * 16, ""), (b"k" * 16, "x" * 300)):
        with pytest.raises(ConfigError):
            Transport(NodeId(node), key, lambda s, m: None, (), listen=None)


def test_wait_drained_waits_while_anything_is_queued() -> None:
    import asyncio

    from stalwart.gossip import TotalReply
    from stalwart.runtime import Transport
    from stalwart.sansio import NodeId

    async def scenario() -> None:
        peer = NodeId("b")
        t: Transport[object] = Transport(
            NodeId("a"), b"k" * 16, lambda s, m: None, (), listen=None, peers={peer: ("127.0.0.1", 1)}
        )
        await asyncio.wait_for(t.wait_drained(peer), 1)  # nothing queued: returns at once
        t.send(peer, TotalReply(1, 1))  # nobody writes it (not even started)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(t.wait_drained(peer), 0.1)

    asyncio.run(scenario())

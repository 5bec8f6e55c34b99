"""Frame authentication: key proof, per-direction session keys, replay/reorder/tamper detection."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.errors import ConfigError
from stalwart.wire import (
    MAC_BYTES,
    PROTOCOL_VERSION,
    AuthenticationError,
    AuthSession,
    Handshake,
    Hello,
    encode,
)
from stalwart.wire._auth import _hello_mac
from tests.unit.test_wire_samples import One

KEY = b"k" * 32
OTHER_KEY = b"K" * 32


def pair(
    key_a: bytes = KEY, key_b: bytes = KEY, nonce_a: bytes = b"a" * 32, nonce_b: bytes = b"b" * 32
) -> tuple[AuthSession, AuthSession]:
    a = Handshake(key_a, "node-a", nonce_a, initiator=True)
    b = Handshake(key_b, "node-b", nonce_b, initiator=False)
    return a.receive_hello(b.hello()), b.receive_hello(a.hello())


def test_round_trip_both_directions() -> None:
    sa, sb = pair()
    assert (sa.peer_id, sb.peer_id) == ("node-b", "node-a")
    assert (sa.verified, sb.verified) == (False, False)
    for i in range(50):
        payload = f"frame {i}".encode()
        sealed = sa.seal(payload)
        assert len(sealed) == len(payload) + MAC_BYTES
        assert sb.open(sealed) == payload
        assert sa.open(sb.seal(payload[::-1])) == payload[::-1]
    assert (sa.verified, sb.verified) == (True, True)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_any_payloads_in_order(payloads: list[bytes]) -> None:
    sa, sb = pair()
    assert [sb.open(sa.seal(p)) for p in payloads] == payloads


def test_wrong_cluster_key_is_refused_by_both_sides() -> None:
    a = Handshake(KEY, "node-a", b"a" * 32, initiator=True)
    b = Handshake(OTHER_KEY, "node-b", b"b" * 32, initiator=False)
    with pytest.raises(AuthenticationError, match="fails the cluster key check"):
        b.receive_hello(a.hello())
    with pytest.raises(AuthenticationError, match="fails the cluster key check"):
        a.receive_hello(b.hello())


def test_every_tampered_byte_of_a_hello_is_refused() -> None:
    hello = Handshake(KEY, "node-a", b"a" * 32, initiator=True).hello()
    for i in range(len(hello)):
        for flip in (0x01, 0x80):
            forged = bytearray(hello)
            forged[i] ^= flip
            b = Handshake(KEY, "node-b", b"b" * 32, initiator=False)
            with pytest.raises(AuthenticationError):
                b.receive_hello(bytes(forged))


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", b"\x00" * 2000, encode(One(1)), b"\x91" * 10_000, b"\x96\x01\x01" + b"\xc0" * 4],
)
def test_malformed_hellos_are_authentication_errors(payload: bytes) -> None:
    b = Handshake(KEY, "node-b", b"b" * 32, initiator=False)
    with pytest.raises(AuthenticationError, match="malformed hello"):
        b.receive_hello(payload)


def test_a_hello_with_another_version_is_refused_even_with_a_good_mac() -> None:
    mac = _hello_mac(KEY, PROTOCOL_VERSION + 1, "node-a", b"a" * 32, True)
    hello = encode(Hello(PROTOCOL_VERSION + 1, "node-a", b"a" * 32, True, mac))
    with pytest.raises(AuthenticationError, match="protocol version"):
        Handshake(KEY, "node-b", b"b" * 32, initiator=False).receive_hello(hello)


def test_a_short_nonce_with_a_good_mac_is_refused() -> None:
    mac = _hello_mac(KEY, PROTOCOL_VERSION, "node-a", b"a" * 8, True)
    hello = encode(Hello(PROTOCOL_VERSION, "node-a", b"a" * 8, True, mac))
    with pytest.raises(AuthenticationError, match="short nonce"):
        Handshake(KEY, "node-b", b"b" * 32, initiator=False).receive_hello(hello)


def test_reflected_hellos_are_refused() -> None:
    a = Handshake(KEY, "node-a", b"a" * 32, initiator=True)
    with pytest.raises(AuthenticationError, match="same role"):
        a.receive_hello(a.hello())
    twin = Handshake(KEY, "node-b", b"a" * 32, initiator=False)
    with pytest.raises(AuthenticationError, match="nonce equals ours"):
        twin.receive_hello(a.hello())


def test_receive_hello_only_once() -> None:
    a = Handshake(KEY, "node-a", b"a" * 32, initiator=True)
    b = Handshake(KEY, "node-b", b"b" * 32, initiator=False)
    a.receive_hello(b.hello())
    with pytest.raises(AuthenticationError, match="twice"):
        a.receive_hello(b.hello())


def test_tampered_frames_are_refused_and_poison_the_session() -> None:
    sealed_frames = []
    sa, _ = pair()
    sealed = sa.seal(b"transfer 10 to alice")
    for i in range(len(sealed)):
        forged = bytearray(sealed)
        forged[i] ^= 0x01
        sealed_frames.append(bytes(forged))
    for forged_frame in sealed_frames:
        _, sb = pair()
        with pytest.raises(AuthenticationError, match="fails authentication"):
            sb.open(forged_frame)
        # The genuine frame no longer opens either: the stream cannot be trusted.
        with pytest.raises(AuthenticationError, match="already failed"):
            sb.open(sealed)


def test_replayed_frame_is_refused() -> None:
    sa, sb = pair()
    first = sa.seal(b"one")
    assert sb.open(first) == b"one"
    with pytest.raises(AuthenticationError):
        sb.open(first)


def test_reordered_frames_are_refused() -> None:
    sa, sb = pair()
    first, second = sa.seal(b"one"), sa.seal(b"two")
    with pytest.raises(AuthenticationError):
        sb.open(second)
    with pytest.raises(AuthenticationError):
        sb.open(first)


def test_dropped_frame_is_noticed() -> None:
    sa, sb = pair()
    sa.seal(b"lost")
    with pytest.raises(AuthenticationError):
        sb.open(sa.seal(b"after the loss"))


def test_a_frame_reflected_back_to_its_sender_is_refused() -> None:
    sa, _ = pair()
    with pytest.raises(AuthenticationError):
        sa.open(sa.seal(b"echo"))


def test_truncated_mac_is_refused() -> None:
    sa, sb = pair()
    sealed = sa.seal(b"payload")
    with pytest.raises(AuthenticationError):
        sb.open(sealed[:-1])
    _, sb = pair()
    with pytest.raises(AuthenticationError, match="shorter than its MAC"):
        sb.open(sealed[: MAC_BYTES - 1])


def test_a_recorded_session_cannot_be_replayed_into_a_new_one() -> None:
    # Session 1, recorded by an eavesdropper: a's hello and a's frames.
    a1 = Handshake(KEY, "node-a", b"a" * 32, initiator=True)
    b1 = Handshake(KEY, "node-b", b"b" * 32, initiator=False)
    sa1 = a1.receive_hello(b1.hello())
    b1.receive_hello(a1.hello())
    recorded_hello, recorded_frames = a1.hello(), [sa1.seal(b"delete everything"), sa1.seal(b"again")]
    # Session 2: the attacker replays a's hello to b, who picked a fresh nonce.
    b2 = Handshake(KEY, "node-b", b"c" * 32, initiator=False)
    sb2 = b2.receive_hello(recorded_hello)  # the hello's MAC is genuine...
    assert sb2.peer_id == "node-a"
    assert not sb2.verified  # ...but only claimed: nothing from the peer has opened yet
    with pytest.raises(AuthenticationError):
        sb2.open(recorded_frames[0])  # the session keys depend on b's new nonce
    assert not sb2.verified


def test_sessions_with_different_nonces_have_unrelated_keys() -> None:
    sa1, _ = pair(nonce_b=b"b" * 32)
    _, sb2 = pair(nonce_b=b"c" * 32)
    with pytest.raises(AuthenticationError):
        sb2.open(sa1.seal(b"x"))


@pytest.mark.parametrize(
    ("key", "node_id", "nonce"),
    [
        (b"short", "n", b"n" * 32),
        ("k" * 32, "n", b"n" * 32),
        (KEY, "", b"n" * 32),
        (KEY, "x" * 256, b"n" * 32),
        (KEY, "n", b"n" * 15),
        (KEY, "n", b"n" * 65),
        (KEY, "n", "n" * 32),
    ],
)
def test_bad_handshake_parameters_are_config_errors(key: object, node_id: object, nonce: object) -> None:
    with pytest.raises(ConfigError):
        Handshake(key, node_id, nonce, initiator=True)  # type: ignore[arg-type]


def test_sealing_follows_the_documented_construction() -> None:
    # Recomputed here with the plain hmac module, from docs/wire.md, as an independent check.
    def lp(*parts: bytes) -> bytes:
        return b"".join(len(p).to_bytes(4, "big") + p for p in parts)

    transcript = lp(b"node-a", b"a" * 32, b"node-b", b"b" * 32)
    prk = hmac.digest(KEY, b"stalwart/v1 session\x00" + transcript, "sha256")
    i_to_r = hmac.digest(prk, b"initiator->responder", "sha256")
    r_to_i = hmac.digest(prk, b"responder->initiator", "sha256")
    sa, sb = pair()
    for seq, payload in enumerate([b"first", b"", b"third" * 50]):
        mac = hmac.digest(i_to_r, seq.to_bytes(8, "big") + payload, "sha256")[:MAC_BYTES]
        assert sa.seal(payload) == payload + mac
        mac = hmac.digest(r_to_i, seq.to_bytes(8, "big") + payload, "sha256")[:MAC_BYTES]
        assert sb.seal(payload) == payload + mac

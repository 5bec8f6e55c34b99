"""Frame authentication with a shared cluster key: a hello exchange, then a MAC on every frame.

Each side sends :meth:`Handshake.hello` as its first frame and passes the peer's first frame to
:meth:`Handshake.receive_hello`, which checks that the peer holds the cluster key and returns an
:class:`AuthSession`. Session keys come from the cluster key and *both* nonces, so frames
recorded from one connection are worthless in any other; every sealed frame carries a MAC over
a per-direction sequence number, so within a connection a frame cannot be replayed, dropped or
reordered without the next :meth:`AuthSession.open` failing. See docs/wire.md for the threat
model (no confidentiality: use TLS or a private network when traffic must stay secret).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated, Protocol

from stalwart.errors import AuthenticationError, ConfigError, DecodeError
from stalwart.wire._codec import PROTOCOL_VERSION, decode_as, encode
from stalwart.wire._limits import Limits, MaxLen
from stalwart.wire._registry import message

MAC_BYTES = 16  # HMAC-SHA256 truncated to 128 bits (as RFC 4868 does for IPsec)
MIN_KEY_BYTES = 16
MIN_NONCE_BYTES = 16
MAX_NONCE_BYTES = 64
MAX_NODE_ID_CHARS = 255
MAX_SEQUENCE = 2**64 - 1


class _Mac(Protocol):
    def copy(self) -> _Mac: ...

    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


# An HMAC-SHA256 object with the key already absorbed; each frame copy()s it. OpenSSL's HMAC
# object straight from _hashlib (what hmac.new wraps) is a quarter cheaper per frame than the
# pure-Python hmac.HMAC wrapper; hmac.new is the fallback where _hashlib is missing.
try:
    from _hashlib import hmac_new as _openssl_hmac_new

    def _keyed_sha256(key: bytes) -> _Mac:
        return _openssl_hmac_new(key, digestmod="sha256")

except ImportError:  # CPython built without OpenSSL, or another interpreter

    def _keyed_sha256(key: bytes) -> _Mac:
        return hmac.new(key, digestmod=hashlib.sha256)


HELLO_LIMITS = Limits(max_message_bytes=1024, max_str_bytes=1024, max_bin_bytes=64, max_collection_len=8)
_HELLO_LABEL = b"stalwart/v1 hello\x00"
_SESSION_LABEL = b"stalwart/v1 session\x00"


@message(1)
@dataclass(frozen=True, slots=True)
class Hello:
    """The first frame each side sends. ``mac`` proves the sender holds the cluster key."""

    version: int
    node_id: Annotated[str, MaxLen(MAX_NODE_ID_CHARS)]
    nonce: Annotated[bytes, MaxLen(MAX_NONCE_BYTES)]
    initiator: bool
    mac: Annotated[bytes, MaxLen(32)]


def _length_prefixed(*parts: bytes) -> bytes:
    # Unambiguous concatenation: no two different part lists give the same bytes.
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _hello_mac(key: bytes, version: int, node_id: str, nonce: bytes, initiator: bool) -> bytes:
    body = _length_prefixed(
        version.to_bytes(8, "big"), node_id.encode("utf-8"), nonce, b"\x01" if initiator else b"\x00"
    )
    return hmac.digest(key, _HELLO_LABEL + body, "sha256")


class Handshake:
    """One side of the hello exchange on one connection; ``nonce`` must be fresh and random.

    The package is pure, so the host supplies the nonce (``os.urandom(32)``). ``initiator`` is
    True on the side that opened the connection; the two sides must disagree on it.
    """

    __slots__ = ("_done", "_hello", "_key", "initiator", "node_id", "nonce")

    def __init__(self, cluster_key: bytes, node_id: str, nonce: bytes, initiator: bool) -> None:
        if not isinstance(cluster_key, bytes) or len(cluster_key) < MIN_KEY_BYTES:
            raise ConfigError(f"the cluster key must be at least {MIN_KEY_BYTES} bytes")
        if not isinstance(nonce, bytes) or not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
            raise ConfigError(f"the nonce must be {MIN_NONCE_BYTES}..{MAX_NONCE_BYTES} random bytes")
        if not isinstance(node_id, str) or not 1 <= len(node_id) <= MAX_NODE_ID_CHARS:
            raise ConfigError(f"the node id must be a str of 1..{MAX_NODE_ID_CHARS} characters")
        self._key, self.node_id, self.nonce, self.initiator = cluster_key, node_id, nonce, bool(initiator)
        mac = _hello_mac(cluster_key, PROTOCOL_VERSION, node_id, nonce, self.initiator)
        self._hello = encode(Hello(PROTOCOL_VERSION, node_id, nonce, self.initiator, mac))
        self._done = False

    def hello(self) -> bytes:
        """The payload of the first frame to send."""
        return self._hello

    def receive_hello(self, payload: bytes) -> AuthSession:
        """Check the peer's hello; :class:`AuthenticationError` unless it proves the cluster key.

        Call it once per handshake. The returned session's ``peer_id`` is what the peer claims;
        it is proven once the first frame from the peer opens (``AuthSession.verified``).
        """
        if self._done:
            raise AuthenticationError("receive_hello called twice on one handshake")
        self._done = True
        try:
            peer = decode_as(payload, Hello, limits=HELLO_LIMITS)
        except DecodeError as exc:
            raise AuthenticationError(f"malformed hello: {exc}") from None
        if peer.version != PROTOCOL_VERSION:
            raise AuthenticationError(f"peer speaks protocol version {peer.version}, not {PROTOCOL_VERSION}")
        expected = _hello_mac(self._key, peer.version, peer.node_id, peer.nonce, peer.initiator)
        if not hmac.compare_digest(expected, peer.mac):
            raise AuthenticationError(f"hello from {peer.node_id!r} fails the cluster key check")
        if len(peer.nonce) < MIN_NONCE_BYTES or not peer.node_id:
            raise AuthenticationError("hello with a short nonce or an empty node id")
        if peer.initiator == self.initiator:
            raise AuthenticationError("both sides claim the same role (a reflected hello?)")
        if hmac.compare_digest(peer.nonce, self.nonce):
            raise AuthenticationError("the peer's nonce equals ours (a reflected hello?)")
        return self._session(peer)

    def _session(self, peer: Hello) -> AuthSession:
        if self.initiator:
            i_id, i_nonce, r_id, r_nonce = self.node_id, self.nonce, peer.node_id, peer.nonce
        else:
            i_id, i_nonce, r_id, r_nonce = peer.node_id, peer.nonce, self.node_id, self.nonce
        transcript = _length_prefixed(i_id.encode("utf-8"), i_nonce, r_id.encode("utf-8"), r_nonce)
        # HKDF-style: one pseudo-random key bound to both nonces, then one key per direction.
        prk = hmac.digest(self._key, _SESSION_LABEL + transcript, "sha256")
        i_to_r = hmac.digest(prk, b"initiator->responder", "sha256")
        r_to_i = hmac.digest(prk, b"responder->initiator", "sha256")
        send, receive = (i_to_r, r_to_i) if self.initiator else (r_to_i, i_to_r)
        return AuthSession(peer.node_id, send, receive)


class AuthSession:
    """Seals outgoing and opens incoming frame payloads of one authenticated connection.

    ``seal(p)`` is ``p`` followed by a 16-byte MAC over (sequence number, p); the sequence
    number is implicit, counted by both sides. Any failure poisons the session: the stream can
    no longer be trusted and the host must drop the connection.
    """

    __slots__ = ("_failed", "_receive", "_receive_seq", "_send", "_send_seq", "peer_id", "verified")

    def __init__(self, peer_id: str, send_key: bytes, receive_key: bytes) -> None:
        self.peer_id = peer_id
        self.verified = False  # True once a frame from the peer has opened: it holds the key now
        self._send = _keyed_sha256(send_key)
        self._receive = _keyed_sha256(receive_key)
        self._send_seq = 0
        self._receive_seq = 0
        self._failed: str | None = None

    def seal(self, payload: bytes) -> bytes:
        """``payload`` with its MAC appended; the next frame to send on this connection."""
        seq = self._send_seq
        if seq >= MAX_SEQUENCE:  # never in practice; a wrapped counter would allow replays
            raise AuthenticationError("sequence numbers exhausted: reconnect")
        self._send_seq = seq + 1
        mac = self._send.copy()
        mac.update(seq.to_bytes(8, "big"))
        mac.update(payload)
        return bytes(payload) + mac.digest()[:MAC_BYTES]

    def open(self, sealed: bytes) -> bytes:
        """The payload of the next frame from the peer; :class:`AuthenticationError` if forged,
        replayed, reordered, truncated, or if an earlier frame failed."""
        if self._failed is not None:
            raise AuthenticationError(f"session with {self.peer_id!r} already failed: {self._failed}")
        if len(sealed) < MAC_BYTES:
            self._failed = "frame shorter than its MAC"
            raise AuthenticationError(f"frame from {self.peer_id!r} is shorter than its MAC")
        view = memoryview(sealed)
        payload = view[:-MAC_BYTES]
        mac = self._receive.copy()
        mac.update(self._receive_seq.to_bytes(8, "big"))
        mac.update(payload)
        if not hmac.compare_digest(mac.digest()[:MAC_BYTES], view[-MAC_BYTES:]):
            self._failed = f"bad MAC on frame {self._receive_seq}"
            raise AuthenticationError(
                f"frame {self._receive_seq} from {self.peer_id!r} fails authentication "
                "(forged, replayed, reordered, dropped or wrong key)"
            )
        self._receive_seq += 1
        self.verified = True
        return payload.tobytes()

"""Messages, client requests and outputs of the replicated register, and the log entry codec."""

from __future__ import annotations

from dataclasses import dataclass

from stalwart.errors import DecodeError, ProtocolError
from stalwart.sansio import NodeId

MAX_ENTRIES_PER_MESSAGE = 64
"""A Replicate message carries at most this many entries (a bound on every batch)."""


class RequestError(ProtocolError):
    """A client request was malformed or cannot be served now; nothing changed."""


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """``read`` (value None), ``write`` (value int) or ``cas`` (value ``(old, new)``)."""

    request_id: int
    f: str
    value: object = None


@dataclass(frozen=True, slots=True)
class ClientReply:
    """The answer to ``request_id``: outcome ``ok``/``fail``/``redirect``; ``value`` for reads."""

    request_id: int
    outcome: str
    value: int | None = None
    leader_hint: NodeId | None = None


@dataclass(frozen=True, slots=True)
class Replicate:
    """Primary to backup: entries ``start, start+1, ...`` and the primary's commit index.

    With no entries it is a heartbeat that asks the backup for its last index.
    """

    start: int
    entries: tuple[bytes, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class Ack:
    """Backup to primary: every entry through ``last`` is durable here."""

    last: int


@dataclass(frozen=True, slots=True)
class Committed:
    """Output: this node applied entry ``index`` (for the simulator's agreement invariant)."""

    index: int
    entry: bytes


RegisterMessage = Replicate | Ack
RegisterInput = Replicate | Ack | ClientRequest
RegisterOutput = ClientReply | Committed


@dataclass(frozen=True, slots=True)
class Entry:
    """One logged update: ``write v`` or ``cas old new``, and who asked."""

    f: str
    old: int | None
    new: int | None
    client: str
    request_id: int

    def encode(self) -> bytes:
        def show(v: int | None) -> str:
            return "~" if v is None else str(v)

        return f"{self.f} {show(self.old)} {show(self.new)} {self.client} {self.request_id}".encode()

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        def parse(s: str) -> int | None:
            return None if s == "~" else int(s)

        try:
            f, old, new, client, rid = data.decode("ascii").split(" ")
            if f not in ("write", "cas"):
                raise ValueError(f"unknown entry kind {f!r}")
            return cls(f, parse(old), parse(new), client, int(rid))
        except (UnicodeDecodeError, ValueError) as exc:
            raise DecodeError(f"bad register log entry {data[:40]!r}: {exc}") from None


def validate_request(source: NodeId, req: ClientRequest) -> Entry | None:
    """The entry a write/cas request logs, None for a read; RequestError if it is malformed."""
    if " " in source or not source:
        raise RequestError(f"bad client name {source!r}")
    match req.f:
        case "read":
            return None
        case "write":
            if not _is_value(req.value) or req.value is None:
                raise RequestError(f"write needs an integer value, got {req.value!r}")
            return Entry("write", None, req.value, source, req.request_id)  # type: ignore[arg-type]
        case "cas":
            pair = req.value
            if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(map(_is_value, pair))):
                raise RequestError(f"cas needs an (old, new) pair of integers, got {pair!r}")
            return Entry("cas", pair[0], pair[1], source, req.request_id)
        case _:
            raise RequestError(f"unknown operation {req.f!r}")


def _is_value(v: object) -> bool:
    return v is None or (type(v) is int and -(2**62) < v < 2**62)

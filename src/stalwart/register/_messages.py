"""Messages, client requests and outputs of the replicated register, and the log entry codec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from stalwart.errors import DecodeError, ProtocolError
from stalwart.sansio import NodeId
from stalwart.wire import Bounds, MaxLen, message

MAX_ENTRIES_PER_MESSAGE = 64
"""A Replicate message carries at most this many entries (a bound on every batch)."""
MAX_VALUE = 2**62
"""Register values are integers in ``(-MAX_VALUE, MAX_VALUE)``."""
MAX_INDEX = 2**63 - 1
MAX_ENTRY_BYTES = 512
"""An encoded log entry is short text; anything longer is refused on the wire."""


class RequestError(ProtocolError):
    """A client request was malformed or cannot be served now; nothing changed."""


Value = Annotated[int, Bounds(-MAX_VALUE + 1, MAX_VALUE - 1)]
Index = Annotated[int, Bounds(0, MAX_INDEX)]
RequestId = Annotated[int, Bounds(0, MAX_INDEX)]


@message(200)
@dataclass(frozen=True, slots=True)
class ClientRequest:
    """``read`` (no args), ``write`` (args ``(value,)``) or ``cas`` (args ``(old, new)``).

    A cas may compare with ``None``: the register before its first write.
    """

    request_id: RequestId
    f: Annotated[str, MaxLen(8)]
    args: Annotated[tuple[Value | None, ...], MaxLen(2)] = ()


@message(201)
@dataclass(frozen=True, slots=True)
class ClientReply:
    """The answer to ``request_id``: outcome ``ok``/``fail``/``redirect``; ``value`` for reads."""

    request_id: RequestId
    outcome: Annotated[str, MaxLen(8)]
    value: Value | None = None
    leader_hint: Annotated[str, MaxLen(255)] | None = None


@message(202)
@dataclass(frozen=True, slots=True)
class Replicate:
    """Primary to backup: entries ``start, start+1, ...`` and the primary's commit index.

    With no entries it is a heartbeat that asks the backup for its last index.
    """

    start: Index
    entries: Annotated[tuple[Annotated[bytes, MaxLen(MAX_ENTRY_BYTES)], ...], MaxLen(MAX_ENTRIES_PER_MESSAGE)]
    commit: Index


@message(203)
@dataclass(frozen=True, slots=True)
class Ack:
    """Backup to primary: every entry through ``last`` is durable here."""

    last: Index


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
    args = req.args
    if not all(_is_value(v) for v in args):
        raise RequestError(f"{req.f} arguments must be integers in range, got {args!r}")
    match req.f, len(args):
        case "read", 0:
            return None
        case "write", 1 if args[0] is not None:
            return Entry("write", None, args[0], source, req.request_id)
        case "cas", 2:
            return Entry("cas", args[0], args[1], source, req.request_id)
        case _:
            raise RequestError(f"bad request {req.f!r} with arguments {args!r}")


def _is_value(v: object) -> bool:
    return v is None or (type(v) is int and -MAX_VALUE < v < MAX_VALUE)

"""Decision-log records: the only state a coordinator keeps on disk.

Presumed abort: the coordinator force-writes a COMMIT record (with the participant list) before
phase 2 and an END record after every participant acknowledged. Nothing is written for an
abort: a transaction without a COMMIT record is aborted, which is what recovery presumes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgpack

from stalwart.errors import DecodeError
from stalwart.txn.twopc._messages import TxId

RECORD_VERSION = 1
MAX_PARTICIPANTS = 64
MAX_ID_CHARS = 200


class RecordKind(enum.IntEnum):
    COMMIT = 1
    END = 2


@dataclass(frozen=True, slots=True)
class LogRecord:
    kind: RecordKind
    txid: TxId
    participants: tuple[str, ...] = ()

    def encode(self) -> bytes:
        data = msgpack.packb([RECORD_VERSION, int(self.kind), self.txid, list(self.participants)])
        assert isinstance(data, bytes)
        return data

    @staticmethod
    def decode(data: bytes) -> LogRecord:
        try:
            obj = msgpack.unpackb(data, use_list=True, raw=False, max_str_len=4096, max_array_len=256)
        except Exception as exc:  # msgpack raises several unrelated types on bad input
            raise DecodeError(f"bad decision-log record: {exc}") from None
        if not (isinstance(obj, list) and len(obj) == 4 and obj[0] == RECORD_VERSION):
            raise DecodeError("bad decision-log record: wrong shape or version")
        _, kind, txid, parts = obj
        if kind not in (1, 2) or isinstance(kind, bool) or not isinstance(txid, str):
            raise DecodeError("bad decision-log record: kind or txid")
        if not (isinstance(parts, list) and len(parts) <= MAX_PARTICIPANTS):
            raise DecodeError("bad decision-log record: participants")
        if not all(isinstance(p, str) and len(p) <= MAX_ID_CHARS for p in parts) or len(txid) > MAX_ID_CHARS:
            raise DecodeError("bad decision-log record: participant or txid too long")
        return LogRecord(RecordKind(kind), TxId(txid), tuple(parts))

"""Wire codec throughput: stalwart.wire against bare msgpack on the same tuple (the floor).

Run: .venv/bin/python -m bench.bench_wire [--seconds 0.3] [--repeats 5]

Every figure is operations per second, the median of ``--repeats`` timed runs, each running the
operation for about ``--seconds`` of CPU time (``time.process_time``: this process's own CPU
seconds, so other load on a shared machine skews the figures less than wall time would).

The small message is a 4-field heartbeat-sized record
(two ints, a short str, 32 bytes); the "bare msgpack" rows pack and unpack the very tuple the
wire envelope holds, ``(version, tag, seq, term, sender, payload)``, with no validation, so the
ratio is the price of typing and validation. The batch rows decode 1000 such messages from one
batch (``decode_many``: one unpack for the batch) against ``decode`` of each message's bytes and
against a bare unpackb of the same batch, per message. Seal/open is the per-frame HMAC of an
authenticated connection; framing is encode_frame + FrameDecoder.feed of 100 frames at a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import msgpack

from stalwart.wire import (
    PROTOCOL_VERSION,
    FrameDecoder,
    Handshake,
    MaxLen,
    decode,
    decode_many,
    encode,
    encode_frame,
    encode_many,
    join_encoded,
    message,
)


@message(999)
@dataclass(frozen=True, slots=True)
class BenchPing:
    seq: int
    term: int
    sender: str
    payload: bytes


@message(998)
@dataclass(frozen=True, slots=True)
class BenchEntries:
    term: int
    leader: Annotated[str, MaxLen(64)]
    entries: tuple[tuple[int, bytes], ...]
    voters: frozenset[str]
    ack: BenchPing | None


def _rate(op: Callable[[], object], seconds: float, repeats: int) -> float:
    n = 1
    while True:  # calibrate a batch size that takes about `seconds`
        start = time.process_time()
        for _ in range(n):
            op()
        took = time.process_time() - start
        if took >= seconds / 4:
            break
        n *= 2
    n = max(1, int(n * seconds / took))
    rates = []
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(n):
            op()
        rates.append(n / (time.process_time() - start))
    return statistics.median(rates)


BATCH = 1000


def _batch_rows(ping: BenchPing, secs: float, reps: int) -> list[tuple[str, float, float | None]]:
    """Per-message rates of a batch of BATCH small messages (the runtime's batch path)."""
    msgs = [BenchPing(ping.seq + i, ping.term, ping.sender, ping.payload) for i in range(BATCH)]
    items = [encode(m) for m in msgs]
    batch = join_encoded(items)
    assert decode_many(batch) == msgs and encode_many(msgs) == batch
    unpackb = msgpack.unpackb
    floor = BATCH * _rate(lambda: unpackb(batch), secs, reps)
    one_by_one = BATCH * _rate(lambda: [decode(item) for item in items], secs, reps)
    many = BATCH * _rate(lambda: decode_many(batch), secs, reps)
    enc_many = BATCH * _rate(lambda: encode_many(msgs), secs, reps)
    return [
        (f"bare msgpack unpackb of a batch of {BATCH}, per msg", floor, None),
        ("wire decode one by one, per msg", one_by_one, one_by_one / floor),
        ("wire decode_many, per msg", many, many / floor),
        ("wire encode_many, per msg", enc_many, None),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    secs, reps = args.seconds, args.repeats

    ping = BenchPing(123456, 42, "node-7", os.urandom(32))
    data = encode(ping)
    as_tuple = (PROTOCOL_VERSION, 999, ping.seq, ping.term, ping.sender, ping.payload)
    raw = msgpack.packb(as_tuple)
    assert raw == data, "the benchmark must compare like with like: same bytes on the wire"
    assert decode(data) == ping
    packer = msgpack.Packer()
    unpackb = msgpack.unpackb

    def wire_roundtrip() -> object:
        return decode(encode(ping))

    def msgpack_roundtrip() -> object:
        return unpackb(msgpack.packb(as_tuple))

    def msgpack_packer_roundtrip() -> object:
        return unpackb(packer.pack(as_tuple))

    rows: list[tuple[str, float, float | None]] = []
    floor = _rate(msgpack_roundtrip, secs, reps)
    rows.append(("bare msgpack packb+unpackb (floor)", floor, None))
    rows.append(("bare msgpack reused Packer+unpackb", _rate(msgpack_packer_roundtrip, secs, reps), None))
    rt = _rate(wire_roundtrip, secs, reps)
    rows.append(("wire encode+decode (small)", rt, rt / floor))
    packb_rate = _rate(lambda: msgpack.packb(as_tuple), secs, reps)
    rows.append(("bare msgpack packb", packb_rate, None))
    rows.append(("wire encode (small)", _rate(lambda: encode(ping), secs, reps), None))
    rows[-1] = (rows[-1][0], rows[-1][1], rows[-1][1] / packb_rate)
    unpackb_rate = _rate(lambda: unpackb(data), secs, reps)
    rows.append(("bare msgpack unpackb", unpackb_rate, None))
    rows.append(("wire decode (small)", _rate(lambda: decode(data), secs, reps), None))
    rows[-1] = (rows[-1][0], rows[-1][1], rows[-1][1] / unpackb_rate)

    rows.extend(_batch_rows(ping, secs, reps))

    entries = BenchEntries(7, "node-1", tuple((i, b"x" * 16) for i in range(10)), frozenset("abc"), ping)
    edata = encode(entries)
    eraw = msgpack.unpackb(edata)
    efloor = _rate(lambda: unpackb(msgpack.packb(eraw)), secs, reps)
    rows.append(("bare msgpack packb+unpackb (10 entries)", efloor, None))
    erate = _rate(lambda: decode(encode(entries)), secs, reps)
    rows.append(("wire encode+decode (10 entries)", erate, erate / efloor))

    a = Handshake(b"k" * 32, "a", b"a" * 32, True)
    b = Handshake(b"k" * 32, "b", b"b" * 32, False)
    sa, sb = a.receive_hello(b.hello()), b.receive_hello(a.hello())
    rows.append(("seal+open (small)", _rate(lambda: sb.open(sa.seal(data)), secs, reps), None))

    frames = b"".join(encode_frame(data) for _ in range(100))
    dec = FrameDecoder()
    rows.append(("frame feed, per frame (100/feed)", 100 * _rate(lambda: dec.feed(frames), secs, reps), None))

    print(f"python {sys.version.split()[0]}, msgpack {msgpack.version}, small message {len(data)} bytes")
    print(f"{'operation':<40} {'ops/s':>12} {'vs bare':>9}")
    for name, rate, ratio in rows:
        print(f"{name:<40} {rate:>12,.0f} {'' if ratio is None else f'{ratio:.0%}':>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

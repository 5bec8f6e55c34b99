"""Long-running fuzz target for stalwart.wire (atheris/libFuzzer; pure-Python fallback).

    .venv/bin/python fuzz/fuzz_wire.py --make-corpus fuzz/corpus      # once: seed inputs
    .venv/bin/python fuzz/fuzz_wire.py fuzz/corpus -max_total_time=14400 -jobs=2 -workers=2

The property: for ANY input, decode() returns a registered message (which re-encodes to bytes
that decode to an equal message) or raises DecodeError; the frame decoder returns frames or
raises DecodeError; receive_hello and AuthSession.open raise only AuthenticationError. Anything
else is a crash, and libFuzzer saves the input as crash-<sha1> for replay:

    .venv/bin/python fuzz/fuzz_wire.py crash-<sha1>

Without atheris (``pip install atheris``), ``--fallback SECONDS`` runs a seeded random
mutation loop over the same property instead. See fuzz/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import pathlib
import random
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

try:
    import atheris
except ImportError:  # the fallback loop below needs no instrumentation
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["stalwart", "msgpack"]):
        from stalwart import wire
        from tests.unit import test_wire_samples as samples
else:
    from stalwart import wire
    from tests.unit import test_wire_samples as samples

KEY = b"fuzz-cluster-key-0123456789abcdef"
TIGHT = wire.Limits(
    max_message_bytes=4096, max_str_bytes=64, max_bin_bytes=64, max_collection_len=16, max_depth=4
)


def check_decode(data: bytes, limits: wire.Limits) -> None:
    try:
        msg = wire.decode(data, limits=limits)
    except wire.DecodeError:
        return
    again = wire.encode(msg)  # anything decode accepts, encode must accept
    assert wire.encode(wire.decode(again)) == again, data.hex()


def check_batch(data: bytes) -> None:
    """decode_many: a list of messages that encode_many gives back byte for byte, or DecodeError."""
    try:
        msgs = wire.decode_many(data)
    except wire.DecodeError:
        return
    again = wire.encode_many(msgs)
    assert wire.encode_many(wire.decode_many(again)) == again, data.hex()


def check_frames(data: bytes) -> None:
    if not data:
        return
    decoder = wire.FrameDecoder(max_frame_bytes=data[0] * 16)
    pos, step = 1, 1
    try:
        while pos < len(data):
            for frame in decoder.feed(data[pos : pos + step]):
                check_decode(frame, wire.DEFAULT_LIMITS)
            pos += step
            step = step % 13 + 1
    except wire.DecodeError:
        assert decoder.poisoned


def check_auth(data: bytes) -> None:
    responder = wire.Handshake(KEY, "responder", b"r" * 32, initiator=False)
    with contextlib.suppress(wire.AuthenticationError):
        responder.receive_hello(data)
    initiator = wire.Handshake(KEY, "initiator", b"i" * 32, initiator=True)
    session = wire.Handshake(KEY, "responder", b"r" * 32, initiator=False).receive_hello(initiator.hello())
    with contextlib.suppress(wire.AuthenticationError):
        session.open(data)


def one_input(data: bytes) -> None:
    """The fuzz target: the first byte picks what the rest of the input is fed to."""
    if not data:
        return
    mode, rest = data[0] % 6, data[1:]
    if mode <= 1:
        check_decode(rest, wire.DEFAULT_LIMITS)
    elif mode == 2:
        check_decode(rest, TIGHT)
    elif mode == 3:
        check_frames(rest)
    elif mode == 4:
        check_batch(rest)
    else:
        check_auth(rest)


def seed_corpus() -> list[bytes]:
    seeds = [wire.encode(m) for m in samples.SAMPLES]
    hello = wire.Handshake(KEY, "initiator", b"i" * 32, initiator=True).hello()
    frames = b"".join(wire.encode_frame(s) for s in seeds[:4])
    out = [bytes([mode]) + s for s in seeds for mode in (0, 2)]
    batch = wire.encode_many(samples.SAMPLES[:8])
    return [*out, b"\x03\x10" + frames, b"\x04" + batch, b"\x05" + hello]


def make_corpus(directory: pathlib.Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for seed in seed_corpus():
        (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    print(f"wrote {len(seed_corpus())} seed inputs to {directory}")


def fallback(seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    corpus = seed_corpus()
    deadline, count = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        data = bytearray(rng.choice(corpus))
        for _ in range(rng.randrange(1, 6)):
            pos = rng.randrange(len(data) + 1)
            op = rng.randrange(4)
            if op == 0 and len(data) > 1:
                data[max(1, pos % len(data))] ^= 1 << rng.randrange(8)
            elif op == 1:
                del data[max(1, pos) :]
            elif op == 2:
                data[pos:pos] = rng.randbytes(rng.randrange(1, 8))
            else:
                other = rng.choice(corpus)
                data = data[:pos] + other[rng.randrange(len(other) + 1) :]
        try:
            one_input(bytes(data))
        except Exception:
            print(f"CRASH (seed {seed}) on input {bytes(data).hex()}", file=sys.stderr)
            raise
        count += 1
    print(f"fallback fuzz: {count} inputs in {seconds:.0f} s, seed {seed}, no crash")


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--make-corpus", type=pathlib.Path)
    parser.add_argument("--fallback", type=float, help="run the pure-Python loop for this many seconds")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    ours, libfuzzer_args = parser.parse_known_args()
    if ours.make_corpus is not None:
        make_corpus(ours.make_corpus)
    elif ours.fallback is not None or atheris is None:
        fallback(ours.fallback or 60.0, ours.seed)
    else:
        atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main()

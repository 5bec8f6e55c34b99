"""CI fuzz: 120,000 random and mutated inputs; decode yields a valid message or DecodeError.

Inputs are seeded (the seed is in every failure message), so a failure replays exactly. The
long-running fuzzer lives in fuzz/ (see fuzz/README.md).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from typing import Any

import msgpack

from stalwart.wire import (
    DecodeError,
    FrameDecoder,
    Limits,
    decode,
    decode_as,
    encode,
    encode_frame,
    registered_types,
)
from tests.unit.test_wire_samples import SAMPLES, Scalars, Tree

SEED = 20261126
RANDOM_INPUTS = 50_000
MUTATED_INPUTS = 70_000
TIGHT = Limits(max_message_bytes=4096, max_str_bytes=64, max_bin_bytes=64, max_collection_len=16, max_depth=4)
# Bytes that are msgpack type headers: replacing a byte with one of them reshapes the structure.
INTERESTING = bytes.fromhex("007f808f909fa0bfc0c1c2c3c4c6cacbcccfd0d3d4d9dbdcdddedfe0ff")


def corpus() -> list[bytes]:
    seeds = [encode(m) for m in SAMPLES]
    tree = Tree("leaf", ())
    for i in range(20):
        tree = Tree(str(i), (tree, Tree("x", ())))
    seeds.append(encode(tree))
    seeds.append(encode(Scalars(2**40, 1e300, True, "ünïcödé" * 3, bytes(range(40)), None)))
    return seeds


def random_input(rng: random.Random, tags: list[int]) -> bytes:
    n = rng.randrange(0, 48)
    body = rng.randbytes(n)
    if rng.random() < 0.5:  # a valid envelope start, so decoding reaches the field checks
        body = bytes([0x90 + rng.randrange(0, 16), 0x01]) + msgpack.packb(rng.choice(tags)) + body
    return body


def mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip one bit
            i = pos % len(buf)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # an interesting byte (a msgpack type header)
            buf[pos % len(buf)] = rng.choice(INTERESTING)
        elif op == 2:  # truncate
            del buf[pos:]
        elif op == 3:  # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.randrange(1, 5))
        elif op == 4 and buf:  # delete a run
            del buf[pos : pos + rng.randrange(1, 5)]
        elif op == 5:  # splice: our prefix, another valid encoding's suffix
            other = rng.choice(seeds)
            buf = buf[:pos] + other[rng.randrange(len(other) + 1) :]
        else:  # duplicate a chunk
            buf[pos:pos] = buf[max(0, pos - rng.randrange(1, 9)) : pos]
    return bytes(buf)


def check(data: bytes, stats: dict[str, int], decoder: Callable[[bytes], Any]) -> None:
    try:
        msg = decoder(data)
    except DecodeError:
        stats["rejected"] += 1
        return
    except Exception as exc:  # the property under test: nothing else may ever escape
        raise AssertionError(f"seed {SEED}: {type(exc).__name__}: {exc} on input {data.hex()}") from exc
    stats["accepted"] += 1
    assert type(msg) in set(registered_types().values())
    again = encode(msg)  # what decode accepts, encode must accept: the schema is the same
    assert encode(decode(again)) == again, data.hex()


def test_random_and_mutated_inputs_only_ever_raise_decode_error() -> None:
    rng = random.Random(SEED)
    seeds = corpus()
    tags = sorted(registered_types())
    stats = {"accepted": 0, "rejected": 0}
    plain: Callable[[bytes], Any] = decode

    def tight(data: bytes) -> Any:
        return decode(data, limits=TIGHT)

    def as_tree(data: bytes) -> Any:
        return decode_as(data, Tree)

    decoders = [plain, plain, tight, as_tree]
    for i in range(RANDOM_INPUTS):
        check(random_input(rng, tags), stats, decoders[i % 4])
    for i in range(MUTATED_INPUTS):
        check(mutate(rng, rng.choice(seeds), seeds), stats, decoders[i % 4])
    assert stats["accepted"] + stats["rejected"] == RANDOM_INPUTS + MUTATED_INPUTS
    # A fuzzer that never gets past the envelope, or never gets rejected, tests little.
    assert stats["accepted"] > 1_000, stats
    assert stats["rejected"] > 50_000, stats


def test_random_streams_through_the_frame_decoder() -> None:
    rng = random.Random(SEED + 1)
    seeds = corpus()
    intact = 0
    for _ in range(300):
        sent = [rng.choice(seeds) for _ in range(rng.randrange(1, 6))]
        stream = b"".join(encode_frame(p) for p in sent)
        mutated = rng.random() < 0.7
        stream = mutate(rng, stream, seeds) if mutated else stream
        decoder = FrameDecoder(max_frame_bytes=rng.choice([16, 256, 1 << 20]))
        got, pos = [], 0
        try:
            while pos < len(stream):
                step = rng.randrange(1, 64)
                for frame in decoder.feed(stream[pos : pos + step]):
                    got.append(frame)
                    with contextlib.suppress(DecodeError):
                        decode(frame)
                pos += step
        except DecodeError:
            assert decoder.poisoned
            continue
        if not mutated and decoder.max_frame_bytes == 1 << 20:
            assert got == sent  # byte-exact frames, whatever the split
            intact += 1
    assert intact > 10


STRUCTURAL_INPUTS = 20_000


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """Any msgpack value: what a peer that gets the framing right but the schema wrong sends."""
    kind = rng.randrange(12 if depth < 3 else 9)
    simple: list[Any] = [
        rng.choice([0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1, 907, 900]),
        rng.choice([True, False]),
        rng.choice([0.0, -1.5, float("inf"), float("nan")]),
        rng.choice(["", "a", "fast", "safe", "x" * 9]),
        rng.choice([b"", b"\x00", b"abcd", b"12345"]),
        None,
        rng.randrange(-5, 5),
        rng.choice([1, 2, 3, 99]),
        "é",
    ]
    if kind < len(simple):
        return simple[kind]
    if kind == 9:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if kind == 10:
        return {
            rng.choice(["a", 1, b"k", 2]): random_value(rng, depth + 1) for _ in range(rng.randrange(0, 3))
        }
    return [
        rng.choice([907, 910, 906, 900]),
        *(random_value(rng, depth + 1) for _ in range(rng.randrange(0, 3))),
    ]


def mutate_structure(rng: random.Random, node: Any, depth: int = 0) -> Any:
    """Replace one randomly chosen sub-value (below the envelope) of a decoded msgpack tree."""
    if isinstance(node, list) and node and (depth == 0 or rng.random() < 0.7):
        i = rng.randrange(2 if depth == 0 and len(node) > 2 else 0, len(node))
        node = list(node)
        node[i] = mutate_structure(rng, node[i], depth + 1)
        return node
    if isinstance(node, dict) and node and rng.random() < 0.7:
        key = rng.choice(list(node))
        node = dict(node)
        if rng.random() < 0.3:
            node[random_value(rng, 3) if rng.random() < 0.5 else key] = node.pop(key)
        else:
            node[key] = mutate_structure(rng, node[key], depth + 1)
        return node
    return random_value(rng, depth)


def test_structurally_mutated_messages_only_ever_raise_decode_error() -> None:
    # Byte mutations rarely get past msgpack's own parser deep into a message; these keep the
    # msgpack well formed and break the schema somewhere inside, at every depth.
    rng = random.Random(SEED + 2)
    trees = [msgpack.unpackb(s, strict_map_key=False) for s in corpus()]
    stats = {"accepted": 0, "rejected": 0}
    for i in range(STRUCTURAL_INPUTS):
        tree = mutate_structure(rng, rng.choice(trees))
        try:
            data = msgpack.packb(tree, use_bin_type=True)
        except (TypeError, ValueError):  # e.g. an unhashable key built by the mutation
            continue
        check(data, stats, decode if i % 2 else lambda d: decode(d, limits=TIGHT))
    assert stats["rejected"] > STRUCTURAL_INPUTS // 2, stats
    assert stats["accepted"] > 100, stats

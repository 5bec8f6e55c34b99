"""Framing: exact frames whatever the splits, oversize refused from the header, poisoning."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.errors import ConfigError
from stalwart.wire import (
    DEFAULT_MAX_FRAME_BYTES,
    DecodeError,
    EncodeError,
    FrameDecoder,
    FrameTooLargeError,
    encode_frame,
)

FRAMES = [b"hello", b"", b"\x00" * 300, b"x", b"", bytes(range(256))]
STREAM = b"".join(encode_frame(f) for f in FRAMES)


def test_frame_is_a_four_byte_big_endian_length_then_the_payload() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert encode_frame(b"x" * 258)[:4] == b"\x00\x00\x01\x02"
    assert FrameDecoder().max_frame_bytes == DEFAULT_MAX_FRAME_BYTES == 16 * 1024 * 1024


def test_one_feed_gives_every_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(STREAM) == FRAMES
    assert decoder.buffered_bytes == 0


def test_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        decoder = FrameDecoder()
        assert decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:]) == FRAMES, cut


def test_one_byte_at_a_time() -> None:
    decoder = FrameDecoder()
    got: list[bytes] = []
    for i in range(len(STREAM)):
        got += decoder.feed(STREAM[i : i + 1])
        assert decoder.buffered_bytes <= 300  # never more than one header or one body
    assert got == FRAMES


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(st.binary(max_size=70), max_size=8),
    cuts=st.lists(st.integers(0, 600), max_size=10),
)
def test_any_splitting_gives_the_same_frames(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(f) for f in frames)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    decoder = FrameDecoder(max_frame_bytes=70)
    got: list[bytes] = []
    for a, b in itertools.pairwise(points):
        got += decoder.feed(memoryview(stream)[a:b])
    assert got == frames
    assert decoder.buffered_bytes == 0


def test_bytearray_and_memoryview_feeds() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(bytearray(STREAM[:10])) + decoder.feed(memoryview(STREAM)[10:]) == FRAMES


def test_a_frame_exactly_at_the_limit_is_accepted() -> None:
    decoder = FrameDecoder(max_frame_bytes=10)
    assert decoder.feed(encode_frame(b"0123456789")) == [b"0123456789"]


def test_oversize_header_is_refused_before_its_body_is_buffered() -> None:
    decoder = FrameDecoder(max_frame_bytes=10)
    assert decoder.feed(encode_frame(b"ok")) == [b"ok"]
    with pytest.raises(FrameTooLargeError) as info:
        decoder.feed(b"\x00\x00\x00\x0b" + b"B" * 11)  # header and body in one feed
    assert decoder.buffered_bytes == 0  # the body was not copied in
    assert (info.value.size_bytes, info.value.limit_bytes) == (11, 10)
    assert isinstance(info.value, DecodeError)


def test_oversize_header_fed_byte_by_byte_never_buffers_more_than_the_header() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    header = (2**32 - 1).to_bytes(4, "big")
    for byte in header[:3]:
        assert decoder.feed(bytes([byte])) == []
        assert decoder.buffered_bytes <= 3
    with pytest.raises(FrameTooLargeError, match="4294967295 bytes exceeds the limit of 1024"):
        decoder.feed(header[3:] + b"x" * 100_000)
    assert decoder.buffered_bytes == 0


def test_after_an_error_every_feed_raises() -> None:
    decoder = FrameDecoder(max_frame_bytes=4)
    with pytest.raises(FrameTooLargeError):
        decoder.feed(b"\x00\x00\x00\x05")
    assert decoder.poisoned
    for data in (b"", encode_frame(b"ok"), b"\x00"):
        with pytest.raises(DecodeError, match="unusable after an earlier error"):
            decoder.feed(data)


def test_large_frame_in_small_chunks() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    stream = encode_frame(payload) + encode_frame(b"after")
    decoder = FrameDecoder()
    got: list[bytes] = []
    for i in range(0, len(stream), 1000):
        got += decoder.feed(stream[i : i + 1000])
        assert decoder.buffered_bytes < len(payload)
    assert got == [payload, b"after"]


@pytest.mark.parametrize("limit", [-1, 2**32, "16", 1.5, None])
def test_bad_limits_are_config_errors(limit: Any) -> None:
    with pytest.raises(ConfigError):
        FrameDecoder(max_frame_bytes=limit)


def test_encode_frame_refuses_what_a_length_header_cannot_say() -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return 2**32

    with pytest.raises(EncodeError, match="at most"):
        encode_frame(Huge())

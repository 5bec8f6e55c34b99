"""encode / decode: the envelope ``[version, tag, field1, field2, ...]`` as one msgpack array."""

from __future__ import annotations

from typing import Any, TypeVar

import msgpack
from msgpack.exceptions import ExtraData, UnpackException

from stalwart.errors import DecodeError
from stalwart.wire._compiled import PROTOCOL_VERSION, CompiledMessage
from stalwart.wire._errors import EncodeError, SchemaError
from stalwart.wire._limits import DEFAULT_LIMITS, Limits
from stalwart.wire._registry import BY_CLASS, BY_TAG, ENCODERS

T = TypeVar("T")

_unpackb = msgpack.unpackb


def encode(msg: Any) -> bytes:
    """The bytes of a registered message; :class:`EncodeError` if a field breaks its type."""
    encode_message = ENCODERS.get(type(msg))
    if encode_message is None:  # not registered, or not compiled yet (a forward reference)
        spec = BY_CLASS.get(type(msg))
        if spec is None:
            raise EncodeError(f"{type(msg).__qualname__} is not a registered message")
        encode_message = spec.compiled().encode_message
    try:
        return encode_message(msg)
    except (OverflowError, ValueError, TypeError) as exc:
        # Integers outside int64/uint64, strings with lone surrogates, sizes over 4 GiB.
        raise EncodeError(f"{type(msg).__qualname__}: cannot be packed: {exc}") from exc
    except RecursionError:
        raise EncodeError(f"{type(msg).__qualname__}: nested too deeply to encode") from None


def _unpack(data: Any, limits: Limits) -> Any:
    if type(data) is not bytes and not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    size = data.nbytes if type(data) is memoryview else len(data)  # a view may have wide items
    if size > limits.max_message_bytes:
        raise DecodeError(f"message of {size} bytes exceeds {limits.max_message_bytes}")
    try:
        # Every size in a hostile header is checked against these before anything is allocated.
        return _unpackb(
            data,
            use_list=False,
            raw=False,
            strict_map_key=False,
            max_str_len=limits.max_str_bytes,
            max_bin_len=limits.max_bin_bytes,
            max_array_len=limits.max_collection_len,
            max_map_len=limits.max_collection_len,
            max_ext_len=0,
        )
    except ExtraData:
        raise DecodeError("trailing bytes after the message") from None
    except (UnpackException, ValueError, TypeError, RecursionError) as exc:
        # UnpackException: truncated (OutOfData), reserved byte (FormatError), too deep
        # (StackError); ValueError: over a size limit, bad UTF-8; TypeError: unhashable map key.
        raise DecodeError(f"malformed msgpack: {type(exc).__name__}: {exc}") from None


def _envelope(data: Any, limits: Limits) -> tuple[CompiledMessage, tuple[Any, ...]]:
    raw = _unpack(data, limits)
    return check_envelope(raw), raw


def check_envelope(raw: Any) -> CompiledMessage:
    """The compiled codec of an unpacked envelope ``(version, tag, ...)``; DecodeError if none."""
    if type(raw) is not tuple or len(raw) < 2:
        raise DecodeError("not a message: expected an array [version, tag, fields...]")
    version, tag = raw[0], raw[1]
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise DecodeError(f"unsupported protocol version {version!r} (this node speaks {PROTOCOL_VERSION})")
    spec = BY_TAG.get(tag) if type(tag) is int else None
    if spec is None:
        raise DecodeError(f"unknown message tag {tag!r}")
    compiled = spec._compiled
    if compiled is None:
        try:
            compiled = spec.compiled()
        except SchemaError as exc:  # a local bug, but decode promises DecodeError for any input
            raise DecodeError(f"tag {tag} cannot be decoded: {exc}") from exc
    return compiled


def decode(data: bytes | bytearray | memoryview, *, limits: Limits = DEFAULT_LIMITS) -> Any:
    """The message these bytes hold; :class:`DecodeError` for anything else, whatever the input."""
    compiled, raw = _envelope(data, limits)
    try:
        return compiled.decode_envelope(raw, limits.max_depth - 1)
    except RecursionError:
        raise DecodeError("nested too deeply") from None


def decode_as(data: bytes | bytearray | memoryview, cls: type[T], *, limits: Limits = DEFAULT_LIMITS) -> T:
    """Like :func:`decode`, but the message must be a ``cls`` (checked before its fields)."""
    spec = BY_CLASS.get(cls)
    if spec is None:
        raise SchemaError(f"{cls!r} is not a registered message")
    compiled, raw = _envelope(data, limits)
    if compiled.cls is not cls:
        raise DecodeError(f"expected {cls.__qualname__} (tag {spec.tag}), got tag {compiled.tag}")
    try:
        result: T = compiled.decode_envelope(raw, limits.max_depth - 1)
    except RecursionError:
        raise DecodeError("nested too deeply") from None
    return result


__all__ = ["PROTOCOL_VERSION", "check_envelope", "decode", "decode_as", "encode"]

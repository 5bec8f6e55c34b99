"""One message class's encoder and decoder, built as closures once at registration.

Closures over local variables rather than methods reading attributes: on the per-message hot
path every attribute load and call layer shows, and no type hint is ever read per call.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

import msgpack

from stalwart.errors import DecodeError, StalwartError
from stalwart.wire._errors import EncodeError
from stalwart.wire._fastbuild import EnvelopeDecoder, bypass_setters, envelope_decoder, plain_encoder
from stalwart.wire._fastcheck import exact_types
from stalwart.wire._types import Node, raw_name

FieldsEncoder = Callable[[Any], "tuple[Any, ...] | list[Any]"]
FieldsDecoder = Callable[["tuple[Any, ...]", int], Any]
MessageEncoder = Callable[[Any], bytes]

PROTOCOL_VERSION = 1
"""The version of the envelope and of every message schema; see docs/wire.md for the policy."""

# One packer, reused: building a Packer per call costs more than packing a small message. Its
# pack() runs in C without releasing the GIL (we pass no `default` hook), so it is never
# re-entered. On an error msgpack resets the buffer, so a failed encode leaves nothing behind.
pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True, autoreset=True, datetime=False).pack


class CompiledMessage:
    """``encode_fields(msg)`` -> the raw field values; ``decode_fields(raw, depth_left)`` -> msg.

    And the whole-envelope forms of the hot paths: ``encode_message(msg)`` -> the packed
    envelope's bytes (pack errors propagate: the caller wraps them), ``decode_envelope(envelope,
    depth_left)`` -> msg, for an envelope whose version and tag were already checked.
    """

    __slots__ = (
        "cls", "decode_envelope", "decode_fields", "encode_fields", "encode_message", "n", "names",
        "nodes", "qualname", "tag",
    )  # fmt: skip

    def __init__(self, cls: type[Any], tag: int, names: tuple[str, ...], nodes: tuple[Node, ...]) -> None:
        self.cls, self.tag, self.names, self.nodes, self.n = cls, tag, names, nodes, len(names)
        self.qualname: str = cls.__qualname__
        self.encode_fields: FieldsEncoder = _encoder(cls.__qualname__, names, nodes)
        self.decode_fields: FieldsDecoder = _decoder(cls, names, nodes)
        self.encode_message: MessageEncoder = _message_encoder(tag, names, nodes, self.encode_fields)
        self.decode_envelope: EnvelopeDecoder = _envelope_decoder(cls, names, nodes, self.decode_fields)


def _message_encoder(
    tag: int, names: tuple[str, ...], nodes: tuple[Node, ...], encode_fields: FieldsEncoder
) -> MessageEncoder:
    prefix = (PROTOCOL_VERSION, tag)
    if any(node.enc is not None for node in nodes) or not names:

        def encode_message(msg: Any) -> bytes:
            vals = encode_fields(msg)
            return pack(prefix + vals if type(vals) is tuple else (*prefix, *vals))

        return encode_message
    getter = _getter(names)
    types_ = tuple(node.primary_value for node in nodes)
    fast = exact_types(types_)

    def encode_plain_message(msg: Any) -> bytes:
        # encode_fields inlined: the commonest message (every field its usual type) costs one
        # C getter, one unrolled type check, one tuple concatenation and one pack.
        vals = getter(msg)
        return pack(prefix + vals if fast(vals) else (*prefix, *encode_fields(msg)))

    # Up to 4 fields, the type check is inlined too; any other type goes the general way.
    return plain_encoder(prefix, names, types_, pack, encode_plain_message) or encode_plain_message


def _envelope_decoder(
    cls: type[Any], names: tuple[str, ...], nodes: tuple[Node, ...], decode_fields: FieldsDecoder
) -> EnvelopeDecoder:
    setters = bypass_setters(cls, names)
    if setters is None or any(node.dec is not None for node in nodes):
        return lambda raw, depth_left: decode_fields(raw[2:], depth_left)
    return envelope_decoder(cls, tuple(node.primary_raw for node in nodes), setters, decode_fields)


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if len(names) >= 2:
        return attrgetter(*names)  # one C call returning the tuple of field values
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda msg: (one(msg),)
    return lambda msg: ()


def _encoder(qualname: str, names: tuple[str, ...], nodes: tuple[Node, ...]) -> FieldsEncoder:
    getter = _getter(names)
    fast = exact_types(tuple(node.primary_value for node in nodes))
    posts = tuple((i, node.enc) for i, node in enumerate(nodes) if node.enc is not None)

    def coerce(vals: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(vals)
        for i, node in enumerate(nodes):
            if type(out[i]) not in node.value_types:
                try:
                    out[i] = node.coerce(out[i])
                except EncodeError as exc:
                    raise EncodeError(f"{qualname}.{names[i]}: {exc}") from None
        return tuple(out)

    if not posts:

        def encode_plain(msg: Any) -> tuple[Any, ...]:
            vals = getter(msg)
            # One call checks every field when each holds its usual type.
            return vals if fast(vals) else coerce(vals)

        return encode_plain

    def encode_converting(msg: Any) -> list[Any]:
        vals = getter(msg)
        out = list(vals if fast(vals) else coerce(vals))
        i = 0
        try:
            for i, fn in posts:
                out[i] = fn(out[i])
        except EncodeError as exc:
            raise EncodeError(f"{qualname}.{names[i]}: {exc}") from None
        return out

    return encode_converting


def _decoder(cls: type[Any], names: tuple[str, ...], nodes: tuple[Node, ...]) -> FieldsDecoder:
    qualname, n = cls.__qualname__, len(names)
    fast = exact_types(tuple(node.primary_raw for node in nodes))
    posts = tuple((i, node.dec) for i, node in enumerate(nodes) if node.dec is not None)

    def check(raw: tuple[Any, ...]) -> None:
        if len(raw) != n:
            raise DecodeError(f"{qualname}: expected {n} fields, got {len(raw)}")
        for name, node, value in zip(names, nodes, raw, strict=True):
            if type(value) not in node.raw_types:
                raise DecodeError(f"{qualname}.{name}: expected {node.name}, got {raw_name(value)}")

    if not posts and not hasattr(cls, "__post_init__"):

        def decode_plain(raw: tuple[Any, ...], depth_left: int) -> Any:
            if not fast(raw):  # it checks the field count too
                check(raw)
            return cls(*raw)

        return decode_plain

    construct = _constructor(cls)

    def decode_converting(raw: tuple[Any, ...], depth_left: int) -> Any:
        if not fast(raw):
            check(raw)
        vals = list(raw)
        i = 0
        try:
            for i, fn in posts:
                vals[i] = fn(vals[i], depth_left)
        except DecodeError as exc:
            raise DecodeError(f"{qualname}.{names[i]}: {exc}") from None
        return construct(vals)

    return decode_converting


def _constructor(cls: type[Any]) -> Callable[[Any], Any]:
    if not hasattr(cls, "__post_init__"):
        return lambda vals: cls(*vals)

    def construct(vals: Any) -> Any:
        # A class may validate itself in __post_init__; its refusal of a peer's values is a
        # decode error like any other, never a crash of the receiver.
        try:
            return cls(*vals)
        except (ValueError, TypeError, AssertionError, StalwartError) as exc:
            raise DecodeError(f"{cls.__qualname__} rejected its fields: {exc}") from exc

    return construct

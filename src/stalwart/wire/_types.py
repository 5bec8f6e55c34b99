"""Field types compiled into codec nodes, once per class, at registration.

A :class:`Node` knows, for one field type, which Python types msgpack may hand back
(``raw_types``), which types a message may hold (``value_types``), and the two conversions
between them. A conversion is ``None`` when the raw value already *is* the value, which lets the
per-message fast path check a whole message with one call (see ``_fastcheck``).
"""

from __future__ import annotations

import enum
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, is_dataclass
from operator import itemgetter
from typing import Any, Protocol

import msgpack

from stalwart.errors import DecodeError
from stalwart.wire._errors import EncodeError, SchemaError
from stalwart.wire._fastcheck import exact_types
from stalwart.wire._limits import Bounds, MaxLen

DecFn = Callable[[Any, int], Any]  # (raw value, depth budget left) -> value; raises DecodeError
EncFn = Callable[[Any], Any]  # value -> raw value msgpack can pack; raises EncodeError
NoneType = type(None)
_KEY = itemgetter(0)
_packb = msgpack.packb


class MessageCodec(Protocol):
    """What a field node needs from a registered message class (see ``_registry``)."""

    tag: int
    cls: type[Any]

    def encode_fields(self, msg: Any) -> tuple[Any, ...] | list[Any]: ...

    def decode_fields(self, raw: tuple[Any, ...], depth_left: int) -> Any: ...


SpecLookup = Callable[[type[Any]], MessageCodec | None]


def _no_coerce(name: str) -> Callable[[Any], Any]:
    def coerce(value: Any) -> Any:
        raise EncodeError(f"expected {name}, got {type(value).__name__} {_short(value)}")

    return coerce


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    kind: str
    raw_types: frozenset[type[Any]]
    value_types: frozenset[type[Any]]
    primary_raw: type[Any]  # the raw type the fast path bets on
    primary_value: type[Any]
    dec: DecFn | None  # called only on a raw value whose type is in raw_types
    enc: EncFn | None  # called only on a value whose type is in value_types
    coerce: Callable[[Any], Any]  # a value of another type -> one in value_types, or EncodeError
    sortable: bool = False  # raw values compare, so sets and dict keys encode deterministically
    inner: Node | None = None  # the wrapped node of an Optional

    def decode(self, raw: Any, depth_left: int) -> Any:
        if type(raw) not in self.raw_types:
            raise DecodeError(f"expected {self.name}, got {raw_name(raw)}")
        return raw if self.dec is None else self.dec(raw, depth_left)

    def encode(self, value: Any) -> Any:
        if type(value) not in self.value_types:
            value = self.coerce(value)
        return value if self.enc is None else self.enc(value)


def raw_name(raw: Any) -> str:
    name = type(raw).__name__
    return {"tuple": "array", "dict": "map", "NoneType": "nil"}.get(name, name)


def _scalar(name: str, tp: type[Any], coerce: Callable[[Any], Any], sortable: bool = True) -> Node:
    ts = frozenset({tp})
    return Node(name, name, ts, ts, tp, tp, None, None, coerce, sortable)


def _coerce_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise EncodeError(f"expected int, got {type(value).__name__} {_short(value)}")


def _coerce_float(value: Any) -> Any:
    # A Python int is a valid float by the typing rules, so the encoder widens it; the decoder
    # still insists on a msgpack float (see docs/wire.md).
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise EncodeError(f"int {_short(value)} is too large for a float") from None
    raise EncodeError(f"expected float, got {type(value).__name__} {_short(value)}")


def _coerce_str(value: Any) -> Any:
    if isinstance(value, str):
        return str(value)
    raise EncodeError(f"expected str, got {type(value).__name__} {_short(value)}")


def _coerce_bytes(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise EncodeError(f"expected bytes, got {type(value).__name__} {_short(value)}")


_SCALARS: dict[Any, Node] = {
    int: _scalar("int", int, _coerce_int),
    float: _scalar("float", float, _coerce_float),
    bool: _scalar("bool", bool, _no_coerce("bool")),
    str: _scalar("str", str, _coerce_str),
    bytes: _scalar("bytes", bytes, _coerce_bytes),
    NoneType: _scalar("None", NoneType, _no_coerce("None"), sortable=False),
    None: _scalar("None", NoneType, _no_coerce("None"), sortable=False),
}


def compile_type(tp: Any, lookup: SpecLookup) -> Node:
    """The codec node for one resolved field type; :class:`SchemaError` if unsupported."""
    while isinstance(tp, typing.NewType):
        tp = tp.__supertype__
    scalar = _SCALARS.get(tp) if _hashable(tp) else None
    if scalar is not None:
        return scalar
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _annotated(compile_type(args[0], lookup), tp.__metadata__)
    if origin is typing.Union or origin is types.UnionType:
        return _union(args, lookup)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _var_tuple(compile_type(args[0], lookup))
        return _fixed_tuple(tuple(compile_type(a, lookup) for a in args))
    if origin is frozenset and len(args) == 1:
        return _frozenset(compile_type(args[0], lookup))
    if origin is dict and len(args) == 2:
        return _dict(compile_type(args[0], lookup), compile_type(args[1], lookup))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum(tp)
    if isinstance(tp, type) and is_dataclass(tp):
        return _message(_require_spec(tp, lookup))
    raise SchemaError(f"unsupported field type {tp!r}{_hint(tp, origin)}")


def _hashable(tp: Any) -> bool:
    try:
        hash(tp)
    except TypeError:
        return False
    return True


def _hint(tp: Any, origin: Any) -> str:
    if origin is list or tp is list:
        return " (messages are immutable: use tuple[X, ...])"
    if origin is set or tp is set:
        return " (use frozenset[X])"
    if tp in (tuple, frozenset, dict):
        return " (give its item types, e.g. tuple[int, ...])"
    return (
        "; supported: int, float, bool, str, bytes, None, X | None, tuple[X, ...], tuple[X, Y],"
        " frozenset[X], dict[K, V], IntEnum, StrEnum, NewType, Annotated, registered messages"
        " and unions of them"
    )


def _require_spec(cls: type[Any], lookup: SpecLookup) -> MessageCodec:
    spec = lookup(cls)
    if spec is None:
        raise SchemaError(f"{cls.__qualname__} is used as a field type but is not a registered @message")
    return spec


def _check(node: Node, test: Callable[[Any], str | None]) -> Node:
    """Wrap a node with a check that runs on the raw value before decoding and on the value
    before encoding (the two are equal for the kinds checks apply to)."""
    inner_dec, inner_enc = node.dec, node.enc

    def dec(raw: Any, depth_left: int) -> Any:
        problem = test(raw)
        if problem is not None:
            raise DecodeError(problem)
        return raw if inner_dec is None else inner_dec(raw, depth_left)

    def enc(value: Any) -> Any:
        problem = test(value)
        if problem is not None:
            raise EncodeError(problem)
        return value if inner_enc is None else inner_enc(value)

    return Node(
        node.name, node.kind, node.raw_types, node.value_types, node.primary_raw,
        node.primary_value, dec, enc, node.coerce, node.sortable, node.inner,
    )  # fmt: skip


def _annotated(node: Node, metadata: tuple[Any, ...]) -> Node:
    for meta in metadata:
        if isinstance(meta, (MaxLen, Bounds)) and node.kind == "optional":
            assert node.inner is not None  # an optional node always wraps its inner node
            node = _optional(_annotated(node.inner, (meta,)))
        elif isinstance(meta, MaxLen):
            node = _check_max_len(node, meta.n)
        elif isinstance(meta, Bounds):
            node = _check_bounds(node, meta)
        # Metadata of other libraries is not ours to judge: ignore it.
    return node


def _check_max_len(node: Node, n: int) -> Node:
    if node.kind not in ("str", "bytes", "tuple", "frozenset", "dict"):
        raise SchemaError(f"MaxLen applies to str, bytes, tuple[X, ...], frozenset, dict; not {node.name}")

    def test(value: Any) -> str | None:
        return None if len(value) <= n else f"{node.name} of length {len(value)} exceeds MaxLen({n})"

    return _check(node, test)


def _check_bounds(node: Node, bounds: Bounds) -> Node:
    if node.kind not in ("int", "float"):
        raise SchemaError(f"Bounds applies to int and float, not {node.name}")
    lo, hi = bounds.lo, bounds.hi

    def test(value: Any) -> str | None:
        if (lo is not None and value < lo) or (hi is not None and value > hi) or _is_nan(value):
            return f"{node.name} {_short(value)} outside Bounds({lo}, {hi})"
        return None

    return _check(node, test)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _optional(inner: Node) -> Node:
    inner_dec, inner_enc = inner.dec, inner.enc
    dec: DecFn | None = None
    enc: EncFn | None = None
    if inner_dec is not None:

        def dec(raw: Any, depth_left: int) -> Any:
            return None if raw is None else inner_dec(raw, depth_left)

    if inner_enc is not None:

        def enc(value: Any) -> Any:
            return None if value is None else inner_enc(value)

    return Node(
        f"{inner.name} | None", "optional", inner.raw_types | {NoneType}, inner.value_types | {NoneType},
        inner.primary_raw, inner.primary_value, dec, enc, inner.coerce, False, inner,
    )  # fmt: skip


def _union(args: tuple[Any, ...], lookup: SpecLookup) -> Node:
    rest = [a for a in args if a is not NoneType and a is not None]
    nullable = len(rest) < len(args)
    if len(rest) == 1:
        node = compile_type(rest[0], lookup)
    elif all(isinstance(a, type) and is_dataclass(a) for a in rest):
        node = _message_union([_require_spec(a, lookup) for a in rest])
    else:
        raise SchemaError(f"unsupported union {args!r}: only X | None and unions of registered messages")
    return _optional(node) if nullable else node


def _depth_error() -> DecodeError:
    return DecodeError("nesting deeper than Limits.max_depth")


def _items_encoder(el: Node) -> Callable[[Any], list[Any] | tuple[Any, ...]]:
    """Validate (and convert) every item of an iterable against ``el``."""
    vt, el_encode = el.value_types, el.encode

    if el.enc is None:

        def encode_items(items: Any) -> list[Any] | tuple[Any, ...]:
            for item in items:
                if type(item) not in vt:
                    return [el_encode(i) for i in items]
            return items if type(items) is tuple else list(items)

        return encode_items

    el_enc, coerce = el.enc, el.coerce

    def encode_items_converting(items: Any) -> list[Any] | tuple[Any, ...]:
        out = []  # Node.encode inlined: this loop runs once per item of every collection
        for item in items:
            out.append(el_enc(item if type(item) in vt else coerce(item)))
        return out

    return encode_items_converting


def _items_decoder(el: Node) -> DecFn:
    """Check (and convert) every item of a raw array against ``el``; depth is already checked."""
    rt, name = el.raw_types, el.name

    if el.dec is None:

        def decode_items(raw: tuple[Any, ...], depth_left: int) -> tuple[Any, ...]:
            for item in raw:
                if type(item) not in rt:
                    raise DecodeError(f"item: expected {name}, got {raw_name(item)}")
            return raw

        return decode_items

    el_dec = el.dec

    def decode_items_converting(raw: tuple[Any, ...], depth_left: int) -> tuple[Any, ...]:
        out = []  # Node.decode inlined: this loop runs once per item of every collection
        for item in raw:
            if type(item) not in rt:
                raise DecodeError(f"item: expected {name}, got {raw_name(item)}")
            out.append(el_dec(item, depth_left))
        return tuple(out)

    return decode_items_converting


def _container(name: str, kind: str, raw: type[Any], value: type[Any], *, dec: DecFn, enc: EncFn) -> Node:
    return Node(name, kind, frozenset({raw}), frozenset({value}), raw, value, dec, enc, _no_coerce(name))


def _var_tuple(el: Node) -> Node:
    decode_items, encode_items = _items_decoder(el), _items_encoder(el)

    def dec(raw: tuple[Any, ...], depth_left: int) -> Any:
        if depth_left <= 0:
            raise _depth_error()
        return decode_items(raw, depth_left - 1)

    def enc(value: tuple[Any, ...]) -> Any:
        return encode_items(value)

    node = _container(f"tuple[{el.name}, ...]", "tuple", tuple, tuple, dec=dec, enc=enc)
    return _with_coerce(node, _coerce_tuple(node.name))


def _coerce_tuple(name: str) -> Callable[[Any], Any]:
    def coerce(value: Any) -> Any:
        if isinstance(value, tuple):  # a NamedTuple or other subclass: send its items
            return tuple(value)
        raise EncodeError(f"expected {name}, got {type(value).__name__} {_short(value)}")

    return coerce


def _with_coerce(node: Node, coerce: Callable[[Any], Any]) -> Node:
    return Node(
        node.name, node.kind, node.raw_types, node.value_types, node.primary_raw, node.primary_value,
        node.dec, node.enc, coerce, node.sortable, node.inner,
    )  # fmt: skip


def _fixed_tuple(els: tuple[Node, ...]) -> Node:
    k = len(els)
    name = f"tuple[{', '.join(e.name for e in els) or '()'}]"

    # Fast path as for whole messages: when no item needs converting, one comparison of the
    # item types against the expected ones checks the whole tuple.
    plain = all(el.dec is None for el in els) and all(el.enc is None for el in els)
    raw_fast = exact_types(tuple(el.primary_raw for el in els))
    value_fast = exact_types(tuple(el.primary_value for el in els))

    def dec(raw: tuple[Any, ...], depth_left: int) -> tuple[Any, ...]:
        if depth_left <= 0:
            raise _depth_error()
        if plain and raw_fast(raw):
            return raw
        if len(raw) != k:
            raise DecodeError(f"expected {name} of {k} items, got {len(raw)}")
        return tuple([el.decode(item, depth_left - 1) for el, item in zip(els, raw, strict=True)])

    def enc(value: tuple[Any, ...]) -> Any:
        if plain and value_fast(value):
            return value
        if len(value) != k:
            raise EncodeError(f"expected {name} of {k} items, got {len(value)}")
        return [el.encode(item) for el, item in zip(els, value, strict=True)]

    node = _container(name, "fixed", tuple, tuple, dec=dec, enc=enc)
    return _with_coerce(node, _coerce_tuple(name))


def _frozenset(el: Node) -> Node:
    decode_items, encode_items, sortable = _items_decoder(el), _items_encoder(el), el.sortable
    name = f"frozenset[{el.name}]"

    def dec(raw: tuple[Any, ...], depth_left: int) -> frozenset[Any]:
        if depth_left <= 0:
            raise _depth_error()
        try:
            out = frozenset(decode_items(raw, depth_left - 1))
        except TypeError:  # an item type whose values are not hashable (a message with a dict)
            raise DecodeError(f"{name}: unhashable item") from None
        if len(out) != len(raw):  # canonical form: the encoder never repeats an item
            raise DecodeError(f"{name}: repeated item")
        return out

    def enc(value: frozenset[Any]) -> Any:
        # Sorted, so equal sets encode to equal bytes in every process: by value when values
        # compare (ints, strings...), else by their own msgpack bytes (messages, tuples...).
        items = list(encode_items(value))
        if sortable:
            items.sort()
        elif len(items) > 1:
            items.sort(key=_packb)
        return items

    node = _container(name, "frozenset", tuple, frozenset, dec=dec, enc=enc)
    return _with_coerce(node, _coerce_frozenset(name))


def _coerce_frozenset(name: str) -> Callable[[Any], Any]:
    def coerce(value: Any) -> Any:
        if isinstance(value, frozenset):
            return frozenset(value)
        raise EncodeError(f"expected {name}, got {type(value).__name__} {_short(value)}")

    return coerce


def _dict(key: Node, val: Node) -> Node:
    if key.kind not in ("int", "str", "bytes", "enum"):
        raise SchemaError(f"dict keys must be str, int, bytes or an IntEnum/StrEnum, not {key.name}")
    name = f"dict[{key.name}, {val.name}]"
    key_decode, val_decode, key_encode, val_encode = key.decode, val.decode, key.encode, val.encode
    krt, vrt = key.raw_types, val.raw_types
    plain = key.dec is None and val.dec is None

    def dec(raw: dict[Any, Any], depth_left: int) -> dict[Any, Any]:
        if depth_left <= 0:
            raise _depth_error()
        d = depth_left - 1
        if plain:
            for k, v in raw.items():
                if type(k) not in krt or type(v) not in vrt:
                    break
            else:
                return raw
        return {key_decode(k, d): val_decode(v, d) for k, v in raw.items()}

    def enc(value: dict[Any, Any]) -> Any:
        # Sorted by key so equal dicts encode to equal bytes whatever their insertion order.
        return dict(sorted([(key_encode(k), val_encode(v)) for k, v in value.items()], key=_KEY))

    node = _container(name, "dict", dict, dict, dec=dec, enc=enc)
    return _with_coerce(node, _coerce_dict(name))


def _coerce_dict(name: str) -> Callable[[Any], Any]:
    def coerce(value: Any) -> Any:
        if isinstance(value, dict):
            return dict(value)
        raise EncodeError(f"expected {name}, got {type(value).__name__} {_short(value)}")

    return coerce


def _enum(cls: type[enum.Enum]) -> Node:
    if issubclass(cls, enum.IntEnum):
        raw: type[Any] = int
    elif issubclass(cls, enum.StrEnum):
        raw = str
    else:
        raise SchemaError(f"enum {cls.__qualname__} must be an IntEnum or a StrEnum")
    members = {m.value: m for m in cls.__members__.values()}
    name = cls.__qualname__

    def dec(value: Any, depth_left: int) -> Any:
        member = members.get(value)
        if member is None:
            raise DecodeError(f"{_short(value)} is not a value of {name}")
        return member

    # No encoder: msgpack packs an IntEnum member as its int and a StrEnum member as its str.
    ts, vs = frozenset({raw}), frozenset({cls})
    return Node(name, "enum", ts, vs, raw, cls, dec, None, _no_coerce(name), True)


def _message(spec: MessageCodec) -> Node:
    decode_fields, encode_fields = spec.decode_fields, spec.encode_fields

    def dec(raw: tuple[Any, ...], depth_left: int) -> Any:
        if depth_left <= 0:
            raise _depth_error()
        return decode_fields(raw, depth_left - 1)

    return _container(spec.cls.__qualname__, "message", tuple, spec.cls, dec=dec, enc=encode_fields)


def _message_union(specs: list[MessageCodec]) -> Node:
    by_tag = {s.tag: s for s in specs}
    by_class = {s.cls: s for s in specs}
    name = " | ".join(s.cls.__qualname__ for s in specs)

    def dec(raw: tuple[Any, ...], depth_left: int) -> Any:
        if depth_left <= 0:
            raise _depth_error()
        tag = raw[0] if raw else None
        spec = by_tag.get(tag) if type(tag) is int else None
        if spec is None:
            raise DecodeError(f"tag {_short(tag)} is not one of {name}")
        return spec.decode_fields(raw[1:], depth_left - 1)

    def enc(value: Any) -> Any:
        spec = by_class[type(value)]  # value_types guarantees membership
        return (spec.tag, *spec.encode_fields(value))

    first = specs[0].cls
    vs = frozenset(by_class)
    return Node(name, "union", frozenset({tuple}), vs, tuple, first, dec, enc, _no_coerce(name))

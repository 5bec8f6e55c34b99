"""Sample messages covering every supported field type (tags 900-989), and example round trips.

``from __future__ import annotations`` is on purpose: every annotation here is a string that
the codec must resolve, including forward references (``Envelope`` names ``Later`` before it is
defined) and self-references (``Tree``). The generic Hypothesis round trip over the whole
registry (test_wire_registry_roundtrip.py) imports this module, so every class below is
property-tested there too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Annotated, NewType

import msgpack
import pytest

from stalwart.wire import (
    PROTOCOL_VERSION,
    Bounds,
    DecodeError,
    EncodeError,
    MaxLen,
    decode,
    decode_as,
    encode,
    message,
)

NodeId = NewType("NodeId", str)
Term = NewType("Term", int)
Blob = NewType("Blob", bytes)


class Role(IntEnum):
    FOLLOWER = 1
    CANDIDATE = 2
    LEADER = 3


class Mode(StrEnum):
    FAST = "fast"
    SAFE = "safe"


@message(900)
@dataclass(frozen=True, slots=True)
class Scalars:
    i: int
    f: float
    b: bool
    s: str
    raw: bytes
    nothing: None


@message(901)
@dataclass(frozen=True, slots=True)
class Optionals:
    i: int | None
    s: str | None
    inner: Scalars | None


@message(902)
@dataclass(frozen=True, slots=True)
class Collections:
    ints: tuple[int, ...]
    pair: tuple[str, float]
    empty: tuple[()]
    tags: frozenset[str]
    by_name: dict[str, int]
    by_id: dict[int, bytes]
    by_raw: dict[bytes, tuple[int, ...]]


@message(903)
@dataclass(frozen=True, slots=True)
class Enums:
    role: Role
    mode: Mode
    roles: frozenset[Role]
    by_role: dict[Role, Mode]
    maybe: Mode | None


@message(904)
@dataclass(frozen=True, slots=True)
class NewTypes:
    node: NodeId
    term: Term
    blob: Blob
    peers: tuple[NodeId, ...]
    terms: dict[NodeId, Term]


@message(905)
@dataclass(frozen=True, slots=True)
class Bounded:
    name: Annotated[str, MaxLen(8)]
    data: Annotated[bytes, MaxLen(4)]
    small: Annotated[int, Bounds(0, 100)]
    ratio: Annotated[float, Bounds(0.0, 1.0)]
    few: Annotated[tuple[int, ...], MaxLen(3)]
    set3: Annotated[frozenset[int], MaxLen(3)]
    map2: Annotated[dict[str, int], MaxLen(2)]
    maybe_short: Annotated[str | None, MaxLen(2)]
    positive: Annotated[int, Bounds(1, None)]
    items: tuple[Annotated[str, MaxLen(3)], ...]


@message(906)
@dataclass(frozen=True, slots=True)
class Empty:
    pass


@message(907)
@dataclass(frozen=True, slots=True)
class One:
    x: int


@message(908)
@dataclass(frozen=True, slots=True)
class Tree:
    label: str
    children: tuple[Tree, ...]
    parent_hint: Tree | None = None


@message(909)
@dataclass(frozen=True, slots=True)
class Envelope:
    body: One | Scalars | Later
    maybe: One | Empty | None
    many: tuple[One | Later, ...]
    later: Later


@message(910)
@dataclass(frozen=True, slots=True)
class Later:
    """Defined after Envelope refers to it: a forward reference resolved at first use."""

    note: str


@message(911)
@dataclass(frozen=True, slots=True)
class Nested:
    ones: frozenset[One]
    table: dict[str, tuple[One, ...]]
    grid: tuple[tuple[int, ...], ...]
    deep: dict[int, dict[str, frozenset[bytes]]]
    fixed: tuple[One, int | None, tuple[str, ...]]


@message(912)
@dataclass(frozen=True, slots=True)
class Validated:
    """Checks itself in __post_init__: a peer's values it rejects must be a DecodeError."""

    lo: int
    hi: int

    def __post_init__(self) -> None:
        if self.lo > self.hi:
            raise ValueError(f"lo {self.lo} > hi {self.hi}")


@message(913)
@dataclass(frozen=True, slots=True)
class WithDefaults:
    a: int
    b: tuple[str, ...] = ()
    c: dict[str, int] = field(default_factory=dict)


SAMPLES = [
    Scalars(-(2**63), -1.5, True, "héllo ✓", b"\x00\xff", None),
    Scalars(2**64 - 1, float("inf"), False, "", b"", None),
    Optionals(None, None, None),
    Optionals(0, "x", Scalars(1, 0.0, False, "a", b"b", None)),
    Collections((1, 2, 3), ("a", 1.0), (), frozenset({"x", "y"}), {"a": 1}, {-1: b""}, {b"k": (1,)}),
    Enums(Role.LEADER, Mode.SAFE, frozenset({Role.FOLLOWER, Role.LEADER}), {Role.CANDIDATE: Mode.FAST}, None),
    NewTypes(NodeId("n1"), Term(5), Blob(b"z"), (NodeId("a"), NodeId("b")), {NodeId("a"): Term(1)}),
    Bounded("12345678", b"abcd", 100, 1.0, (1, 2, 3), frozenset({1, 2}), {"a": 1, "b": 2}, "ab", 1, ("ab",)),
    Empty(),
    One(7),
    Tree("root", (Tree("a", ()), Tree("b", (Tree("c", ()),))), Tree("p", ())),
    Envelope(Later("l"), None, (One(1), Later("x")), Later("y")),
    Envelope(Scalars(1, 2.0, True, "s", b"b", None), Empty(), (), Later("")),
    Nested(
        frozenset({One(1), One(2)}),
        {"t": (One(3),)},
        ((1,), ()),
        {1: {"s": frozenset({b"a", b"b"})}},
        (One(4), None, ("q",)),
    ),
    Validated(1, 2),
    WithDefaults(1),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_sample_round_trips_exactly(msg: object) -> None:
    data = encode(msg)
    back = decode(data)
    assert back == msg
    assert type(back) is type(msg)
    assert encode(back) == data  # canonical: a decoded message re-encodes to the same bytes
    assert decode_as(data, type(msg)) == msg


def test_envelope_is_a_msgpack_array_of_version_tag_then_fields() -> None:
    assert msgpack.unpackb(encode(One(7))) == [PROTOCOL_VERSION, 907, 7]
    assert msgpack.unpackb(encode(Empty())) == [PROTOCOL_VERSION, 906]
    # A nested message is an array of its fields; a union member carries its tag first.
    env = Envelope(One(1), One(2), (), Later("z"))
    assert msgpack.unpackb(encode(env)) == [PROTOCOL_VERSION, 909, [907, 1], [907, 2], [], ["z"]]


def test_enum_fields_decode_to_members_and_newtypes_to_their_base() -> None:
    back = decode(encode(SAMPLES[5]))
    assert isinstance(back, Enums)
    assert back.role is Role.LEADER
    assert back.mode is Mode.SAFE
    assert all(isinstance(r, Role) for r in back.roles)
    assert list(back.by_role) == [Role.CANDIDATE]


def test_sets_and_dicts_encode_the_same_whatever_their_order() -> None:
    a = Collections((), ("", 0.0), (), frozenset(["b", "a", "c"]), {"b": 2, "a": 1}, {2: b"", 1: b""}, {})
    b = Collections((), ("", 0.0), (), frozenset(["c", "a", "b"]), {"a": 1, "b": 2}, {1: b"", 2: b""}, {})
    assert encode(a) == encode(b)
    assert msgpack.unpackb(encode(a), strict_map_key=False)[5] == ["a", "b", "c"]


def test_float_field_widens_an_int_on_encode_but_decode_insists_on_float() -> None:
    msg = Scalars(1, 3, True, "", b"", None)  # an int where float is declared is legal Python
    back = decode(encode(msg))
    assert isinstance(back, Scalars)
    assert type(back.f) is float
    assert back.f == 3.0
    forged = msgpack.packb([PROTOCOL_VERSION, 900, 1, 3, True, "", b"", None])
    with pytest.raises(DecodeError, match="expected float"):
        decode(forged)


def test_nan_round_trips() -> None:
    back = decode(encode(Scalars(0, math.nan, False, "", b"", None)))
    assert isinstance(back, Scalars)
    assert math.isnan(back.f)


def test_bytes_like_values_are_sent_as_bytes() -> None:
    msg = Scalars(0, 0.0, False, "", bytearray(b"ab"), None)  # type: ignore[arg-type]
    assert decode(encode(msg)) == Scalars(0, 0.0, False, "", b"ab", None)


def test_validating_class_refusal_of_peer_values_is_a_decode_error() -> None:
    forged = msgpack.packb([PROTOCOL_VERSION, 912, 5, 1])
    with pytest.raises(DecodeError, match="rejected its fields"):
        decode(forged)


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (One("7"), "One.x: expected int, got str"),  # type: ignore[arg-type]
        (One(True), "One.x: expected int, got bool"),
        (One(2**64), "cannot be packed"),
        (One(-(2**63) - 1), "cannot be packed"),
        (Scalars(0, True, False, "", b"", None), "expected float, got bool"),
        (Scalars(0, 0.0, 1, "", b"", None), "expected bool, got int"),  # type: ignore[arg-type]
        (Scalars(0, 0.0, False, "\ud800", b"", None), "cannot be packed"),
        (Scalars(0, 0.0, False, b"s", b"", None), "expected str"),  # type: ignore[arg-type]
        (Scalars(0, 0.0, False, "", "s", None), "expected bytes"),  # type: ignore[arg-type]
        (Scalars(0, 0.0, False, "", b"", 0), "expected None"),  # type: ignore[arg-type]
        (Scalars(0, 2**1100, False, "", b"", None), "too large for a float"),
        (Optionals(None, None, One(1)), "expected Scalars"),  # type: ignore[arg-type]
        (Collections([1], ("", 0.0), (), frozenset(), {}, {}, {}), "expected tuple"),  # type: ignore[arg-type]
        (Collections((1, "2"), ("", 0.0), (), frozenset(), {}, {}, {}), "expected int, got str"),  # type: ignore[arg-type]
        (Collections((), ("", 0.0, 1), (), frozenset(), {}, {}, {}), "of 2 items, got 3"),  # type: ignore[arg-type]
        (Collections((), ("", 0.0), (), {"a"}, {}, {}, {}), "expected frozenset"),  # type: ignore[arg-type]
        (Collections((), ("", 0.0), (), frozenset(), {1: 1}, {}, {}), "expected str, got int"),  # type: ignore[dict-item]
        (Enums(1, Mode.FAST, frozenset(), {}, None), "expected Role"),  # type: ignore[arg-type]
        (Bounded("123456789", b"", 0, 0.0, (), frozenset(), {}, None, 1, ()), "exceeds MaxLen"),
        (Bounded("", b"12345", 0, 0.0, (), frozenset(), {}, None, 1, ()), "exceeds MaxLen"),
        (Bounded("", b"", 101, 0.0, (), frozenset(), {}, None, 1, ()), "outside Bounds"),
        (Bounded("", b"", 0, 1.5, (), frozenset(), {}, None, 1, ()), "outside Bounds"),
        (Bounded("", b"", 0, math.nan, (), frozenset(), {}, None, 1, ()), "outside Bounds"),
        (Bounded("", b"", 0, 0.0, (1, 2, 3, 4), frozenset(), {}, None, 1, ()), "exceeds MaxLen"),
        (Bounded("", b"", 0, 0.0, (), frozenset({1, 2, 3, 4}), {}, None, 1, ()), "exceeds MaxLen"),
        (Bounded("", b"", 0, 0.0, (), frozenset(), {"a": 1, "b": 2, "c": 3}, None, 1, ()), "exceeds MaxLen"),
        (Bounded("", b"", 0, 0.0, (), frozenset(), {}, "abc", 1, ()), "exceeds MaxLen"),
        (Bounded("", b"", 0, 0.0, (), frozenset(), {}, None, 0, ()), "outside Bounds"),
        (Bounded("", b"", 0, 0.0, (), frozenset(), {}, None, 1, ("abcd",)), "exceeds MaxLen"),
        (Envelope(Empty(), None, (), Later("")), "expected One | Scalars | Later"),  # type: ignore[arg-type]
        (Envelope(One(1), None, (Empty(),), Later("")), "expected One | Later"),  # type: ignore[arg-type]
        (Tree("a", (One(1),)), "expected Tree"),  # type: ignore[arg-type]
        (Nested(frozenset(), {}, ((1,), ("x",)), {}, (One(1), None, ())), "expected int, got str"),  # type: ignore[arg-type]
        (object(), "not a registered message"),
    ],
)
def test_encode_refuses_values_that_break_the_declared_types(msg: object, match: str) -> None:
    with pytest.raises(EncodeError, match=match):
        encode(msg)


def test_a_failed_encode_leaves_the_packer_clean() -> None:
    with pytest.raises(EncodeError):
        encode(Scalars(0, 0.0, False, "\ud800", b"", None))
    assert msgpack.unpackb(encode(One(1))) == [PROTOCOL_VERSION, 907, 1]


def test_deep_recursive_structure_fails_to_encode_cleanly() -> None:
    tree = Tree("leaf", ())
    for _ in range(5000):
        tree = Tree("n", (tree,))
    with pytest.raises(EncodeError, match="deeply"):
        encode(tree)

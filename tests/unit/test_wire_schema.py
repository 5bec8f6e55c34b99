"""@message refuses bad definitions loudly, at decoration time, and leaves the registry clean."""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any

import pytest

from stalwart.errors import ConfigError
from stalwart.wire import (
    Bounds,
    DecodeError,
    Limits,
    MaxLen,
    SchemaError,
    decode,
    decode_as,
    encode,
    field_types,
    message,
    registered_types,
    tag_of,
)
from tests.unit.test_wire_samples import One, Tree


def _define(tag: int, annotation: Any) -> type[Any]:
    """A fresh frozen slotted dataclass with one field of the given type, then @message(tag)."""
    cls = type("Probe", (), {"__annotations__": {"x": annotation}, "__module__": __name__})
    cls.__qualname__ = f"Probe_{tag}_{id(annotation)}"
    return message(tag)(dataclass(frozen=True, slots=True)(cls))


class Plain(enum.Enum):
    A = 1


class Flags(enum.IntFlag):
    A = 1


@pytest.mark.parametrize(
    ("annotation", "match"),
    [
        (list[int], "use tuple"),
        (set[int], "use frozenset"),
        (tuple, "give its item types"),
        (dict, "give its item types"),
        (typing.Any, "unsupported field type"),
        (object, "unsupported field type"),
        (int | str, "only X | None and unions of registered messages"),
        (One | int, "only X | None and unions of registered messages"),
        (dict[float, int], "dict keys must be"),
        (dict[tuple[int, int], int], "dict keys must be"),
        (Annotated[int, MaxLen(3)], "MaxLen applies to"),
        (Annotated[str, Bounds(0, 1)], "Bounds applies to"),
        (Plain, "must be an IntEnum or a StrEnum"),
        (Flags, "must be an IntEnum or a StrEnum"),
        (typing.Literal[1], "unsupported field type"),
        (frozenset[list[int]], "use tuple"),
    ],
)
def test_unsupported_field_types_fail_at_decoration(annotation: Any, match: str) -> None:
    before = registered_types()
    with pytest.raises(SchemaError, match=match):
        _define(950, annotation)
    assert registered_types() == before  # a refused class leaves no trace


def test_schema_error_is_a_config_error_and_a_type_error() -> None:
    assert issubclass(SchemaError, ConfigError)
    assert issubclass(SchemaError, TypeError)


def test_unregistered_nested_dataclass_is_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class Loose:
        a: int

    with pytest.raises(SchemaError, match="not a registered @message"):
        _define(951, Loose)


def test_duplicate_tag_is_refused_and_keeps_the_first_class() -> None:
    with pytest.raises(SchemaError, match=r"tag 907 .* already used by .*One"):

        @message(907)
        @dataclass(frozen=True, slots=True)
        class Impostor:
            x: int

    assert registered_types()[907] is One
    assert tag_of(One) == 907


def test_registering_a_class_twice_is_refused() -> None:
    with pytest.raises(SchemaError, match="already registered"):
        message(952)(One)


def test_reloading_a_module_replaces_its_class() -> None:
    # importlib.reload re-runs the decorators with new class objects of the same name.
    first = _reloadable(953)
    second = _reloadable(953)
    assert first is not second
    assert registered_types()[953] is second
    assert type(decode(encode(second(1)))) is second


def _reloadable(tag: int) -> type[Any]:
    @dataclass(frozen=True, slots=True)
    class Reloaded:
        x: int

    return message(tag)(Reloaded)


@pytest.mark.parametrize("tag", [0, -1, 2**31, "7", 1.0, True])
def test_bad_tags_are_refused(tag: Any) -> None:
    with pytest.raises(SchemaError, match="tag must be an int"):
        message(tag)


def test_non_frozen_non_slotted_or_non_dataclass_classes_are_refused() -> None:
    with pytest.raises(SchemaError, match="frozen=True, slots=True"):

        @message(954)
        @dataclass(slots=True)
        class Mutable:
            x: int

    with pytest.raises(SchemaError, match="frozen=True, slots=True"):

        @message(954)
        @dataclass(frozen=True)
        class NoSlots:
            x: int

    with pytest.raises(SchemaError, match="needs a dataclass"):

        @message(954)
        class NotADataclass:
            x: int

    assert 954 not in registered_types()


def test_fields_must_be_positional_init_fields() -> None:
    with pytest.raises(SchemaError, match="positional init fields"):

        @message(955)
        @dataclass(frozen=True, slots=True)
        class KwOnly:
            x: int = field(kw_only=True)

    with pytest.raises(SchemaError, match="positional init fields"):

        @message(955)
        @dataclass(frozen=True, slots=True)
        class NoInit:
            x: int = field(init=False, default=0)


def test_a_forward_reference_never_resolved_fails_at_first_use() -> None:
    @message(956)
    @dataclass(frozen=True, slots=True)
    class Dangling:
        x: NeverDefined  # type: ignore[name-defined]  # noqa: F821

    assert registered_types()[956] is Dangling
    with pytest.raises(SchemaError, match="cannot resolve"):
        encode(Dangling(1))
    # decode promises DecodeError for any bytes, even those naming a broken class.
    with pytest.raises(DecodeError, match="cannot be decoded"):
        decode(b"\x93\x01\xcd\x03\xbc\x01")


def test_field_types_and_tag_of_describe_registered_classes() -> None:
    types_ = field_types(Tree)
    assert list(types_) == ["label", "children", "parent_hint"]
    assert types_["children"] == tuple[Tree, ...]
    with pytest.raises(SchemaError):
        field_types(int)
    with pytest.raises(SchemaError):
        tag_of(int)
    with pytest.raises(SchemaError):
        decode_as(encode(One(1)), int)


def test_metadata_of_other_libraries_is_ignored() -> None:
    cls = _define(957, Annotated[int, "a doc string", Bounds(0, 5)])
    assert decode(encode(cls(5))) == cls(5)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_depth": 0}, {"max_depth": 500}, {"max_message_bytes": -1}, {"max_str_bytes": 1.5}],
)
def test_bad_limits_are_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Limits(**kwargs)


def test_bad_annotations_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        MaxLen(-1)
    with pytest.raises(ConfigError):
        Bounds(2, 1)
    with pytest.raises(ConfigError):
        Bounds(float("nan"), None)

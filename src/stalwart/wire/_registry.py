"""The ``@message`` decorator, the tag registry, and each class's compiled field codec."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from stalwart.wire._compiled import CompiledMessage
from stalwart.wire._errors import SchemaError
from stalwart.wire._types import MessageCodec, compile_type

T = TypeVar("T")
MAX_TAG = 2**31 - 1

BY_TAG: dict[int, MessageSpec] = {}
BY_CLASS: dict[type[Any], MessageSpec] = {}
ENCODERS: dict[type[Any], Callable[[Any], bytes]] = {}
"""Class -> its compiled ``encode_message``, for every registered class compiled so far: the
first lookup of every ``encode``. A class leaves it when it leaves ``BY_CLASS``."""


class MessageSpec:
    """A registered class: its tag, and its codec compiled on first need."""

    __slots__ = ("_compiled", "cls", "tag")

    def __init__(self, cls: type[Any], tag: int) -> None:
        self.cls, self.tag = cls, tag
        self._compiled: CompiledMessage | None = None

    def compiled(self) -> CompiledMessage:
        compiled = self._compiled
        if compiled is None:
            try:
                compiled = self._compiled = self._compile()
                ENCODERS[self.cls] = compiled.encode_message
            except NameError as exc:
                raise SchemaError(f"{self.cls.__qualname__}: cannot resolve a field type: {exc}") from exc
        return compiled

    def _compile(self) -> CompiledMessage:
        hints = resolved_hints(self.cls)
        names = tuple(hints)
        nodes = []
        for name, tp in hints.items():
            try:
                nodes.append(compile_type(tp, lookup_spec))
            except SchemaError as exc:
                raise SchemaError(f"{self.cls.__qualname__}.{name}: {exc}") from None
        return CompiledMessage(self.cls, self.tag, names, tuple(nodes))

    def encode_fields(self, msg: Any) -> tuple[Any, ...] | list[Any]:
        return (self._compiled or self.compiled()).encode_fields(msg)

    def decode_fields(self, raw: tuple[Any, ...], depth_left: int) -> Any:
        return (self._compiled or self.compiled()).decode_fields(raw, depth_left)


def resolved_hints(cls: type[Any]) -> dict[str, Any]:
    """Field name -> resolved type (``Annotated`` kept), in field order. May raise NameError."""
    hints = typing.get_type_hints(cls, localns={cls.__name__: cls}, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def lookup_spec(cls: type[Any]) -> MessageCodec | None:
    return BY_CLASS.get(cls)


def spec_for_class(cls: type[Any]) -> MessageSpec | None:
    return BY_CLASS.get(cls)


def spec_for_tag(tag: int) -> MessageSpec | None:
    return BY_TAG.get(tag)


def _check_class(cls: Any) -> None:
    if not isinstance(cls, type) or not dataclasses.is_dataclass(cls):
        raise SchemaError(f"@message needs a dataclass, got {cls!r} (put @message above @dataclass)")
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise SchemaError(f"{cls.__qualname__}: messages must be @dataclass(frozen=True, slots=True)")
    if "__slots__" not in cls.__dict__:
        raise SchemaError(f"{cls.__qualname__}: messages must be @dataclass(frozen=True, slots=True)")
    for f in dataclasses.fields(cls):
        if not f.init or f.kw_only:
            raise SchemaError(f"{cls.__qualname__}.{f.name}: fields must be positional init fields")


def message(tag: int) -> Callable[[type[T]], type[T]]:
    """Register a frozen slotted dataclass as a wire message with this type tag.

    The field types are resolved and compiled now (or, if one names a class not defined yet, at
    the first encode or decode); a duplicate tag or an unsupported type raises
    :class:`SchemaError` here rather than when a peer first sends the message.
    """
    if type(tag) is not int or not 1 <= tag <= MAX_TAG:
        raise SchemaError(f"a message tag must be an int in 1..{MAX_TAG}, got {tag!r}")

    def register(cls: type[T]) -> type[T]:
        _check_class(cls)
        existing = BY_TAG.get(tag)
        if existing is not None and not _same_definition(existing.cls, cls):
            raise SchemaError(
                f"tag {tag} of {cls.__module__}.{cls.__qualname__} is already used by "
                f"{existing.cls.__module__}.{existing.cls.__qualname__}"
            )
        if cls in BY_CLASS:
            raise SchemaError(f"{cls.__qualname__} is already registered with tag {BY_CLASS[cls].tag}")
        spec = MessageSpec(cls, tag)
        previous = BY_TAG.get(tag)  # the same class re-defined (a module reloaded) is replaced
        if previous is not None:
            del BY_CLASS[previous.cls]
            ENCODERS.pop(previous.cls, None)
        BY_TAG[tag] = spec
        BY_CLASS[cls] = spec  # registered before compiling, so the class may refer to itself
        try:
            spec.compiled()
        except SchemaError as exc:
            if isinstance(exc.__cause__, NameError):
                return cls  # a forward reference to a class defined later: compiled at first use
            _unregister(spec, previous)
            raise
        return cls

    return register


def _unregister(spec: MessageSpec, previous: MessageSpec | None) -> None:
    del BY_CLASS[spec.cls]
    ENCODERS.pop(spec.cls, None)
    if previous is None:
        del BY_TAG[spec.tag]
    else:
        BY_TAG[spec.tag] = previous
        BY_CLASS[previous.cls] = previous


def _same_definition(old: type[Any], new: type[Any]) -> bool:
    return (old.__module__, old.__qualname__) == (new.__module__, new.__qualname__)


def registered_types() -> dict[int, type[Any]]:
    """Every registered message class by tag, in tag order (a snapshot, safe to keep)."""
    return {tag: BY_TAG[tag].cls for tag in sorted(BY_TAG)}


def field_types(cls: type[Any]) -> dict[str, Any]:
    """The resolved field types of a registered message class, ``Annotated`` metadata kept."""
    spec = BY_CLASS.get(cls)
    if spec is None:
        raise SchemaError(f"{cls!r} is not a registered message")
    compiled = spec.compiled()
    return dict(zip(compiled.names, resolved_hints(cls).values(), strict=True))


def tag_of(cls: type[Any]) -> int:
    """The type tag a registered class was given."""
    spec = BY_CLASS.get(cls)
    if spec is None:
        raise SchemaError(f"{cls!r} is not a registered message")
    return spec.tag

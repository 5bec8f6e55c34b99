"""The wire package's errors: shared ones re-exported, and the two that only the codec raises."""

from __future__ import annotations

from stalwart.errors import AuthenticationError, ConfigError, DecodeError, FrameTooLargeError, StalwartError


class SchemaError(ConfigError, TypeError):
    """A message class cannot be registered: duplicate tag, unsupported field type, not frozen...

    Raised at decoration time (or, for a forward reference that cannot be resolved yet, at the
    first encode or decode of the class). It is a local programming error, never a peer's fault;
    it is also a ``TypeError`` because that is what Python raises for a wrongly typed definition.
    """


class EncodeError(StalwartError):
    """A message holds a value its declared field type does not allow, so it was not encoded.

    Catching this on the sending side keeps a local bug from looking like a hostile peer: the
    receiver would otherwise reject the bytes with a :class:`DecodeError` and drop the connection.
    """


__all__ = [
    "AuthenticationError",
    "DecodeError",
    "EncodeError",
    "FrameTooLargeError",
    "SchemaError",
]

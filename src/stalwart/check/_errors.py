"""Errors of the checker, rooted in :mod:`stalwart.errors`."""

from __future__ import annotations

from stalwart.errors import ConfigError, DecodeError, StalwartError


class HistoryFormatError(DecodeError):
    """A history file (or one of its lines) could not be read.

    ``path`` names the file (``"<memory>"`` for in-memory text) and ``line`` the 1-based line
    number of the first bad line (``0`` when the problem is the file as a whole).
    """

    def __init__(self, path: str, line: int, reason: str) -> None:
        where = f"{path}:{line}" if line > 0 else path
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class UnknownModelError(ConfigError):
    """A model was named that is not in the registry."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown model {name!r}; known models: {', '.join(sorted(known))}")
        self.name = name


class ModelError(StalwartError):
    """An operation that the model cannot interpret (an unknown ``f``, a malformed argument)."""

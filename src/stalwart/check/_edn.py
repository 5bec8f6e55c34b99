"""A small, safe reader for the subset of EDN that Jepsen and Knossos histories use.

Supported: ``nil``, ``true``/``false``, integers, floats, strings (with ``\\" \\\\ \\n \\t \\r``
escapes), keywords (:read), symbols, vectors ``[...]`` and lists ``(...)`` (both read as tuples),
maps ``{...}`` (dicts), sets ``#{...}`` (frozensets), commas as whitespace and ``;`` comments.
Tagged literals (``#inst``, ``#uuid``) and reader macros are refused. Nothing is ever evaluated.
"""

from __future__ import annotations

import re
from typing import Any

_MAX_DEPTH = 64  # nesting limit: histories are flat; this refuses hostile input early


class EdnError(ValueError):
    """The text is not in the supported EDN subset (the message says where)."""


class Keyword(str):
    """An EDN keyword, stored without its colon; equal to the plain string of its name."""

    __slots__ = ()

    def __repr__(self) -> str:
        return ":" + str(self)


class Symbol(str):
    """An EDN symbol other than nil/true/false."""

    __slots__ = ()


_TOKEN = re.compile(
    r"""
    (?P<ws>[\s,]+|;[^\n]*)
  | (?P<open>\#\{|[\[{(])
  | (?P<close>[\]})])
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<kw>:[^\s,\[\]{}()"';@^`~\\]+)
  | (?P<num>[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![^\s,\[\]{}()]))
  | (?P<sym>[A-Za-z*!_?$%&=<>.+\-/][^\s,\[\]{}()"';@^`~\\]*)
  | (?P<bad>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "/": "/"}
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_CLOSERS = {"[": "]", "(": ")", "{": "}", "#{": "}"}
_END: Any = object()


def _unescape(body: str) -> str:
    def one(m: re.Match[str]) -> str:
        try:
            return _ESCAPES[m.group(1)]
        except KeyError:
            raise EdnError(f"unsupported string escape \\{m.group(1)}") from None

    return _ESCAPE.sub(one, body) if "\\" in body else body


def _atom(kind: str, text: str) -> Any:
    match kind:
        case "str":
            return _unescape(text[1:-1])
        case "kw":
            return Keyword(text[1:])
        case "num":
            return float(text) if ("." in text or "e" in text or "E" in text) else int(text)
        case "sym":
            if text == "nil":
                return None
            if text in ("true", "false"):
                return text == "true"
            return Symbol(text)
        case _:
            raise EdnError(f"unexpected {text!r}")


def parse_edn(text: str) -> Any:
    """Parse exactly one EDN value from ``text`` (surrounding whitespace allowed)."""
    tokens = [(m.lastgroup, m.group(), m.start()) for m in _TOKEN.finditer(text) if m.lastgroup != "ws"]
    pos = 0

    def value(depth: int) -> Any:
        nonlocal pos
        if pos >= len(tokens):
            raise EdnError("unexpected end of input")
        kind, tok, col = tokens[pos]
        pos += 1
        if kind == "open":
            if depth >= _MAX_DEPTH:
                raise EdnError(f"nesting deeper than {_MAX_DEPTH} at column {col + 1}")
            items = []
            while True:
                if pos >= len(tokens):
                    raise EdnError(f"{tok!r} at column {col + 1} is never closed")
                k2, t2, c2 = tokens[pos]
                if k2 == "close":
                    pos += 1
                    if t2 != _CLOSERS[tok]:
                        raise EdnError(f"{t2!r} at column {c2 + 1} does not close {tok!r}")
                    break
                items.append(value(depth + 1))
            return _collection(tok, items, col)
        if kind == "close":
            raise EdnError(f"unexpected {tok!r} at column {col + 1}")
        if kind == "bad":
            raise EdnError(f"unexpected character {tok!r} at column {col + 1}")
        assert kind is not None  # every token matches one named group
        return _atom(kind, tok)

    result = value(0)
    if pos != len(tokens):
        raise EdnError(f"trailing input at column {tokens[pos][2] + 1}")
    return result


def _collection(opener: str, items: list[Any], col: int) -> Any:
    try:
        if opener == "{":
            if len(items) % 2:
                raise EdnError(f"map at column {col + 1} has an odd number of forms")
            return dict(zip(items[::2], items[1::2], strict=True))
        if opener == "#{":
            return frozenset(items)
    except TypeError:
        raise EdnError(f"unhashable map key or set element at column {col + 1}") from None
    return tuple(items)

"""``exact_types(expected)``: a function telling whether a tuple's items have exactly these types.

This is the hot check of every encode and decode. ``tuple(map(type, items)) == expected`` does
it in one line but calls ``type`` through the generic call path; an unrolled ``type(a) is t0 and
...`` uses the interpreter's specialised one-argument ``type()`` and is about three times faster.
Without code generation (no exec: a house rule), arities 0 to 8 are written out by hand; longer
tuples use the generic comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TypeCheck = Callable[[Any], bool]


def exact_types(expected: tuple[type[Any], ...]) -> TypeCheck:
    """``f(items)`` is True iff ``len(items) == len(expected)`` and every item's type is exact."""
    n = len(expected)
    if n > 8:
        return lambda items: tuple(map(type, items)) == expected
    return _UNROLLED[n](expected)


def _c0(ts: tuple[type, ...]) -> TypeCheck:
    return lambda items: len(items) == 0


def _c1(ts: tuple[type, ...]) -> TypeCheck:
    (t0,) = ts

    def check(items: Any) -> bool:
        return len(items) == 1 and type(items[0]) is t0

    return check


def _c2(ts: tuple[type, ...]) -> TypeCheck:
    t0, t1 = ts

    def check(items: Any) -> bool:
        if len(items) != 2:
            return False
        a, b = items
        return type(a) is t0 and type(b) is t1

    return check


def _c3(ts: tuple[type, ...]) -> TypeCheck:
    t0, t1, t2 = ts

    def check(items: Any) -> bool:
        if len(items) != 3:
            return False
        a, b, c = items
        return type(a) is t0 and type(b) is t1 and type(c) is t2

    return check


def _c4(ts: tuple[type, ...]) -> TypeCheck:
    t0, t1, t2, t3 = ts

    def check(items: Any) -> bool:
        if len(items) != 4:
            return False
        a, b, c, d = items
        return type(a) is t0 and type(b) is t1 and type(c) is t2 and type(d) is t3

    return check


def _c5(ts: tuple[type, ...]) -> TypeCheck:
    t0, t1, t2, t3, t4 = ts

    def check(items: Any) -> bool:
        if len(items) != 5:
            return False
        a, b, c, d, e = items
        return type(a) is t0 and type(b) is t1 and type(c) is t2 and type(d) is t3 and type(e) is t4

    return check


def _c6(ts: tuple[type, ...]) -> TypeCheck:
    t0, t1, t2, t3, t4, t5 = ts

    def check(items: Any) -> bool:
        if len(items) != 6:
            return False
        a, b, c, d, e, f = items
        return (
            type(a) is t0 and type(b) is t1 and type(c) is t2 and type(d) is t3 and type(e) is t4
            and type(f) is t5
        )  # fmt: skip

    return check


def _c7(ts: tuple[type, ...]) -> TypeCheck:
    t0, t1, t2, t3, t4, t5, t6 = ts

    def check(items: Any) -> bool:
        if len(items) != 7:
            return False
        a, b, c, d, e, f, g = items
        return (
            type(a) is t0 and type(b) is t1 and type(c) is t2 and type(d) is t3 and type(e) is t4
            and type(f) is t5 and type(g) is t6
        )  # fmt: skip

    return check


def _c8(ts: tuple[type, ...]) -> TypeCheck:
    t0, t1, t2, t3, t4, t5, t6, t7 = ts

    def check(items: Any) -> bool:
        if len(items) != 8:
            return False
        a, b, c, d, e, f, g, h = items
        return (
            type(a) is t0 and type(b) is t1 and type(c) is t2 and type(d) is t3 and type(e) is t4
            and type(f) is t5 and type(g) is t6 and type(h) is t7
        )  # fmt: skip

    return check


_UNROLLED: tuple[Callable[[tuple[type, ...]], TypeCheck], ...] = (_c0, _c1, _c2, _c3, _c4, _c5, _c6, _c7, _c8)

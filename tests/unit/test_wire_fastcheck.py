"""The unrolled exact-type check agrees with the obvious one for every arity and every mix."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.wire._fastcheck import exact_types

POOL: list[Any] = [0, True, 1.5, "s", b"b", None, (), {}]
TYPES = [type(v) for v in POOL]


@settings(max_examples=400, deadline=None)
@given(
    expected=st.lists(st.sampled_from(TYPES), max_size=11),
    items=st.lists(st.sampled_from(POOL), max_size=11),
    as_list=st.booleans(),
)
def test_exact_types_agrees_with_the_generic_comparison(
    expected: list[type[Any]], items: list[Any], as_list: bool
) -> None:
    check = exact_types(tuple(expected))
    values = items if as_list else tuple(items)
    assert check(values) == (tuple(map(type, values)) == tuple(expected))


def test_every_arity_accepts_its_own_types_and_refuses_bool_for_int() -> None:
    for n in range(12):
        expected = tuple([int] * n)
        check = exact_types(expected)
        assert check((7,) * n)
        assert not check((7,) * (n + 1))
        if n:
            assert not check((7,) * (n - 1))
            for i in range(n):
                assert not check((7,) * i + (True,) + (7,) * (n - i - 1))

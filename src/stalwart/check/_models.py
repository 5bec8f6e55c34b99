"""Sequential specifications ("models") that the checker linearizes histories against.

A model says what one operation does to a state. States must be hashable and compare by value
(``None``, ints, strings, tuples, frozensets): the checker memoises on them. Adding a model takes
a few lines::

    class Counter(Model):
        name = "counter"

        def init(self) -> int:
            return 0

        def step(self, state: int, op: Operation) -> tuple[bool, int]:
            if op.f == "add":
                return True, state + op.value
            # a read: legal iff it saw the current value (an INFO read saw anything)
            return op.status is Status.INFO or op.output == state, state

``step`` sees each operation as recorded. ``op.status is Status.INFO`` means the output is
unknown: accept any output and apply the effect. ``op.status is Status.FAIL`` reaches ``step``
only for operations that :meth:`Model.happened` keeps (by default a failed ``cas``: the compare
did not match).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from typing import Any, ClassVar

from stalwart.check._errors import ModelError, UnknownModelError
from stalwart.check._history import Operation, Status


class _Illegal:
    """The type of :data:`ILLEGAL`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ILLEGAL"


#: Returned by a transition function (:meth:`Model.transition`) when the operation is illegal.
ILLEGAL: Any = _Illegal()

Transition = Callable[[Any], Any]


class Model(ABC):
    """A sequential specification: ``init()`` and ``step(state, op) -> (legal, new_state)``."""

    name: ClassVar[str] = "model"

    @abstractmethod
    def init(self) -> Hashable:
        """The state before any operation."""

    @abstractmethod
    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        """Whether ``op`` is legal in ``state`` (given its output), and the state after it."""

    def happened(self, op: Operation) -> bool:
        """Whether a completed ``op`` must be linearized at all.

        Default: everything except ``FAIL`` operations, which did not happen; a failed ``cas`` is
        the exception (it happened: the compare did not match), as in Jepsen and Porcupine.
        """
        return op.status is not Status.FAIL or op.f == "cas"

    def transition(self, op: Operation) -> Transition:
        """A function ``state -> next state`` for ``op``, or :data:`ILLEGAL` where it is illegal.

        Optional, purely a speed-up: the checker calls it for every candidate move. The default
        calls :meth:`step` and memoises the answers per state, which pays off when states repeat
        (registers); a model whose states rarely repeat can return a small closure instead.
        """
        step = self.step
        memo: dict[Any, Any] = {}

        def via_step(state: Any) -> Any:
            after = memo.get(state, memo)
            if after is memo:
                legal, after = step(state, op)
                if not legal:
                    after = ILLEGAL
                memo[state] = after
            return after

        return via_step

    def read_only(self, op: Operation) -> bool:
        """Whether ``op`` never changes the state, in any state where it is legal.

        Optional, purely a speed-up: the checker linearizes a legal read-only operation at once
        without trying alternatives (moving it earlier cannot break a linearization). Saying
        ``True`` wrongly can give wrong verdicts; the default ``False`` is always safe.
        """
        return False

    def partition(self, ops: Sequence[Operation]) -> list[tuple[str | None, list[Operation]]]:
        """Independent sub-histories, each named, checked separately (P-compositionality).

        The default is one partition. Override only when operations on different parts of the
        state never interact (a key-value store's keys).
        """
        return [(None, list(ops))]

    def describe_state(self, state: Any) -> str:
        """A short human-readable form of a state, for reports."""
        return "nil" if state is None else repr(state)

    def describe_op(self, op: Operation) -> str:
        """A short human-readable form of an operation, for reports."""
        return describe_operation(op)


def describe_operation(op: Operation) -> str:
    """``p3 cas(1, 2) -> ok`` style text."""

    def show(v: Any) -> str:
        if v is None:
            return "nil"
        if isinstance(v, tuple):
            return ", ".join(show(x) for x in v)
        return repr(v) if isinstance(v, str) else str(v)

    key = f"[{op.key}]" if op.key is not None else ""
    args = "" if op.value is None else show(op.value)
    match op.status:
        case Status.INFO:
            out = "?"
        case Status.FAIL:
            out = "fail"
        case Status.OK:
            out = show(op.output) if op.f in ("read", "get") else "ok"
    return f"p{op.process} {op.f}{key}({args}) -> {out}"


def _compiled(op: Operation, absent: Any) -> Transition:
    """Closures equivalent to CasRegister.step / KeyValue.step (``absent`` = the empty value)."""
    bad = ILLEGAL

    def unchanged(s: Any) -> Any:
        return s

    match op.f, op.status:
        case (("read" | "get"), Status.INFO):
            return unchanged
        case (("read" | "get"), _):
            out = absent if op.output is None else op.output
            return lambda s: s if s == out else bad
        case (("write" | "put"), _):
            value = absent if op.value is None else op.value
            return lambda s: value
        case "append", _ if absent == "":
            tail = "" if op.value is None else op.value
            return lambda s: s + tail
        case "delete", _ if absent == "":
            return lambda s: ""
        case "cas", status:
            frm, to = _cas_args(op)
            frm, to = (absent if frm is None else frm), (absent if to is None else to)
            if status is Status.OK:
                return lambda s: to if s == frm else bad
            if status is Status.FAIL:
                return lambda s: s if s != frm else bad
            return lambda s: to if s == frm else s
        case _:
            kind = "kv" if absent == "" else "cas-register"
            raise ModelError(f"{kind} does not know the operation {op.f!r}: {op}")


def _cas_args(op: Operation) -> tuple[Any, Any]:
    value = op.value
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ModelError(f"cas needs a [from to] value, got {value!r}: {op}")
    return value[0], value[1]


class CasRegister(Model):
    """One register with read, write and compare-and-set; initially ``None`` (absent).

    A read of ``None`` means the register was absent. A ``cas`` whose status is ``OK`` swapped;
    one whose status is ``FAIL`` found a different value and changed nothing.
    """

    name = "cas-register"

    def read_only(self, op: Operation) -> bool:
        # a read, or a cas that failed its compare
        return op.f in ("read", "get") or (op.f == "cas" and op.status is Status.FAIL)

    def init(self) -> Hashable:
        return None

    def transition(self, op: Operation) -> Transition:
        return _compiled(op, None)

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        known = op.status is not Status.INFO
        match op.f:
            case "read" | "get":
                return (not known or op.output == state), state
            case "write" | "put":
                return True, op.value
            case "cas":
                frm, to = _cas_args(op)
                matches = state == frm
                if known and matches != (op.status is Status.OK):
                    return False, state
                return True, (to if matches else state)
            case _:
                raise ModelError(f"cas-register does not know the operation {op.f!r}: {op}")


class KeyValue(Model):
    """A map of string registers, one partition per key: get/put/append/delete/cas.

    A key that was never written (or was deleted) reads as ``""``; a ``get`` output of ``None``
    also means absent. ``append`` concatenates strings. ``cas`` values are ``(from, to)``.
    """

    name = "kv"

    def read_only(self, op: Operation) -> bool:
        return op.f in ("get", "read") or (op.f == "cas" and op.status is Status.FAIL)

    def init(self) -> Hashable:
        return ""

    def transition(self, op: Operation) -> Transition:
        return _compiled(op, "")

    def partition(self, ops: Sequence[Operation]) -> list[tuple[str | None, list[Operation]]]:
        by_key: dict[str | None, list[Operation]] = {}
        for op in ops:
            by_key.setdefault(op.key, []).append(op)
        return sorted(by_key.items(), key=lambda kv: (kv[0] is not None, kv[0] or ""))

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        known = op.status is not Status.INFO
        match op.f:
            case "get" | "read":
                out = "" if op.output is None else op.output
                return (not known or out == state), state
            case "put" | "write":
                return True, "" if op.value is None else op.value
            case "append":
                return True, state + ("" if op.value is None else op.value)
            case "delete":
                return True, ""
            case "cas":
                frm, to = _cas_args(op)
                frm = "" if frm is None else frm
                matches = state == frm
                if known and matches != (op.status is Status.OK):
                    return False, state
                return True, (("" if to is None else to) if matches else state)
            case _:
                raise ModelError(f"kv does not know the operation {op.f!r}: {op}")

    def describe_state(self, state: Any) -> str:
        return repr(state)


CAS_REGISTER = CasRegister()
KV = KeyValue()

#: Models by name; add your own with ``MODELS["name"] = MyModel()``.
MODELS: dict[str, Model] = {CAS_REGISTER.name: CAS_REGISTER, KV.name: KV}


def resolve_model(model: str | Model) -> Model:
    """A model object from a name in :data:`MODELS` or a :class:`Model` instance."""
    if isinstance(model, Model):
        return model
    try:
        return MODELS[model]
    except KeyError:
        raise UnknownModelError(model, list(MODELS)) from None

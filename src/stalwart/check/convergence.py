"""Convergence checks for CRDTs: point it at your own types, too.

Two entry points:

* :func:`check_convergence` takes replicas' final states (any objects with ``merge(other)``
  in place, ``value``, ``==`` and a way to copy them: ``copy()``, or ``to_bytes``/``from_bytes``,
  or ``copy.deepcopy``). It checks the lattice laws on those states (merge idempotent,
  commutative, associative), performs a full exchange (every replica merges every other, in two
  different orders) and requires all results equal; with ``expected=`` it also compares the
  converged value with a sequential-specification oracle. ``require_already_equal=True`` also
  demands the replicas were equal *before* the checker's exchange (what a simulation that has
  healed and settled must show).
* :func:`check_operation_log` replays a global log of operations and syncs on fresh replicas
  made by your factory, collects every delta the mutators return, then checks that the deltas,
  merged in several random orders with duplicates, give the same state as the full exchange,
  and finally runs :func:`check_convergence` with ``oracle(ops)`` as the expected value.

Both return a :class:`ConvergenceResult`: ``ok``, a :class:`ConvergenceVerdict`, the converged
value, and findings with a human-readable diff (``result.report()``).
"""

from __future__ import annotations

import copy as _copy
import enum
import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stalwart.errors import StalwartError

_NO_ORACLE: Any = object()
MAX_LAW_TRIPLES = 64  # associativity is checked on at most this many ordered triples
MAX_LAW_DELTAS = 6  # check_operation_log also checks the laws on up to this many deltas
MAX_DIFF_ITEMS = 10  # a diff lists at most this many differing items per side
MAX_REPORTED_FINDINGS = 5  # report() shows the first few; ``findings`` has them all


class ConvergenceInputError(StalwartError, ValueError):
    """The checker was called with nothing to check or an inconsistent log."""


class ConvergenceVerdict(enum.Enum):
    CONVERGED = "converged"
    LAW_VIOLATED = "law-violated"  # merge is not idempotent / commutative / associative
    DIVERGED = "diverged"  # replicas differ (before, or after a full exchange)
    DELTA_MISMATCH = "delta-mismatch"  # merging the deltas differs from merging full states
    ORACLE_MISMATCH = "oracle-mismatch"  # converged, but not to the specified value


@dataclass(frozen=True, slots=True)
class Finding:
    """One violation: which check, between which replicas, and the diff."""

    verdict: ConvergenceVerdict
    check: str  # "idempotence", "commutativity", "associativity", "exchange", "oracle", ...
    replicas: tuple[str, ...]
    diff: str

    def __str__(self) -> str:
        who = ", ".join(self.replicas)
        return f"{self.verdict.value}: {self.check} [{who}]\n{_indent(self.diff)}"


@dataclass(frozen=True, slots=True)
class ConvergenceResult:
    verdict: ConvergenceVerdict
    value: Any  # the converged value (None when the replicas did not converge)
    values: Mapping[str, Any]  # each replica's value before the checker's exchange
    findings: tuple[Finding, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.verdict is ConvergenceVerdict.CONVERGED

    def report(self) -> str:
        if self.ok:
            return f"converged: {len(self.values)} replicas agree on {self.value!r}"
        shown = [str(f) for f in self.findings[:MAX_REPORTED_FINDINGS]]
        more = len(self.findings) - len(shown)
        return "\n".join(shown + ([f"... and {more} more findings"] if more > 0 else []))


@dataclass(frozen=True, slots=True)
class CrdtOp:
    """``replica`` calls ``method(*args)`` on its CRDT (the mutator must return a delta)."""

    replica: str
    method: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Sync:
    """``replica`` merges the current full state of ``source``."""

    replica: str
    source: str


def _clone(x: Any) -> Any:
    if hasattr(x, "copy"):
        return x.copy()
    if hasattr(x, "to_bytes") and hasattr(type(x), "from_bytes"):
        return type(x).from_bytes(x.to_bytes())
    return _copy.deepcopy(x)


def _join(*states: Any) -> Any:
    out = _clone(states[0])
    for s in states[1:]:
        out.merge(_clone(s))
    return out


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def diff_values(a: Any, b: Any, left: str = "A", right: str = "B") -> str:
    """A readable difference between two CRDT values (sets, dicts, scalars)."""
    if a == b:
        return "values equal"
    if isinstance(a, frozenset | set) and isinstance(b, frozenset | set):
        only_a, only_b = _short(a - b), _short(b - a)
        return f"only in {left}: {only_a}\nonly in {right}: {only_b}"
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        lines = []
        for k in sorted(a.keys() | b.keys(), key=repr)[: MAX_DIFF_ITEMS * 2]:
            if k not in b:
                lines.append(f"key {k!r}: only in {left} = {a[k]!r}")
            elif k not in a:
                lines.append(f"key {k!r}: only in {right} = {b[k]!r}")
            elif a[k] != b[k]:
                lines.append(f"key {k!r}:\n" + _indent(diff_values(a[k], b[k], left, right)))
        return "\n".join(lines) or "values equal"
    if a == b:
        return "values equal"
    return f"{left} = {a!r}\n{right} = {b!r}"


def _short(items: Any) -> str:
    listed = sorted(items, key=repr)
    more = f" ... (+{len(listed) - MAX_DIFF_ITEMS} more)" if len(listed) > MAX_DIFF_ITEMS else ""
    return "{" + ", ".join(repr(x) for x in listed[:MAX_DIFF_ITEMS]) + "}" + more


def _state_diff(a: Any, b: Any, left: str, right: str) -> str:
    text = diff_values(a.value, b.value, left, right)
    if text == "values equal":
        detail = f"{left}: {a!r}\n{right}: {b!r}"
        if hasattr(a, "to_bytes") and hasattr(b, "to_bytes"):
            detail += f"\nencoded: {a.to_bytes()!r}\n     vs: {b.to_bytes()!r}"
        return f"values equal ({a.value!r}) but internal states differ:\n{detail}"
    return text


def _law_findings(states: Mapping[str, Any]) -> list[Finding]:
    found: list[Finding] = []
    names = sorted(states)
    law = ConvergenceVerdict.LAW_VIOLATED
    for n in names:
        s = states[n]
        twice = _join(s, s)
        if twice != s:
            found.append(
                Finding(law, "idempotence: x.merge(x) != x", (n,), _state_diff(twice, s, "x⊔x", "x"))
            )
    for a, b in itertools.combinations(names, 2):
        ab, ba = _join(states[a], states[b]), _join(states[b], states[a])
        if ab != ba:
            found.append(Finding(law, "commutativity: a⊔b != b⊔a", (a, b), _state_diff(ab, ba, "a⊔b", "b⊔a")))
    for a, b, c in itertools.islice(itertools.permutations(names, 3), MAX_LAW_TRIPLES):
        left = _join(_join(states[a], states[b]), states[c])
        right = _join(states[a], _join(states[b], states[c]))
        if left != right:
            diff = _state_diff(left, right, "(a⊔b)⊔c", "a⊔(b⊔c)")
            found.append(Finding(law, "associativity", (a, b, c), diff))
    return found


def check_convergence(
    states: Mapping[str, Any],
    *,
    expected: Any = _NO_ORACLE,
    require_already_equal: bool = False,
) -> ConvergenceResult:
    """Check replicas' final ``states`` (name -> CRDT) converge; see the module docstring."""
    if not states:
        raise ConvergenceInputError("check_convergence needs at least one replica state")
    names = sorted(states)
    values = {n: states[n].value for n in names}
    findings = _law_findings(states)
    if require_already_equal:
        first = names[0]
        for n in names[1:]:
            if states[n] != states[first]:
                diff = _state_diff(states[first], states[n], first, n)
                findings.append(
                    Finding(ConvergenceVerdict.DIVERGED, "replicas differ after healing", (first, n), diff)
                )
    forward = {n: _join(states[n], *(states[m] for m in names if m != n)) for n in names}
    backward = {n: _join(states[n], *(states[m] for m in reversed(names) if m != n)) for n in names}
    for n in names:
        if forward[n] != backward[n]:
            diff = _state_diff(forward[n], backward[n], "forward", "backward")
            findings.append(
                Finding(ConvergenceVerdict.DIVERGED, "exchange order changes the result", (n,), diff)
            )
        if forward[n] != forward[names[0]]:
            diff = _state_diff(forward[names[0]], forward[n], names[0], n)
            findings.append(Finding(ConvergenceVerdict.DIVERGED, "full exchange", (names[0], n), diff))
    value = forward[names[0]].value
    if expected is not _NO_ORACLE and value != expected:
        diff = diff_values(value, expected, "converged", "oracle")
        findings.append(Finding(ConvergenceVerdict.ORACLE_MISMATCH, "oracle", tuple(names), diff))
    return _result(findings, value, values)


def _result(findings: list[Finding], value: Any, values: Mapping[str, Any]) -> ConvergenceResult:
    if not findings:
        return ConvergenceResult(ConvergenceVerdict.CONVERGED, value, values)
    order = list(ConvergenceVerdict)  # declared from most to least severe after CONVERGED
    worst = min((f.verdict for f in findings), key=order.index)
    converged = all(f.verdict is ConvergenceVerdict.ORACLE_MISMATCH for f in findings)
    return ConvergenceResult(worst, value if converged else None, values, tuple(findings))


def check_operation_log(
    factory: Callable[[str], Any],
    log: Sequence[CrdtOp | Sync],
    *,
    replicas: Sequence[str] | None = None,
    oracle: Callable[[Sequence[CrdtOp]], Any] | None = None,
    shuffles: int = 3,
    seed: int = 0,
) -> ConvergenceResult:
    """Replay ``log`` on replicas from ``factory(name)`` and check convergence (module docstring).

    ``oracle(ops)`` gets every :class:`CrdtOp` that succeeded, in log order, and returns the
    value a sequential specification gives (only meaningful for types whose concurrent
    semantics has one, e.g. counters: the sum; grow-only sets: the union).
    """
    names = list(
        replicas or sorted({e.replica for e in log} | {e.source for e in log if isinstance(e, Sync)})
    )
    mentioned = {e.replica for e in log} | {e.source for e in log if isinstance(e, Sync)}
    if not names or not mentioned <= set(names):
        raise ConvergenceInputError(f"log names replicas {sorted(mentioned - set(names))} not in {names}")
    live = {n: factory(n) for n in names}
    deltas: list[Any] = []
    applied: list[CrdtOp] = []
    for entry in log:
        match entry:
            case CrdtOp(replica=r, method=m, args=args):
                deltas.append(getattr(live[r], m)(*args))
                applied.append(entry)
            case Sync(replica=r, source=s):
                live[r].merge(_clone(live[s]))
    full = _join(*(live[n] for n in names))
    findings: list[Finding] = []
    rng = random.Random(seed)
    for i in range(shuffles if deltas else 0):
        order = deltas + rng.sample(deltas, k=len(deltas) // 2)  # with duplicates
        rng.shuffle(order)
        observer = factory(f"observer-{i}")
        for d in order:
            observer.merge(_clone(d))
        if observer != full:
            diff = _state_diff(observer, full, "deltas", "states")
            findings.append(
                Finding(ConvergenceVerdict.DELTA_MISMATCH, f"delta shuffle {i}", ("observer",), diff)
            )
    # The laws must hold for every state, not just the final ones (which may all be equal by
    # then): check them on a sample of the deltas too, which are states in their own right.
    step = max(1, len(deltas) // MAX_LAW_DELTAS)
    sample = {f"delta{i}": d for i, d in enumerate(deltas) if i % step == 0 and i // step < MAX_LAW_DELTAS}
    findings.extend(_law_findings(sample))
    expected = oracle(applied) if oracle is not None else _NO_ORACLE
    result = check_convergence(live, expected=expected)
    if not findings:
        return result
    return _result(findings + list(result.findings), result.value, result.values)


__all__ = [
    "ConvergenceInputError",
    "ConvergenceResult",
    "ConvergenceVerdict",
    "CrdtOp",
    "Finding",
    "Sync",
    "check_convergence",
    "check_operation_log",
    "diff_values",
]

"""Wing-Gong linearizability search with Lowe's memoisation, as a resumable generator.

The search works on the events of one partition (a call and, for a determinate operation, a
return) kept in a doubly linked list held in two integer arrays. It extends a linearization one
operation at a time: any operation whose call precedes the first remaining return may go next,
provided the model accepts it. A linearized operation is lifted out of the list; on a dead end
the last choice is undone. A configuration ``(set of linearized operations, state)`` seen before
leads nowhere new, so a set of those (bitsets as Python ints, hashable states) prunes the search
(Lowe, "Testing for linearizability", 2017).

Refinements that keep the search small; none changes the verdict:

* Two searches race on each partition, trying candidates in different orders (soonest return
  first; latest call first; indeterminate operations last in both). They share the set of
  configurations proven dead, and the first to finish decides (see :func:`search`).
* A read-only operation (``Model.read_only``) that is legal now is placed at once, with no
  alternative tried: a linearization that places it later can always place it here instead.
* Indeterminate (``INFO``) operations have a call and no return: they may take effect any time
  after their call, or never. Placing one that leaves the state unchanged can never help, so
  the search does not try it.

The generator yields every ``slice_steps`` steps so that a scheduler can interleave many
partitions and watch a deadline; its return value is a :class:`SearchOutcome`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from stalwart.check._history import Operation, Status
from stalwart.check._models import ILLEGAL, Model, Transition


class SearchStatus(enum.Enum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not-linearizable"
    STATE_LIMIT = "state-limit"


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    """What one search found. ``order`` is a full linearization (indices into the partition's
    operations) when linearizable, otherwise the longest linearizable prefix that was found, and
    ``state`` the model state after it."""

    status: SearchStatus
    order: tuple[int, ...]
    state: Any
    states_explored: int


def event_order(ops: Sequence[Operation]) -> list[tuple[int, bool]]:
    """The events ``(operation index, is_return)`` in real-time order.

    On equal times a call sorts before a return, so operations that touch at one instant count as
    concurrent: a tie never makes the checker claim a violation.
    """
    keyed: list[tuple[int, int, int]] = []
    for i, op in enumerate(ops):
        keyed.append((op.invoke_time, 0, i))
        if op.status is not Status.INFO:
            assert op.complete_time is not None  # guaranteed by Operation.__post_init__
            keyed.append((op.complete_time, 1, i))
    keyed.sort()
    return [(i, kind == 1) for _, kind, i in keyed]


# Node kinds, one per event node.
_CHANGES = 0  # the call of a determinate operation that may change the state
_READS = 1  # the call of a determinate read-only operation
_MAYBE = 2  # the call of an INFO operation (no return)
_RETURN = 3  # a return, or the tail sentinel


@dataclass(slots=True)
class _Events:
    """The events: node k (1..m) is the k-th event; 0 (head) and m+1 (tail) are sentinels.

    Per node: its operation, its kind, its operation's bit, the node of its return (calls of
    determinate operations) and its transition function (calls). Each search links the nodes
    into its own doubly linked list (``nxt``, ``prv``), which it edits as it goes.
    """

    m: int
    node_op: list[int]
    kind: list[int]
    bit: list[int]
    ret_of: list[int]
    fn: list[Transition | None]
    returns: int


def _build_events(ops: Sequence[Operation], model: Model) -> _Events:
    events = event_order(ops)
    m = len(events)
    node_op = [-1] * (m + 2)
    kind = [_RETURN] * (m + 2)
    bit = [0] * (m + 2)
    ret_of = [-1] * (m + 2)
    fn: list[Transition | None] = [None] * (m + 2)
    call_node = [0] * len(ops)
    for k, (i, is_return) in enumerate(events, start=1):
        node_op[k] = i
        bit[k] = 1 << i
        if is_return:
            ret_of[call_node[i]] = k
            continue
        call_node[i] = k
        op = ops[i]
        fn[k] = model.transition(op)
        if op.status is Status.INFO:
            kind[k] = _MAYBE
        else:
            kind[k] = _READS if model.read_only(op) else _CHANGES
    return _Events(m, node_op, kind, bit, ret_of, fn, m - len(ops))


class Order(enum.Enum):
    """Which determinate candidate a search tries first (INFO operations always go last)."""

    CALL = "call"  # earliest invocation first (Porcupine's order)
    RETURN = "return"  # earliest completion first: place what must be placed soonest
    LATEST_CALL = "latest-call"  # latest invocation first: long-pending operations last


def _expander(ev: _Events, nxt: list[int], order: Order) -> Callable[[Any], list[tuple[int, Any]]]:
    """``expand(state)``: the moves ``(call node, next state)`` worth trying now, best first."""
    kind, fn, ret_of = ev.kind, ev.fn, ev.ret_of
    by_return = order is Order.RETURN
    reverse = order is Order.LATEST_CALL

    def expand(state: Any) -> list[tuple[int, Any]]:
        moves: list[tuple[int, Any]] = []
        later: list[tuple[int, Any]] = []  # INFO operations go last: they are rarely needed
        node = nxt[0]
        while (k := kind[node]) != _RETURN:
            ns = fn[node](state)  # type: ignore[misc]  # calls always have a function
            if ns is not ILLEGAL:
                if k == _CHANGES:
                    moves.append((node, ns))
                elif k == _READS:
                    return [(node, state)]  # placed at once: no alternative can do better
                elif ns != state:
                    later.append((node, ns))
            node = nxt[node]
        if len(moves) > 1:
            if by_return:
                moves.sort(key=lambda move: ret_of[move[0]])
            elif reverse:
                moves.reverse()
        if later:
            moves += later
        return moves

    return expand


_FIRST_SLICE_STEPS = 64  # slices start small (quick failures surface fast) and double
#: The two orders raced on every partition: JIT-like (soonest completion first) and its foil.
PORTFOLIO = (Order.RETURN, Order.LATEST_CALL)


def search(
    ops: Sequence[Operation], model: Model, *, slice_steps: int, max_states: int
) -> Generator[None, None, SearchOutcome]:
    """Search for a linearization of ``ops`` (one partition), yielding every ``slice_steps``.

    Two depth-first searches, one per order in :data:`PORTFOLIO`, take turns. Each keeps its own
    memo of configurations it entered, and both share the set of configurations proven dead
    (fully explored without success), so neither redoes the other's refutations and neither is
    blocked by a configuration the other is still exploring. Whichever finishes first decides:
    a full linearization, or exhaustion (every configuration explored or proven dead elsewhere).
    """
    ev = _build_events(ops, model)
    dead: set[tuple[int, Any]] = set()
    sizes = [0] * len(PORTFOLIO)
    runs = [
        (
            slot,
            _dfs(
                ev,
                model,
                order,
                dead=dead,
                sizes=sizes,
                slot=slot,
                slice_steps=slice_steps,
                max_states=max_states,
            ),
        )
        for slot, order in enumerate(PORTFOLIO)
    ]
    limited: SearchOutcome | None = None
    while runs:
        for slot, run in list(runs):
            try:
                next(run)
            except StopIteration as done:
                if done.value.status is not SearchStatus.STATE_LIMIT:
                    for _, other in runs:
                        other.close()
                    return _with_explored(done.value, sum(sizes))
                limited = done.value
                runs.remove((slot, run))
        yield
    assert limited is not None  # the loop ends only when every search hit the state limit
    return _with_explored(limited, sum(sizes))


def _with_explored(outcome: SearchOutcome, explored: int) -> SearchOutcome:
    return SearchOutcome(outcome.status, outcome.order, outcome.state, explored)


def _dfs(
    ev: _Events,
    model: Model,
    order: Order,
    *,
    dead: set[tuple[int, Any]],
    sizes: list[int],
    slot: int,
    slice_steps: int,
    max_states: int,
) -> Generator[None, None, SearchOutcome]:
    """One depth-first search over ``ev`` in ``order``; reports its memo size in ``sizes[slot]``."""
    m, node_op, ret_of, bit = ev.m, ev.node_op, ev.ret_of, ev.bit
    nxt = [*range(1, m + 2), -1]
    prv = [-1, *range(0, m + 1)]
    expand = _expander(ev, nxt, order)
    state: Any = model.init()
    lin = 0
    returns_left = ev.returns
    cache: set[tuple[int, Any]] = set()
    frames: list[tuple[list[tuple[int, Any]], int, int, Any]] = []  # moves, next index, node, state
    best: list[int] = []
    best_state: Any = state

    def outcome(status: SearchStatus, nodes: list[int], at: Any) -> SearchOutcome:
        sizes[slot] = len(cache)
        return SearchOutcome(status, tuple(node_op[k] for k in nodes), at, len(cache))

    if returns_left == 0:
        return outcome(SearchStatus.LINEARIZABLE, [], state)
    moves = expand(state)
    index = 0
    budget = steps = min(_FIRST_SLICE_STEPS, slice_steps)
    while True:
        steps -= 1
        if not steps:
            sizes[slot] = len(cache)
            if len(cache) > max_states // len(PORTFOLIO):
                return outcome(SearchStatus.STATE_LIMIT, best, best_state)
            yield
            budget = steps = min(2 * budget, slice_steps)
        if index < len(moves):
            node, ns = moves[index]
            index += 1
            nlin = lin | bit[node]
            key = (nlin, ns)
            if key in cache or key in dead:
                continue
            cache.add(key)
            frames.append((moves, index, node, state))
            p, q = prv[node], nxt[node]
            nxt[p], prv[q] = q, p
            r = ret_of[node]
            if r > 0:
                p, q = prv[r], nxt[r]
                nxt[p], prv[q] = q, p
                returns_left -= 1
                if not returns_left:
                    return outcome(SearchStatus.LINEARIZABLE, [f[2] for f in frames], ns)
            lin, state = nlin, ns
            if len(frames) > len(best):
                best, best_state = [f[2] for f in frames], ns
            moves = expand(state)
            index = 0
        else:
            # No move left here: this configuration is dead. Undo the move that entered it.
            if not frames:
                return outcome(SearchStatus.NOT_LINEARIZABLE, best, best_state)
            dead.add((lin, state))
            moves, index, node, state = frames.pop()
            lin ^= bit[node]
            r = ret_of[node]
            if r > 0:
                nxt[prv[r]] = r
                prv[nxt[r]] = r
                returns_left += 1
            nxt[prv[node]] = node
            prv[nxt[node]] = node
            # The configuration after the undo is one already on the path: lin has no such bit.
            assert not lin & bit[node]

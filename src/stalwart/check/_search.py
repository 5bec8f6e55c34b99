"""Wing-Gong linearizability search with Lowe's memoisation, as a resumable generator.

The search works on the events of one partition (a call and, for a determinate operation, a
return) kept in a doubly linked list held in two integer arrays. It tries to linearize the
operations in order: at any point, any operation whose call precedes the first remaining return
may go next, provided the model accepts it. A linearized operation is lifted out of the list; on a
dead end the last choice is undone. A configuration ``(set of linearized operations, state)``
that was seen before leads nowhere new, so a set of those (bitsets as Python ints, states as
hashable values) prunes the search (Lowe, "Testing for linearizability", 2017).

Indeterminate (``INFO``) operations have a call but no return: they may be linearized at any point
after their call or never. Linearizing one that leaves the state unchanged can never help (the
configuration without it can do everything the one with it can), so the search skips those moves.

The generator yields every ``slice_steps`` iterations so that a scheduler can interleave many
partitions and watch a deadline; its return value is a :class:`SearchOutcome`.
"""

from __future__ import annotations

import enum
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from stalwart.check._history import Operation, Status
from stalwart.check._models import Model

_ILLEGAL: Any = object()  # the transition cache's "this operation is illegal in this state"
_RETURN = -2  # ret_of[] value of a return node
_NO_RETURN = -1  # ret_of[] value of an INFO call node (it never returns)


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


def search(
    ops: Sequence[Operation], model: Model, *, slice_steps: int, max_states: int
) -> Generator[None, None, SearchOutcome]:
    """Search for a linearization of ``ops`` (one partition), yielding every ``slice_steps``."""
    events = event_order(ops)
    m = len(events)
    head, tail = 0, m + 1
    # Node k (1..m) is events[k-1]; 0 and m+1 are sentinels.
    nxt = [*range(1, m + 2), -1]
    prv = [-1, *range(0, m + 1)]
    node_op = [-1] * (m + 2)
    ret_of = [_RETURN] * (m + 2)
    call_node = [0] * len(ops)
    for k, (i, is_return) in enumerate(events, start=1):
        node_op[k] = i
        if is_return:
            ret_of[call_node[i]] = k
        else:
            call_node[i] = k
            ret_of[k] = _NO_RETURN
    bits = [1 << i for i in range(len(ops))]
    trans: list[dict[Any, Any]] = [{} for _ in ops]  # per operation: state -> next state
    step = model.step

    state: Any = model.init()
    lin = 0
    returns_left = m - len(ops)  # one return per determinate operation
    cache: set[tuple[int, Any]] = set()
    cache_add = cache.add
    stack_nodes: list[int] = []
    stack_states: list[Any] = []
    best: list[int] = []
    best_state: Any = state
    steps = 0
    node = nxt[head]

    def outcome(status: SearchStatus, nodes: list[int], at: Any) -> SearchOutcome:
        return SearchOutcome(status, tuple(node_op[k] for k in nodes), at, len(cache))

    if returns_left == 0:
        return outcome(SearchStatus.LINEARIZABLE, [], state)
    while True:
        steps += 1
        if steps >= slice_steps:
            steps = 0
            if len(cache) > max_states:
                return outcome(SearchStatus.STATE_LIMIT, best, best_state)
            yield
        r = ret_of[node]
        if r != _RETURN:
            # A call: try to linearize its operation now.
            op = node_op[node]
            t = trans[op]
            ns = t.get(state, t)  # the dict itself stands for "not computed yet"
            if ns is t:
                legal, after = step(state, ops[op])
                ns = after if legal else _ILLEGAL
                t[state] = ns
            if ns is not _ILLEGAL and (r >= 0 or ns != state):
                nlin = lin | bits[op]
                key = (nlin, ns)
                if key not in cache:
                    cache_add(key)
                    stack_nodes.append(node)
                    stack_states.append(state)
                    p = prv[node]
                    q = nxt[node]
                    nxt[p] = q
                    prv[q] = p
                    if r >= 0:
                        p = prv[r]
                        q = nxt[r]
                        nxt[p] = q
                        prv[q] = p
                        returns_left -= 1
                        if returns_left == 0:
                            return outcome(SearchStatus.LINEARIZABLE, stack_nodes, ns)
                    lin = nlin
                    state = ns
                    if len(stack_nodes) > len(best):
                        best = stack_nodes.copy()
                        best_state = ns
                    node = nxt[head]
                    continue
            node = nxt[node]
        else:
            # The first remaining return: its operation could not be linearized; backtrack.
            if not stack_nodes:
                return outcome(SearchStatus.NOT_LINEARIZABLE, best, best_state)
            node = stack_nodes.pop()
            state = stack_states.pop()
            lin ^= bits[node_op[node]]
            r = ret_of[node]
            if r >= 0:
                nxt[prv[r]] = r
                prv[nxt[r]] = r
                returns_left += 1
            nxt[prv[node]] = node
            prv[nxt[node]] = node
            node = nxt[node]
            # Invariant: the tail sentinel is never reached while a return remains before it.
            assert node != tail or returns_left == 0

"""Client processes: invoke operations, follow redirects, time out, and record the history.

Each client runs one operation at a time. Its history entry is a ``stalwart.check.Operation``
with virtual microseconds as times. A timeout records the operation as ``INFO`` (it may or may
not have happened) and the client continues under a fresh process number, as Jepsen does.
"""

from __future__ import annotations

import enum
from typing import Any

from stalwart.check import Operation, Status
from stalwart.sansio import NodeId
from stalwart.sim._rng import stream
from stalwart.sim._target import Call, Outcome, Reply
from stalwart.sim._world import CLIENT_REPLY, CLIENT_TIMEOUT, CLIENT_WAKE, CONTROL, DELIVER, World

_STATUS = {Outcome.OK: Status.OK, Outcome.FAIL: Status.FAIL, Outcome.INFO: Status.INFO}
_LIVENESS_DEADLINE, _SETTLED = 0, 1


class Phase(enum.Enum):
    SAFETY = "safety"  # faults on, `ops` operations
    LIVENESS = "liveness"  # faults healed: `liveness_ops` must succeed within the bound
    SETTLE = "settle"  # no more operations; the protocol quiesces before Invariants.at_end
    DONE = "done"


class Workload:
    """The clients of one run, driven by the world's events."""

    def __init__(self, world: World, ops: int) -> None:
        self.world, self.target = world, world.target
        self.ops = ops
        self.phase = Phase.SAFETY
        self.history: list[Operation] = []
        self.violations: list[str] = []
        self.invoked = 0
        self.live_done = 0  # definite completions in the liveness phase
        self.heal_us = 0
        self._settling = False
        self.counts = {"ok": 0, "fail": 0, "info": 0, "dropped": 0, "redirects": 0}
        self._rng = stream(world.seed, "workload")
        self._r_net = stream(world.seed, "client.net")
        self._next_rid = 0
        self._owner: dict[int, int] = {}  # request id -> client
        n = world.target.clients if world.knobs.clients <= 0 else world.knobs.clients
        self.n = n
        self.process = list(range(n))
        self._next_process = n
        self.busy = [False] * n
        self.rid = [0] * n  # current attempt's request id
        self.seq = [0] * n  # operation counter (for timeouts)
        self.call: list[Call | None] = [None] * n
        self.invoke_us = [0] * n
        self.node = [0] * n
        self.redirects = [0] * n
        world.clients = self

    def start(self) -> None:
        for c in range(self.n):
            self.world.at(
                self.world.now + 1 + self._rng.randrange(self.world.knobs.think_max_us), CLIENT_WAKE, c, 0
            )

    # --- issuing ----------------------------------------------------------------------------------
    def _may_issue(self) -> bool:
        if self.phase is Phase.SAFETY:
            return self.invoked < self.ops
        return self.phase is Phase.LIVENESS

    def on_wake(self, c: int) -> None:
        if self.busy[c] or not self._may_issue():
            self._maybe_end_safety()
            return
        w = self.world
        call = self.target.new_call(self._rng, self.process[c])
        self.invoked += 1
        self.busy[c], self.call[c], self.invoke_us[c], self.redirects[c] = True, call, w.now, 0
        self.seq[c] += 1
        w.at(w.now + self.target.op_timeout_ms * 1000, CLIENT_TIMEOUT, c, self.seq[c])
        node = w.index[self.target.route(call, w.cluster, self._rng)]
        if w.trace is not None:
            w.note(f"invoke p{self.process[c]} {call!r}")
        self._send(c, node, 0)

    def _send(self, c: int, node: int, delay_us: int) -> None:
        w = self.world
        self._next_rid += 1
        rid = self._next_rid
        self._owner.pop(self.rid[c], None)
        self.rid[c], self.node[c] = rid, node
        self._owner[rid] = c
        call = self.call[c]
        assert call is not None
        msg = self.target.request(rid, call)
        w.at(w.now + delay_us + self._latency(), DELIVER, node, -1 - c, (rid, msg))

    def _latency(self) -> int:
        k = self.world.knobs
        return k.latency_min_us + int(self._r_net.random() * (k.latency_max_us - k.latency_min_us + 1))

    # --- completing -------------------------------------------------------------------------------
    def reply_from_node(self, reply: Reply) -> None:
        """A node produced a reply (or refused a request): it travels back to its client."""
        c = self._owner.get(reply.request_id)
        if c is None:
            return  # an answer nobody waits for (a request from before a timeout or restart)
        self.world.at(self.world.now + self._latency(), CLIENT_REPLY, c, reply.request_id, reply)

    def on_reply(self, c: int, rid: int, reply: Reply) -> None:
        if not self.busy[c] or self.rid[c] != rid:
            return
        if reply.outcome is Outcome.REDIRECT:
            self._redirect(c, reply.leader_hint)
            return
        self._record(c, _STATUS[reply.outcome], reply.output, self.world.now)

    def _redirect(self, c: int, hint: NodeId | None) -> None:
        w = self.world
        self.counts["redirects"] += 1
        self.redirects[c] += 1
        if self.redirects[c] > self.target.max_redirects:
            # Every attempt was refused before it had any effect: the operation never happened.
            self.counts["dropped"] += 1
            if self.world.trace is not None:
                self.world.note(f"dropped p{self.process[c]} after {self.redirects[c] - 1} redirects")
            self._finish(c)
            return
        node = w.index.get(hint, -1) if hint is not None else -1
        if node < 0 or node == self.node[c]:
            others = [i for i in range(w.n) if i != self.node[c]] or [self.node[c]]
            node = others[self._rng.randrange(len(others))]
        self._send(c, node, 1000 * self.redirects[c])  # back off a little more each time

    def on_timeout(self, c: int, seq: int) -> None:
        if self.busy[c] and self.seq[c] == seq:
            self._record(c, Status.INFO, None, None)

    def _record(self, c: int, status: Status, output: Any, complete_us: int | None) -> None:
        call = self.call[c]
        assert call is not None
        w = self.world
        op = Operation(
            self.process[c], call.f, call.key, call.value, output, status, self.invoke_us[c], complete_us
        )
        self.history.append(op)
        self.counts[status.value] += 1
        if w.trace is not None:
            w.note(f"complete p{self.process[c]} {status.value} {output!r}")
        if status is Status.INFO:
            self.process[c] = self._next_process  # a hung process never issues again
            self._next_process += 1
        elif self.phase is Phase.LIVENESS and self.invoke_us[c] >= self.heal_us:
            self.live_done += 1
            if self.live_done >= self.target.liveness_ops:
                self._end_liveness()
        self._finish(c)

    def _finish(self, c: int) -> None:
        self.busy[c] = False
        self._owner.pop(self.rid[c], None)
        self.world.at(
            self.world.now + 1 + self._rng.randrange(self.world.knobs.think_max_us), CLIENT_WAKE, c, 0
        )
        self._maybe_end_safety()
        self._maybe_settle()

    def close(self) -> None:
        """End of the run: an operation still in flight may or may not have happened (INFO)."""
        self.phase = Phase.DONE
        for c in range(self.n):
            if self.busy[c]:
                self._record(c, Status.INFO, None, None)
                self.busy[c] = False

    # --- phases -----------------------------------------------------------------------------------
    def _maybe_end_safety(self) -> None:
        if self.phase is not Phase.SAFETY or self.invoked < self.ops or any(self.busy):
            return
        w = self.world
        self.phase = Phase.LIVENESS
        self.heal_us = w.now
        w.heal_all()
        w.at(w.now + self.target.liveness_bound_ms * 1000, CONTROL, _LIVENESS_DEADLINE, 0)
        for c in range(self.n):
            w.at(w.now + 1 + c, CLIENT_WAKE, c, 0)

    def _end_liveness(self) -> None:
        self.phase = Phase.SETTLE  # no new operations; those in flight finish (or time out)
        self._maybe_settle()

    def _maybe_settle(self) -> None:
        if self.phase is Phase.SETTLE and not any(self.busy) and not self._settling:
            self._settling = True
            w = self.world
            w.at(w.now + self.target.settle_ms * 1000, CONTROL, _SETTLED, 0)

    def on_control(self, what: int) -> None:
        w = self.world
        if what == _LIVENESS_DEADLINE and self.phase is Phase.LIVENESS:
            self.violations.append(
                f"liveness: only {self.live_done} of {self.target.liveness_ops} operations succeeded within "
                f"{self.target.liveness_bound_ms} ms after every fault was healed"
            )
            self.phase = Phase.DONE
            w.stopped = True
        elif what == _SETTLED and self.phase is Phase.SETTLE:
            self.phase = Phase.DONE
            w.stopped = True

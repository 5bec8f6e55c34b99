"""The discrete-event loop: virtual time in integer microseconds, nodes, network, disk, nemesis.

Events live in one heap of plain tuples ``(time_us, seq, kind, a, b, payload)``; ``seq`` breaks
ties in insertion order, so the order of events depends only on the seed. Every random draw comes
from a per-concern stream of the one seed (``_rng``).
"""

from __future__ import annotations

import heapq
import os
from collections import deque
from collections.abc import Callable
from typing import Any

from stalwart.errors import ConfigError, ProtocolError, StalwartError
from stalwart.sansio import NodeId, Ready
from stalwart.sim._disk import SimDisk, SimStorageError
from stalwart.sim._knobs import Knobs
from stalwart.sim._nemesis import (
    Action,
    Crash,
    Cut,
    Heal,
    NemesisEvent,
    Partition,
    Pause,
    Restart,
    shape_links,
)
from stalwart.sim._rng import stream
from stalwart.sim._target import Fault, Invariants, Outcome, Reply, SimTarget

# Event kinds (small ints keep the heap tuples cheap to compare).
DELIVER, TICK, SYNC, RESUME, NEMESIS, CLIENT_WAKE, CLIENT_REPLY, CLIENT_TIMEOUT, CONTROL = range(9)

MAX_INBOX = 10_000
"""Messages waiting for a paused or syncing node; beyond this they are dropped (a full buffer)."""
MAX_EVENTS = 50_000_000
"""A run that needs more events than this is stuck: an internal error, not a verdict."""


_SIM_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TARGETS_DIR = os.path.join(_SIM_DIR, "targets") + os.sep


def _wire_round_trip() -> Callable[[Any], Any]:
    from stalwart import wire

    encode, decode = wire.encode, wire.decode

    def round_trip(payload: Any) -> Any:
        return decode(encode(payload))

    return round_trip


class SimAbort(StalwartError):
    """A run stopped on a violation (a protocol raised, the disk refused, an invariant broke)."""


class World:
    """Hosts, network and disks of one simulated cluster. The workload plugs in as ``clients``."""

    def __init__(self, target: SimTarget, knobs: Knobs, seed: int, mutation: str | None, trace: bool) -> None:
        self.target, self.knobs, self.seed, self.mutation = target, knobs, seed, mutation
        n = knobs.nodes
        self.n = n
        self.cluster: tuple[NodeId, ...] = tuple(NodeId(f"n{i + 1}") for i in range(n))
        self.index = {name: i for i, name in enumerate(self.cluster)}
        self.now = 0
        self._heap: list[tuple[int, int, int, int, int, Any]] = []
        self._seq = 0
        self.stopped = False
        self.trace: list[str] | None = [] if trace else None
        self.stats: dict[str, int] = {}
        self.messages = 0  # delivered to a node
        self.sent = 0  # sent by a node
        self.events = 0  # processed by the loop
        self.invariants: Invariants = target.invariants(self.cluster, mutation)
        self.clients: Any = None  # the Workload, set by it
        self._codec: Callable[[Any], Any] | None = _wire_round_trip() if target.wire_codec else None
        # Independent streams: a new knob draws only from its own.
        self._r_latency = stream(seed, "net.latency")
        self._r_loss = stream(seed, "net.loss")
        self._r_dup = stream(seed, "net.duplicate")
        self._r_reorder = stream(seed, "net.reorder")
        self._r_spike = stream(seed, "net.spike")
        self._r_disk = stream(seed, "disk")
        self._r_fsync = stream(seed, "disk.fsync")
        self._r_nemesis = stream(seed, "nemesis")
        self._r_ticks = stream(seed, "ticks")
        drift = stream(seed, "drift")
        on = knobs.faults.__contains__
        # Network knobs are mutable: healing switches them off for the liveness phase.
        self.loss_p, self.dup_p, self.reorder_p = knobs.loss_p, knobs.duplicate_p, knobs.reorder_p
        self.spike_p = knobs.spike_p
        self._latency_span = knobs.latency_max_us - knobs.latency_min_us + 1
        if knobs.latency_dist not in ("uniform", "long-tail"):
            raise ConfigError(f"unknown latency distribution {knobs.latency_dist!r}")
        self._long_tail = knobs.latency_dist == "long-tail"
        self.nemesis_on = True
        self.protos: list[Any] = [None] * n
        self.disks = [SimDisk() for _ in range(n)]
        self.up = [False] * n
        self.paused = [False] * n
        self.busy: list[Ready[Any, Any] | None] = [None] * n
        self.sync_done = [False] * n
        self.tick_due = [False] * n
        self.armed: list[int | None] = [None] * n  # a crash waiting for the node's next fsync (downtime)
        self.inbox: list[deque[tuple[int, Any]]] = [deque() for _ in range(n)]
        self.incarnation = [0] * n
        self.blocked = [False] * (n * n)
        self._fifo = [0] * (n * n)
        base_us = target.tick_ms * 1000
        m = knobs.drift_ppm_max
        self.drift_ppm = [drift.randrange(-m, m + 1) if on(Fault.DRIFT) else 0 for _ in range(n)]
        self.tick_us = [max(1, base_us * (1_000_000 + p) // 1_000_000) for p in self.drift_ppm]
        if on(Fault.DRIFT):
            self.count("drift", sum(1 for p in self.drift_ppm if p))

    # --- bookkeeping ----------------------------------------------------------------------------
    def count(self, name: str, k: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + k

    def note(self, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.now} {text}")

    def at(self, time_us: int, kind: int, a: int, b: int, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time_us, self._seq, kind, a, b, payload))

    def abort(self, message: str) -> SimAbort:
        return SimAbort(f"t={self.now}us: {message}")

    # --- the loop ---------------------------------------------------------------------------------
    def run(self, until_us: int) -> None:
        """Process events in time order until ``stopped``, an empty heap or ``until_us``."""
        self.guarded(lambda: self._loop(until_us))

    def guarded(self, fn: Callable[[], None]) -> None:
        """Call ``fn``; a protocol's exception becomes a SimAbort naming it (see ``_blame``)."""
        try:
            fn()
        except SimAbort:
            raise
        except Exception as exc:
            raise self._blame(exc) from exc

    def _loop(self, until_us: int) -> None:
        heap, pop, clients = self._heap, heapq.heappop, self.clients
        events = 0
        while heap and not self.stopped:
            if heap[0][0] > until_us:
                self.now = until_us
                break
            t, _, kind, a, b, p = pop(heap)
            self.now = t
            events += 1
            if kind == DELIVER:
                self._deliver(a, b, p)
            elif kind == TICK:
                self._tick(a, b)
            elif kind == SYNC:
                self._sync(a, b)
            elif kind == CLIENT_REPLY:
                clients.on_reply(a, b, p)
            elif kind == CLIENT_WAKE:
                clients.on_wake(a)
            elif kind == CLIENT_TIMEOUT:
                clients.on_timeout(a, b)
            elif kind == RESUME:
                self._resume(a, b)
            elif kind == NEMESIS:
                self._nemesis(p)
            else:
                clients.on_control(a)
            if events > MAX_EVENTS:
                raise self.abort(f"more than {MAX_EVENTS} events: the run is stuck")
        self.events += events

    def _blame(self, exc: Exception) -> Exception:
        """A protocol's exception is a violation (SimAbort); the simulator's own is re-raised."""
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = tb.tb_frame.f_code.co_filename if tb is not None else ""
        if isinstance(exc, SimStorageError):
            return self.abort(str(exc))
        if where.startswith(_SIM_DIR) and not where.startswith(_TARGETS_DIR):
            return exc  # a bug in the simulator: an internal error, not a verdict on the protocol
        return self.abort(f"{type(exc).__name__}: {exc} (in {where.rsplit('/', 1)[-1]})")

    # --- nodes ------------------------------------------------------------------------------------
    def start_node(self, i: int) -> None:
        self.incarnation[i] += 1
        inc = self.incarnation[i]
        rng = stream(self.seed, f"node.{self.cluster[i]}.{inc}")
        durable = self.disks[i].load()
        self.protos[i] = self.target.build(self.cluster[i], self.cluster, durable, rng, self.mutation)
        self.up[i], self.paused[i], self.busy[i] = True, False, None
        self.sync_done[i] = self.tick_due[i] = False
        if self.trace is not None:
            self.note(f"start {self.cluster[i]} incarnation={inc}")
        self.at(self.now + 1 + self._r_ticks.randrange(self.tick_us[i]), TICK, i, inc)
        self._pump(i)

    def crash_node(self, i: int) -> None:
        if not self.up[i]:
            return
        self.up[i], self.paused[i], self.busy[i], self.protos[i] = False, False, None, None
        self.incarnation[i] += 1  # stale ticks, syncs and resumes of the old process are ignored
        self.inbox[i].clear()
        loss = self.disks[i].crash(self._r_disk, Fault.TORN in self.knobs.faults)
        self.count("crash")
        self.count("unsynced-ops-lost", loss.lost)
        if loss.torn:
            self.count("torn")
        if self.trace is not None:
            self.note(f"crash {self.cluster[i]} kept={loss.kept} lost={loss.lost} torn={loss.torn}")

    def pause_node(self, i: int, duration_us: int) -> None:
        if not self.up[i] or self.paused[i]:
            return
        self.paused[i] = True
        self.count("pause")
        if self.trace is not None:
            self.note(f"pause {self.cluster[i]} {duration_us}us")
        self.at(self.now + duration_us, RESUME, i, self.incarnation[i])

    def _resume(self, i: int, inc: int) -> None:
        if inc != self.incarnation[i] or not self.paused[i]:
            return
        self.paused[i] = False
        self.tick_due[i] = True  # a stopped process sees one late timer, however long it slept
        if self.trace is not None:
            self.note(f"resume {self.cluster[i]}")
        if self.busy[i] is not None:
            if self.sync_done[i]:
                self._finish_ready(i)
            return
        self._drain(i)

    def _deliver(self, i: int, src: int, payload: Any) -> None:
        if not self.up[i]:
            self.count("dropped-node-down")
            return
        if src >= 0 and self.blocked[src * self.n + i]:
            self.count("dropped-partition")  # cut while in flight
            return
        if self.paused[i] or self.busy[i] is not None:
            if len(self.inbox[i]) >= MAX_INBOX:
                self.count("dropped-inbox-full")
                return
            self.inbox[i].append((src, payload))
            return
        self._step(i, src, payload)
        self._pump(i)

    def _step(self, i: int, src: int, payload: Any) -> None:
        proto = self.protos[i]
        if src >= 0:
            self.messages += 1
            if self.trace is not None:
                self.note(f"deliver {self.cluster[src]}->{self.cluster[i]} {payload!r}")
            try:
                proto.step(self.cluster[src], payload)
            except ProtocolError as exc:  # refused a peer message before changing state: drop it
                self.count("refused-by-node")
                if self.trace is not None:
                    self.note(f"refused {type(exc).__name__}: {exc}")
            return
        client, (rid, msg) = -1 - src, payload
        if self.trace is not None:
            self.note(f"request c{client}->{self.cluster[i]} #{rid} {msg!r}")
        try:
            proto.step(NodeId(f"c{client}"), msg)
        except ProtocolError as exc:
            hint = getattr(exc, "leader_hint", None)
            self.clients.reply_from_node(Reply(rid, Outcome.REDIRECT, None, hint))

    def _tick(self, i: int, inc: int) -> None:
        if inc != self.incarnation[i]:
            return
        self.at(self.now + self.tick_us[i], TICK, i, inc)
        if self.paused[i] or self.busy[i] is not None:
            self.tick_due[i] = True
            return
        self.protos[i].tick()
        self._pump(i)

    def _pump(self, i: int) -> None:
        """Ask for ready() until empty; a must_sync ready waits for its simulated fsync."""
        proto = self.protos[i]
        while True:
            ready = proto.ready()
            if ready.is_empty:
                return
            if ready.persist:
                self.disks[i].write(ready.persist)
            if ready.must_sync:
                self.busy[i] = ready
                k = self.knobs
                delay = k.fsync_min_us + int(self._r_fsync.random() * (k.fsync_max_us - k.fsync_min_us + 1))
                self.at(self.now + delay, SYNC, i, self.incarnation[i])
                if self.armed[i] is not None:
                    self._strike_mid_sync(i, delay)
                return
            self._emit(i, ready)
            proto.advance(ready)

    def _strike_mid_sync(self, i: int, delay_us: int) -> None:
        """Fire an armed crash strictly before this fsync completes; restart it later."""
        down_us, self.armed[i] = self.armed[i], None
        assert down_us is not None
        crash_at = self.now + int(self._r_nemesis.random() * delay_us)  # < now + delay_us
        self.at(crash_at, NEMESIS, 0, 0, Crash(self.cluster[i]))
        self.at(crash_at + down_us, NEMESIS, 0, 0, Restart(self.cluster[i]))

    def _sync(self, i: int, inc: int) -> None:
        if inc != self.incarnation[i]:
            return  # the node crashed while its fsync was in flight
        self.disks[i].sync()
        if self.paused[i]:
            self.sync_done[i] = True  # the disk finished; the process sees it when it resumes
            return
        self._finish_ready(i)

    def _finish_ready(self, i: int) -> None:
        ready = self.busy[i]
        assert ready is not None
        self.busy[i], self.sync_done[i] = None, False
        self._emit(i, ready)
        self.protos[i].advance(ready)
        self._pump(i)
        self._drain(i)

    def _drain(self, i: int) -> None:
        """Feed what queued while the node was paused or syncing, then a deferred tick."""
        inbox = self.inbox[i]
        while inbox and self.busy[i] is None and not self.paused[i] and self.up[i]:
            src, payload = inbox.popleft()
            self._step(i, src, payload)
            self._pump(i)
        if self.tick_due[i] and self.busy[i] is None and not self.paused[i] and self.up[i]:
            self.tick_due[i] = False
            self.protos[i].tick()
            self._pump(i)

    def _emit(self, i: int, ready: Ready[Any, Any]) -> None:
        for env in ready.messages:
            self._send(i, env.to, env.payload)
        if ready.outputs:
            name, invariants, reply = self.cluster[i], self.invariants, self.target.reply
            for out in ready.outputs:
                problem = invariants.on_output(name, out, self.now)
                if problem:
                    raise self.abort(f"invariant broken at {name}: {problem}")
                answer = reply(out)
                if answer is not None:
                    self.clients.reply_from_node(answer)

    # --- network ------------------------------------------------------------------------------------
    def _send(self, i: int, to: NodeId, payload: Any) -> None:
        j = self.index.get(to, -1)
        if j < 0 or j == i:
            raise self.abort(f"{self.cluster[i]} sent to {to!r}, which is not a peer")
        self.sent += 1
        if self._codec is not None:
            # The bytes a real host would send, decoded as the receiver would: a message the
            # codec cannot carry (or alters) fails here, not first in production.
            payload = self._codec(payload)
        link = i * self.n + j
        if self.blocked[link]:
            self.count("dropped-partition")
            return
        if self.loss_p and self._r_loss.random() < self.loss_p:
            self.count("loss")
            return
        k = self.knobs
        when = self.now + self.latency_us()
        if self.spike_p and self._r_spike.random() < self.spike_p:
            self.count("latency")
            when += int(self._r_spike.random() * k.spike_max_us)
        if self.reorder_p:
            if self._r_reorder.random() < self.reorder_p:
                self.count("reorder")
                when += int(self._r_reorder.random() * k.reorder_max_us)
        else:
            when = max(when, self._fifo[link])  # a FIFO link (TCP): no overtaking
            self._fifo[link] = when
        self.at(when, DELIVER, j, i, payload)
        if self.dup_p and self._r_dup.random() < self.dup_p:
            self.count("duplicate")
            extra = self._r_dup.randrange(k.latency_max_us + k.reorder_max_us + 1)
            self.at(max(when, self._fifo[link]) + extra, DELIVER, j, i, payload)

    def latency_us(self) -> int:
        """One message's base latency, drawn from the knobs' distribution."""
        k = self.knobs
        if self._long_tail:
            tail = self._r_latency.expovariate(4.0 / self._latency_span)
            return k.latency_min_us + min(int(tail), 8 * self._latency_span)
        # int(random() * span) rather than randrange(): the hottest draw, and just as uniform here.
        return k.latency_min_us + int(self._r_latency.random() * self._latency_span)

    def set_blocked(self, links: frozenset[tuple[int, int]]) -> None:
        self.blocked = [False] * (self.n * self.n)
        for a, b in sorted(links):
            self.blocked[a * self.n + b] = True

    # --- nemesis -------------------------------------------------------------------------------------
    def schedule_nemesis(self, events: list[NemesisEvent] | None) -> None:
        """An explicit schedule, or (None) the random nemesis of the knobs."""
        if events is not None:
            for ev in events:
                self.at(ev.at_ms * 1000, NEMESIS, 0, 0, ev.action)
        elif self.knobs.faults & {Fault.PARTITION, Fault.CRASH, Fault.PAUSE}:
            self.at(self._next_random_us(), NEMESIS, 0, 0, None)

    def _next_random_us(self) -> int:
        return self.now + 1 + int(self._r_nemesis.expovariate(1.0 / (self.knobs.nemesis_mean_ms * 1000)))

    def _nemesis(self, action: Action | None) -> None:
        if not self.nemesis_on:
            return
        if action is None:
            action = self._draw_action()
            self.at(self._next_random_us(), NEMESIS, 0, 0, None)
            if action is None:
                return
        self.apply_action(action)

    def _draw_action(self) -> Action | None:
        r, k = self._r_nemesis, self.knobs
        kinds = [f for f in (Fault.PARTITION, Fault.CRASH, Fault.PAUSE) if f in k.faults]
        kind = kinds[r.randrange(len(kinds))]
        duration_us = 1000 + r.randrange(k.fault_max_ms * 1000)
        if kind is Fault.PARTITION:
            self.at(self.now + duration_us, NEMESIS, 0, 0, Heal())
            return Partition(k.shapes[r.randrange(len(k.shapes))])
        candidates = [i for i in range(self.n) if self.up[i] and not self.paused[i]]
        if not candidates:
            return None
        node = self.cluster[candidates[r.randrange(len(candidates))]]
        if kind is Fault.CRASH and r.random() < 0.5:
            # Half the crashes strike in the middle of the node's next fsync: the moment that
            # tears writes and loses page caches, which uniform timing would rarely hit.
            self.armed[self.index[node]] = duration_us
            return None
        if kind is Fault.CRASH:
            self.at(self.now + duration_us, NEMESIS, 0, 0, Restart(node))
            return Crash(node)
        return Pause(node, max(1, duration_us // 1000))

    def apply_action(self, action: Action) -> None:
        if self.trace is not None:
            self.note(f"nemesis {action!r}")
        match action:
            case Partition(shape=shape):
                self.set_blocked(shape_links(shape, self.n, self._r_nemesis))
                self.count("partition")
                self.count(f"partition:{shape}")
            case Cut(links=links):
                self.set_blocked(frozenset((self.index[a], self.index[b]) for a, b in links))
                self.count("partition")
            case Heal():
                if any(self.blocked):
                    self.count("heal")
                self.set_blocked(frozenset())
            case Crash(node=node):
                self.crash_node(self.index[node])
            case Restart(node=node):
                i = self.index[node]
                if not self.up[i]:
                    self.count("restart")
                    self.start_node(i)
            case Pause(node=node, duration_ms=ms):
                self.pause_node(self.index[node], ms * 1000)

    def heal_all(self) -> None:
        """End of the safety phase: every fault off, every node up and running."""
        self.nemesis_on = False
        self.armed = [None] * self.n
        self.note("heal-all")
        self.set_blocked(frozenset())
        self.loss_p = self.dup_p = self.reorder_p = self.spike_p = 0.0
        for i in range(self.n):
            if not self.up[i]:
                self.count("restart")
                self.start_node(i)
            elif self.paused[i]:
                self._resume(i, self.incarnation[i])

    def boot(self, schedule: list[NemesisEvent] | None) -> None:
        """Start every node and the nemesis (protocol exceptions become violations)."""

        def start() -> None:
            for i in range(self.n):
                self.start_node(i)
            self.schedule_nemesis(schedule)

        self.guarded(start)

    def live_nodes(self) -> dict[NodeId, Any]:
        return {self.cluster[i]: self.protos[i] for i in range(self.n) if self.up[i]}

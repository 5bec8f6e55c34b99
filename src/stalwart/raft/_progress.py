"""The leader's view of one follower: flow control in three states (after etcd's Progress).

PROBE: we do not know where the follower's log matches ours; send one AppendEntries and wait
for its answer (or the next heartbeat) before sending another.
REPLICATE: the follower is in sync; stream AppendEntries optimistically, at most
``max_inflight`` messages unacknowledged (the in-flight window).
SNAPSHOT: the entries it needs are compacted; stream snapshot chunks, then probe again.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@dataclass(slots=True)
class Progress:
    match: int
    next: int
    max_inflight: int
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    recent_active: bool = False  # heard from since the last CheckQuorum round
    inflight: deque[int] = field(default_factory=deque)  # last index of each unacked message
    snap_index: int = 0  # SNAPSHOT: the snapshot being sent
    snap_offset: int = 0  # SNAPSHOT: bytes acknowledged so far
    snap_idle_ticks: int = 0  # SNAPSHOT: ticks since the last chunk answer (resend on timeout)

    def check(self) -> None:
        # next is always just past some index the follower might hold: never at or below match.
        assert self.next > self.match, f"progress next {self.next} <= match {self.match}"
        assert len(self.inflight) <= self.max_inflight, "in-flight window overflow"

    @property
    def paused(self) -> bool:
        match self.state:
            case ProgressState.PROBE:
                return self.probe_sent
            case ProgressState.REPLICATE:
                return len(self.inflight) >= self.max_inflight
            case ProgressState.SNAPSHOT:
                return True

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.snap_index + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.inflight.clear()
        self.snap_index, self.snap_offset, self.snap_idle_ticks = index, 0, 0

    def sent_entries(self, last: int) -> None:
        """An AppendEntries ending at ``last`` went out."""
        if self.state is ProgressState.REPLICATE:
            if last >= self.next:
                self.next = last + 1
                self.inflight.append(last)
        else:
            self.probe_sent = True

    def update(self, match: int) -> bool:
        """The follower holds our log through ``match``; False if that is old news."""
        self.probe_sent = False
        if match <= self.match:
            return False
        self.match = match
        self.next = max(self.next, match + 1)
        while self.inflight and self.inflight[0] <= match:
            self.inflight.popleft()
        return True

    def decrease_to(self, rejected: int, hint_next: int) -> bool:
        """A reject of ``rejected`` (prev index); back off to ``hint_next``. False if stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # an old reject, overtaken by a later success
            self.become_probe()
            self.next = max(self.match + 1, min(rejected, hint_next))
            return True
        if self.next - 1 != rejected:
            return False  # answers a probe we no longer wait for
        self.next = max(self.match + 1, min(rejected, hint_next))
        self.probe_sent = False
        return True

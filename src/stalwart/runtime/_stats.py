"""Counters for operators: what went in and out, what was dropped, how long fsyncs took."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class RuntimeStats:
    """Monotonic counters of one node process; read them with :meth:`snapshot`."""

    frames_in: int = 0
    frames_out: int = 0
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    socket_writes: int = 0
    drops_overflow: int = 0
    drops_unroutable: int = 0
    drops_oversize: int = 0
    drops_disconnect: int = 0
    drops_shutdown: int = 0
    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    auth_failures: int = 0
    protocol_errors: int = 0
    connections_refused: int = 0
    ready_cycles: int = 0
    steps: int = 0
    step_errors: int = 0
    ticks: int = 0
    persists: int = 0
    fsyncs: int = 0
    fsync_time_s: float = 0.0
    outputs: int = 0

    def snapshot(self) -> dict[str, int | float]:
        """A copy of every counter, by name."""
        return asdict(self)


__all__ = ["RuntimeStats"]

"""Partitions shared among forked worker processes (POSIX), each interleaving its own share.

Porcupine checks partitions on all cores; this does the same without threads (the GIL) and
without pickle: each worker is a ``fork`` of the caller that inherits the operations, runs the
ordinary interleaved search over its share, and writes its outcomes as one JSON document to a
pipe. The parent waits on the pipes; as soon as one worker reports a violation, or the deadline
passes, it kills the others (by PID) and reports what it has. States travel as their
descriptions (``Model.describe_state``), which is all a report needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any

from stalwart.check._errors import ModelError
from stalwart.check._history import Operation
from stalwart.check._models import Model
from stalwart.check._search import SearchOutcome, SearchStatus

_Parts = list[tuple[int, list[Operation]]]
_Interleave = Callable[[_Parts], tuple[dict[int, SearchOutcome], str]]
_GRACE_S = 1.0  # workers watch the deadline themselves; this long after it they are killed
_READ_BYTES = 1 << 16
MAX_JOBS = 64  # a limit on forked workers, whatever the caller asks


def can_fork() -> bool:
    """Whether worker processes are available here (POSIX ``fork``)."""
    return hasattr(os, "fork")


def balance(parts: _Parts, jobs: int) -> list[_Parts]:
    """Longest-first greedy assignment by operation count (a stand-in for search cost)."""
    groups: list[_Parts] = [[] for _ in range(min(jobs, len(parts), MAX_JOBS))]
    loads = [0] * len(groups)
    for index, ops in sorted(parts, key=lambda p: -len(p[1])):
        lightest = loads.index(min(loads))
        groups[lightest].append((index, ops))
        loads[lightest] += len(ops)
    return [g for g in groups if g]


def _child(group: _Parts, model: Model, interleave: _Interleave, out_fd: int) -> None:
    try:
        outcomes, stopped = interleave(group)
        payload: dict[str, Any] = {
            "stopped": stopped,
            "outcomes": [
                [i, o.status.value, list(o.order), model.describe_state(o.state), o.states_explored]
                for i, o in outcomes.items()
            ],
        }
    except BaseException as exc:  # reported to the parent, which raises it there
        payload = {"error": f"{type(exc).__name__}: {exc}"}
    data = json.dumps(payload).encode()
    while data:
        data = data[os.write(out_fd, data) :]
    os.close(out_fd)


def run_forked(
    parts: _Parts, model: Model, jobs: int, deadline: float | None, interleave: _Interleave
) -> tuple[dict[int, SearchOutcome], dict[int, str], str]:
    """Run ``interleave`` over shares of ``parts`` in ``jobs`` workers; merge what they report."""
    workers: dict[int, tuple[int, bytearray]] = {}  # pipe fd -> (pid, bytes so far)
    for group in balance(parts, jobs):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the caller's code
            os.close(read_fd)
            try:
                _child(group, model, interleave, write_fd)
            finally:
                os._exit(0)
        os.close(write_fd)
        workers[read_fd] = (pid, bytearray())
    try:
        return _collect(workers, deadline)
    finally:
        for fd, (pid, _) in workers.items():
            os.close(fd)
            _kill(pid)


def _collect(
    workers: dict[int, tuple[int, bytearray]], deadline: float | None
) -> tuple[dict[int, SearchOutcome], dict[int, str], str]:
    outcomes: dict[int, SearchOutcome] = {}
    texts: dict[int, str] = {}
    stopped = "stopped"
    pending = set(workers)
    while pending:
        wait_s = None if deadline is None else max(0.0, deadline + _GRACE_S - time.monotonic())
        ready, _, _ = select.select(list(pending), [], [], wait_s)
        if not ready:
            return outcomes, texts, "timeout"
        for fd in ready:
            chunk = os.read(fd, _READ_BYTES)
            if chunk:
                workers[fd][1].extend(chunk)
                continue
            pending.discard(fd)
            payload = json.loads(bytes(workers[fd][1]) or b'{"error": "worker died"}')
            if "error" in payload:
                raise ModelError(f"a check worker failed: {payload['error']}")
            if payload["stopped"] == "timeout":
                stopped = "timeout"
            for i, status, order, text, explored in payload["outcomes"]:
                outcomes[i] = SearchOutcome(SearchStatus(status), tuple(order), None, explored)
                texts[i] = text
        if any(o.status is SearchStatus.NOT_LINEARIZABLE for o in outcomes.values()):
            return outcomes, texts, "stopped"
    return outcomes, texts, stopped


def _kill(pid: int) -> None:
    """End and reap one worker of ours (by PID; it may have exited already)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)

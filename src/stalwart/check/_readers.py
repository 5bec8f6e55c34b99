"""Readers for history files: stalwart JSONL, Jepsen/Knossos EDN, and Jepsen etcd console logs.

Every reader turns a file into :class:`Operation` values in invocation order. The event formats
(EDN, Jepsen logs) list invocations and completions as separate lines in real-time order; a
completion belongs to the pending invocation of the same process (as in Knossos and Porcupine),
line numbers serve as times, and an invocation still pending at the end of the file becomes an
``INFO`` operation. Any malformed line raises :class:`HistoryFormatError` naming the line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from stalwart.check._edn import EdnError, parse_edn
from stalwart.check._errors import HistoryFormatError
from stalwart.check._history import JSONL_HEADER, History, Operation, Status, operation_from_json

FORMATS = ("auto", "jsonl", "edn", "jepsen-log")
_EVENT_TYPES = {"invoke": None, "ok": Status.OK, "fail": Status.FAIL, "info": Status.INFO}
_LOG_LINE = re.compile(r"INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(\w+)\s+:([\w-]+)\s+(.*?)\s*")
# The shape of nearly every Knossos line; anything else goes through the general EDN parser.
_EDN_FAST = re.compile(
    r'\{:process (\d+), :type :(\w+), :f :([\w-]+)(?:, :key "([^"\\]*)")?, :value '
    r'(nil|-?\d+|"[^"\\]*"|\[-?\d+ -?\d+\])\}\s*'
)


def read_history(path: str, format: str = "auto") -> History:
    """Read the history in the file ``path``; ``format`` is one of :data:`FORMATS`."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise HistoryFormatError(path, 0, f"not UTF-8 text: {exc}") from None
    return parse_history(text, format, source=path)


def parse_history(text: str, format: str = "auto", source: str = "<memory>") -> History:
    """Parse a history from ``text`` (see :func:`read_history`)."""
    lines = text.splitlines()
    chosen = detect_format(lines, source) if format == "auto" else format
    match chosen:
        case "jsonl":
            ops = _read_jsonl(lines, source)
        case "edn":
            ops = _pair_events(_edn_events(lines, source), source)
        case "jepsen-log":
            ops = _pair_events(_log_events(lines, source), source)
        case "empty":
            ops = []
        case _:
            raise HistoryFormatError(source, 0, f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    ops.sort(key=lambda op: op.invoke_time)
    return History(tuple(ops), source, chosen)


def detect_format(lines: list[str], source: str) -> str:
    """Guess the format from the first non-blank line; ``"empty"`` when there is none."""
    for number, line in enumerate(lines, start=1):
        s = line.strip()
        if not s or s.startswith(";"):
            continue
        if s.startswith("[{"):
            return "edn"
        if s.startswith("{"):
            return "edn" if s[1:].lstrip().startswith(":") else "jsonl"
        if s.startswith("INFO"):
            return "jepsen-log"
        raise HistoryFormatError(source, number, "cannot tell the format from this line; pass --format")
    return "empty"


def _read_jsonl(lines: list[str], source: str) -> list[Operation]:
    ops: list[Operation] = []
    loads = json.loads
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = loads(line)
        except ValueError as exc:
            raise HistoryFormatError(source, number, f"invalid JSON: {exc}") from None
        if isinstance(obj, dict) and obj.get("format") == JSONL_HEADER["format"]:
            if obj.get("version") != JSONL_HEADER["version"]:
                raise HistoryFormatError(source, number, f"unsupported version {obj.get('version')!r}")
            continue
        ops.append(operation_from_json(obj, source, number))
    return ops


# An event: (line number, process, type, f, key, value)
_Event = tuple[int, int, str, str, str | None, Any]


def _edn_events(lines: list[str], source: str) -> Iterable[_Event]:
    fast = _EDN_FAST.fullmatch
    for number, line in enumerate(lines, start=1):
        m = fast(line)
        if m is not None:
            process, kind, f, key, raw = m.groups()
            yield number, int(process), kind, f, key, _fast_value(raw)
            continue
        s = line.strip()
        if not s or s.startswith(";") or s in ("[", "]"):
            continue
        if s.startswith("[{"):  # a history written as one vector of maps, a map per line
            s = s[1:]
        if s.endswith("}]"):
            s = s[:-1]
        try:
            obj = parse_edn(s)
        except EdnError as exc:
            raise HistoryFormatError(source, number, f"invalid EDN: {exc}") from None
        if not isinstance(obj, dict):
            raise HistoryFormatError(source, number, "expected an EDN map {:process .. :type ..}")
        event = _edn_map_event(obj, number, source)
        if event is not None:
            yield event


def _fast_value(raw: str) -> Any:
    if raw == "nil":
        return None
    if raw[0] == '"':
        return raw[1:-1]
    if raw[0] == "[":
        a, b = raw[1:-1].split()
        return (int(a), int(b))
    return int(raw)


def _edn_map_event(obj: dict[Any, Any], number: int, source: str) -> _Event | None:
    process, kind, f = obj.get("process"), obj.get("type"), obj.get("f")
    if not isinstance(process, int) or isinstance(process, bool):
        if process == "nemesis":
            return None  # nemesis events are not client operations
        raise HistoryFormatError(source, number, f":process must be an integer, got {process!r}")
    if not isinstance(kind, str) or not isinstance(f, str):
        raise HistoryFormatError(source, number, ":type and :f must be keywords")
    key = obj.get("key")
    if key is not None and not isinstance(key, str | int):
        raise HistoryFormatError(source, number, f":key must be a string or an integer, got {key!r}")
    return number, process, str(kind), str(f), None if key is None else str(key), obj.get("value")


def _log_events(lines: list[str], source: str) -> Iterable[_Event]:
    match_line = _LOG_LINE.fullmatch
    for number, line in enumerate(lines, start=1):
        m = match_line(line)
        if m is None:
            if not line.strip():
                continue
            raise HistoryFormatError(source, number, "expected 'INFO jepsen.util - PROCESS :TYPE :F VALUE'")
        process, kind, f, raw = m.groups()
        if raw == "nil":
            value: Any = None
        elif raw.isdigit():
            value = int(raw)
        else:
            try:
                value = parse_edn(raw)
            except EdnError as exc:
                raise HistoryFormatError(source, number, f"bad value {raw!r}: {exc}") from None
        yield number, int(process), kind, f, None, value


def _pair_events(events: Iterable[_Event], source: str) -> list[Operation]:
    """Match each completion with its process's pending invocation."""
    pending: dict[int, _Event] = {}
    ops: list[Operation] = []
    for event in events:
        number, process, kind, f, key, value = event
        if kind not in _EVENT_TYPES:
            raise HistoryFormatError(source, number, f"unknown :type :{kind}")
        status = _EVENT_TYPES[kind]
        if status is None:
            if process in pending:
                raise HistoryFormatError(
                    source, number, f"process {process} invoked again while its operation from line "
                    f"{pending[process][0]} is pending"
                )  # fmt: skip
            pending[process] = event
            continue
        invoke = pending.pop(process, None)
        if invoke is None:
            raise HistoryFormatError(
                source, number, f"completion of process {process} with no pending invocation"
            )
        if invoke[3] != f:
            raise HistoryFormatError(
                source, number, f"completes :{f} but line {invoke[0]} invoked :{invoke[3]}"
            )
        if status is Status.INFO:
            ops.append(Operation(process, f, invoke[4], invoke[5], None, status, invoke[0], None))
        else:
            ops.append(Operation(process, f, invoke[4], invoke[5], value, status, invoke[0], number))
    for number, process, _, f, key, value in pending.values():
        ops.append(Operation(process, f, key, value, None, Status.INFO, number, None))
    return ops

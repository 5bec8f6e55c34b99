"""History readers: JSONL round trips, EDN and Jepsen-log parsing, and malformed input."""

from __future__ import annotations

import contextlib
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalwart.check import (
    HistoryFormatError,
    Operation,
    Status,
    parse_history,
    read_history,
    write_jsonl,
)
from stalwart.check._edn import EdnError, Keyword, parse_edn
from stalwart.errors import StalwartError

# -- EDN ---------------------------------------------------------------------------------------


def test_edn_values() -> None:
    assert parse_edn('{:process 2, :type :invoke, :f :get, :key "0", :value nil}') == {
        "process": 2,
        "type": "invoke",
        "f": "get",
        "key": "0",
        "value": None,
    }
    assert parse_edn("[1 -2 3.5]") == (1, -2, 3.5)
    assert parse_edn('"a\\"b\\n"') == 'a"b\n'
    assert parse_edn("#{1 2}") == frozenset({1, 2})
    assert parse_edn("(true false nil)") == (True, False, None)
    assert isinstance(parse_edn(":timed-out"), Keyword)
    assert parse_edn("{:a [1 {:b 2}]} ; comment") == {"a": (1, {"b": 2})}


@pytest.mark.parametrize(
    "text",
    ["{:a 1", "[1 2}", "{:a}", "@x", "1 2", '#inst "2020"', '"open', "{[1] 2 #{} 3 {} 4}x", ")", ""],
)
def test_edn_refuses_bad_input(text: str) -> None:
    with pytest.raises(EdnError):
        parse_edn(text)


def test_edn_nesting_is_limited() -> None:
    with pytest.raises(EdnError, match="nesting"):
        parse_edn("[" * 100 + "]" * 100)


@given(st.text(max_size=40))
def test_edn_parser_only_raises_edn_errors(text: str) -> None:
    with contextlib.suppress(EdnError):
        parse_edn(text)


# -- formats -----------------------------------------------------------------------------------

EDN = """\
{:process 0, :type :invoke, :f :write, :value 1}
{:process 1, :type :invoke, :f :read, :value nil}
{:process 0, :type :ok, :f :write, :value 1}
{:process 1, :type :ok, :f :read, :value 1}
{:process 2, :type :invoke, :f :cas, :value [1 2]}
{:process 2, :type :fail, :f :cas, :value [1 2]}
{:process 3, :type :invoke, :f :write, :value 4, :time 123}
{:process 3, :type :info, :f :write, :value :timed-out}
{:process 4, :type :invoke, :f :read, :value nil}
"""


def test_edn_history_pairs_events_by_process() -> None:
    h = parse_history(EDN)
    assert h.format == "edn"
    w, r, cas, info, pending = h.operations
    assert w == Operation(0, "write", None, 1, 1, Status.OK, 1, 3)
    assert r == Operation(1, "read", None, None, 1, Status.OK, 2, 4)
    assert cas.status is Status.FAIL and cas.value == (1, 2)
    assert info.status is Status.INFO and info.complete_time is None and info.value == 4
    assert pending.status is Status.INFO and pending.invoke_time == 9


def test_edn_kv_history_with_keys_and_nemesis() -> None:
    text = (
        '{:process 0, :type :invoke, :f :append, :key "k", :value "x"}\n'
        "{:process :nemesis, :type :info, :f :start, :value nil}\n"
        '{:process 0, :type :ok, :f :append, :key "k", :value "x"}\n'
    )
    (op,) = parse_history(text).operations
    assert (op.key, op.f, op.value, op.complete_time) == ("k", "append", "x", 3)


def test_jepsen_log_with_tabs_and_spaces() -> None:
    text = (
        "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n"
        "INFO  jepsen.util - 1   :invoke :cas    [1 2]\n"
        "INFO  jepsen.util - 0\t:ok\t:read\tnil\n"
        "INFO  jepsen.util - 1\t:fail\t:cas\t[1 2]\n"
        "INFO  jepsen.util - 2\t:invoke\t:write\t3\n"
        "INFO  jepsen.util - 2\t:info\t:write\t:timed-out\n"
    )
    h = parse_history(text)
    assert h.format == "jepsen-log"
    read, cas, write = h.operations
    assert read.output is None and read.status is Status.OK
    assert cas.value == (1, 2) and cas.status is Status.FAIL
    assert write.status is Status.INFO and write.value == 3


def test_jsonl_round_trip(tmp_path: pathlib.Path) -> None:
    ops = [
        Operation(0, "write", None, 1, None, Status.OK, 0, 5),
        Operation(1, "cas", "k", (1, 2), None, Status.FAIL, 1, 6),
        Operation(2, "read", None, None, None, Status.INFO, 3, None),
        Operation(3, "append", "k", "ü", "ü", Status.OK, 7, 7),
    ]
    path = tmp_path / "h.jsonl"
    assert write_jsonl(ops, str(path)) == 4
    h = read_history(str(path))
    assert h.format == "jsonl" and list(h.operations) == ops


def test_empty_and_blank_files(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "empty.log"
    path.write_text("\n\n")
    assert read_history(str(path)).operations == ()


# -- malformed input: a typed error naming the file and line -------------------------------------

INV = "{:process 0, :type :invoke, :f :read, :value nil}\n"
J = '"process": 0, "f": "w", "status": "ok"'
MALFORMED = [
    ("jsonl", '{"format": "stalwart-history", "version": 1}\n{"process": 0,\n', 2, "invalid JSON"),
    ("jsonl", '{"process": 0, "f": "read", "status": "ok", "invoke_time": 1}\n', 1, "complete_time"),
    (
        "jsonl",
        '\n{"process": "a", "f": "r", "status": "ok", "invoke_time": 1, "complete_time": 2}\n',
        2,
        "integer",
    ),
    ("jsonl", '{"process": 0, "f": "read", "status": "maybe", "invoke_time": 1}\n', 1, "status"),
    ("jsonl", "{" + J + ', "invoke_time": 3, "complete_time": 2}\n', 1, "before"),
    ("jsonl", "{" + J + ', "invoke_time": 1, "complete_time": 2, "x": 1}\n', 1, "unknown"),
    ("jsonl", '{"format": "stalwart-history", "version": 9}\n', 1, "version"),
    ("edn", INV + "{:process 0, :type :ok, :f :read, :value [1\n", 2, "EDN"),
    ("edn", "{:process 0, :type :ok, :f :read, :value 1}\n", 1, "no pending"),
    ("edn", INV + "{:process 0, :type :invoke, :f :read}\n", 2, "again"),
    ("edn", INV + "\n{:process 0, :type :ok, :f :write, :value 1}\n", 3, "invoked"),
    ("edn", "{:process 0, :type :begin, :f :read, :value nil}\n", 1, "unknown :type"),
    ("edn", "{:process 0.5, :type :invoke, :f :read, :value nil}\n", 1, "integer"),
    ("edn", "[1 2]\n", 1, "map"),
    ("jepsen-log", "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nWARN something else\n", 2, "expected"),
    ("jepsen-log", "INFO  jepsen.util - 0\t:invoke\t:cas\t[1 2\n", 1, "bad value"),
]


@pytest.mark.parametrize(("fmt", "text", "line", "words"), MALFORMED)
def test_malformed_lines_name_the_line(fmt: str, text: str, line: int, words: str) -> None:
    with pytest.raises(HistoryFormatError) as info:
        parse_history(text, fmt, source="bad.txt")
    assert info.value.line == line and info.value.path == "bad.txt"
    assert words in str(info.value)
    assert str(info.value).startswith(f"bad.txt:{line}:")
    assert isinstance(info.value, StalwartError)


def test_auto_detection_refuses_unknown_text() -> None:
    with pytest.raises(HistoryFormatError, match="cannot tell the format"):
        parse_history("\nhello\n")
    with pytest.raises(HistoryFormatError, match="unknown format"):
        parse_history("x", "yaml")


def test_a_file_that_is_not_utf8(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bin.log"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(HistoryFormatError, match="UTF-8"):
        read_history(str(path))


def test_edn_history_written_as_one_vector() -> None:
    text = (
        "[{:process 0, :type :invoke, :f :read, :value nil}\n {:process 0, :type :ok, :f :read, :value 1}]\n"
    )
    (op,) = parse_history(text).operations
    assert (op.output, op.invoke_time, op.complete_time) == (1, 1, 2)

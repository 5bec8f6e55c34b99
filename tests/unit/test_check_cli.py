"""`stalwart check`: exit codes, --json, --html-dir and errors."""

from __future__ import annotations

import json
import pathlib

from click.testing import CliRunner

from stalwart.check import Operation, Status, write_jsonl
from stalwart.check._cli import command

GOOD = "INFO  jepsen.util - 0\t:invoke\t:write\t1\nINFO  jepsen.util - 0\t:ok\t:write\t1\n"
BAD = GOOD + "INFO  jepsen.util - 1\t:invoke\t:read\tnil\nINFO  jepsen.util - 1\t:ok\t:read\t2\n"


def _files(tmp_path: pathlib.Path) -> dict[str, str]:
    out = {}
    for name, text in {"good.log": GOOD, "bad.log": BAD, "broken.log": GOOD + "garbage\n"}.items():
        (tmp_path / name).write_text(text)
        out[name] = str(tmp_path / name)
    return out


def test_exit_codes(tmp_path: pathlib.Path) -> None:
    f = _files(tmp_path)
    runner = CliRunner()
    assert runner.invoke(command, [f["good.log"]]).exit_code == 0
    bad = runner.invoke(command, [f["good.log"], f["bad.log"]])
    assert bad.exit_code == 1
    assert "NOT-LINEARIZABLE" in bad.output and "p1 read() -> 2" in bad.output
    broken = runner.invoke(command, [f["good.log"], f["broken.log"]])
    assert broken.exit_code == 2 and "broken.log:3" in broken.output
    assert runner.invoke(command, [str(tmp_path / "missing.log")]).exit_code == 2
    # a definite violation outranks an error elsewhere
    assert runner.invoke(command, [f["broken.log"], f["bad.log"]]).exit_code == 1


def test_json_and_html(tmp_path: pathlib.Path) -> None:
    f = _files(tmp_path)
    html_dir = tmp_path / "html"
    result = CliRunner().invoke(command, [f["bad.log"], f["good.log"], "--json", "--html-dir", str(html_dir)])
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert doc["verdict"] == "not-linearizable"
    bad, good = doc["files"]
    assert bad["verdict"] == "not-linearizable" and good["verdict"] == "linearizable"
    assert bad["failure"]["blocking"] == "p1 read() -> 2"
    assert bad["failure"]["longest_prefix"] == ["p0 write(1) -> ok"]
    page = pathlib.Path(bad["html"]).read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "p1 read() -&gt; 2" in page
    assert "html" not in good


def test_kv_model_is_chosen_for_keyed_histories_and_timeout_gives_2(tmp_path: pathlib.Path) -> None:
    ops = [Operation(i, "append", "k", f"<{i}>", None, Status.OK, 0, 100) for i in range(12)]
    ops.append(Operation(99, "get", "k", None, "impossible", Status.OK, 101, 102))
    path = tmp_path / "hard.jsonl"
    write_jsonl(ops, str(path))
    result = CliRunner().invoke(command, [str(path), "--timeout", "0.2", "--json"])
    assert result.exit_code == 2
    doc = json.loads(result.output)
    assert doc["files"][0]["model"] == "kv" and doc["files"][0]["verdict"] == "unknown"
    assert doc["files"][0]["unknown_partitions"] == [{"key": "k", "reason": "timeout"}]


def test_registered_as_a_subcommand() -> None:
    from stalwart.cli import cli

    result = CliRunner().invoke(cli, ["check", "--help"])
    assert result.exit_code == 0 and "--html-dir" in result.output

"""Every verdict of ../shared/testdata/porcupine/VERDICTS.md, reproduced.

The histories are Porcupine's test data (102 Jepsen etcd logs checked as one CAS register, six
key-value histories checked per key); VERDICTS.md is read as the source of truth, so a changed
file or a changed verdict shows up here.
"""

from __future__ import annotations

import pathlib
import re

import pytest

from stalwart.check import Verdict, check_operations, read_history

DATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "porcupine"
pytestmark = pytest.mark.skipif(
    not (DATA / "VERDICTS.md").is_file(),
    reason=f"Porcupine test data not found at {DATA} (CI keeps shared/ beside the clone)",
)


def _verdicts() -> dict[str, bool]:
    if not (DATA / "VERDICTS.md").is_file():
        return {}
    table = re.findall(r"^\| ((?:jepsen|kv)/\S+) \| (yes|NO) \|$", (DATA / "VERDICTS.md").read_text(), re.M)
    return {name: answer == "yes" for name, answer in table}


VERDICTS = _verdicts()


def test_the_table_has_every_file() -> None:
    assert len([n for n in VERDICTS if n.startswith("jepsen/")]) == 102
    assert len([n for n in VERDICTS if n.startswith("kv/")]) == 6
    assert "jepsen/etcd_095.log" not in VERDICTS


@pytest.mark.parametrize("name", sorted(n for n in VERDICTS if n.startswith("jepsen/")))
def test_etcd_log_verdict(name: str) -> None:
    history = read_history(str(DATA / name))
    assert history.format == "jepsen-log"
    result = check_operations(history.operations, "cas-register", timeout_s=60)
    expected = Verdict.LINEARIZABLE if VERDICTS[name] else Verdict.NOT_LINEARIZABLE
    assert result.verdict is expected


@pytest.mark.parametrize("name", sorted(n for n in VERDICTS if n.startswith("kv/")))
def test_kv_history_verdict(name: str) -> None:
    history = read_history(str(DATA / name))
    assert history.format == "edn"
    result = check_operations(history.operations, "kv", timeout_s=60)
    expected = Verdict.LINEARIZABLE if VERDICTS[name] else Verdict.NOT_LINEARIZABLE
    assert result.verdict is expected
    assert len(result.partitions) == len({op.key for op in history.operations})


def test_the_empty_log_reads_as_an_empty_history() -> None:
    history = read_history(str(DATA / "jepsen" / "etcd_095.log"))
    assert history.operations == ()
    assert check_operations(history.operations).verdict is Verdict.LINEARIZABLE


def test_etcd_logs_parse_as_the_counts_in_verdicts_md() -> None:
    # VERDICTS.md lists 2,939 + 2,748 + 2,836 invocations across the 102 logs.
    ops = [
        op
        for name in VERDICTS
        if name.startswith("jepsen/")
        for op in read_history(str(DATA / name)).operations
    ]
    assert sum(op.f == "read" for op in ops) == 2939
    assert sum(op.f == "write" for op in ops) == 2748
    assert sum(op.f == "cas" for op in ops) == 2836
    assert sum(op.status.value == "info" for op in ops) == 657 + 626


def test_c50_bad_is_found_although_key_0_alone_explodes() -> None:
    # The trap: key "0" alone exceeds this state limit. Interleaving partitions still finds the
    # violation in another key fast, instead of drowning in key "0" (or answering UNKNOWN).
    history = read_history(str(DATA / "kv" / "c50-bad.txt"))
    limit = 50_000
    key0 = [op for op in history.operations if op.key == "0"]
    alone = check_operations(key0, "kv", max_states=limit)
    assert alone.verdict is Verdict.UNKNOWN and alone.partitions[0].reason == "state-limit"
    result = check_operations(history.operations, "kv", max_states=limit)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    failure = result.failure
    assert failure is not None and failure.key != "0"
    assert failure.blocking is not None and failure.blocking in failure.unplaced


@pytest.mark.parametrize("name", ["kv/c10-bad.txt", "kv/c10-ok.txt", "kv/c50-bad.txt"])
def test_worker_processes_agree(name: str) -> None:
    history = read_history(str(DATA / name))
    result = check_operations(history.operations, "kv", timeout_s=60, jobs=2)
    assert result.verdict is (Verdict.LINEARIZABLE if VERDICTS[name] else Verdict.NOT_LINEARIZABLE)

"""``stalwart sim``: exit codes, deterministic output, JSON, traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from stalwart.sim import RunSpec, _cli, load_target


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(_cli.command, list(args))
    return result.exit_code, result.output


def test_clean_run_exits_0_with_a_summary() -> None:
    code, out = _run("register", "--seeds", "5", "--ops", "40")
    assert code == 0, out
    assert "5 seeds (1..5)" in out and "violations: 0 of 5 seeds" in out
    assert "faults injected:" in out and "checker verdicts: linearizable=5" in out
    assert "timing" not in out  # no wall-clock figures unless asked


def test_output_is_deterministic_for_a_seed() -> None:
    args = ("register", "--seed", "9", "--seeds", "3", "--ops", "40")
    assert _run(*args) == _run(*args)


def test_a_mutation_is_caught_exits_1_and_prints_the_replay_command() -> None:
    code, out = _run(
        "register", "--mutate", "read-from-backup", "--seeds", "10", "--ops", "60", "--fail-fast"
    )
    assert code == 1, out
    assert "FAILED seed" in out
    replay = next(line.split("replay: ", 1)[1] for line in out.splitlines() if "replay: " in line)
    assert replay.startswith("stalwart sim register --seed ") and "--mutate read-from-backup" in replay
    # The printed command, run as printed, reproduces the failure.
    words = replay.split()[2:]
    code2, out2 = _run(*words)
    assert code2 == 1 and "FAILED seed" in out2


@pytest.mark.parametrize(
    "args",
    [
        ("no-such-protocol",),
        ("register", "--faults", "bogus"),
        ("register", "--mutate", "no-such-mutation"),
        ("register", "--seeds", "0"),
        (),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    code, _ = _run(*args)
    assert code == 2


def test_an_internal_error_exits_2_with_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(spec: object, seed: int) -> None:
        raise RuntimeError("simulator bug")

    monkeypatch.setattr(_cli, "run_seed", broken)
    result = CliRunner().invoke(_cli.command, ["register", "--seed", "3"])
    assert result.exit_code == 2
    assert "internal error at seed 3" in result.output and "--seed 3" in result.output


def test_json_summary_and_timing() -> None:
    code, out = _run("register", "--seeds", "2", "--ops", "30", "--json", "--timing")
    assert code == 0
    data = json.loads(out)
    assert data["seeds"] == 2 and data["violations"] == [] and data["target"] == "register"
    assert data["timing"]["seeds_per_s"] > 0 and data["messages"] > 0


def test_trace_file_is_written(tmp_path: Path) -> None:
    trace = tmp_path / "t.txt"
    code, _ = _run("register", "--seed", "4", "--ops", "20", "--trace", str(trace))
    assert code == 0
    text = trace.read_text()
    assert text.startswith("# seed 4 ") and " deliver n" in text and " invoke p" in text


def test_faults_none_injects_nothing() -> None:
    code, out = _run("register", "--seeds", "3", "--ops", "30", "--faults", "none")
    assert code == 0
    injected = next(line for line in out.splitlines() if line.startswith("faults injected:"))
    for name in ("loss=", "crash=", "partition=", "pause=", "duplicate="):
        assert name not in injected


def test_list_shows_targets_and_mutations() -> None:
    code, out = _run("--list")
    assert code == 0 and "register:" in out and "--mutate read-from-backup" in out


def test_an_explicit_nemesis_file_is_followed_and_named_in_the_replay(tmp_path: Path) -> None:
    schedule = tmp_path / "nemesis.json"
    events = [
        {"at_ms": 20, "action": "crash", "node": "n1"},
        {"at_ms": 300, "action": "restart", "node": "n1"},
        {"at_ms": 400, "action": "cut", "links": [["n1", "n2"]]},
        {"at_ms": 500, "action": "heal"},
        {"at_ms": 600, "action": "pause", "node": "n2", "duration_ms": 50},
        {"at_ms": 700, "action": "partition", "shape": "halves"},
    ]
    schedule.write_text(json.dumps(events))
    code, out = _run("register", "--seed", "3", "--ops", "60", "--nemesis", str(schedule), "--json")
    assert code == 0, out
    faults = json.loads(out)["faults"]
    assert faults["crash"] == 1 and faults["restart"] == 1 and faults["pause"] == 1
    assert faults["partition"] == 2 and faults["partition:halves"] == 1
    spec = RunSpec(load_target("register"), schedule=(), schedule_path=str(schedule))
    assert spec.replay_command(8).endswith(f"--seed 8 --ops 100 --nemesis {schedule}")


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '{"at_ms": 1}',
        '[{"at_ms": 1, "action": "explode"}]',
        '[{"at_ms": 1, "action": "crash", "node": "n9"}]',
        '[{"at_ms": "soon", "action": "heal"}]',
        '[{"at_ms": 1, "action": "partition", "shape": "donut"}]',
    ],
)
def test_a_bad_nemesis_file_exits_2(tmp_path: Path, content: str) -> None:
    schedule = tmp_path / "bad.json"
    schedule.write_text(content)
    code, out = _run("register", "--seed", "1", "--nemesis", str(schedule))
    assert code == 2, out
    assert "internal error" not in out


def test_failures_are_saved_for_the_checker(tmp_path: Path) -> None:
    out_dir = tmp_path / "failures"
    code, out = _run(
        "register", "--mutate", "read-from-backup", "--seed", "2", "--save-failures", str(out_dir)
    )
    assert code == 1
    history, trace = out_dir / "register-seed-2.jsonl", out_dir / "register-seed-2.trace"
    assert f"saved: {out_dir / 'register-seed-2'}.jsonl" in out
    assert trace.read_text().startswith("# stalwart sim register --seed 2 ")
    from stalwart.check import read_history

    ops = read_history(str(history)).operations
    assert len(ops) > 100 and {op.f for op in ops} == {"read", "write", "cas"}


def test_shrink_finds_fewer_ops_that_still_fail() -> None:
    code, out = _run("register", "--mutate", "read-from-backup", "--seed", "3", "--shrink", "--json")
    assert code == 1
    failure = json.loads(out)["violations"][0]
    assert failure["shrunk_from_ops"] == 100 and failure["ops"] < 100
    assert f"--ops {failure['ops']} " in failure["replay"]
    # The shrunk replay fails on its own.
    code, _ = _run(*failure["replay"].split()[2:])
    assert code == 1

"""``stalwart sim raft``: Raft under the swarm nemesis, and every named mutation caught.

CI runs 200 clean seeds (each history linearizable, committed entries never differ, one
leader per term, one vote per node per term, Leader Completeness, in-order application, new
writes commit within the liveness bound after healing) and each mutation until its first
failing seed (within 500; commit-previous-term: see RARE_IN_SIMULATION).
``STALWART_LONG=1`` raises the clean seeds to 10,000 and searches for commit-previous-term.
"""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from stalwart.cli import cli
from stalwart.raft import MUTATIONS
from stalwart.sim import RunSpec, Summary, load_target, run_seed, run_seeds

RAFT = load_target("raft")
SEEDS = 10_000 if os.environ.get("STALWART_LONG") else 200
OPS = 60
MUTATION_SEED_BOUND = 500


@pytest.fixture(scope="module")
def clean_summary() -> Summary:
    return run_seeds(RunSpec(RAFT, ops=OPS), range(1, SEEDS + 1))


def test_raft_passes_every_seed(clean_summary: Summary) -> None:
    failures = [(r.seed, r.violations, r.replay) for r in clean_summary.failures]
    assert failures == []
    assert clean_summary.verdicts == {"linearizable": SEEDS}
    assert clean_summary.ops["ok"] > 20 * SEEDS  # the workload really ran
    faults = clean_summary.faults
    for name in ("loss", "duplicate", "reorder", "crash", "restart", "pause", "drift"):
        assert faults.get(name, 0) > 0, name
    assert faults.get("unsynced-ops-lost", 0) > 0


def test_the_target_lists_exactly_the_raft_mutations() -> None:
    assert set(RAFT.mutations) == MUTATIONS


def first_failing_seed(mutation: str) -> int | None:
    spec = RunSpec(RAFT, ops=100, mutation=mutation)
    for seed in range(1, MUTATION_SEED_BOUND + 1):
        if not run_seed(spec, seed).ok:
            return seed
    return None


# Figure 8 (commit-previous-term) needs a leader cut off within one round trip of its
# election, a later leader committing an older entry by counting and then losing within one
# round trip, and the first one winning again: random faults line this up rarely (0 of 3,000
# seeds of the current target). Its proof is deterministic instead: the five-node Figure 8 in
# tests/raft/figure8_full_mutated.txt loses a committed entry. STALWART_LONG=1 also searches.
RARE_IN_SIMULATION = {"commit-previous-term"}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS - RARE_IN_SIMULATION))
def test_each_mutation_is_caught_within_500_seeds(mutation: str) -> None:
    seed = first_failing_seed(mutation)
    assert seed is not None, f"{mutation} survived {MUTATION_SEED_BOUND} seeds"


@pytest.mark.skipif(not os.environ.get("STALWART_LONG"), reason="rare in simulation: STALWART_LONG=1")
def test_commit_previous_term_search() -> None:
    spec = RunSpec(RAFT, ops=100, mutation="commit-previous-term")
    assert any(not run_seed(spec, seed).ok for seed in range(1, 10_001))


def test_the_cli_exits_1_on_a_mutation_and_0_when_clean() -> None:
    runner = CliRunner()
    bad = runner.invoke(cli, ["sim", "raft", "--seeds", "2", "--mutate", "stale-log-vote"])
    assert bad.exit_code == 1, bad.output
    good = runner.invoke(cli, ["sim", "raft", "--seeds", "2"])
    assert good.exit_code == 0, good.output

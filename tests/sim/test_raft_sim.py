"""``stalwart sim raft``: Raft under the swarm nemesis, and every named mutation caught.

CI runs 200 clean seeds (each history linearizable, committed entries never differ, one
leader per term, one vote per node per term, Leader Completeness, in-order application, new
writes commit within the liveness bound after healing) and each mutation until its first
failing seed, within 500. commit-previous-term (Figure 8) is reached by the target's own
Figure 8 nemesis (docs/raft.md, "Figure 8 in the swarm"). ``STALWART_LONG=1`` raises the clean
seeds to 10,000.
"""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from stalwart.cli import cli
from stalwart.raft import MUTATIONS
from stalwart.sim import RunSpec, Summary, load_target, run_seed, run_seeds
from stalwart.sim.targets import raft as raft_target

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


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_each_mutation_is_caught_within_500_seeds(mutation: str) -> None:
    seed = first_failing_seed(mutation)
    assert seed is not None, f"{mutation} survived {MUTATION_SEED_BOUND} seeds"


def test_the_figure8_nemesis_is_what_catches_commit_previous_term() -> None:
    """Without the Raft nemesis the swarm misses Figure 8 (0 of 3,000 seeds): the early seeds
    that catch the mutation with it must pass without it, so the nemesis is doing the work."""
    spec = RunSpec(RAFT, ops=100, mutation="commit-previous-term")
    caught = [seed for seed in range(1, 31) if not run_seed(spec, seed).ok]
    assert caught, "the Figure 8 nemesis caught nothing in 30 seeds"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(raft_target, "P_CUT_FRESH", 0.0)
        mp.setattr(raft_target, "P_CUT_COMMIT", 0.0)
        assert all(run_seed(spec, seed).ok for seed in caught)


def test_the_cli_exits_1_on_a_mutation_and_0_when_clean() -> None:
    runner = CliRunner()
    bad = runner.invoke(cli, ["sim", "raft", "--seeds", "2", "--mutate", "stale-log-vote"])
    assert bad.exit_code == 1, bad.output
    good = runner.invoke(cli, ["sim", "raft", "--seeds", "2"])
    assert good.exit_code == 0, good.output

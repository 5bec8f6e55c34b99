"""``stalwart sim crdt``: replicas gossiping deltas converge under every fault once healed.

Many seeds (all faults: loss, duplication, reordering, partitions, crashes, pauses, drift) must
end converged; each deliberately broken merge must be caught; a seed replays exactly.
Longer runs: ``STALWART_LONG=1`` raises the seed count to 2,000.
"""

from __future__ import annotations

import os

import pytest

from stalwart.sim import RunSpec, Summary, load_target, run_seed, run_seeds

CRDT = load_target("crdt")
SEEDS = 2_000 if os.environ.get("STALWART_LONG") else 300
MUTATION_SEED_BOUND = 20


@pytest.fixture(scope="module")
def clean_summary() -> Summary:
    return run_seeds(RunSpec(CRDT, ops=80), range(1, SEEDS + 1))


def test_replicas_converge_on_every_seed(clean_summary: Summary) -> None:
    failures = [(r.seed, r.violations, r.replay) for r in clean_summary.failures]
    assert failures == []
    assert len(clean_summary.seeds) == SEEDS
    assert clean_summary.ops["ok"] > 50 * SEEDS  # the workload really ran


def test_the_faults_that_matter_for_gossip_actually_happen(clean_summary: Summary) -> None:
    faults = clean_summary.faults
    for name in ("loss", "duplicate", "reorder", "crash", "restart", "pause", "dropped-partition"):
        assert faults.get(name, 0) > 0, name
    assert any(k.startswith("partition:") for k in faults)


@pytest.mark.parametrize("mutation", sorted(CRDT.mutations))
def test_each_broken_merge_is_caught(mutation: str) -> None:
    spec = RunSpec(CRDT, ops=80, mutation=mutation)
    summary = run_seeds(spec, range(1, MUTATION_SEED_BOUND + 1), stop_on_failure=True)
    assert summary.failures, f"{mutation} survived {MUTATION_SEED_BOUND} seeds"
    failed = summary.failures[0]
    assert any("invariant:" in v for v in failed.violations)
    assert f"--mutate {mutation}" in failed.replay
    again = run_seed(spec, failed.seed)
    assert again.violations == failed.violations  # the seed replays the same failure


def test_a_seed_replays_exactly() -> None:
    a, b = run_seed(RunSpec(CRDT, ops=60), 7), run_seed(RunSpec(CRDT, ops=60), 7)
    assert a.history_digest() == b.history_digest() and a.messages == b.messages

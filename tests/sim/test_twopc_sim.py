"""Two-phase commit (the bank) under the simulator's faults: atomicity on every seed, and each
deliberately broken variant caught. ``STALWART_LONG=1`` runs 2,000 seeds."""

from __future__ import annotations

import os

import pytest

from stalwart.sim import RunSpec, load_target, run_seeds

TWOPC = load_target("twopc")
SEEDS = 2_000 if os.environ.get("STALWART_LONG") else 200
MUTATION_SEED_BOUND = 100
"""Each mutation must be caught within this many seeds (today: by seed 1 or 2)."""


def test_twopc_is_atomic_on_every_seed() -> None:
    summary = run_seeds(RunSpec(TWOPC, ops=60), range(1, SEEDS + 1))
    assert [(r.seed, r.violations, r.replay) for r in summary.failures] == []
    assert summary.ops["ok"] > 10 * SEEDS, "transfers really committed"
    assert summary.ops["fail"] > 0, "and some aborted under the faults"
    for fault in ("crash", "loss", "duplicate", "reorder", "partition", "pause"):
        assert summary.faults.get(fault, 0) > 0, f"{fault} was never injected"


@pytest.mark.parametrize("mutation", sorted(TWOPC.mutations))
def test_twopc_mutation_is_caught(mutation: str) -> None:
    summary = run_seeds(
        RunSpec(TWOPC, ops=60, mutation=mutation), range(1, MUTATION_SEED_BOUND + 1), stop_on_failure=True
    )
    assert summary.failures, f"{mutation} survived {MUTATION_SEED_BOUND} seeds"
    text = " ".join(" ".join(r.violations) for r in summary.failures)
    assert "coordinator" in text or "half applied" in text or "prepared" in text, text

"""Seed streams: one master seed, one independent ``random.Random`` per concern.

Each stream is seeded from a hash of (master seed, stream name), so drawing more (or less) from
one concern never shifts another: adding a fault knob perturbs only its own stream.
"""

from __future__ import annotations

import hashlib
import random


def derive_seed(seed: int, name: str) -> int:
    """A 64-bit seed for the stream ``name`` of the master ``seed`` (stable across runs/hosts)."""
    digest = hashlib.sha256(f"stalwart-sim:{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def stream(seed: int, name: str) -> random.Random:
    """The independent random stream ``name`` of the master ``seed``."""
    return random.Random(derive_seed(seed, name))

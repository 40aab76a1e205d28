"""The token streams of a sweep: uniform over the whole vocabulary, one explicit RNG per (seed, window, phase,
repetition).

Per-case seeding (not one RNG drawn from along the sweep) makes every window's tokens independent of everything
else the run did: of --sweep-stride, of -r, of which engine went first in ``--vs``, of the NumPy version's other
streams. Two engines given the same seed therefore see exactly the same tokens, and so route to the same experts.
Random rather than constant tokens matter for MoE: constant prompts hit the same few experts (llama.cpp PR #6069).
"""
from __future__ import annotations

import numpy as np

PHASES = {"tg": 0, "pp": 1, "warmup": 2}
TOKEN_SOURCE = "uniform over [0, n_vocab), numpy.random.default_rng([seed, window, phase, repetition])"


def window_tokens(seed: int, window: int, phase: str, rep: int, n: int, n_vocab: int) -> np.ndarray:
    """``n`` token ids [n] int32 for one phase ("tg", "pp" or "warmup") of one repetition of one window."""
    rng = np.random.default_rng([seed, window, PHASES[phase], rep])
    return rng.integers(0, n_vocab, n, dtype=np.int32)

"""Shared fixtures: tiny synthetic GGUF models, generated once per type mix and seed for the whole session.

Usage in any test::

    def test_something(tiny_model):
        path = tiny_model()                                   # qwen3moe, Q8_0 everywhere, seed 0
        path = tiny_model("bailingmoe2", expert_type="Q4_K")  # another mix, cached separately
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from sweepbench.synth import write_synthetic_model

TinyModelFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModelFactory:
    """Factory ``tiny_model(arch="qwen3moe", expert_type="Q8_0", dense_type="Q8_0", seed=0) -> Path`` of a
    tiny (a few MB) model with real tensor names and shapes. Files are shared across tests: do not modify them."""
    directory = tmp_path_factory.mktemp("tiny_models")
    cache: dict[tuple[str, str, str, int], Path] = {}

    def make(arch: str = "qwen3moe", expert_type: str = "Q8_0", dense_type: str = "Q8_0", seed: int = 0) -> Path:
        key = (arch, expert_type.upper(), dense_type.upper(), int(seed))
        if key not in cache:
            path = directory / f"tiny-{arch}-{key[1]}-{key[2]}-seed{seed}.gguf"
            write_synthetic_model(path, "tiny", arch, expert_type, dense_type, seed=seed, threads=2)
            cache[key] = path
        return cache[key]

    return make

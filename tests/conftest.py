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

# The suite runs on two xdist workers (pyproject: -n 2 --dist loadgroup). Numba compiles a kernel once per
# process (and caches it on disk when done), so the modules that compile the numba-cpu engine share one worker:
# spread over both, each worker compiled the ~200 s decode step and the drivers' float variants itself. Cold
# numba cache, this 2-core machine, 2026-12-05: one worker 1566 s; two, spread 700 s; two, grouped 449 s.
# test_cpu_simd compiles in child processes for other targets, test_perf_gate sweeps the reference engine: no group.
NUMBA_CPU_MODULES = {"test_cpu_engine", "test_cpu_kernels", "test_cpu_step", "test_cpu_vs_ik"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group marks into the node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in NUMBA_CPU_MODULES:
            item.add_marker(pytest.mark.xdist_group("numba-cpu"))


def pytest_xdist_node_collection_finished(node, ids: list[str]) -> None:
    """On the controller: stop if the group did not reach the node ids. pytest 9.2 keeps node ids where xdist 3.8
    no longer writes the group (pytest-xdist#1386: loadgroup then silently spreads every test; hence pytest<9.2)."""
    if node.config.getoption("dist") != "loadgroup":
        return
    lost = [i for i in ids if Path(i.split("::")[0]).stem in NUMBA_CPU_MODULES and "@numba-cpu" not in i]
    if lost:
        pytest.exit(f"xdist loadgroup lost the numba-cpu group ({lost[0]}): pytest-xdist#1386, needs pytest<9.2",
                    returncode=3)


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

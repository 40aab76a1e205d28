"""numba-cpu logits against ik_llama.cpp, with the model layer's tiers (``sweepbench.verify``).

Every supported expert quant type on both architectures, grouped routing, both KV-cache types, and the plain
(no-repack) layout. Figures print with ``pytest -s``; ik's self-noise is measured on one case per tier (it is
the same ik on the same files as in tests/test_vs_ik.py). Never loosen a tier to make a case pass.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sweepbench.engines.base import EngineOptions
from sweepbench.verify import (
    F16_TIER, QUANT_TIER, _loaded, compare_logits, random_tokens, run_verify, schedule_logits,
)

N_VOCAB, N_TOKENS, PROMPT_LEN = 512, 24, 16


def _verify(path, engine="numba-cpu", noise=False, **kw):
    result = run_verify(path, random_tokens(N_TOKENS, N_VOCAB, 0), engine, prompt_len=PROMPT_LEN, n_threads=2,
                        noise=noise, **kw)
    print(f"\n{path.name} {kw}:\n{result.summary()}")
    return result


@pytest.mark.parametrize("arch, grouped", [("qwen3moe", False), ("bailingmoe2", False), ("bailingmoe2", True)])
def test_f16_tier(tiny_model, arch, grouped):
    result = _verify(tiny_model(arch, expert_type="F16", dense_type="F16"), grouped_routing=grouped,
                     noise=grouped)
    assert result.tier == F16_TIER
    assert result.passed, result.summary()


TYPES = ["Q8_0", "Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "MXFP4"]


@pytest.mark.parametrize("arch", ["qwen3moe", "bailingmoe2"])
@pytest.mark.parametrize("expert_type", TYPES)
def test_quantized_tier_every_expert_type(tiny_model, arch, expert_type):
    result = _verify(tiny_model(arch, expert_type=expert_type, dense_type="Q8_0"),
                     grouped_routing=arch == "bailingmoe2", noise=(arch, expert_type) == ("qwen3moe", "Q4_K"))
    assert result.tier == QUANT_TIER
    assert result.passed, result.summary()


@pytest.mark.parametrize("arch, weights", [("qwen3moe", "Q8_0"), ("bailingmoe2", "Q4_K"), ("qwen3moe", "F16")])
def test_q8_0_kv_cache(tiny_model, arch, weights):
    path = tiny_model(arch, expert_type=weights, dense_type="Q8_0" if weights != "F16" else "F16")
    result = _verify(path, type_k="q8_0", type_v="q8_0", grouped_routing=arch == "bailingmoe2")
    assert result.tier == QUANT_TIER
    assert result.passed, result.summary()


@pytest.mark.parametrize("arch, expert_type", [("qwen3moe", "Q4_K"), ("bailingmoe2", "IQ4_XS"), ("qwen3moe", "F16")])
def test_plain_layout_matches_ik_too(tiny_model, arch, expert_type):
    """repack=False: the plain kernels on the mapped GGUF rows, same tiers."""
    path = tiny_model(arch, expert_type=expert_type, dense_type="F16" if expert_type == "F16" else "Q8_0")
    tokens = random_tokens(N_TOKENS, N_VOCAB, 1)
    options = EngineOptions(n_ctx=N_TOKENS, n_threads=2, grouped_routing=arch == "bailingmoe2")
    logits = {}
    for name, opts in (("ik", options), ("numba-cpu", replace(options, repack=False))):
        engine = _loaded(name, path, opts)
        try:
            logits[name] = schedule_logits(engine, tokens, PROMPT_LEN)
            if name == "numba-cpu":
                assert engine.describe()["layouts"].get("R8", 0) == 0
        finally:
            engine.close()
    tier = F16_TIER if expert_type == "F16" else QUANT_TIER
    checks = tier.checks(compare_logits(logits["ik"], logits["numba-cpu"]))
    assert all(c["passed"] for c in checks), checks


def test_reruns_are_bit_identical(tiny_model):
    path = tiny_model("bailingmoe2", expert_type="Q4_K", dense_type="Q8_0")
    tokens = random_tokens(N_TOKENS, N_VOCAB, 2)
    runs = []
    for _ in range(2):
        engine = _loaded("numba-cpu", path, EngineOptions(n_ctx=N_TOKENS, n_threads=2, grouped_routing=True))
        runs.append(schedule_logits(engine, tokens, PROMPT_LEN))
        engine.truncate(0)
        runs.append(schedule_logits(engine, tokens, PROMPT_LEN))  # the same engine after a truncate
        engine.close()
    assert all(np.array_equal(runs[0], r) for r in runs[1:])

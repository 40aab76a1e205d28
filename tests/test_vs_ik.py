"""Ground truth: our reference engine computes the logits ik_llama.cpp computes (``sweepbench.verify``).

Every case prints our figures beside ik's self-noise (``pytest -s``) and puts them into the assertion message.
The thresholds are the tiers' (verify.F16_TIER / QUANT_TIER); never loosen them to make a case pass.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from typer.testing import CliRunner

from sweepbench import verify
from sweepbench.engines.ik import IkEngine
from sweepbench.verify import F16_TIER, QUANT_TIER, compare_logits, random_tokens, run_verify, tier_for

N_VOCAB = 512  # tiny preset
N_TOKENS, PROMPT_LEN = 24, 16  # a 16-token prefill, then 8 decode steps


def _verify(path, *, grouped_routing=False, seed=0, engine="reference"):
    result = run_verify(path, random_tokens(N_TOKENS, N_VOCAB, seed), engine, prompt_len=PROMPT_LEN,
                        grouped_routing=grouped_routing, n_threads=2)
    print(f"\n{path.name} (grouped routing {grouped_routing}):\n{result.summary()}")
    return result


# ---------------------------------------------------------------------------------------------- tiers


@pytest.mark.parametrize("arch, grouped_routing", [
    ("qwen3moe", False), ("bailingmoe2", False), ("bailingmoe2", True),
])
def test_f16_tier(tiny_model, arch, grouped_routing):
    result = _verify(tiny_model(arch, expert_type="F16", dense_type="F16"), grouped_routing=grouped_routing)
    assert result.tier == F16_TIER
    assert result.passed, result.summary()


@pytest.mark.parametrize("arch, expert_type", [
    ("qwen3moe", "Q8_0"), ("bailingmoe2", "Q8_0"), ("qwen3moe", "Q4_K"), ("bailingmoe2", "Q4_K"),
    ("qwen3moe", "Q6_K"), ("bailingmoe2", "Q6_K"), ("qwen3moe", "IQ4_XS"), ("bailingmoe2", "IQ4_XS"),
])
def test_quantized_tier(tiny_model, arch, expert_type):
    result = _verify(tiny_model(arch, expert_type=expert_type, dense_type="Q8_0"), grouped_routing=arch == "bailingmoe2")
    assert result.tier == QUANT_TIER
    assert result.passed, result.summary()


def _mutations():
    """Plausible implementation mistakes, each of which the F16 tier must catch."""
    from sweepbench import ref_ops

    sig, soft, rope = ref_ops.route_sigmoid_topk, ref_ops.route_softmax_topk, ref_ops.rope_neox
    return {
        "expert bias forgotten": ("route_sigmoid_topk", lambda lg, b, *a: sig(lg, None, *a)),
        "groups ignored under -ger": ("route_sigmoid_topk", lambda lg, b, k, g, *a: sig(lg, b, k, 1, *a)),
        "routed scale forgotten": ("route_sigmoid_topk", lambda *a: sig(*a[:-1], 1.0)),
        "weights not renormalised": ("route_softmax_topk", lambda lg, k, norm: soft(lg, k, False)),
        "RoPE over the whole head": ("rope_neox", lambda x, p0, head_dim, n_rot, **kw: rope(x, p0, head_dim, head_dim, **kw)),
    }


@pytest.mark.parametrize("mistake, arch", [
    ("expert bias forgotten", "bailingmoe2"), ("groups ignored under -ger", "bailingmoe2"),
    ("routed scale forgotten", "bailingmoe2"), ("weights not renormalised", "qwen3moe"),
    ("RoPE over the whole head", "bailingmoe2"),
])
def test_f16_tier_catches_a_wrong_forward(tiny_model, monkeypatch, mistake, arch):
    """The tier is only proof if it can fail: each mistake, patched into the reference ops, must fail it."""
    from sweepbench import ref_ops

    name, wrong = _mutations()[mistake]
    monkeypatch.setattr(ref_ops, name, wrong)
    path = tiny_model(arch, expert_type="F16", dense_type="F16")
    result = run_verify(path, random_tokens(N_TOKENS, N_VOCAB, 0), "reference", prompt_len=PROMPT_LEN,
                        grouped_routing=arch == "bailingmoe2", n_threads=2, noise=False)
    assert not result.passed, f"{mistake} went unnoticed:\n{result.summary()}"


# ---------------------------------------------------------------------------------------------- metrics


def test_compare_logits_figures_by_hand():
    ref = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])  # [N=2, V=3]
    ours = np.array([[0.0, 1.0, 2.5], [3.0, 3.5, 0.0]])
    f = compare_logits(ref, ours)
    assert f["top1_agreement"] == 0.5  # position 1's argmax moved from 0 to 1
    assert f["max_abs_diff"] == 3.5
    assert f["max_rel"] == pytest.approx(max(0.5 / 2.0, 3.5 / 3.0))

    def kl(p_logits, q_logits):
        p = [math.exp(x) / sum(math.exp(y) for y in p_logits) for x in p_logits]
        q = [math.exp(x) / sum(math.exp(y) for y in q_logits) for x in q_logits]
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))

    expected = [kl(ref[0], ours[0]), kl(ref[1], ours[1])]
    assert f["per_position"]["kl"] == pytest.approx(expected, rel=1e-12)
    assert f["mean_kl"] == pytest.approx(sum(expected) / 2, rel=1e-12)
    assert f["per_position"]["top1"] == [True, False]


def test_compare_logits_identical_and_shift_invariant():
    ref = np.random.default_rng(0).normal(size=(5, 37)).astype(np.float32)
    same = compare_logits(ref, ref)
    assert (same["top1_agreement"], same["max_abs_diff"], same["max_rel"], same["mean_kl"]) == (1.0, 0.0, 0.0, 0.0)
    shifted = compare_logits(ref, ref + 4.0)  # softmax ignores a constant shift: KL 0, but the logits differ
    assert shifted["mean_kl"] < 1e-12 and shifted["max_abs_diff"] == pytest.approx(4.0)


def test_non_finite_logits_fail_every_check():
    ref = np.random.default_rng(1).normal(size=(3, 11))
    ours = ref.copy()
    ours[1, 4] = np.nan
    checks = F16_TIER.checks(compare_logits(ref, ours))
    assert not any(c["passed"] for c in checks if c["metric"] != "top1_agreement")


def test_tier_follows_weight_and_cache_types():
    assert tier_for([Q.F32, Q.F16, Q.BF16], "f16", "f16") == F16_TIER
    assert tier_for([Q.F32, Q.F16], "q8_0", "f16") == QUANT_TIER  # a quantized cache is lossy too
    assert tier_for([Q.F32, Q.F16, Q.Q8_0], "f16", "f16") == QUANT_TIER


# ---------------------------------------------------------------------------------------------- command


class _PerturbedIk(IkEngine):
    """ik with noise added to every logit: what a broken engine looks like to verify."""

    def prefill(self, tokens, start_pos, *, all_logits=False):
        return self._perturb(super().prefill(tokens, start_pos, all_logits=all_logits))

    def decode(self, token, pos):
        return self._perturb(super().decode(token, pos))

    @staticmethod
    def _perturb(logits):
        return logits + np.random.default_rng(7).normal(0, 0.5, logits.shape).astype(np.float32)


def test_verify_command_passes_ik_against_itself_and_fails_a_perturbed_engine(tiny_model, monkeypatch, tmp_path):
    from sweepbench.cli import app

    model = str(tiny_model("bailingmoe2", expert_type="Q4_K", dense_type="Q8_0"))
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", "-m", model, "--engine", "ik", "--random", "12", "-t", "2",
                             "--json", str(tmp_path / "v.json")])
    assert ok.exit_code == 0, ok.output
    assert "PASS" in ok.output and "ik vs ik, token by token" in ok.output and "-rtr off" in ok.output
    assert '"passed": true' in (tmp_path / "v.json").read_text()

    real_create = verify.create_engine
    monkeypatch.setattr(verify, "create_engine", lambda name: _PerturbedIk() if name == "perturbed" else real_create(name))
    bad = runner.invoke(app, ["verify", "-m", model, "--engine", "perturbed", "--tokens", "5,9,300,17,4,2",
                              "--prompt-len", "4", "--no-noise", "-t", "2"])
    assert bad.exit_code == 1, bad.output
    assert "FAIL" in bad.output


def test_verify_command_bad_flags_are_one_line(tiny_model):
    from sweepbench.cli import app

    model = str(tiny_model())
    result = CliRunner().invoke(app, ["verify", "-m", model, "--tokens", "1,2,9999", "--engine", "ik"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "--tokens" in result.output

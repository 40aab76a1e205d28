"""``sweepbench info`` and the model statistics behind it (checked against shape formulas and published figures)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from typer.testing import CliRunner

from sweepbench import synth
from sweepbench.cli import app
from sweepbench.config import config_from_metadata
from sweepbench.gguf_model import GGUFModel, GGUFTensor
from sweepbench.model_stats import kv_bytes_per_token, model_stats, pp_flops, tg_bytes_per_token
from sweepbench.models.tensors import open_model
from sweepbench.presets import resolve_preset


def _header_only_model(preset: str, arch: str | None = None, expert_type: Q | None = None):
    """(config, GGUFModel) of a preset without writing it: raw views of the right size that use no memory."""
    shape = resolve_preset(preset, arch)
    etype = expert_type or shape.expert_type
    md = synth.synth_metadata(shape, preset, etype, shape.dense_type, 0)
    zero = np.zeros(1, np.uint8)
    tensors = {
        r.name: GGUFTensor(r.name, r.qtype, r.ne, np.broadcast_to(zero, (r.n_rows, r.row_bytes)), preset)
        for r in synth.tensor_recipes(md, etype, shape.dense_type)
    }
    return config_from_metadata(md), GGUFModel(path=preset, files=[], metadata=md, tensors=tensors)


def _active_params_by_formula(preset: str, arch: str) -> int:
    """Active parameters from the shape alone (embeddings counted whole, k of n experts)."""
    s = resolve_preset(preset, arch)
    E, q, kv = s.n_embd, s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    attn = E * (q + 2 * kv) + q * E + 2 * s.head_dim + 2 * E  # projections, q/k norms, attn/ffn norms
    n_moe = s.n_layer - s.n_dense_lead
    moe = E * s.n_expert + 3 * E * s.n_ff_exp * s.n_expert_used + 3 * E * s.n_ff_shexp * s.n_expert_shared
    if s.arch == "bailingmoe2":
        moe += s.n_expert  # exp_probs_b
    dense = 3 * E * s.n_ff_dense
    return s.n_layer * attn + n_moe * moe + s.n_dense_lead * dense + 2 * s.n_vocab * E + E


@pytest.mark.parametrize("arch", ["qwen3moe", "bailingmoe2"])
def test_param_counts_match_the_shape(tiny_model, arch):
    model, cfg = open_model(tiny_model(arch))
    stats = model_stats(cfg, model)
    assert stats.total_params == sum(int(np.prod(t.ne)) for t in model.tensors.values())
    assert stats.active_params == _active_params_by_formula("tiny", arch)
    assert stats.active_params < stats.total_params


@pytest.mark.parametrize(
    "preset,arch,active_b,read_gb,expert_gb,head_gb",
    [  # anchors.md / the model cards: 3.3B active, 2.36 GB read per token (1.02 experts, 0.33 head)
        ("qwen3-30b-a3b", "qwen3moe", 3.3, 2.36, 1.02, 0.33),
        ("ling-mini-2.0", "bailingmoe2", 1.43, None, None, None),
        ("small", "qwen3moe", None, 0.8, None, None),
    ],
)
def test_published_figures(preset, arch, active_b, read_gb, expert_gb, head_gb):
    stats = model_stats(*_header_only_model(preset, arch))
    for got, want in ((stats.active_params / 1e9, active_b), (stats.weight_bytes_per_token / 1e9, read_gb),
                      (stats.expert_bytes_per_token / 1e9, expert_gb), (stats.head_bytes / 1e9, head_gb)):
        if want is not None:
            assert got == pytest.approx(want, rel=0.03)
    assert stats.active_params == pytest.approx(_active_params_by_formula(preset, arch), rel=1e-6)


def test_bytes_per_token_by_hand(tiny_model):
    """Every non-expert tensor once, one token_embd row, the head, a k/n share of the experts."""
    model, cfg = open_model(tiny_model("qwen3moe", "Q4_K", "Q8_0"))
    t = model.tensors
    experts = sum(v.n_bytes for n, v in t.items() if "_exps." in n) * cfg.n_expert_used / cfg.n_expert
    others = sum(v.n_bytes for n, v in t.items() if "_exps." not in n and n != "token_embd.weight")
    embd_row = t["token_embd.weight"].n_bytes // cfg.n_vocab
    stats = model_stats(cfg, model)
    assert stats.weight_bytes_per_token == pytest.approx(experts + others + embd_row, abs=len(t))
    assert stats.head_bytes == t["output.weight"].n_bytes


def test_kv_bytes_and_tg_bytes(tiny_model):
    model, cfg = open_model(tiny_model("bailingmoe2"))
    stats = model_stats(cfg, model)
    per_layer_values = 2 * cfg.n_head_kv * cfg.head_dim  # K and V
    assert kv_bytes_per_token(stats) == cfg.n_layer * per_layer_values * 2
    assert kv_bytes_per_token(stats, "q8_0", "q8_0") == cfg.n_layer * per_layer_values * 34 / 32
    assert kv_bytes_per_token(stats, "q8_0", "f16") == cfg.n_layer * per_layer_values / 2 * (34 / 32 + 2)
    assert tg_bytes_per_token(stats, 99) == stats.weight_bytes_per_token + 100 * kv_bytes_per_token(stats)


@pytest.mark.parametrize("n_tokens,n_kv", [(1, 0), (7, 0), (5, 13), (64, 512)])
def test_pp_flops_against_a_token_by_token_count(tiny_model, n_tokens, n_kv):
    model, cfg = open_model(tiny_model("qwen3moe"))
    stats = model_stats(cfg, model)
    expected = 2.0 * cfg.n_embd * cfg.n_vocab  # head, last token only
    for t in range(n_tokens):
        expected += 2.0 * stats.body_matmul_params
        expected += cfg.n_layer * cfg.n_head * (2 * cfg.head_dim + 2 * cfg.head_dim) * (n_kv + t + 1)
    assert pp_flops(stats, n_tokens, n_kv) == pytest.approx(expected, rel=1e-12)


def test_info_json(tiny_model):
    path = tiny_model("bailingmoe2", "Q4_K", "Q8_0")
    result = CliRunner().invoke(app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    model, cfg = open_model(path)
    assert data["arch"] == "bailingmoe2" and data["hyperparameters"]["n_expert_groups"] == cfg.n_expert_groups
    assert data["file_size_bytes"] == path.stat().st_size
    assert {k: v["count"] for k, v in data["tensor_types"].items()} == model.type_histogram()
    assert data["tensor_types"]["Q4_K"]["bytes"] == sum(
        t.n_bytes for t in model.tensors.values() if t.qtype == Q.Q4_K)
    assert data["params_active"] == _active_params_by_formula("tiny", "bailingmoe2")
    assert data["kv_bytes_per_token"]["q8_0"] == data["kv_bytes_per_token"]["f16"] * 34 / 64


def test_info_table(tiny_model):
    result = CliRunner().invoke(app, ["info", str(tiny_model("qwen3moe", "Q4_K", "Q6_K"))])
    assert result.exit_code == 0, result.stderr
    for text in ("qwen3moe", "Q4_K", "Q6_K", "F32", "params active", "KV cache / token (q8_0)", "n_expert_used"):
        assert text in result.stdout, text

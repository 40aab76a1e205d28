"""Building blocks shared by the architectures: self-attention over the KV cache and the routed MoE FFN.

Every step is an op of the engine's ops table (``sweepbench.models.ops``), so the same code runs on NumPy,
Numba CPU kernels or the GPU. Shapes in comments use the legend of ``models.ops``.
"""
from __future__ import annotations

from typing import Any

from sweepbench.config import ModelConfig


def self_attention(ops, w: dict, cfg: ModelConfig, cache: Any, il: int, q, k, v, pos0: int):
    """q [T, H*D], k and v [T, Hkv*D] straight from the projections -> attention output [T, E].

    Per-head RMSNorm on q and k, NEOX RoPE on their first n_rot dims, K/V into the cache, causal GQA
    attention over every cell up to each token's position, then the output projection."""
    p = f"blk.{il}."
    rope = dict(head_dim=cfg.head_dim, n_rot=cfg.n_rot, base=cfg.rope_base, freq_scale=cfg.rope_freq_scale)
    q = ops.rope_neox(ops.rms_norm_heads(q, w[p + "attn_q_norm.weight"], cfg.rms_eps, cfg.head_dim), pos0, **rope)
    k = ops.rope_neox(ops.rms_norm_heads(k, w[p + "attn_k_norm.weight"], cfg.rms_eps, cfg.head_dim), pos0, **rope)
    ops.kv_store(cache, il, k, v, pos0)
    o = ops.attention(q, cache, il, pos0, cfg.n_head, cfg.n_head_kv, cfg.head_dim)  # [T, H*D]
    return ops.matmul(o, w[p + "attn_output.weight"])  # [T, E]


def route(ops, w: dict, cfg: ModelConfig, p: str, x):
    """Router logits [T, X] -> (expert ids [T, K], weights [T, K]) by the architecture's gating rule."""
    logits = ops.matmul(x, w[p + "ffn_gate_inp.weight"])  # [T, X]
    if cfg.gating == "softmax":
        return ops.route_softmax_topk(logits, cfg.n_expert_used, cfg.norm_w)
    n_groups = cfg.n_expert_groups if cfg.grouped_routing else 1
    return ops.route_sigmoid_topk(
        logits, w.get(p + "exp_probs_b.bias"), cfg.n_expert_used, n_groups, cfg.n_group_used,
        cfg.norm_w, cfg.norm_w_eps, cfg.w_scale,
    )


def moe_ffn(ops, w: dict, cfg: ModelConfig, p: str, x):
    """Routed experts: route -> group rows by expert -> fused up/gate -> down -> weighted combine. [T, E] -> [T, E]."""
    ids, weights = route(ops, w, cfg, p, x)  # [T, K], [T, K]
    groups = ops.group_rows_by_expert(ids, cfg.n_expert)
    h = ops.expert_up_gate(x, w[p + "ffn_gate_exps.weight"], w[p + "ffn_up_exps.weight"], groups)  # [R, F]
    y = ops.expert_down(h, w[p + "ffn_down_exps.weight"], groups)  # [R, E]
    return ops.combine(y, weights)  # [T, E]


def dense_ffn(ops, w: dict, p: str, x, kind: str = ""):
    """SwiGLU FFN of ``{p}ffn_{gate,up,down}{kind}.weight`` (kind "" = dense layer, "_shexp" = shared expert)."""
    return ops.swiglu_ffn(x, w[f"{p}ffn_gate{kind}.weight"], w[f"{p}ffn_up{kind}.weight"], w[f"{p}ffn_down{kind}.weight"])


def output_head(ops, w: dict, cfg: ModelConfig, x):
    """Final RMSNorm and the vocabulary projection: [n_out, E] -> logits [n_out, V]."""
    return ops.matmul(ops.rms_norm(x, w["output_norm.weight"], cfg.rms_eps), w["output.weight"])

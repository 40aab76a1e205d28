"""Qwen3-MoE (Qwen3-30B-A3B, Qwen3-235B-A22B), as ik_llama.cpp's ``build_qwen3moe`` computes it.

Per layer: pre-norm attention with separate Q/K/V projections, per-head q/k RMSNorm and NEOX RoPE over the
whole head; then a routed MoE with softmax gating, top-k and renormalised weights (no shared expert, no scale).
"""
from __future__ import annotations

from sweepbench.config import ModelConfig
from sweepbench.models.blocks import moe_ffn, output_head, self_attention


def forward(ops, w: dict, cfg: ModelConfig, cache, tokens, pos0: int, out_rows):
    """tokens [T] at positions pos0.. -> logits [len(out_rows), V] of the rows ``out_rows``; K/V stay cached."""
    x = ops.embed(w["token_embd.weight"], tokens)  # [T, E]
    for il in range(cfg.n_layer):
        p = f"blk.{il}."
        a = ops.rms_norm(x, w[p + "attn_norm.weight"], cfg.rms_eps)
        q = ops.matmul(a, w[p + "attn_q.weight"])  # [T, H*D]
        k = ops.matmul(a, w[p + "attn_k.weight"])  # [T, Hkv*D]
        v = ops.matmul(a, w[p + "attn_v.weight"])
        attn = self_attention(ops, w, cfg, cache, il, q, k, v, pos0)  # [T, E]
        if il == cfg.n_layer - 1:  # only the rows that want logits go on
            x, attn = ops.rows(x, out_rows), ops.rows(attn, out_rows)
        x = ops.add(x, attn)
        f = ops.rms_norm(x, w[p + "ffn_norm.weight"], cfg.rms_eps)
        x = ops.add(x, moe_ffn(ops, w, cfg, p, f))
    return output_head(ops, w, cfg, x)

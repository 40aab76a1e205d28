"""BailingMoE v2 (Ling-mini-2.0, Ling-flash-2.0, Ling-1T), as ik_llama.cpp's ``build_bailingmoe2`` computes it.

Per layer: pre-norm attention with one fused QKV projection, per-head q/k RMSNorm and NEOX RoPE on the first
n_rot dims of each head; then a dense SwiGLU FFN (the leading dense layers) or a routed MoE with sigmoid gating
(experts chosen on sigmoid + bias, optionally by groups; weights from the unbiased sigmoid, normalised, scaled)
plus the shared expert. MTP (nextn) blocks are not run.
"""
from __future__ import annotations

from sweepbench.config import ModelConfig
from sweepbench.models.blocks import dense_ffn, moe_ffn, output_head, self_attention


def forward(ops, w: dict, cfg: ModelConfig, cache, tokens, pos0: int, out_rows):
    """tokens [T] at positions pos0.. -> logits [len(out_rows), V] of the rows ``out_rows``; K/V stay cached."""
    x = ops.embed(w["token_embd.weight"], tokens)  # [T, E]
    for il in range(cfg.n_layer):
        p = f"blk.{il}."
        a = ops.rms_norm(x, w[p + "attn_norm.weight"], cfg.rms_eps)
        qkv = ops.matmul(a, w[p + "attn_qkv.weight"])  # [T, H*D + 2*Hkv*D]
        q, k, v = ops.split(qkv, (cfg.n_embd_q, cfg.n_embd_kv, cfg.n_embd_kv))
        attn = self_attention(ops, w, cfg, cache, il, q, k, v, pos0)  # [T, E]
        if il == cfg.n_layer - 1:  # only the rows that want logits go on
            x, attn = ops.rows(x, out_rows), ops.rows(attn, out_rows)
        x = ops.add(x, attn)
        f = ops.rms_norm(x, w[p + "ffn_norm.weight"], cfg.rms_eps)
        if not cfg.is_moe_layer(il):
            ffn = dense_ffn(ops, w, p, f)
        elif cfg.n_ff_shexp:
            ffn = ops.add(moe_ffn(ops, w, cfg, p, f), dense_ffn(ops, w, p, f, "_shexp"))
        else:
            ffn = moe_ffn(ops, w, cfg, p, f)
        x = ops.add(x, ffn)
    return output_head(ops, w, cfg, x)
